//! Instances from accepted to running, through the instance manager and simulated IDC clusters.
//!
//! `cargo run --release -p eci-bench --bin instances`: 10,000 instances over 100 simulated IDCs
//! (boot delay 0), created through the store as `POST /v1/batches` does and started by one
//! reconciler per IDC through the real `kube` client, all in this process. Prints the end-to-end
//! rate and the delay from a batch's acceptance to each of its Pods' create reaching its cluster
//! (seen in the cluster's own store).
//!
//! `cargo run --release -p eci-bench --bin instances -- --control-plane-rss`: 100,000 instances,
//! with the 100 simulated clusters in a child process, so that this process is the control plane
//! alone (store, reconcilers and their caches). Prints its RSS once everything runs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use eci_core::{
    BatchId, BatchRequest, Carrier, Fleet, Idc, InstanceState, MiB, MilliCpu, PlacementSpec, Quota,
    Resources, Runtime, TenantId, Workload,
};
use eci_edge_sim::store::{EventType, WatchFrom};
use eci_edge_sim::{EngineConfig, NodeSpec, Resource, SimCluster, SimConfig};
use eci_instance_manager::{ClusterClient, IdcReconciler, ManagerConfig, WorkQueue};
use eci_store::Store;
use eci_store::testing;
use tokio::sync::watch;

const IDCS: usize = 100;
const NODES_PER_IDC: usize = 10;

/// One run: how many instances of what size, in batches of how many.
struct Load {
    instances: u64,
    batch: u64,
    spec: Resources,
}

const THROUGHPUT: Load =
    Load { instances: 10_000, batch: 1_000, spec: Resources::new(MilliCpu(2000), MiB(4096), 0) };
const AT_SCALE: Load =
    Load { instances: 100_000, batch: 1_000, spec: Resources::new(MilliCpu(250), MiB(512), 0) };

/// 100 IDCs of 10 servers of 64 vCPU / 256 GiB (each holds 1,000 instances of 0.25 vCPU / 512 MiB).
fn fleet() -> Fleet {
    let capacity = Resources::new(MilliCpu(640_000), MiB(10 * 256 * 1024), 0);
    let idcs = (0..IDCS)
        .map(|i| {
            let city = format!("city{}", i % 20);
            testing::idc(
                &format!("idc-{i:03}"),
                ("south-china", "guangdong", &city),
                &[Carrier::Telecom],
                capacity,
            )
        })
        .collect();
    Fleet { idcs }
}

async fn start_sim(idc: &Idc) -> anyhow::Result<SimCluster> {
    let mut config = SimConfig::default()
        .name(idc.id.0.clone())
        .engine(EngineConfig::default().boot_delay(Duration::ZERO));
    for n in 0..NODES_PER_IDC {
        config = config.node(
            NodeSpec::new(format!("{}-{n}", idc.id)).cpu_millis(64_000).memory_mib(256 * 1024).pods(250),
        );
    }
    Ok(SimCluster::start(config).await?)
}

/// A `/proc/self/status` figure in MiB (`VmRSS` now, `VmHWM` the peak).
fn memory_mib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

fn request(load: &Load) -> BatchRequest {
    BatchRequest {
        count: load.batch,
        spec: load.spec,
        runtime: Runtime::Container,
        workload: Workload { image: "nginx:1.27".into(), ..Default::default() },
        placement: PlacementSpec { all_or_nothing: true, ..Default::default() },
        reservation_id: None,
        ttl_seconds: None,
        create_timeout_seconds: None,
        labels: Default::default(),
    }
}

/// Creates the load's batches, one every `every` (back to back when zero); returns when each was
/// accepted.
async fn accept(
    store: &Store,
    tenant: &TenantId,
    load: &Load,
    every: Duration,
) -> anyhow::Result<HashMap<BatchId, Instant>> {
    let mut accepted = HashMap::new();
    let mut ticks = tokio::time::interval(every.max(Duration::from_nanos(1)));
    for _ in 0..load.instances / load.batch {
        if !every.is_zero() {
            ticks.tick().await;
        }
        let created = store.create_batch(tenant, &request(load), None, chrono::Utc::now()).await?;
        accepted.insert(created.batch.id, Instant::now());
    }
    Ok(accepted)
}

/// Waits until every instance of the batches runs.
async fn all_running(
    store: &Store,
    tenant: &TenantId,
    batches: &[BatchId],
    load: &Load,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let mut running = 0;
        for id in batches {
            running +=
                store.get_batch(tenant, id).await?.counts.get(&InstanceState::Running).copied().unwrap_or(0);
        }
        if running == load.instances {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(1200) {
            anyhow::bail!("only {running} of {} running after 20 minutes", load.instances);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts one reconciler per IDC against the clusters at `urls`.
async fn reconcilers(
    fleet: &Fleet,
    urls: &[String],
    store: &Store,
    queue: &WorkQueue,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (idc, url) in fleet.idcs.iter().zip(urls) {
        let client = ClusterClient::for_url(url)?;
        let reconciler =
            IdcReconciler::start(idc.id.clone(), client, store.clone(), queue, ManagerConfig::default());
        reconciler.ready().await;
        handles.push(tokio::spawn(reconciler.run(stopped.clone())));
    }
    Ok(handles)
}

/// Prints the spread of delays from each batch's acceptance to its Pods' creates at their clusters.
fn report_delays(
    label: &str,
    arrivals: &Mutex<Vec<(String, Instant)>>,
    accepted: &HashMap<BatchId, Instant>,
    expected: u64,
) -> anyhow::Result<()> {
    let mut delays: Vec<Duration> = arrivals
        .lock()
        .expect("arrivals lock")
        .iter()
        .filter_map(|(batch, at)| Some(at.saturating_duration_since(*accepted.get(&BatchId(batch.clone()))?)))
        .collect();
    delays.sort();
    anyhow::ensure!(delays.len() as u64 == expected, "saw {} of {expected} Pod creates", delays.len());
    println!(
        "{label}: batch accepted -> Pod create at the cluster: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&delays, 0.50).as_secs_f64() * 1e3,
        percentile(&delays, 0.99).as_secs_f64() * 1e3,
        percentile(&delays, 1.0).as_secs_f64() * 1e3,
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn throughput() -> anyhow::Result<()> {
    let load = THROUGHPUT;
    let (store, _dir) = testing::sqlite_store_with(8).await;
    let queue = WorkQueue::default();
    let store = store.reporting_work_to(Arc::new(queue.clone()));
    let fleet = fleet();
    testing::seed_fleet(&store, &fleet).await;
    let tenant = store.create_tenant("bench", Quota::default(), chrono::Utc::now()).await?;
    let mut sims = Vec::new();
    // When each Pod's create reached its cluster, by batch: read from the cluster's own store.
    let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    for idc in &fleet.idcs {
        let sim = start_sim(idc).await?;
        let mut pods = sim.store().subscribe(Resource::Pods, None, WatchFrom::Now)?;
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Ok(change) = pods.live.recv().await {
                if change.event == EventType::Added {
                    let batch =
                        change.object.pointer("/metadata/labels/eci.io~1batch").and_then(|b| b.as_str());
                    if let Some(batch) = batch {
                        arrivals.lock().expect("arrivals lock").push((batch.to_string(), Instant::now()));
                    }
                }
            }
        });
        sims.push(sim);
    }
    let urls: Vec<String> = sims.iter().map(SimCluster::url).collect();
    let (stop, stopped) = watch::channel(false);
    let handles = reconcilers(&fleet, &urls, &store, &queue, &stopped).await?;

    // All at once: the end-to-end rate.
    let started = Instant::now();
    let accepted = accept(&store, &tenant.id, &load, Duration::ZERO).await?;
    let accepted_in = started.elapsed();
    let batches: Vec<BatchId> = accepted.keys().cloned().collect();
    all_running(&store, &tenant.id, &batches, &load).await?;
    let running_in = started.elapsed();
    println!(
        "{} instances over {IDCS} simulated IDCs at once: accepted in {:.2} s, all running after {:.2} s = {:.0} instances/s end to end",
        load.instances,
        accepted_in.as_secs_f64(),
        running_in.as_secs_f64(),
        load.instances as f64 / running_in.as_secs_f64(),
    );
    report_delays("at once", &arrivals, &accepted, load.instances)?;

    // The same number offered at 1,000 instances/s (a batch of 100 every 100 ms): the platform's own
    // delay, without the queue a burst builds.
    let paced = Load { instances: load.instances, batch: 100, spec: load.spec };
    let accepted = accept(&store, &tenant.id, &paced, Duration::from_millis(100)).await?;
    let batches: Vec<BatchId> = accepted.keys().cloned().collect();
    all_running(&store, &tenant.id, &batches, &paced).await?;
    report_delays("at 1,000 instances/s", &arrivals, &accepted, paced.instances)?;
    println!("peak RSS of the process, clusters included: {} MiB", memory_mib("VmHWM:").unwrap_or(0));
    let _ = stop.send(true);
    for h in handles {
        let _ = h.await;
    }
    for sim in sims {
        sim.shutdown().await?;
    }
    Ok(())
}

/// The child process of `--control-plane-rss`: serves the clusters, prints their URLs, and stops
/// when its stdin closes.
async fn serve_clusters() -> anyhow::Result<()> {
    let mut sims = Vec::new();
    for idc in &fleet().idcs {
        let sim = start_sim(idc).await?;
        println!("{}", sim.url());
        sims.push(sim);
    }
    println!("ready");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    for sim in sims {
        sim.shutdown().await?;
    }
    Ok(())
}

async fn control_plane_rss() -> anyhow::Result<()> {
    let load = AT_SCALE;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-clusters")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the clusters' process")?;
    let mut urls = Vec::new();
    for line in BufReader::new(child.stdout.take().context("no stdout")?).lines() {
        let line = line?;
        if line == "ready" {
            break;
        }
        urls.push(line);
    }
    anyhow::ensure!(urls.len() == IDCS, "the clusters' process started {} clusters", urls.len());

    let (store, _dir) = testing::sqlite_store_with(8).await;
    let queue = WorkQueue::default();
    let store = store.reporting_work_to(Arc::new(queue.clone()));
    let fleet = fleet();
    testing::seed_fleet(&store, &fleet).await;
    let tenant = store.create_tenant("bench", Quota::default(), chrono::Utc::now()).await?;
    let (stop, stopped) = watch::channel(false);
    let handles = reconcilers(&fleet, &urls, &store, &queue, &stopped).await?;
    let started = Instant::now();
    let accepted = accept(&store, &tenant.id, &load, Duration::ZERO).await?;
    let batches: Vec<BatchId> = accepted.keys().cloned().collect();
    all_running(&store, &tenant.id, &batches, &load).await?;
    let running_in = started.elapsed();
    // A few resyncs with everything running: the steady state, not the peak of the rush.
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "{} instances running over {IDCS} IDCs after {:.1} s ({:.0} instances/s); control plane RSS {} MiB now, {} MiB at peak",
        load.instances,
        running_in.as_secs_f64(),
        load.instances as f64 / running_in.as_secs_f64(),
        memory_mib("VmRSS:").unwrap_or(0),
        memory_mib("VmHWM:").unwrap_or(0)
    );
    let _ = stop.send(true);
    for h in handles {
        let _ = h.await;
    }
    drop(child.stdin.take());
    child.wait()?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None => throughput().await,
        Some("--control-plane-rss") => control_plane_rss().await,
        Some("--serve-clusters") => serve_clusters().await,
        Some(other) => anyhow::bail!("unknown argument `{other}` (expected --control-plane-rss)"),
    }
}
