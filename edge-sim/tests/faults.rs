//! Fault injection over HTTP, as tests and the demo use it: `PUT /sim/fault` makes the cluster
//! unreachable, black-holed, slow or flapping for every client, and heals it again.

use std::time::Duration;

use eci_edge_sim::{Fault, SimCluster, SimConfig};
use std::io::{Read, Write};

/// Sends `PUT /sim/fault` with `body` and returns the status code.
async fn put_fault(sim: &SimCluster, body: &str) -> u16 {
    let (addr, body) = (sim.addr(), body.to_string());
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

async fn answers(client: &kube::Client) -> bool {
    matches!(tokio::time::timeout(Duration::from_millis(500), client.apiserver_version()).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_set_over_http_cut_every_client_off_until_healed() {
    let sim = SimCluster::start(SimConfig::default().without_engine()).await.expect("start");
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    assert!(answers(&client).await);

    assert_eq!(put_fault(&sim, r#"{"fault": "unreachable"}"#).await, 204);
    assert!(!answers(&client).await, "an unreachable cluster answers nothing useful");

    // A black hole accepts and never answers; the admin endpoint still works, so it can be healed.
    assert_eq!(put_fault(&sim, r#"{"fault": "black_hole"}"#).await, 204);
    assert!(!answers(&client).await, "a black-holed cluster never answers");

    assert_eq!(put_fault(&sim, r#"{"fault": "slow"}"#).await, 400, "slow needs its delay");
    assert_eq!(put_fault(&sim, r#"{"fault": "cut"}"#).await, 400);
    assert_eq!(put_fault(&sim, r#"{"fault": "none"}"#).await, 204);
    assert!(answers(&client).await, "healed");

    sim.set_fault(Fault::Unreachable);
    assert!(!answers(&client).await);
    sim.set_fault(Fault::None);
    assert!(answers(&client).await);
    sim.shutdown().await.expect("shutdown");
}
