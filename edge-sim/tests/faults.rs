//! Fault injection over HTTP, as tests and the demo use it: `PUT /sim/fault` makes the cluster
//! unreachable, black-holed, slow or flapping for every client, and heals it again.

use std::time::Duration;

use eci_edge_sim::{Fault, SimCluster, SimConfig};
use std::io::{Read, Write};

/// Sends `PUT /sim/fault` with `body` and returns the status code.
async fn put_fault(sim: &SimCluster, body: &str) -> u16 {
    let (addr, body) = (sim.control_addr(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        let request = format!(
            "PUT /sim/fault HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("a status line")
    })
    .await
    .expect("the request thread")
}

/// Whether `check` comes true within a generous guard: the listener applies a new fault a moment
/// after it is set.
async fn soon<F: AsyncFnMut() -> bool>(mut check: F) -> bool {
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Whether connecting to the cluster's API port is refused.
async fn refused(sim: &SimCluster) -> bool {
    matches!(
        tokio::net::TcpStream::connect(sim.addr()).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

async fn answers(client: &kube::Client) -> bool {
    matches!(tokio::time::timeout(Duration::from_millis(500), client.apiserver_version()).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_set_over_http_cut_every_client_off_until_healed() {
    let sim = SimCluster::start(SimConfig::default().without_engine()).await.expect("start");
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    assert!(answers(&client).await);

    assert_eq!(put_fault(&sim, r#"{"fault": "unreachable"}"#).await, 204);
    // The client's pooled connection is cut and a new one is refused, as for a real IDC out of reach.
    assert!(!answers(&client).await, "an unreachable cluster answers nothing");
    assert!(soon(async || refused(&sim).await).await, "connecting is refused");

    // A black hole accepts and never answers; the admin endpoint still works, so it can be healed.
    assert_eq!(put_fault(&sim, r#"{"fault": "black_hole"}"#).await, 204);
    assert!(!answers(&client).await, "a black-holed cluster never answers");

    assert_eq!(put_fault(&sim, r#"{"fault": "slow"}"#).await, 400, "slow needs its delay");
    assert_eq!(put_fault(&sim, r#"{"fault": "cut"}"#).await, 400);
    assert_eq!(put_fault(&sim, r#"{"fault": "none"}"#).await, 204);
    assert!(soon(async || answers(&client).await).await, "healed, on the same address");

    sim.set_fault(Fault::Unreachable);
    assert!(!answers(&client).await);
    sim.set_fault(Fault::None);
    assert!(soon(async || answers(&client).await).await);
    sim.shutdown().await.expect("shutdown");
}

/// A partition reaches watches that were already streaming: they end, and what changes in the
/// cluster meanwhile is not delivered over the broken link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_watches_already_streaming() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};

    let sim = SimCluster::start(SimConfig::default().without_engine()).await.expect("start");
    let mut config = kube::Config::new(sim.url().parse().unwrap());
    config.default_retry = false;
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}}))
            .unwrap()
    };
    let mut events = pods.watch(&WatchParams::default(), "0").await.expect("watch").boxed();
    pods.create(&PostParams::default(), &pod("before")).await.expect("create");
    let first = events.try_next().await.expect("an event").expect("the stream is open");
    assert!(matches!(first, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("before")));

    sim.set_fault(Fault::Unreachable);
    let during = serde_json::json!({"metadata": {"name": "during"}, "spec": {"containers": [{"name": "c"}]}});
    sim.store().create(eci_edge_sim::Resource::Pods, Some("default"), during).expect("create in the cluster");
    // A generous guard against a hang, not a speed bound: the stream ends as soon as the link breaks.
    let rest = tokio::time::timeout(Duration::from_secs(60), events.collect::<Vec<_>>())
        .await
        .expect("the watch ends when the link goes down");
    assert!(
        !rest
            .iter()
            .any(|e| matches!(e, Ok(WatchEvent::Added(p)) if p.metadata.name.as_deref() == Some("during"))),
        "nothing crosses a broken link: {rest:?}"
    );
    sim.set_fault(Fault::None);
    sim.shutdown().await.expect("shutdown");
}
