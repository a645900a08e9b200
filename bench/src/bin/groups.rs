//! Autoscaled groups on the real loops, timed by the wall clock: the scaler's loop
//! (`eci_api::scaling::run`, a 15 s tick), one instance-manager reconciler per IDC (metrics read
//! every 15 s) and simulated IDC clusters, all in this process over a SQLite store.
//!
//! `cargo run --release -p eci-bench --bin groups` runs both; `-- --load` or `-- --window` one.
//!
//! - `--load` (target: from load crossing the target to the scale-out's Pods reaching the clusters,
//!   at most one tick plus the metrics interval): groups of `min 10, max 100, load: cpu, target 60`
//!   over 10 IDCs, their Pods at 40% of their request. CPU samples of instances started less than 5
//!   minutes ago are left out (the HPA's CPU initialisation period), so the groups first run for 5
//!   minutes; then, one group per trial, the group's Pods go to 150% and the time until the first
//!   Pod of its scale-out appears in a cluster's store is measured. What that takes depends on two
//!   phases: how long after the rise the next metrics read comes, and how long after that read the
//!   scaler ticks. The reconcilers' metrics reads all come at known moments (their loops start
//!   together), and before each trial the scaler's loop is stopped and started again at a chosen
//!   delay after a read (a failover), so that both phases are drawn, each from the trial's slice
//!   of 15 s: from near the best case to near the worst (a tick just before each read, the load
//!   rising just after one). Each trial has a group of its own, so that no trial waits out the
//!   previous one's scale-down stabilisation (300 s). About 5.5 minutes and 1.5 more per trial
//!   (`--trials N`, 3 by default).
//! - `--window` (target: a window of 1,000 instances over 100 IDCs all running by the window's
//!   start when `lead_seconds` is 60): a group of `min 0, max 1000` with one daily window in UTC
//!   starting at the next whole minute at least 90 s ahead, booking 1,000 with a 60 s lead. Prints
//!   when the first instance was placed and the first Pod reached a cluster relative to the moment
//!   the window opens (its start less the lead), when the last instance ran, and the margin left
//!   before the start. About 2.5 to 3.5 minutes.
//!
//! The scaler's and the reconcilers' warnings (and the scaler's `info` lines) go to stderr;
//! `RUST_LOG` overrides the filter.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, DurationRound, Timelike, Utc};
use clap::Parser;
use eci_api::scaling::ScalerConfig;
use eci_api::{ApiConfig, AppState};
use eci_core::builtin::SplitMix;
use eci_core::records::Workload;
use eci_core::{
    Carrier, Fleet, GroupId, IdcId, InstanceState, MiB, MilliCpu, PlacementSpec, Quota, Resources, Runtime,
    SystemClock, TenantId,
};
use eci_edge_sim::load::{LoadCurve, LoadUnit, Shape};
use eci_edge_sim::store::{EventType, WatchFrom};
use eci_edge_sim::{NodeSpec, Resource, SimCluster, SimConfig};
use eci_instance_manager::{ClusterClient, IdcReconciler, ManagerConfig, WorkQueue};
use eci_scaler::group::{EventKind, LABEL_GROUP, LoadSpec, Metric, Mode, Policy, Template, WindowSpec};
use eci_scaler::load::{Behaviour, Target};
use eci_scaler::tick::Member;
use eci_store::Store;
use eci_store::coordination::{Leases, RateWindows};
use eci_store::groups::{GroupEvent, GroupSpec};
use eci_store::testing::{self, TempDirGuard};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// The scaler's tick and the reconcilers' metrics interval, both their defaults.
const TICK: Duration = Duration::from_secs(15);
const METRICS_INTERVAL: Duration = Duration::from_secs(15);
/// The HPA's CPU initialisation period: samples of instances started more recently are left out.
const CPU_INITIALISATION: Duration = Duration::from_secs(300);
/// How often the figures are looked for.
const POLL: Duration = Duration::from_millis(50);
/// The load's selector on every Pod of the platform.
const EVERY_INSTANCE: &str = "eci.io/instance";

#[derive(Parser)]
#[command(about = "Autoscaled groups on the real loops: load to scale-out, and a window's lead")]
struct Args {
    /// Run only the load run (both run when neither flag is given).
    #[arg(long)]
    load: bool,
    /// Run only the window run (both run when neither flag is given).
    #[arg(long)]
    window: bool,
    /// Load rises measured, each at its own phases of the metrics reads and the scaler's tick.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    trials: u64,
}

/// Every group's instance: half a vCPU, 1 GiB.
const SPEC: Resources = Resources::new(MilliCpu(500), MiB(1024), 0);

/// The simulated IDCs of one run: `nodes` servers of 8 vCPU / 32 GiB each (64 instances of the
/// spec), the fleet's bound what the nodes hold.
struct Clusters {
    /// How many IDCs, each its own simulated cluster.
    idcs: usize,
    /// Servers per IDC.
    nodes: usize,
}

fn fleet(shape: &Clusters) -> Fleet {
    let per_idc = shape.nodes as u64;
    let capacity = Resources::new(MilliCpu(8_000 * per_idc), MiB(32 * 1024 * per_idc), 0);
    let idcs = (0..shape.idcs)
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

/// A Pod that appeared in a cluster's store: its group, and when (both clocks).
#[derive(Debug, Clone)]
struct NewPod {
    /// The group's id, from the Pod's label.
    group: String,
    /// When the create reached the cluster's store, for latencies.
    at: Instant,
    /// The same moment on the wall clock, to set beside a window's moments.
    wall: DateTime<Utc>,
}

/// The platform of one run: the store, the API's state with its scaler loop, the simulated
/// clusters and their reconcilers, and the Pods the clusters saw created.
struct Platform {
    store: Store,
    state: AppState,
    tenant: TenantId,
    sims: Vec<SimCluster>,
    pods: Arc<Mutex<Vec<NewPod>>>,
    /// Every reconciler's loops were spawned at this moment, so their metrics reads come at it
    /// and every `METRICS_INTERVAL` after (tokio's interval keeps to its schedule).
    metrics_origin: Instant,
    stop: watch::Sender<bool>,
    /// The reconcilers: they end when `stop` says so.
    reconcilers: Vec<JoinHandle<()>>,
    /// The scaler's loop and what stops it alone, so that it can start again at a chosen moment.
    scaler: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// The scaler's lease, kept across its restarts, as replicas share it.
    leases: Leases,
    /// The Pod watches: they end with their clusters.
    watches: Vec<JoinHandle<()>>,
    _dir: TempDirGuard,
}

impl Platform {
    async fn start(shape: &Clusters) -> anyhow::Result<Platform> {
        let (store, dir) = testing::sqlite_store_with(8).await;
        let queue = WorkQueue::default();
        let store = store.reporting_work_to(Arc::new(queue.clone()));
        let fleet = fleet(shape);
        testing::seed_fleet(&store, &fleet).await;
        let tenant = store.create_tenant("bench", Quota::default(), Utc::now()).await?;
        let pods: Arc<Mutex<Vec<NewPod>>> = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let (mut sims, mut ready, mut watches) = (Vec::new(), Vec::new(), Vec::new());
        for idc in &fleet.idcs {
            let mut config = SimConfig::default().name(idc.id.0.clone());
            for n in 0..shape.nodes {
                config = config
                    .node(NodeSpec::new(format!("{}-{n}", idc.id)).cpu_millis(8_000).memory_mib(32 * 1024));
            }
            let sim = SimCluster::start(config).await?;
            let live = sim.store().subscribe(Resource::Pods, None, WatchFrom::Now)?.live;
            watches.push(tokio::spawn(watch_pods(live, pods.clone())));
            let client = ClusterClient::for_url(&sim.url())?;
            let config = ManagerConfig { metrics_interval: METRICS_INTERVAL, ..ManagerConfig::default() };
            let reconciler = IdcReconciler::start(idc.id.clone(), client, store.clone(), &queue, config);
            reconciler.ready().await;
            ready.push(reconciler);
            sims.push(sim);
        }
        let metrics_origin = Instant::now();
        let reconcilers = ready.into_iter().map(|r| tokio::spawn(r.run(stopped.clone()))).collect();
        let state = AppState::new(
            store.clone(),
            RateWindows::in_process(),
            Arc::new(SystemClock),
            ApiConfig::default(),
        );
        let mut platform = Platform {
            store,
            state,
            tenant: tenant.id,
            sims,
            pods,
            metrics_origin,
            stop,
            reconcilers,
            scaler: None,
            leases: Leases::in_process(),
            watches,
            _dir: dir,
        };
        platform.start_scaler();
        Ok(platform)
    }

    /// Starts the scaler's loop: its first tick is now, the next every `TICK` after.
    fn start_scaler(&mut self) {
        let (stop, stopped) = watch::channel(false);
        let config = ScalerConfig { tick: TICK, ..ScalerConfig::default() };
        let run = eci_api::scaling::run(self.state.clone(), self.leases.clone(), config, stopped);
        self.scaler = Some((stop, tokio::spawn(run)));
    }

    /// Stops the scaler's loop, which gives its lease up.
    async fn stop_scaler(&mut self) -> anyhow::Result<()> {
        if let Some((stop, handle)) = self.scaler.take() {
            let _ = stop.send(true);
            handle.await?;
        }
        Ok(())
    }

    /// The first metrics read at or after `at`.
    fn next_metrics_read(&self, at: Instant) -> Instant {
        let since = at.saturating_duration_since(self.metrics_origin);
        let reads = since.as_nanos().div_ceil(METRICS_INTERVAL.as_nanos());
        self.metrics_origin + METRICS_INTERVAL * u32::try_from(reads).unwrap_or(u32::MAX)
    }

    /// Makes the Pods `selector` matches, in every cluster, use `percent` of their CPU request.
    fn set_cpu(&self, selector: &str, percent: f64) -> anyhow::Result<()> {
        let curve = LoadCurve::new(Shape::Constant { value: percent }, LoadUnit::PercentOfRequest)?;
        for sim in &self.sims {
            sim.set_load(selector, curve.clone())?;
        }
        Ok(())
    }

    /// Stores a group as `POST /v1/groups` does, and wakes the scaler as that route does.
    async fn create_group(&self, name: &str, policy: Policy) -> anyhow::Result<GroupId> {
        let template = Template {
            spec: SPEC,
            runtime: Runtime::Container,
            workload: Workload { image: "nginx:1.27".into(), ..Default::default() },
            labels: Default::default(),
            create_timeout_seconds: None,
        };
        let spec = GroupSpec {
            name: name.into(),
            labels: Default::default(),
            template,
            placement: PlacementSpec::default(),
            policy,
        };
        let group = self.store.create_group(&self.tenant, &spec, Utc::now()).await?;
        self.state.scaler_wake.notify_one();
        Ok(group.id)
    }

    /// The group's live instances as its scaler's tick sees them.
    async fn members(&self, group: &GroupId) -> anyhow::Result<Vec<Member>> {
        let group = self.store.get_group(&self.tenant, group).await?;
        Ok(self.store.group_members(&group, Utc::now()).await?.0)
    }

    /// The group's events from `since` on, oldest first.
    async fn events(&self, group: &GroupId, since: DateTime<Utc>) -> anyhow::Result<Vec<GroupEvent>> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.group_events(&self.tenant, group, cursor.as_deref(), 100).await?;
            events.extend(page.items.into_iter().filter(|e| e.at >= since));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(events),
            }
        }
    }

    /// The first Pod of `group` that appeared after `after`.
    fn first_pod(&self, group: &GroupId, after: Instant) -> Option<NewPod> {
        let pods = self.pods.lock().expect("pods lock");
        pods.iter().filter(|p| p.group == group.0 && p.at >= after).min_by_key(|p| p.at).cloned()
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_scaler().await?;
        let _ = self.stop.send(true);
        for task in self.reconcilers {
            task.await?;
        }
        for sim in self.sims {
            sim.shutdown().await?;
        }
        for task in self.watches {
            task.abort();
        }
        Ok(())
    }
}

/// Records every Pod created in one cluster, with its group, as the cluster's own store sees it.
async fn watch_pods(
    mut live: broadcast::Receiver<Arc<eci_edge_sim::store::Change>>,
    pods: Arc<Mutex<Vec<NewPod>>>,
) {
    let label = format!("/metadata/labels/{}", LABEL_GROUP.replace('/', "~1"));
    loop {
        match live.recv().await {
            Ok(change) if change.event == EventType::Added => {
                let (at, wall) = (Instant::now(), Utc::now());
                if let Some(group) = change.object.pointer(&label).and_then(|g| g.as_str()) {
                    pods.lock().expect("pods lock").push(NewPod { group: group.to_string(), at, wall });
                }
            }
            Ok(_) => {}
            // A watch that fell behind would miss creates; none of these runs is big enough to.
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                eprintln!("a cluster's Pod watch fell {missed} changes behind; figures may be late");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn running(members: &[Member]) -> usize {
    members.iter().filter(|m| m.state == InstanceState::Running).count()
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn span_seconds(s: Span) -> f64 {
    s.num_milliseconds() as f64 / 1e3
}

/// Waits until `group` has `count` instances running, for at most `limit`.
async fn until_running(
    platform: &Platform,
    group: &GroupId,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Member>> {
    let started = Instant::now();
    loop {
        let members = platform.members(group).await?;
        if running(&members) >= count {
            return Ok(members);
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "group {group}: {} of {count} running after {:.0} s",
            running(&members),
            seconds(limit)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// One load rise: when it was made, and what followed.
struct Trial {
    /// How long before a metrics read the load rose.
    before_read: Duration,
    /// How long after each metrics read the scaler ticked.
    tick_after_read: Duration,
    /// When it rose.
    raised_at: DateTime<Utc>,
    /// From the rise to the first, and to the last, of the group's instances sampled above 100%.
    first_sample: Option<Duration>,
    all_samples: Option<Duration>,
    /// From the rise to the first Pod of the scale-out in a cluster's store.
    first_pod: Option<Duration>,
    /// The scaler's decisions and scale events from the rise on.
    events: Vec<GroupEvent>,
}

fn load_policy() -> anyhow::Result<Policy> {
    Ok(Policy {
        min: 10,
        max: 100,
        schedules: vec![],
        load: Some(LoadSpec {
            metric: Metric::Cpu,
            target: Target::new(60.0)?,
            behaviour: Behaviour::default(),
        }),
        mode: Mode::Auto,
    })
}

async fn load_run(trials: u64) -> anyhow::Result<()> {
    let mut platform = Platform::start(&Clusters { idcs: 10, nodes: 4 }).await?;
    platform.set_cpu(EVERY_INSTANCE, 40.0)?;
    let mut groups = Vec::new();
    for n in 0..trials {
        groups.push(platform.create_group(&format!("load-{n}"), load_policy()?).await?);
    }
    let mut newest_start = None;
    for group in &groups {
        let members = until_running(&platform, group, 10, Duration::from_secs(120)).await?;
        let idcs: std::collections::BTreeSet<&IdcId> = members.iter().map(|m| &m.idc).collect();
        println!("load: group {group} at its minimum, 10 running over {} IDCs", idcs.len());
        newest_start = newest_start.max(members.iter().filter_map(|m| m.started_at).max());
    }
    // Until every instance is past its CPU initialisation, and a metrics read and a tick saw it so.
    let settled =
        newest_start.unwrap_or_else(Utc::now) + Span::from_std(CPU_INITIALISATION + METRICS_INTERVAL + TICK)?;
    let wait = (settled - Utc::now()).to_std().unwrap_or_default();
    println!(
        "load: waiting {:.0} s of real time: CPU samples of instances started less than 5 minutes ago are left out \
         (the HPA's CPU initialisation period), then one metrics read and one tick",
        seconds(wait)
    );
    tokio::time::sleep(wait).await;
    for group in &groups {
        let view = platform.store.get_group(&platform.tenant, group).await?;
        println!(
            "load: group {group} before its rise: {} -> {}, metric {:?}: {}",
            view.status.current,
            view.status.desired,
            view.status.metric.map(|m| (m.value, m.reporting)),
            view.status.reason
        );
    }

    let seed = Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
    let mut rng = SplitMix(seed);
    let mut results = Vec::new();
    for (n, group) in groups.iter().enumerate() {
        // How long before the next metrics read the load rises, and how long after each read the
        // scaler ticks, both drawn from the n-th of `trials` equal slices of 15 s: from near the
        // best case (the rise just before a read, the tick just after it) to near the worst (the
        // rise just after a read, the tick just before the next one).
        let slice = METRICS_INTERVAL.as_millis() as u64 / trials;
        let mut draw = || Duration::from_millis(n as u64 * slice + rng.below(slice.max(1)));
        let (before_read, tick_after_read) = (draw(), draw());
        let trial = load_trial(&mut platform, group, before_read, tick_after_read).await?;
        // The scale-out's tick (its events carry the tick's moment) to its first Pod: the
        // platform's own work (the pass up to the group, placement, the batch, the Pod create).
        let tick_to_pod = trial.events.iter().find(|e| e.kind == EventKind::ScaledOut).and_then(|e| {
            let pod = Span::from_std(trial.first_pod?).ok()?;
            Some(span_seconds(pod - (e.at - trial.raised_at)))
        });
        match trial.first_pod {
            Some(pod) => println!(
                "load: trial {}: load raised {:.2} s before a metrics read, the scaler ticking {:.2} s after each \
                 read; first sample at 150% after {}, all after {}; first new Pod in a cluster after {:.2} s \
                 ({} after the scale-out's tick)",
                n + 1,
                seconds(trial.before_read),
                seconds(trial.tick_after_read),
                trial.first_sample.map_or("-".into(), |d| format!("{:.2} s", seconds(d))),
                trial.all_samples.map_or("-".into(), |d| format!("{:.2} s", seconds(d))),
                seconds(pod),
                tick_to_pod.map_or("-".into(), |d| format!("{:.0} ms", d * 1e3)),
            ),
            None => println!("load: trial {}: no new Pod within 120 s of the rise", n + 1),
        }
        for event in &trial.events {
            println!(
                "    {:>6.2} s {:<12} {} -> {}: {}",
                span_seconds(event.at - trial.raised_at),
                event.kind,
                event.current,
                event.desired,
                event.message
            );
        }
        results.push(trial);
    }
    let latencies: Vec<Duration> = results.iter().filter_map(|t| t.first_pod).collect();
    let bound = TICK + METRICS_INTERVAL;
    let max = latencies.iter().max().copied();
    println!(
        "load: load crossing the target -> first Pod of the scale-out in a cluster, {} trials: {}; max {}; \
         bound (tick {:.0} s + metrics interval {:.0} s) {:.0} s: {}",
        results.len(),
        latencies.iter().map(|d| format!("{:.2} s", seconds(*d))).collect::<Vec<_>>().join(", "),
        max.map_or("-".into(), |d| format!("{:.2} s", seconds(d))),
        seconds(TICK),
        seconds(METRICS_INTERVAL),
        seconds(bound),
        if latencies.len() == results.len() && max.is_some_and(|m| m <= bound) { "met" } else { "NOT met" },
    );
    platform.shutdown().await
}

/// Restarts the scaler `tick_after_read` after a metrics read, moves `group`'s Pods to 150%
/// `before_read` before a later read, and times what follows.
async fn load_trial(
    platform: &mut Platform,
    group: &GroupId,
    before_read: Duration,
    tick_after_read: Duration,
) -> anyhow::Result<Trial> {
    let read = platform.next_metrics_read(Instant::now() + Duration::from_millis(500));
    platform.stop_scaler().await?;
    tokio::time::sleep_until((read + tick_after_read).into()).await;
    platform.start_scaler();
    tokio::time::sleep_until((read + 2 * METRICS_INTERVAL - before_read).into()).await;
    let original: Vec<Member> = platform.members(group).await?;
    let selector = format!("{LABEL_GROUP}={group}");
    let (raised, raised_wall) = (Instant::now(), Utc::now());
    platform.set_cpu(&selector, 150.0)?;

    let (mut first_sample, mut all_samples, mut first_pod) = (None, None, None);
    while raised.elapsed() < Duration::from_secs(120) {
        let members = platform.members(group).await?;
        let high = original
            .iter()
            .filter(|o| members.iter().any(|m| m.id == o.id && m.metric.is_some_and(|(v, _)| v >= 100.0)))
            .count();
        if high > 0 && first_sample.is_none() {
            first_sample = Some(raised.elapsed());
        }
        if high == original.len() && all_samples.is_none() {
            all_samples = Some(raised.elapsed());
        }
        if let Some(pod) = platform.first_pod(group, raised) {
            first_pod = Some(pod.at - raised);
            if all_samples.is_some() {
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    // Two more ticks: the whole of the scale-out, in however many steps it came.
    tokio::time::sleep(2 * TICK).await;
    platform.set_cpu(&selector, 40.0)?;
    let events = platform
        .events(group, raised_wall - Span::seconds(1))
        .await?
        .into_iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Decided | EventKind::ScaledOut | EventKind::ScaledIn | EventKind::CapacityLimited
            )
        })
        .collect();
    Ok(Trial {
        before_read,
        tick_after_read,
        raised_at: raised_wall,
        first_sample,
        all_samples,
        first_pod,
        events,
    })
}

async fn window_run() -> anyhow::Result<()> {
    let platform = Platform::start(&Clusters { idcs: 100, nodes: 2 }).await?;
    let lead = 60;
    let start = (Utc::now() + Span::seconds(90)).duration_trunc(Span::minutes(1))? + Span::minutes(1);
    let end = start + Span::minutes(10);
    let opens_at = start - Span::seconds(lead);
    let window = WindowSpec {
        start: format!("{} {} * * *", start.minute(), start.hour()),
        end: format!("{} {} * * *", end.minute(), end.hour()),
        timezone: "UTC".into(),
        desired: 1000,
        lead_seconds: lead as u32,
    };
    let policy = Policy { min: 0, max: 1000, schedules: vec![window.clone()], load: None, mode: Mode::Auto };
    let created_at = Utc::now();
    let group = platform.create_group("window", policy).await?;
    println!(
        "window: group {group} created at {}: `{}` to `{}` UTC, 1,000 over 100 IDCs, lead {lead} s: opens at {}, starts at {}",
        created_at.format("%H:%M:%S%.3f"),
        window.start,
        window.end,
        opens_at.format("%H:%M:%S"),
        start.format("%H:%M:%S"),
    );
    let members = loop {
        let members = platform.members(&group).await?;
        if running(&members) >= 1000 {
            break members;
        }
        anyhow::ensure!(
            Utc::now() < start + Span::minutes(3),
            "window: only {} of 1000 running 3 minutes after the window's start",
            running(&members)
        );
        tokio::time::sleep(POLL).await;
    };
    let seen_all = Utc::now();
    let first_placed = members.iter().map(|m| m.created_at).min().expect("1000 members");
    let last_running = members.iter().filter_map(|m| m.started_at).max().expect("1000 running");
    let first_pod = {
        let pods = platform.pods.lock().expect("pods lock");
        pods.iter().filter(|p| p.group == group.0).map(|p| p.wall).min()
    };
    let pods = platform.pods.lock().expect("pods lock").iter().filter(|p| p.group == group.0).count();
    let idcs: std::collections::BTreeSet<&IdcId> = members.iter().map(|m| &m.idc).collect();
    let rel = |at: DateTime<Utc>| format!("{:+.3} s", span_seconds(at - opens_at));
    println!(
        "window: first instance placed at opens_at {}; first Pod in a cluster at opens_at {}; \
         last instance running at opens_at {} (seen by polling at {}); {pods} Pods over {} IDCs",
        rel(first_placed),
        first_pod.map_or("-".into(), rel),
        rel(last_running),
        rel(seen_all),
        idcs.len(),
    );
    let margin = start - last_running;
    println!(
        "window: all 1,000 running {:.3} s after the window opened, {:.3} s before its start: {}",
        span_seconds(last_running - opens_at),
        span_seconds(margin),
        if margin >= Span::zero() { "met" } else { "NOT met" },
    );
    for event in platform.events(&group, created_at - Span::seconds(1)).await? {
        let message: String = event.message.chars().take(140).collect();
        println!(
            "    opens_at {:>+8.3} s {:<12} {} -> {}: {message}",
            span_seconds(event.at - opens_at),
            event.kind,
            event.current,
            event.desired
        );
    }
    platform.shutdown().await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,eci_api::scaling=info")),
        )
        .init();
    let both = !args.load && !args.window;
    let started = Instant::now();
    if args.load || both {
        load_run(args.trials).await?;
    }
    if args.window || both {
        window_run().await?;
    }
    println!("groups: done in {:.0} s", seconds(started.elapsed()));
    Ok(())
}
