//! Run one simulated cluster until Ctrl-C, for poking at it with kubectl:
//! `cargo run -p eci-edge-sim --example serve -- 127.0.0.1:8001`, then
//! `kubectl --server http://127.0.0.1:8001 get pods`.

use eci_edge_sim::{NodeSpec, SimCluster, SimConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into()).parse()?;
    let config = SimConfig::default()
        .addr(addr)
        .node(NodeSpec::new("edge-node-1").internal_ip("192.168.0.11"))
        .node(NodeSpec::new("edge-node-2").internal_ip("192.168.0.12"));
    let cluster = SimCluster::start(config).await?;
    println!("serving {} (Ctrl-C to stop)", cluster.url());
    tokio::signal::ctrl_c().await?;
    cluster.shutdown().await?;
    Ok(())
}
