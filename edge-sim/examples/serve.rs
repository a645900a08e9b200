//! Run one simulated cluster until Ctrl-C, for poking at it with kubectl:
//! `cargo run -p eci-edge-sim --example serve -- 127.0.0.1:8001 [objects.db]`, then
//! `kubectl --server http://127.0.0.1:8001 get pods`. Its objects live in memory, or in the SQLite
//! file given second, where a later run finds them again.

use eci_edge_sim::{NodeSpec, ObjectFile, SimCluster, SimConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into()).parse()?;
    let mut config = SimConfig::default()
        .addr(addr)
        .node(NodeSpec::new("edge-node-1").internal_ip("192.168.0.11"))
        .node(NodeSpec::new("edge-node-2").internal_ip("192.168.0.12"));
    if let Some(path) = args.next() {
        config = config.objects(ObjectFile::open(path.as_ref())?);
    }
    let cluster = SimCluster::start(config).await?;
    println!("serving {} (control {}; Ctrl-C to stop)", cluster.url(), cluster.control_url());
    tokio::signal::ctrl_c().await?;
    cluster.shutdown().await?;
    Ok(())
}
