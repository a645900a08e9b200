//! What customers can learn about the fleet (the OpenAPI document, the area tree, capacity by size,
//! area and carrier), how admins change it (adding, changing and draining IDCs), and what an IDC
//! sells of what its cluster was read to offer.

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use eci_core::capacity::ClusterCapacity;
use eci_core::{IdcId, MiB, MilliCpu, Resources};
use serde_json::{Value, json};

#[tokio::test]
async fn the_openapi_document_is_valid_json_describing_every_resource() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let doc = app.send(Method::GET, "/v1/openapi.json", None, None).await.expect_status(StatusCode::OK);
        assert!(doc.is_object(), "the document is JSON: {doc}");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "an OpenAPI 3 document: {}",
            doc["openapi"]
        );
        assert!(doc["info"]["title"].is_string());
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in [
            ("/v1/batches", &["get", "post"][..]),
            ("/v1/batches/{id}", &["get", "delete"]),
            ("/v1/batches/{id}/instances", &["get"]),
            ("/v1/instances", &["get"]),
            ("/v1/instances/{id}", &["get", "delete"]),
            ("/v1/reservations", &["get", "post"]),
            ("/v1/reservations/{id}", &["get", "delete"]),
            ("/v1/capacity", &["get"]),
            ("/v1/areas", &["get"]),
            ("/v1/admin/tenants", &["get", "post"]),
            ("/v1/admin/idcs/{id}", &["get", "put"]),
        ] {
            let entry = paths.get(path).unwrap_or_else(|| panic!("{path} is documented"));
            for m in methods {
                assert!(entry.get(*m).is_some(), "{m} {path} is documented");
            }
        }
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object(), "bearer keys are documented");
        // A generated client gets enums, not bare strings, for the product's words.
        let schemas = &doc["components"]["schemas"];
        for (schema, field, words) in [
            (
                "InstanceView",
                "state",
                &["pending", "creating", "running", "stopping", "terminated", "failed", "unknown"][..],
            ),
            ("InstanceView", "carrier", &["telecom", "unicom", "mobile", "bgp"]),
            ("InstanceView", "runtime", &["container", "rich", "vm"]),
            ("BatchView", "state", &["active", "released", "expired", "failed"]),
            ("ReservationView", "state", &["active", "released", "expired"]),
            ("PlacedAreaView", "carrier", &["telecom", "unicom", "mobile", "bgp"]),
            ("InvoiceView", "state", &["draft", "final"]),
            ("InvoiceLineView", "kind", &["usage", "adjustment"]),
            ("InvoiceLineView", "runtime", &["container", "rich", "vm"]),
            ("PriceBody", "runtime", &["container", "rich", "vm"]),
        ] {
            let listed = &schemas[schema]["properties"][field]["enum"];
            assert_eq!(listed, &json!(words), "{schema}.{field} lists its values: {}", schemas[schema]);
        }
        let carriers = &schemas["PlacementBody"]["properties"]["carriers"]["items"]["enum"];
        assert_eq!(carriers, &json!(["telecom", "unicom", "mobile", "bgp"]), "{}", schemas["PlacementBody"]);
        let healthz = app.send(Method::GET, "/healthz", None, None).await.expect_status(StatusCode::OK);
        assert_eq!(healthz, "ok");
    })
    .await;
}

#[tokio::test]
async fn the_area_tree_shows_regions_provinces_and_cities_with_their_carriers() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let areas = app.get("/v1/areas", &acme.token).await.expect_status(StatusCode::OK);
        let city = |code: &str, carriers: Value, idcs: u64| {
            json!({ "code": code, "carriers": carriers, "idcs": idcs })
        };
        let want = json!({ "regions": [
            { "code": "east-china", "carriers": ["telecom", "mobile", "bgp"], "idcs": 2, "provinces": [
                { "code": "zhejiang", "carriers": ["telecom", "mobile", "bgp"], "idcs": 2, "cities": [
                    city("hangzhou", json!(["mobile", "bgp"]), 2),
                    city("ningbo", json!(["telecom"]), 0), // draining: there, but taking nothing new
                ]},
            ]},
            { "code": "south-china", "carriers": ["telecom", "unicom"], "idcs": 3, "provinces": [
                { "code": "guangdong", "carriers": ["telecom", "unicom"], "idcs": 3, "cities": [
                    city("guangzhou", json!(["telecom", "unicom"]), 1),
                    city("shenzhen", json!(["telecom", "unicom"]), 2),
                ]},
            ]},
        ]});
        assert_eq!(areas, want);
        for idc in IDC_IDS {
            assert!(!areas.to_string().contains(idc), "areas never name an IDC");
        }
    })
    .await;
}

#[tokio::test]
async fn capacity_is_counted_by_size_area_and_carrier() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let view = app
            .get("/v1/capacity?cpu=2&memory=4Gi&area=guangdong&carrier=telecom", &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(
            view,
            json!({
                "spec": { "cpu": "2", "memory": "4Gi", "gpu": 0 },
                "runtime": "container",
                "total": 24,
                "locations": [
                    { "region": "south-china", "province": "guangdong", "city": "guangzhou",
                      "carrier": "telecom", "available": 16 },
                    { "region": "south-china", "province": "guangdong", "city": "shenzhen",
                      "carrier": "telecom", "available": 8 },
                ],
            })
        );

        let everywhere =
            app.get(&format!("/v1/capacity?{SMALL}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(everywhere["total"], FLEET_ROOM);
        let locations = everywhere["locations"].as_array().unwrap();
        assert_eq!(locations.iter().map(|l| l["available"].as_u64().unwrap()).sum::<u64>(), FLEET_ROOM);
        assert!(locations.iter().all(|l| l["city"] != "ningbo"), "a draining IDC offers nothing");
        assert!(
            locations.windows(2).all(|w| w[0]["available"].as_u64() >= w[1]["available"].as_u64()),
            "roomiest first"
        );

        for (query, total) in [
            ("area=zhejiang", 32),
            ("area=east-china&carrier=bgp", 16),
            ("carrier=unicom", 48),
            ("area=ningbo", 0),
            ("area=*", FLEET_ROOM),
            ("runtime=rich", 16),
            ("runtime=vm&gpu=1", 4),
            ("gpu=1", 4),
        ] {
            assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&{query}")).await, total, "{query}");
        }
        let none = app
            .get(&format!("/v1/capacity?{SMALL}&area=ningbo"), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(none["locations"], json!([]));

        // What a batch takes is gone from the count, in its city only.
        app.create_batch(&acme.token, batch_in(10, json!({ "areas": ["guangzhou"] }))).await;
        assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&area=guangzhou")).await, 22);
        assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&area=shenzhen")).await, 32);

        for (query, field) in [
            ("cpu=2x&memory=4Gi", "spec.cpu"),
            ("cpu=1&memory=lots", "spec.memory"),
            ("cpu=1&memory=4Gi&carrier=cmcc", "carrier"),
            ("cpu=1&memory=4Gi&runtime=docker", "runtime"),
            ("cpu=1", "query"),
            ("cpu=1&memory=4Gi&colour=red", "query"),
        ] {
            assert_invalid(&app.get(&format!("/v1/capacity?{query}"), &acme.token).await, field);
        }
        // A well-formed area the fleet does not have is a 422.
        let unknown = app.get("/v1/capacity?cpu=1&memory=4Gi&area=atlantis", &acme.token).await;
        assert_eq!(assert_error(&unknown, StatusCode::UNPROCESSABLE_ENTITY, "unknown_area")["field"], "area");
    })
    .await;
}

fn chengdu() -> Value {
    json!({
        "name": "Chengdu 1",
        "region": "west-china",
        "province": "sichuan",
        "city": "chengdu",
        "carriers": ["telecom", "mobile"],
        "capacity": { "cpu": "8", "memory": "32Gi" },
    })
}

#[tokio::test]
async fn an_admin_adds_an_idc_and_customers_see_its_city_and_capacity_once_its_cluster_is_read() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let added = app.put("/v1/admin/idcs/sc-cd-1", ADMIN, chengdu()).await.expect_status(StatusCode::OK);
        let zero = json!({ "cpu": "0", "memory": "0Mi", "gpu": 0 });
        assert_eq!(
            added,
            json!({
                "id": "sc-cd-1", "name": "Chengdu 1",
                "region": "west-china", "province": "sichuan", "city": "chengdu",
                "carriers": ["telecom", "mobile"], "capacity": { "cpu": "8", "memory": "32Gi", "gpu": 0 },
                "headroom_percent": 0, "sellable": zero, "cluster": null, "conditions": [],
                "runtimes": ["container"], "status": "active", "kube_context": null,
                "rich_runtime_class": null, "ssh_ingress_host": null,
                "reserved": zero, "allocated": zero, "free": zero,
            })
        );
        assert_eq!(app.admin_idc("sc-cd-1").await, added);
        assert_eq!(
            app.get("/v1/admin/idcs", ADMIN).await.expect_status(StatusCode::OK).as_array().unwrap().len(),
            7
        );
        // Until its cluster is read, the IDC sells nothing: its bound is no promise of room.
        assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&area=chengdu")).await, 0);
        let refused =
            app.post("/v1/batches", &acme.token, batch_in(1, json!({ "areas": ["chengdu"] }))).await;
        assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
        let read = app.read_cluster_as_bound("sc-cd-1").await;
        assert_eq!((&read["sellable"], &read["free"]), (&added["capacity"], &added["capacity"]));

        let areas = app.get("/v1/areas", &acme.token).await.expect_status(StatusCode::OK);
        let west = areas["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["code"] == "west-china")
            .expect("the new region");
        assert_eq!(
            west["provinces"],
            json!([{ "code": "sichuan", "carriers": ["telecom", "mobile"], "idcs": 1, "cities": [
                { "code": "chengdu", "carriers": ["telecom", "mobile"], "idcs": 1 },
            ]}])
        );
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM + 8);
        assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&area=chengdu")).await, 8);
        assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&area=west-china&carrier=mobile")).await, 8);

        let mobile_in_sichuan = json!({ "areas": ["sichuan"], "carriers": ["mobile"] });
        let placed = app.create_batch(&acme.token, batch_in(6, mobile_in_sichuan)).await;
        let chengdu_mobile = json!({ "region": "west-china", "province": "sichuan", "city": "chengdu",
            "carrier": "mobile", "count": 6 });
        assert_eq!(placed["placement"], json!([chengdu_mobile]));
        let instances = app
            .all_pages(&format!("/v1/instances?batch_id={}", placed["id"].as_str().unwrap()), &acme.token)
            .await;
        assert!(instances.iter().all(|i| i["idc"] == "sc-cd-1" && i["carrier"] == "mobile"), "{instances:?}");

        // Growing it keeps what it runs. A higher bound sells no more than the cluster last read; a
        // reading of the grown cluster does.
        let bigger = with(&chengdu(), |b| b["capacity"] = json!({ "cpu": "16", "memory": "64Gi" }));
        let bound = app.put("/v1/admin/idcs/sc-cd-1", ADMIN, bigger).await.expect_status(StatusCode::OK);
        assert_eq!(bound["sellable"], json!({ "cpu": "8", "memory": "32Gi", "gpu": 0 }));
        let grown = app.read_cluster_as_bound("sc-cd-1").await;
        assert_eq!(grown["allocated"], json!({ "cpu": "6", "memory": "24Gi", "gpu": 0 }));
        assert_eq!(grown["free"], json!({ "cpu": "10", "memory": "40Gi", "gpu": 0 }));
        assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&area=chengdu")).await, 10);

        // Its cluster settings: the rich containers' RuntimeClass and the ssh ingress address.
        let settings = with(&chengdu(), |b| {
            b["capacity"] = json!({ "cpu": "16", "memory": "64Gi" });
            b["rich_runtime_class"] = json!("kata-qemu");
            b["ssh_ingress_host"] = json!("203.0.113.10");
        });
        let set = app.put("/v1/admin/idcs/sc-cd-1", ADMIN, settings).await.expect_status(StatusCode::OK);
        assert_eq!(
            (set["rich_runtime_class"].as_str(), set["ssh_ingress_host"].as_str()),
            (Some("kata-qemu"), Some("203.0.113.10"))
        );

        // A second IDC in a known city adds its carrier there.
        let bgp = json!({ "region": "south-china", "province": "guangdong", "city": "shenzhen",
            "carriers": ["bgp"],
            "capacity": { "cpu": "4", "memory": "16Gi" }, "runtimes": ["vm"] });
        app.put("/v1/admin/idcs/gd-sz-3", ADMIN, bgp).await.expect_status(StatusCode::OK);
        let third = app.read_cluster_as_bound("gd-sz-3").await;
        assert_eq!(
            (third["name"].as_str(), third["runtimes"].clone()),
            (Some("gd-sz-3"), json!(["container", "vm"]))
        );
        let areas = app.get("/v1/areas", &acme.token).await.expect_status(StatusCode::OK);
        let south = areas["regions"].as_array().unwrap().iter().find(|r| r["code"] == "south-china").unwrap();
        let shenzhen = json!({ "code": "shenzhen", "carriers": ["telecom", "unicom", "bgp"], "idcs": 3 });
        assert_eq!(south["provinces"][0]["cities"][1], shenzhen);
        assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&area=shenzhen&carrier=bgp")).await, 4);
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

/// The seeded `gd-gz-1` as admins describe it, with `headroom_percent`.
fn guangzhou(headroom_percent: u8) -> Value {
    json!({
        "region": "south-china", "province": "guangdong", "city": "guangzhou",
        "carriers": ["telecom", "unicom"], "capacity": { "cpu": "32", "memory": "128Gi" },
        "headroom_percent": headroom_percent,
    })
}

#[tokio::test]
async fn an_idc_sells_what_its_cluster_was_read_to_offer_and_says_when_that_falls_short() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let zero = json!({ "cpu": "0", "memory": "0Mi", "gpu": 0 });
        let bound = json!({ "cpu": "32", "memory": "128Gi", "gpu": 0 });
        let seeded = app.admin_idc("gd-gz-1").await;
        assert_eq!((&seeded["capacity"], &seeded["sellable"]), (&bound, &bound), "{seeded}");
        assert_eq!((&seeded["headroom_percent"], &seeded["conditions"]), (&json!(0), &json!([])));
        let cluster = &seeded["cluster"];
        assert_eq!((&cluster["nodes"], &cluster["schedulable_nodes"]), (&json!(1), &json!(1)), "{cluster}");
        assert_eq!((&cluster["allocatable"], &cluster["foreign"]), (&bound, &zero));
        assert_eq!(cluster["node_shapes"], json!([bound]));
        assert_eq!(time(&cluster["read_at"]), t0());

        // Headroom keeps a share of what the cluster offers out of sale.
        let path = "/v1/admin/idcs/gd-gz-1";
        let kept = app.put(path, ADMIN, guangzhou(25)).await.expect_status(StatusCode::OK);
        assert_eq!(kept["headroom_percent"], 25);
        assert_eq!(kept["sellable"], json!({ "cpu": "24", "memory": "96Gi", "gpu": 0 }));
        assert_eq!(app.admin_idc("gd-gz-1").await, kept);
        assert_eq!(app.capacity(&acme.token, &format!("{SMALL}&area=guangzhou")).await, 24);
        app.put(path, ADMIN, guangzhou(0)).await.expect_status(StatusCode::OK);

        // The cluster shrinks under 20 running instances: three nodes, one cordoned, and foreign Pods.
        let running = app.create_batch(&acme.token, batch_in(20, json!({ "areas": ["guangzhou"] }))).await;
        app.advance(60);
        let res = |cpu: u64, gib: u64| Resources::new(MilliCpu(cpu * 1000), MiB(gib * 1024), 0);
        let smaller = ClusterCapacity {
            nodes: 3,
            schedulable_nodes: 2,
            allocatable: res(16, 64),
            foreign: res(1, 4),
            node_shapes: vec![res(7, 28)],
        };
        let id = IdcId("gd-gz-1".into());
        app.store.record_cluster_capacity(&id, &smaller, app.clock_now()).await.expect("a reading recorded");
        let short = app.admin_idc("gd-gz-1").await;
        assert_eq!(short["sellable"], json!({ "cpu": "15", "memory": "60Gi", "gpu": 0 }), "{short}");
        assert_eq!(
            short["cluster"],
            json!({
                "nodes": 3, "schedulable_nodes": 2,
                "allocatable": { "cpu": "16", "memory": "64Gi", "gpu": 0 },
                "foreign": { "cpu": "1", "memory": "4Gi", "gpu": 0 },
                "node_shapes": [{ "cpu": "7", "memory": "28Gi", "gpu": 0 }],
                "read_at": short["cluster"]["read_at"],
            })
        );
        assert_eq!(time(&short["cluster"]["read_at"]), t0() + chrono::Duration::seconds(60));
        assert_eq!(
            short["conditions"],
            json!([{
                "type": "capacity_short",
                "message": "the cluster backs cpu 15, memory 60Gi of the cpu 20, memory 80Gi promised to instances \
                    and reservations: short by cpu 5, memory 20Gi",
                "short_by": { "cpu": "5", "memory": "20Gi", "gpu": 0 },
            }])
        );
        assert_eq!(
            (&short["allocated"], &short["free"]),
            (&json!({ "cpu": "20", "memory": "80Gi", "gpu": 0 }), &zero)
        );

        // It takes nothing new, and nothing it runs is touched.
        let refused =
            app.post("/v1/batches", &acme.token, batch_in(1, json!({ "areas": ["guangzhou"] }))).await;
        assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
        let batch_path = format!("/v1/batches/{}", running["id"].as_str().unwrap());
        let still = app.get(&batch_path, &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!((&still["state"], &still["counts"]["pending"]), (&json!("active"), &json!(20)));

        // A reading that covers the promise again clears the condition.
        let grown = app.read_cluster_as_bound("gd-gz-1").await;
        assert_eq!((&grown["sellable"], &grown["conditions"]), (&bound, &json!([])));
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_idc_description_is_refused_and_changes_nothing() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let areas_before = app.get("/v1/areas", &acme.token).await.expect_status(StatusCode::OK);
        let good = chengdu();
        // Well-formed codes that clash with the fleet's are a conflict with what exists.
        for body in [
            with(&good, |b| b["city"] = json!("guangdong")), // a province already
            with(&good, |b| b["province"] = json!("zhejiang")), // a province of east-china
            with(&good, |b| b["city"] = json!("hangzhou")),  // a city of zhejiang
        ] {
            let reply = app.put("/v1/admin/idcs/sc-cd-1", ADMIN, body.clone()).await;
            assert_error(&reply, StatusCode::CONFLICT, "area_conflict");
        }
        // An existing IDC cannot be moved under another province's city.
        let moved = json!({ "region": "south-china", "province": "guangdong", "city": "hangzhou",
            "carriers": ["telecom"], "capacity": { "cpu": "32", "memory": "128Gi" } });
        assert_error(
            &app.put("/v1/admin/idcs/gd-gz-1", ADMIN, moved).await,
            StatusCode::CONFLICT,
            "area_conflict",
        );
        for (id, field, body) in [
            ("sc-cd-1", "carriers", with(&good, |b| b["carriers"] = json!([]))),
            ("sc-cd-1", "carriers[1]", with(&good, |b| b["carriers"] = json!(["telecom", "cmcc"]))),
            ("sc-cd-1", "city", with(&good, |b| b["city"] = json!("Chengdu"))),
            ("sc-cd-1", "region", with(&good, |b| b["region"] = json!("west china"))),
            ("sc-cd-1", "capacity.cpu", with(&good, |b| b["capacity"]["cpu"] = json!("0"))),
            ("sc-cd-1", "capacity.memory", with(&good, |b| b["capacity"]["memory"] = json!("lots"))),
            ("sc-cd-1", "runtimes[0]", with(&good, |b| b["runtimes"] = json!(["docker"]))),
            ("sc-cd-1", "status", with(&good, |b| b["status"] = json!("broken"))),
            ("sc-cd-1", "headroom_percent", with(&good, |b| b["headroom_percent"] = json!(91))),
            ("sc-cd-1", "rich_runtime_class", with(&good, |b| b["rich_runtime_class"] = json!("Kata QEMU"))),
            (
                "sc-cd-1",
                "ssh_ingress_host",
                with(&good, |b| b["ssh_ingress_host"] = json!("203.0.113.10; rm -rf")),
            ),
            ("sc-cd-1", "body", with(&good, |b| b["racks"] = json!(12))),
            (
                "sc-cd-1",
                "body",
                with(&good, |b| {
                    b.as_object_mut().unwrap().remove("carriers");
                }),
            ),
            ("sc%20cd", "id", good.clone()),
        ] {
            let reply = app.put(&format!("/v1/admin/idcs/{id}"), ADMIN, body.clone()).await;
            assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{id} {body} should be refused: {}", reply.1);
            assert_invalid(&reply, field);
        }
        assert_eq!(
            app.get("/v1/admin/idcs", ADMIN).await.expect_status(StatusCode::OK).as_array().unwrap().len(),
            6
        );
        assert_eq!(app.get("/v1/areas", &acme.token).await.expect_status(StatusCode::OK), areas_before);
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM);
    })
    .await;
}

#[tokio::test]
async fn a_drained_idc_takes_no_new_instances_but_keeps_its_running_ones() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let old = app.create_batch(&acme.token, batch_in(10, json!({ "areas": ["guangzhou"] }))).await;
        let old_id = old["id"].as_str().unwrap();

        let drained =
            app.post("/v1/admin/idcs/gd-gz-1/drain", ADMIN, json!({})).await.expect_status(StatusCode::OK);
        assert_eq!(drained["status"], "draining");
        assert_eq!(drained["allocated"]["cpu"], "10", "what runs there keeps its capacity");
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 32, "none of its room is offered");
        let areas = app.get("/v1/areas", &acme.token).await.expect_status(StatusCode::OK);
        let guangzhou = json!({ "code": "guangzhou", "carriers": ["telecom", "unicom"], "idcs": 0 });
        assert_eq!(areas["regions"][1]["provinces"][0]["cities"][0], guangzhou);

        let new = app.create_batch(&acme.token, batch(20)).await;
        let instances = app
            .all_pages(&format!("/v1/instances?batch_id={}", new["id"].as_str().unwrap()), &acme.token)
            .await;
        assert_eq!(instances.len(), 20);
        assert!(instances.iter().all(|i| i["idc"] != "gd-gz-1"), "new instances avoid the drained IDC");
        assert!(new["placement"].as_array().unwrap().iter().all(|p| p["city"] != "guangzhou"), "{new}");
        let reply =
            app.post("/v1/batches", &acme.token, batch_in(1, json!({ "areas": ["guangzhou"] }))).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "no_matching_idc");

        let running =
            app.get(&format!("/v1/batches/{old_id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(
            (running["state"].as_str(), running["counts"]["pending"].as_u64()),
            (Some("active"), Some(10))
        );
        app.delete(&format!("/v1/batches/{old_id}"), &acme.token).await.expect_status(StatusCode::OK);
        let idc = app.get("/v1/admin/idcs/gd-gz-1", ADMIN).await.expect_status(StatusCode::OK);
        assert_eq!(idc["allocated"]["cpu"], "0", "released instances give their capacity back even there");

        // Made active again, it takes instances again.
        let active = json!({ "region": "south-china", "province": "guangdong", "city": "guangzhou",
            "carriers": ["telecom", "unicom"], "capacity": { "cpu": "32", "memory": "128Gi" },
            "status": "active" });
        app.put("/v1/admin/idcs/gd-gz-1", ADMIN, active).await.expect_status(StatusCode::OK);
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 20);
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}
