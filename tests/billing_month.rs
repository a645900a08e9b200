//! A simulated month of per-second billing, end to end: the API, the instance manager and two
//! simulated IDCs on one clock that the test moves through January 2030.
//!
//! A steady batch (two containers and a VM) runs from the first morning; a probe batch ends by its
//! TTL; a load test is created every evening and released before midnight (once after half a
//! minute); the steady batch's IDC is cut off for a night while its node evicts two of its
//! instances, which the platform learns only when the link returns; the container price changes at
//! noon on the 15th; and the control plane restarts while an instance ends unseen. January's final
//! invoice must then equal, to the micro-unit, the billing rule worked out afresh from the instance
//! records, and the records must say what happened.

mod common;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use common::{on_each_database, open, settle};
use eci_api::testing::*;
use eci_core::{InstanceId, TenantId};
use eci_edge_sim::{EngineConfig, Fault, NodeSpec, Resource, SimCluster, SimConfig};
use eci_instance_manager::manifest;
use eci_instance_manager::{IdcReconciler, ManagerConfig};
use serde_json::{Value, json};

/// Hangzhou, BGP: containers and VMs. The steady batch runs here.
const STEADY_IDC: &str = "zj-hz-2";
/// Shenzhen, telecom: the probe and the nightly load tests run here.
const NIGHTLY_IDC: &str = "gd-sz-1";

/// A moment of January 2030.
fn jan(day: u32, hour: u32, minute: u32, second: u32, millis: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, day, hour, minute, second).unwrap() + Duration::milliseconds(millis)
}

fn february_first() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 2, 1, 0, 0, 0).unwrap()
}

/// When the new container price takes effect.
fn price_change() -> DateTime<Utc> {
    jan(15, 12, 0, 0, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_month_is_invoiced_to_the_micro_unit() {
    on_each_database(|url| async move { simulated_month(&url).await }).await;
}

async fn simulated_month(url: &str) {
    let mut app = App::seeded(open(url).await).await;
    let acme = app.tenant("acme").await;
    let t = acme.token.as_str();
    let sims = start_sims().await;
    let mut reconcilers = start_reconcilers(&sims, &app);
    let customer = Customer { tenant: TenantId(acme.id.clone()) };

    // 1 January, 09:00:00.333: the steady batch, all month.
    move_to(&app, jan(1, 9, 0, 0, 333));
    let steady = app.create_batch(t, hangzhou(2, json!({"team": "cdn"}))).await;
    let vm = hangzhou(1, json!({"team": "cdn"}));
    let vm = app
        .create_batch(
            t,
            with(&vm, |b| {
                b["runtime"] = json!("vm");
                b["image"] = json!("quay.io/containerdisks/ubuntu:24.04");
                b["spec"] = json!({"cpu": "2", "memory": "4Gi"});
                b["ssh_keys"] = json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHp0 ops@example"]);
            }),
        )
        .await;
    let (steady, vm) = (id(&steady), id(&vm));
    settle(&app, t, &reconcilers, |i| states(i, &steady) == ["running"; 2] && states(i, &vm) == ["running"])
        .await;

    let mut nightly = Vec::new();
    let mut probe = String::new();
    for day in 1..=31 {
        if day == 2 {
            // A six-hour probe, released by its TTL, and ended once its Pods are gone.
            move_to(&app, jan(2, 10, 0, 0, 0));
            let ttl = with(&shenzhen(3, json!({"team": "probe"})), |b| b["ttl_seconds"] = json!(6 * 3600));
            probe = id(&app.create_batch(t, ttl).await);
            settle(&app, t, &reconcilers, |i| states(i, &probe) == ["running"; 3]).await;
            move_to(&app, jan(2, 16, 0, 0, 750));
            assert_eq!(eci_api::expiry::expire_due(&app.state).await.expect("expiry pass"), (1, 0));
            settle(&app, t, &reconcilers, |i| states(i, &probe) == ["terminated"; 3]).await;
        }
        if day == 10 {
            // Noon: the steady batch's IDC is cut off. Its instances are unknown, still billed.
            move_to(&app, jan(10, 12, 0, 0, 0));
            sims[STEADY_IDC].set_fault(Fault::Unreachable);
            settle(&app, t, &reconcilers, |i| {
                states(i, &steady) == ["unknown"; 2] && states(i, &vm) == ["unknown"]
            })
            .await;
            // Behind the cut, the node evicts a container at 14:00:00.125 and the VM at 18:30:00.500.
            let steady_ids = customer.instance_ids(&app, t, &steady).await;
            let vm_ids = customer.instance_ids(&app, t, &vm).await;
            customer.evict(&sims[STEADY_IDC], Resource::Pods, &steady_ids[0], jan(10, 14, 0, 0, 125));
            customer.evict(
                &sims[STEADY_IDC],
                Resource::VirtualMachineInstances,
                &vm_ids[0],
                jan(10, 18, 30, 0, 500),
            );
        }
        if day == 11 {
            // The link returns the next morning; the IDC tells when its instances really ended.
            move_to(&app, jan(11, 9, 0, 0, 0));
            sims[STEADY_IDC].set_fault(Fault::None);
            settle(&app, t, &reconcilers, |i| {
                let mut steady = states(i, &steady);
                steady.sort();
                steady == ["failed", "running"] && states(i, &vm) == ["failed"]
            })
            .await;
        }
        if day == 14 {
            // The container price changes from noon on the 15th; the admin says so the day before.
            move_to(&app, jan(14, 12, 0, 0, 0));
            let spring = json!({"id": "container-spring", "runtime": "container",
                "effective_from": price_change().to_rfc3339(), "cpu_micros_per_vcpu_second": 44,
                "memory_micros_per_gib_second": 6, "gpu_micros_per_gpu_second": 1500});
            app.post("/v1/admin/prices", ADMIN, spring).await.expect_status(StatusCode::CREATED);
        }

        // 20:00: the evening's load test.
        move_to(&app, jan(day, 20, 0, 0, 0));
        let batch = id(&app.create_batch(t, shenzhen(2, json!({"team": "loadtest"}))).await);
        settle(&app, t, &reconcilers, |i| states(i, &batch) == ["running"; 2]).await;

        if day == 20 {
            // 21:00: the control plane goes down. While it is down, the node evicts one of the load
            // test's instances; it comes back at 22:15 on the same database and finds out.
            move_to(&app, jan(20, 21, 0, 0, 0));
            let ids = customer.instance_ids(&app, t, &batch).await;
            drop(reconcilers);
            app.store.close().await;
            customer.evict(&sims[NIGHTLY_IDC], Resource::Pods, &ids[0], jan(20, 21, 40, 0, 300));
            move_to(&app, jan(20, 22, 15, 0, 0));
            app = app.restarted(open(url).await);
            reconcilers = start_reconcilers(&sims, &app);
            settle(&app, t, &reconcilers, |i| {
                let mut now = states(i, &batch);
                now.sort();
                now == ["failed", "running"] && states(i, &steady).contains(&"running")
            })
            .await;
        }

        // 23:30:00.250 the test is over; on the 5th it was called off after half a minute.
        move_to(&app, if day == 5 { jan(5, 20, 0, 30, 0) } else { jan(day, 23, 30, 0, 250) });
        app.delete(&format!("/v1/batches/{batch}"), t).await.expect_status(StatusCode::OK);
        settle(&app, t, &reconcilers, |i| {
            states(i, &batch).iter().all(|s| *s == "terminated" || *s == "failed")
        })
        .await;
        nightly.push(batch);
    }

    // 5 February: January's grace period is over, and its invoice is final.
    move_to(&app, Utc.with_ymd_and_hms(2030, 2, 5, 0, 0, 0).unwrap());
    let invoice = app.get("/v1/invoices/2030-01", t).await.expect_status(StatusCode::OK);
    assert_eq!(invoice["state"], "final", "{invoice}");

    // The records say what happened: every end is the moment it happened, not when it was heard of.
    let instances = app.all_pages("/v1/instances", t).await;
    let ends = |batch: &str| -> Vec<(String, Option<DateTime<Utc>>)> {
        let mut ends: Vec<_> = of(&instances, batch)
            .map(|i| {
                (
                    i["state"].as_str().unwrap().to_string(),
                    i["ended_at"].as_str().map(|_| time(&i["ended_at"])),
                )
            })
            .collect();
        ends.sort();
        ends
    };
    let started = |batch: &str| of(&instances, batch).map(|i| time(&i["started_at"])).collect::<Vec<_>>();
    assert_eq!(
        ends(&steady),
        [(String::from("failed"), Some(jan(10, 14, 0, 0, 125))), (String::from("running"), None)]
    );
    assert_eq!(ends(&vm), [(String::from("failed"), Some(jan(10, 18, 30, 0, 500)))]);
    assert_eq!(
        started(&steady),
        [jan(1, 9, 0, 0, 333); 2],
        "a restart or a partition never restarts the meter"
    );
    assert_eq!(ends(&probe), vec![(String::from("terminated"), Some(jan(2, 16, 0, 0, 750))); 3]);
    for (day, batch) in (1..=31).zip(&nightly) {
        assert_eq!(started(batch), [jan(day, 20, 0, 0, 0); 2], "night {day}");
        let released = if day == 5 { jan(5, 20, 0, 30, 0) } else { jan(day, 23, 30, 0, 250) };
        let expected = match day {
            20 => vec![
                (String::from("failed"), Some(jan(20, 21, 40, 0, 300))),
                (String::from("terminated"), Some(released)),
            ],
            _ => vec![(String::from("terminated"), Some(released)); 2],
        };
        assert_eq!(ends(batch), expected, "night {day}");
    }

    // The invoice is the billing rule applied to those records, to the micro-unit, price by price.
    let expected = expected_invoice(&instances, app.clock_now());
    let lines: BTreeMap<String, i64> = invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["kind"], "usage", "{l}");
            (l["price_id"].as_str().unwrap().to_string(), l["amount_micros"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(lines, expected);
    assert_eq!(invoice["total_micros"].as_i64(), Some(expected.values().sum::<i64>()));
    assert_eq!(lines.len(), 3, "base container, spring container and VM prices were all charged: {lines:?}");

    // Usage over January says the same, however it is grouped; day by day it adds up exactly.
    let january = format!("from={}&to={}", jan(1, 0, 0, 0, 0).to_rfc3339(), february_first().to_rfc3339())
        .replace('+', "%2B");
    for group_by in ["", "&group_by=label:team", "&group_by=day", "&group_by=runtime", "&group_by=batch"] {
        let usage = app.get(&format!("/v1/usage?{january}{group_by}"), t).await.expect_status(StatusCode::OK);
        let total = usage["total"]["total_micros"].as_i64().unwrap();
        assert_eq!(total, invoice["total_micros"].as_i64().unwrap(), "usage{group_by}");
        if let Some(groups) = usage["groups"].as_array().filter(|_| !group_by.is_empty()) {
            let sum: i64 = groups.iter().map(|g| g["totals"]["total_micros"].as_i64().unwrap()).sum();
            assert_eq!(sum, total, "groups of usage{group_by} add up");
        }
    }

    // Read again later, the final invoice is the same invoice.
    move_to(&app, Utc.with_ymd_and_hms(2030, 3, 10, 0, 0, 0).unwrap());
    assert_eq!(app.get("/v1/invoices/2030-01", t).await.expect_status(StatusCode::OK), invoice);

    drop(reconcilers);
    for (_, sim) in sims {
        sim.shutdown().await.expect("shutdown");
    }
    app.store.close().await;
}

// ---- The independent computation -----------------------------------------------------------------

/// A price as this test knows it: micro-units per vCPU-, GiB- and GPU-second.
struct Rate {
    id: &'static str,
    cpu: i128,
    memory: i128,
    gpu: i128,
}

/// The price an instance of `runtime` pays at `at`: the base prices, and the spring container price.
fn rate_at(runtime: &str, at: DateTime<Utc>) -> Rate {
    match runtime {
        "vm" => Rate { id: "base-vm", cpu: 52, memory: 7, gpu: 1900 },
        "container" if at < price_change() => Rate { id: "base-container", cpu: 40, memory: 5, gpu: 1500 },
        "container" => Rate { id: "container-spring", cpu: 44, memory: 6, gpu: 1500 },
        other => panic!("no price for runtime {other}"),
    }
}

/// `n / d` rounded to the nearest integer, halves up (`n`, `d` > 0).
fn half_up(n: i128, d: i128) -> i128 {
    (2 * n + d) / (2 * d)
}

/// January's invoice, per price, worked out from the instance records alone by the documented rule:
/// an instance is billed from `started_at` to `ended_at` (or now), in whole seconds and at least a
/// minute; its time is cut at every 00:00 UTC and where its price changes; the billed time beyond
/// running time is added at the end; each piece's amount is rounded once per dimension.
fn expected_invoice(instances: &[Value], now: DateTime<Utc>) -> BTreeMap<String, i64> {
    let mut lines = BTreeMap::new();
    for instance in instances {
        if instance["started_at"].is_null() {
            continue;
        }
        let start = time(&instance["started_at"]);
        let end = if instance["ended_at"].is_null() { now } else { time(&instance["ended_at"]) };
        let running_ms = (end - start).num_milliseconds();
        let billed_ms = ((running_ms + 999) / 1000 * 1000).max(60_000);
        let mut cuts = vec![start, end];
        let mut midnight = start.date_naive().and_time(NaiveTime::MIN).and_utc() + Duration::days(1);
        while midnight < end {
            cuts.push(midnight);
            midnight += Duration::days(1);
        }
        if start < price_change() && price_change() < end {
            cuts.push(price_change());
        }
        cuts.sort();
        cuts.dedup();
        let mut pieces: Vec<(DateTime<Utc>, i64)> =
            cuts.windows(2).map(|w| (w[0], (w[1] - w[0]).num_milliseconds())).collect();
        let top_up = billed_ms - running_ms;
        let end_is_a_cut = end == price_change() || end.time() == NaiveTime::MIN;
        match pieces.last_mut() {
            Some(last) if !end_is_a_cut => last.1 += top_up,
            _ => pieces.push((end, top_up)),
        }
        let spec = spec(&instance["spec"]);
        let (milli_vcpu, mib, gpus) =
            (i128::from(spec.cpu.0), i128::from(spec.memory.0), i128::from(spec.gpu));
        for (from, ms) in pieces {
            if from < jan(1, 0, 0, 0, 0) || from >= february_first() || ms == 0 {
                continue;
            }
            let rate = rate_at(instance["runtime"].as_str().unwrap(), from);
            let ms = i128::from(ms);
            let amount = half_up(milli_vcpu * ms * rate.cpu, 1_000 * 1_000)
                + half_up(mib * ms * rate.memory, 1_024 * 1_000)
                + half_up(gpus * ms * rate.gpu, 1_000);
            *lines.entry(rate.id.to_string()).or_insert(0) += i64::try_from(amount).unwrap();
        }
    }
    lines
}

// ---- The simulated IDCs and the test's moves --------------------------------------------------------

async fn start_sims() -> BTreeMap<&'static str, SimCluster> {
    let mut sims = BTreeMap::new();
    for idc in [STEADY_IDC, NIGHTLY_IDC] {
        let sim = SimCluster::start(
            SimConfig::default()
                .name(idc)
                .engine(EngineConfig::default().boot_delay(StdDuration::ZERO))
                .node(NodeSpec::new(format!("{idc}-node-1")).cpu_millis(64_000).memory_mib(256 * 1024)),
        )
        .await
        .expect("start sim");
        sims.insert(idc, sim);
    }
    sims
}

/// One reconciler per simulated IDC, on the app's clock, quick to call a dead link dead.
fn start_reconcilers(sims: &BTreeMap<&'static str, SimCluster>, app: &App) -> Vec<IdcReconciler> {
    let config = ManagerConfig {
        probe_timeout: StdDuration::from_millis(300),
        failures_before_disconnect: 2,
        request_retries: 1,
        ..ManagerConfig::default()
    };
    sims.iter().map(|(idc, sim)| common::reconciler(app, idc, sim, &config)).collect()
}

/// Moves the clock forward to `at`.
fn move_to(app: &App, at: DateTime<Utc>) {
    let now = app.clock_now();
    assert!(at >= now, "the clock only moves forward: {now} -> {at}");
    app.clock.advance(at - now);
}

/// The tenant whose month this is, and how its instances are found in a cluster.
struct Customer {
    tenant: TenantId,
}

impl Customer {
    /// A batch's instance ids, in id order.
    async fn instance_ids(&self, app: &App, token: &str, batch: &str) -> Vec<String> {
        let mut ids = ids(&app.all_pages(&format!("/v1/batches/{batch}/instances"), token).await);
        ids.sort();
        ids
    }

    /// The instance's node stops it at `at`, whatever the link is doing.
    fn evict(&self, sim: &SimCluster, resource: Resource, instance: &str, at: DateTime<Utc>) {
        let name = manifest::object_name(&InstanceId(instance.to_string()));
        sim.evict(resource, &self.tenant.namespace(), &name, at).expect("evict");
    }
}

fn id(batch: &Value) -> String {
    batch["id"].as_str().expect("a batch id").to_string()
}

fn of<'a>(instances: &'a [Value], batch: &'a str) -> impl Iterator<Item = &'a Value> {
    instances.iter().filter(move |i| i["batch_id"] == batch)
}

/// The states of a batch's instances, in id order.
fn states<'a>(instances: &'a [Value], batch: &'a str) -> Vec<&'a str> {
    let mut of: Vec<&Value> = of(instances, batch).collect();
    of.sort_by_key(|i| i["id"].as_str());
    of.iter().map(|i| i["state"].as_str().unwrap()).collect()
}

fn hangzhou(count: u64, labels: Value) -> Value {
    with(&batch_in(count, json!({"areas": ["hangzhou"], "carriers": ["bgp"]})), |b| b["labels"] = labels)
}

fn shenzhen(count: u64, labels: Value) -> Value {
    with(&batch_in(count, json!({"areas": ["shenzhen"], "carriers": ["telecom"]})), |b| b["labels"] = labels)
}

#[test]
fn the_independent_rule_rounds_each_piece_once() {
    // 1 vCPU and 4 GiB from 23:59:59.900 to 00:00:00.500: 100 ms and 500 ms, topped up to a minute.
    let instance = json!({"started_at": jan(3, 23, 59, 59, 900).to_rfc3339(),
        "ended_at": jan(4, 0, 0, 0, 500).to_rfc3339(), "runtime": "container",
        "spec": {"cpu": "1", "memory": "4Gi", "gpu": 0}});
    // 100 ms: cpu 4, memory 2; 59,900 ms: cpu 2,396, memory 1,198.
    assert_eq!(expected_invoice(&[instance], jan(5, 0, 0, 0, 0))["base-container"], 4 + 2 + 2_396 + 1_198);
}
