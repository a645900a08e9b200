//! Instances from accepted to running: 10,000 instances over 100 simulated IDCs (boot delay 0),
//! created through the store as `POST /v1/batches` does, started by one instance-manager reconciler
//! per IDC through the real `kube` client. Prints throughput and the process's peak RSS.
//!
//! `cargo run --release -p eci-bench --bin instances`

use std::time::{Duration, Instant};

use eci_core::{
    Area, BatchRequest, Carrier, Fleet, Idc, IdcId, IdcStatus, InstanceState, MiB, MilliCpu, PlacementSpec,
    Quota, Resources, Runtime, Workload,
};
use eci_edge_sim::{EngineConfig, NodeSpec, SimCluster, SimConfig};
use eci_instance_manager::reconciler::{IdcReconciler, ManagerConfig, cluster_client};
use eci_store::testing;
use tokio::sync::watch;

const IDCS: usize = 100;
const INSTANCES: u64 = 10_000;
const BATCH: u64 = 1_000;

fn fleet() -> Fleet {
    let idcs = (0..IDCS)
        .map(|i| Idc {
            id: IdcId(format!("idc-{i:03}")),
            name: format!("idc {i}"),
            area: Area::new("south-china", "guangdong", &format!("city{}", i % 20)),
            carriers: vec![Carrier::Telecom],
            // 10 servers of 32 vCPU / 128 GiB: room for 160 instances of 2 vCPU / 4 GiB.
            capacity: Resources::new(MilliCpu(320_000), MiB(10 * 128 * 1024), 0),
            runtimes: vec![Runtime::Container],
            status: IdcStatus::Active,
            kube_context: None,
            rich_runtime_class: None,
            ssh_ingress_host: None,
        })
        .collect();
    Fleet { idcs }
}

/// Peak resident set size of this process, from /proc.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (store, _dir) = testing::sqlite_store_with(8).await;
    let fleet = fleet();
    let now = chrono::Utc::now();
    store.sync_fleet(&fleet, now).await?;
    let tenant = store.create_tenant("bench", Quota::default(), now).await?;

    let (stop, stopped) = watch::channel(false);
    let mut sims = Vec::new();
    let mut reconcilers = Vec::new();
    for idc in &fleet.idcs {
        let mut config = SimConfig::default()
            .name(idc.id.0.clone())
            .engine(EngineConfig::default().boot_delay(Duration::ZERO));
        for n in 0..10 {
            config = config.node(
                NodeSpec::new(format!("{}-{n}", idc.id)).cpu_millis(32_000).memory_mib(128 * 1024).pods(250),
            );
        }
        let sim = SimCluster::start(config).await?;
        let client = cluster_client(kube::Config::new(sim.url().parse()?))?;
        let reconciler =
            IdcReconciler::start(idc.id.clone(), client, store.clone(), ManagerConfig::default());
        reconciler.ready().await;
        reconcilers.push(tokio::spawn(reconciler.run(stopped.clone())));
        sims.push(sim);
    }

    let request = BatchRequest {
        count: BATCH,
        spec: Resources::new(MilliCpu(2000), MiB(4096), 0),
        runtime: Runtime::Container,
        workload: Workload { image: "nginx:1.27".into(), ..Default::default() },
        placement: PlacementSpec { all_or_nothing: true, ..Default::default() },
        reservation_id: None,
        ttl_seconds: None,
        labels: Default::default(),
    };
    let started = Instant::now();
    for _ in 0..INSTANCES / BATCH {
        store.create_batch(&tenant.id, &request, None, chrono::Utc::now()).await?;
    }
    let accepted = started.elapsed();
    let mut running = 0;
    while running < INSTANCES {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let filter = eci_store::instances::InstanceFilter {
            state: Some(InstanceState::Running),
            ..Default::default()
        };
        running = 0;
        let mut cursor: Option<String> = None;
        loop {
            let page = store.list_instances(&tenant.id, &filter, cursor.as_deref(), 1000).await?;
            running += page.items.len() as u64;
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {running} of {INSTANCES} running after 10 minutes");
        }
    }
    let all_running = started.elapsed();
    println!(
        "{INSTANCES} instances over {IDCS} simulated IDCs: accepted in {:.2} s, all running after {:.2} s = {:.0} instances/s end to end; peak RSS {} MiB",
        accepted.as_secs_f64(),
        all_running.as_secs_f64(),
        INSTANCES as f64 / all_running.as_secs_f64(),
        peak_rss_mib().unwrap_or(0)
    );
    let _ = stop.send(true);
    for r in reconcilers {
        let _ = r.await;
    }
    for sim in sims {
        sim.shutdown().await?;
    }
    Ok(())
}
