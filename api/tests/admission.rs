//! The admission webhook through its router, as an IDC's API server calls it: the deletion of a
//! live instance's Pod or VMI, or of a namespace holding live instances, is refused with a message
//! naming the instance; the objects of released instances, of instances the IDC does not run and
//! of no instance at all go; a configuration naming an unknown IDC refuses; every decision is in
//! the audit log and every refusal an alert, counted in the metrics.

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use serde_json::{Value, json};

fn review(operation: &str, group: &str, resource: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{name}"),
            "kind": {"group": group, "version": "v1", "kind": "Whatever"},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "operation": operation,
            "name": name,
            "namespace": "eci-somewhere",
            "userInfo": {"username": "token:abcd1234", "groups": ["system:authenticated"]},
            "oldObject": {"metadata": {"name": name, "labels": labels}},
        }
    })
}

fn pod_delete(name: &str, instance: &str) -> Value {
    review(
        "DELETE",
        "",
        "pods",
        name,
        json!({ "eci.io/instance": instance, "app.kubernetes.io/managed-by": "eci" }),
    )
}

/// The response of a review sent to the webhook of `idc`.
async fn ask(app: &App, idc: &str, body: Value) -> Value {
    let router = eci_api::admission::router(app.state.clone());
    let reply =
        send(&router, Method::POST, &format!("/admission/idcs/{idc}"), None, Some(body.clone())).await;
    let answer = reply.expect_status(StatusCode::OK);
    assert_eq!(
        (answer["apiVersion"].as_str(), answer["kind"].as_str()),
        (Some("admission.k8s.io/v1"), Some("AdmissionReview"))
    );
    assert_eq!(answer["response"]["uid"], body["request"]["uid"], "the answer carries the request's uid");
    answer["response"].clone()
}

#[tokio::test]
async fn a_live_instances_pod_and_namespace_are_kept_and_a_released_ones_pod_goes() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let t = app.tenant("acme").await;
        let other = app.tenant("globex").await;
        let created = app.create_batch(&t.token, batch(2)).await;
        let batch_id = created["id"].as_str().unwrap().to_string();
        let instances = app.all_pages(&format!("/v1/batches/{batch_id}/instances"), &t.token).await;
        let (first, second) = (&instances[0], &instances[1]);
        let (id, idc) = (first["id"].as_str().unwrap(), first["idc"].as_str().unwrap());

        let refused = ask(&app, idc, pod_delete("web-0", id)).await;
        assert_eq!(refused["allowed"], false, "{refused}");
        assert_eq!(refused["status"]["code"], 403);
        let message = refused["status"]["message"].as_str().unwrap();
        assert!(message.contains(id) && message.contains(&format!("eci instance delete {id}")), "{message}");

        let vmi = review(
            "DELETE",
            "kubevirt.io",
            "virtualmachineinstances",
            "vm-0",
            json!({ "eci.io/instance": id }),
        );
        assert_eq!(ask(&app, idc, vmi).await["allowed"], false, "a VMI is kept like a Pod");

        let namespace = format!("eci-{}", t.id);
        let ns =
            review("DELETE", "", "namespaces", &namespace, json!({ "app.kubernetes.io/managed-by": "eci" }));
        let refused = ask(&app, idc, ns).await;
        assert_eq!(refused["allowed"], false, "{refused}");
        let message = refused["status"]["message"].as_str().unwrap();
        assert!(message.contains(&namespace) && message.contains("live instance"), "{message}");
        let empty = review("DELETE", "", "namespaces", &format!("eci-{}", other.id), json!({}));
        assert_eq!(ask(&app, idc, empty).await["allowed"], true, "a tenant with nothing here loses nothing");

        // Not guarded: other operations, unlabelled objects, other resources, another IDC's view.
        let update = review("UPDATE", "", "pods", "web-0", json!({ "eci.io/instance": id }));
        assert_eq!(ask(&app, idc, update).await["allowed"], true);
        assert_eq!(ask(&app, idc, review("DELETE", "", "pods", "x", json!({}))).await["allowed"], true);
        let secret = review("DELETE", "", "secrets", "s", json!({ "eci.io/instance": id }));
        assert_eq!(ask(&app, idc, secret).await["allowed"], true);
        let elsewhere = IDC_IDS.iter().find(|other| **other != idc).unwrap();
        let stray = ask(&app, elsewhere, pod_delete("web-0", id)).await;
        assert_eq!(
            stray["allowed"], true,
            "a Pod of an instance another IDC runs is an orphan here: {stray}"
        );

        // A released instance's objects go, which is how the platform's reconciler removes them.
        app.delete(&format!("/v1/instances/{id}"), &t.token).await.expect_status(StatusCode::OK);
        assert_eq!(ask(&app, idc, pod_delete("web-0", id)).await["allowed"], true);
        let second_id = second["id"].as_str().unwrap();
        let second_idc = second["idc"].as_str().unwrap();
        assert_eq!(
            ask(&app, second_idc, pod_delete("web-1", second_id)).await["allowed"],
            false,
            "the other stays"
        );

        let unknown = ask(&app, "xx-nowhere-1", pod_delete("web-1", second_id)).await;
        assert_eq!(unknown["allowed"], false, "a configuration naming an unknown IDC lets nothing go");
        assert!(unknown["status"]["message"].as_str().unwrap().contains("xx-nowhere-1"), "{unknown}");

        let lines = app.all_pages("/v1/risk/audit?actor=out_of_band", ADMIN).await;
        let denied: Vec<&Value> = lines.iter().filter(|l| l["verdict"] == "denied").collect();
        let allowed: Vec<&Value> = lines.iter().filter(|l| l["verdict"] == "allowed").collect();
        assert_eq!((denied.len(), allowed.len()), (4, 3), "{lines:#?}");
        assert!(denied.iter().all(|l| l["rule"] == "live_instance" && l["subject"] == "token:abcd1234"));
        let kinds: Vec<&str> = denied.iter().map(|l| l["target_kind"].as_str().unwrap()).collect();
        for kind in ["pod", "virtual_machine_instance", "namespace"] {
            assert!(kinds.contains(&kind), "{kinds:?}");
        }
        let on_namespace = denied.iter().find(|l| l["target_kind"] == "namespace").unwrap();
        assert_eq!(
            (on_namespace["target_id"].as_str(), on_namespace["idc_id"].as_str()),
            (Some(namespace.as_str()), Some(idc))
        );
        let own = app.all_pages("/v1/risk/audit?actor=out_of_band", &t.token).await;
        assert!(own.iter().all(|l| l["tenant_id"] == t.id.as_str()) && own.len() >= 4, "{own:#?}");

        let metrics = app.send(Method::GET, "/metrics", None, None).await;
        let text = metrics.1.as_str().map(str::to_string).unwrap_or_default();
        let counted = |idc: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("eci_alerts_total{alert=\"out_of_band_deletion_denied\"")
                        && l.contains(&format!("idc=\"{idc}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        };
        let (here, there) = (counted(idc), counted(second_idc));
        if idc == second_idc {
            assert_eq!(here, Some(4), "{text}");
        } else {
            assert_eq!((here, there), (Some(3), Some(1)), "{text}");
        }
        assert_eq!(counted("xx-nowhere-1"), None, "a name a caller made up is no series");
    })
    .await;
}

#[tokio::test]
async fn a_review_that_is_not_one_is_a_clear_400() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let router = eci_api::admission::router(app.state.clone());
        let path = format!("/admission/idcs/{}", IDC_IDS[0]);
        for (body, field) in [
            (json!({"apiVersion": "admission.k8s.io/v1"}), "body"),
            (json!([1, 2]), "body"),
            (
                with(&pod_delete("p", "i-x"), |r| r["apiVersion"] = json!("admission.k8s.io/v1beta1")),
                "apiVersion",
            ),
            (with(&pod_delete("p", "i-x"), |r| r["request"]["uid"] = json!(7)), "body"),
        ] {
            let reply = send(&router, Method::POST, &path, None, Some(body)).await;
            assert_invalid(&reply, field);
        }
        let reply = send(&router, Method::GET, &path, None, None).await;
        assert_eq!(reply.0, StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            app.all_pages("/v1/risk/audit?actor=out_of_band", ADMIN).await.is_empty(),
            "nothing was decided"
        );
    })
    .await;
}
