//! Month-to-date usage on PostgreSQL: `Store::usage`, what `GET /v1/usage` serves by default, for a
//! tenant with 100,000 instances in the month.
//!
//! `cargo run --release -p eci-bench --bin usage`: seeds a fresh database through the store's own
//! writes (batches of 1,000 placed over the built-in fleet, then `creating`, `running`, a few
//! failures and releases), then measures `acme`'s usage from the start of November 2026 to just
//! past 20 November 15:00, the window `GET /v1/usage` asks for by default: not grouped (target: at
//! most 200 ms), by batch and by `label:team`. Prints the best and the median of 5 runs after one
//! warm-up, and apart the parts of the ungrouped figure: the SQL read (`metered_instances`), the
//! price catalogue, and the rating in `eci-billing`. Seeding is in no figure.
//!
//! `-- --keep-database` leaves the database behind and prints its URL, for `EXPLAIN ANALYZE` in
//! psql (the next run of any PostgreSQL test drops it).
//!
//! The table holds more than `acme`'s month: its September and October (100,000 instances that
//! ended then) and two other tenants' 160,000, so the read has to pick the tenant's month out of
//! 360,000 rows.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use eci_bench::{HOUR_MS, MINUTE_MS, SECOND_MS, between, labels, price};
use eci_billing::{DAY_MS, GroupBy, Period, PriceTier, Window};
use eci_core::builtin::{SplitMix, builtin_fleet};
use eci_core::{
    BatchId, BatchRequest, BatchState, Carrier, InstanceId, MiB, MilliCpu, PlacementSpec, Quota, Resources,
    Runtime, SshEndpoint, TenantId, Workload,
};
use eci_store::Store;
use eci_store::billing::BillingPolicy;
use eci_store::instances::{InstanceFilter, Observed};
use eci_store::testing;
use tokio::task::JoinSet;

const PER_BATCH: u64 = 1_000;
const RUNS: usize = 5;

/// How many batches go through their lives at once while seeding: the store's writes are mostly
/// round trips to the database, which overlap.
const SEEDERS: usize = 4;

/// A tenant to seed, in batches of 1,000.
struct TenantPlan {
    name: &'static str,
    /// Batches that ran and ended in September and October.
    earlier: u64,
    /// Batches started in October and still metered in November.
    carried_over: u64,
    /// Batches started in November.
    in_month: u64,
}

/// `acme` is measured; the others are there so that its rows are a fraction of the table.
const TENANTS: [TenantPlan; 3] = [
    TenantPlan { name: "acme", earlier: 100, carried_over: 5, in_month: 95 },
    TenantPlan { name: "globex", earlier: 40, carried_over: 10, in_month: 50 },
    TenantPlan { name: "initech", earlier: 20, carried_over: 5, in_month: 35 },
];

/// Seconds after its batch's creation at which an instance runs, by its position in the batch.
const BOOT_SECONDS: [i64; 4] = [3, 7, 12, 25];

fn at(ms: i64) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).with_context(|| format!("{ms} ms is no time"))
}

/// One batch to seed.
struct Planned {
    tenant: usize,
    created_ms: i64,
    /// When its owner releases it; `None` while it still runs at the benchmark's `now`.
    released_ms: Option<i64>,
    request: BatchRequest,
}

/// A batch's size, runtime, placement and labels, about as the rating benchmark draws them.
fn request(rng: &mut SplitMix) -> BatchRequest {
    let runtime = match rng.below(10) {
        0..=6 => Runtime::Container,
        7..=8 => Runtime::Rich,
        _ => Runtime::Vm,
    };
    let cpu = [250, 500, 1_000, 2_000, 4_000][rng.below(5) as usize];
    let memory = (cpu * [2_048, 4_096][rng.below(2) as usize] / 1_000).max(512);
    let gpu = u32::from(runtime == Runtime::Container && rng.below(50) == 0);
    // Rich containers and VMs run in too few IDCs of some provinces to take 1,000 there.
    let areas = match (runtime, rng.below(10)) {
        (Runtime::Container, 0..=1) => vec!["south-china".to_owned()],
        (Runtime::Container, 2) => vec!["guangdong".to_owned()],
        (Runtime::Container, 3) => vec!["east-china".to_owned()],
        _ => Vec::new(),
    };
    BatchRequest {
        count: PER_BATCH,
        spec: Resources::new(MilliCpu(cpu), MiB(memory), gpu),
        runtime,
        workload: Workload { image: "registry.example/app:1.0".into(), ..Default::default() },
        placement: PlacementSpec { areas, all_or_nothing: true, ..Default::default() },
        reservation_id: None,
        ttl_seconds: None,
        create_timeout_seconds: None,
        labels: labels(rng),
    }
}

/// Every tenant's batches, oldest first. Batches that start in a month live from two minutes to
/// past its end; a quarter of them are services that are never released.
fn plan(month: Window, now_ms: i64) -> Vec<Planned> {
    let mut rng = SplitMix(0x2026_1120);
    let (september, october) = (month.from_ms() - 61 * DAY_MS, month.from_ms() - 31 * DAY_MS);
    let mut planned = Vec::new();
    for (tenant, plan) in TENANTS.iter().enumerate() {
        for _ in 0..plan.earlier {
            let created_ms = between(&mut rng, september, october + 24 * DAY_MS);
            let released_ms = Some(created_ms + between(&mut rng, HOUR_MS, 5 * DAY_MS));
            planned.push(Planned { tenant, created_ms, released_ms, request: request(&mut rng) });
        }
        for _ in 0..plan.carried_over {
            let created_ms = between(&mut rng, october + 14 * DAY_MS, month.from_ms());
            let released_ms =
                (rng.below(5) < 2).then(|| between(&mut rng, month.from_ms(), now_ms - HOUR_MS));
            planned.push(Planned { tenant, created_ms, released_ms, request: request(&mut rng) });
        }
        for _ in 0..plan.in_month {
            let created_ms = between(&mut rng, month.from_ms(), now_ms - HOUR_MS);
            let life = match rng.below(100) {
                0..=29 => Some(between(&mut rng, 2 * MINUTE_MS, 6 * HOUR_MS)),
                30..=59 => Some(between(&mut rng, 6 * HOUR_MS, 5 * DAY_MS)),
                60..=74 => Some(between(&mut rng, 5 * DAY_MS, 45 * DAY_MS)),
                _ => None,
            };
            let released_ms = life.map(|life| created_ms + life).filter(|&end| end < now_ms);
            planned.push(Planned { tenant, created_ms, released_ms, request: request(&mut rng) });
        }
    }
    planned.sort_by_key(|p| p.created_ms);
    planned
}

/// The built-in fleet made fifty times bigger: every batch of the seed is created before any is
/// released (see [`seed`]), so all of them must fit at once.
fn roomy_fleet() -> eci_core::Fleet {
    let mut fleet = builtin_fleet();
    for idc in &mut fleet.idcs {
        idc.capacity = idc.capacity * 50;
    }
    fleet
}

/// Prices on top of the migration's base prices: tiers by region, province and carrier from the
/// start of September, and new versions of two of them from 12:00 on 15 November, published on the
/// 1st, so that the instances running through that moment are rated in two pieces.
async fn seed_prices(store: &Store, month: Window) -> anyhow::Result<()> {
    use Runtime::{Container, Rich, Vm};
    let september = month.from_ms() - 61 * DAY_MS;
    let mid = month.from_ms() + 14 * DAY_MS + 12 * HOUR_MS;
    let south = || PriceTier::new(Some("south-china"), None, None, None);
    let guangdong = || PriceTier::new(Some("south-china"), Some("guangdong"), None, None);
    let east_bgp = PriceTier::new(Some("east-china"), None, None, Some(Carrier::Bgp));
    let mobile = PriceTier::new(None, None, None, Some(Carrier::Mobile));
    let prices = [
        ("container-south", Container, south(), september, (46, 5, 1_650)),
        ("rich-south", Rich, south(), september, (55, 6, 1_850)),
        ("container-guangdong", Container, guangdong(), september, (44, 5, 1_600)),
        ("vm-guangdong", Vm, guangdong(), september, (60, 7, 1_950)),
        ("container-east-bgp", Container, east_bgp, september, (53, 6, 1_750)),
        ("container-mobile", Container, mobile, september, (50, 5, 1_700)),
        ("container-2026-11-15", Container, PriceTier::default(), mid, (52, 6, 1_750)),
        ("container-guangdong-2026-11-15", Container, guangdong(), mid, (47, 5, 1_650)),
    ];
    for (id, runtime, tier, effective_from_ms, rates) in prices {
        let published = if effective_from_ms == mid { month.from_ms() } else { effective_from_ms };
        store.add_price(price(id, runtime, tier, effective_from_ms, rates), at(published)?).await?;
    }
    Ok(())
}

/// The live instances of a released batch have turned `stopping`; this records their Pods gone, a
/// few seconds apart, in one transaction for the batch.
async fn pods_gone(
    store: &Store,
    rng: &mut SplitMix,
    ids: &[InstanceId],
    released_ms: i64,
) -> anyhow::Result<()> {
    let gone = ids
        .iter()
        .map(|id| Ok((id.clone(), at(released_ms + between(rng, SECOND_MS, 10 * SECOND_MS))?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    testing::record_gone_at(store, &gone).await;
    Ok(())
}

/// A planned batch as created: its id, and its instances' ids in the order they were placed.
struct Created {
    batch: BatchId,
    instances: Vec<InstanceId>,
}

/// Creates the planned batches one after the other, in their order: where a batch goes depends on
/// the room the earlier ones left, and this way it is the same on every run.
async fn create_batches(
    store: &Store,
    tenants: &[TenantId],
    planned: &[Planned],
) -> anyhow::Result<Vec<Created>> {
    let mut created = Vec::with_capacity(planned.len());
    for planned in planned {
        let tenant = &tenants[planned.tenant];
        let batch = store.create_batch(tenant, &planned.request, None, at(planned.created_ms)?).await?.batch;
        let filter = InstanceFilter { batch_id: Some(batch.id.clone()), ..Default::default() };
        let instances =
            testing::all_instances(store, tenant, &filter).await.into_iter().map(|i| i.id).collect();
        created.push(Created { batch: batch.id, instances });
    }
    Ok(created)
}

/// Takes a created batch through its life: `creating`, `running` in four waves, a few failures, and
/// its release if it has one.
async fn live(
    store: &Store,
    rng: &mut SplitMix,
    tenant: &TenantId,
    planned: &Planned,
    created: &Created,
    now_ms: i64,
) -> anyhow::Result<()> {
    let created_ms = planned.created_ms;
    let ids = &created.instances;
    store.record_created(ids, at(created_ms + SECOND_MS)?).await?;

    // One in 400 never runs (its image cannot be pulled); one in 200 of the rest dies on its own
    // before its batch is released.
    let mut never_ran = Vec::new();
    let mut dies = Vec::new();
    let mut booting: [Vec<_>; BOOT_SECONDS.len()] = Default::default();
    for (n, id) in ids.iter().enumerate() {
        if rng.below(400) == 0 {
            never_ran.push(id);
            continue;
        }
        if rng.below(200) == 0 {
            dies.push((id, n % BOOT_SECONDS.len()));
        }
        let ip = format!("10.{}.{}.{}", n / 65_536, n / 256 % 256, n % 256);
        let ssh = (planned.request.runtime != Runtime::Container).then(|| SshEndpoint {
            host: "ssh.example".into(),
            port: 30_000 + (n % 2_000) as u16,
            user: "root".into(),
        });
        booting[n % BOOT_SECONDS.len()].push((id.clone(), Some(ip), ssh));
    }
    for (seconds, running) in BOOT_SECONDS.iter().zip(&booting) {
        store.record_running(running, at(created_ms + seconds * SECOND_MS)?).await?;
    }
    for id in never_ran {
        let failed = Observed::Failed { reason: "image pull failed".into(), ended_at: None };
        store.record_observation(id, &failed, at(created_ms + 90 * SECOND_MS)?).await?;
    }
    let stop_ms = planned.released_ms.unwrap_or(now_ms);
    for (id, boot) in dies {
        let started_ms = created_ms + BOOT_SECONDS[boot] * SECOND_MS;
        let died_ms = between(rng, started_ms + 1, stop_ms);
        let failed = Observed::Failed { reason: "crash loop".into(), ended_at: Some(at(died_ms)?) };
        store.record_observation(id, &failed, at((died_ms + 30 * SECOND_MS).min(stop_ms))?).await?;
    }
    if let Some(released_ms) = planned.released_ms {
        store
            .release_batch(
                tenant,
                &created.batch,
                BatchState::Released,
                &testing::operator(),
                at(released_ms)?,
            )
            .await?;
        pods_gone(store, rng, ids, released_ms).await?;
    }
    Ok(())
}

/// Seeds the planned batches: creates them in order, then takes them through their lives
/// [`SEEDERS`] at a time (each with a generator of its own, so the outcome does not depend on which
/// goes first), then leaves the table as autovacuum would within minutes of such a load (vacuumed
/// and analysed), so that it does not do so in the middle of a measurement.
async fn seed(store: &Store, tenants: &[TenantId], planned: Vec<Planned>, now_ms: i64) -> anyhow::Result<()> {
    testing::lift_deletion_budgets(store).await;
    let created: Arc<[Created]> = create_batches(store, tenants, &planned).await?.into();
    let planned: Arc<[Planned]> = planned.into();
    let mut seeders = JoinSet::new();
    for first in 0..SEEDERS {
        let (store, tenants) = (store.clone(), tenants.to_vec());
        let (planned, created) = (planned.clone(), created.clone());
        seeders.spawn(async move {
            for n in (first..planned.len()).step_by(SEEDERS) {
                let mut rng = SplitMix(0x0EC1_5EED ^ n as u64);
                let tenant = &tenants[planned[n].tenant];
                live(&store, &mut rng, tenant, &planned[n], &created[n], now_ms).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(seeder) = seeders.join_next().await {
        seeder??;
    }
    testing::vacuum_analyze(store).await;
    Ok(())
}

/// Runs `f` once to warm up, then `RUNS` times; returns its times, fastest first, and its last
/// result.
async fn timed<T, E, F, Fut>(mut f: F) -> anyhow::Result<(Vec<Duration>, T)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    f().await.map_err(Into::into)?;
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let result = black_box(f().await.map_err(Into::into)?);
        times.push(started.elapsed());
        last = Some(result);
    }
    times.sort_unstable();
    Ok((times, last.context("no run")?))
}

fn best_and_median(times: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("best {:>6.1} ms, median {:>6.1} ms", ms(times[0]), ms(times[times.len() / 2]))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keep = std::env::args().any(|a| a == "--keep-database");
    let period = Period::new(2026, 11)?;
    let month = period.window();
    let now = Utc.with_ymd_and_hms(2026, 11, 20, 15, 0, 0).single().context("a valid date")?;
    let now_ms = now.timestamp_millis();
    let Some(db) = testing::postgres_database(SEEDERS as u32 * 2).await else {
        anyhow::bail!("PostgreSQL is not reachable; this benchmark needs it");
    };
    let store = db.store.clone();

    let started = Instant::now();
    let september = at(month.from_ms() - 61 * DAY_MS)?;
    testing::seed_fleet(&store, &roomy_fleet()).await;
    let mut tenants = Vec::new();
    for plan in &TENANTS {
        tenants.push(store.create_tenant(plan.name, Quota::default(), september).await?.id);
    }
    seed_prices(&store, month).await?;
    let planned = plan(month, now_ms);
    let batches = planned.len();
    seed(&store, &tenants, planned, now_ms).await?;
    println!(
        "seeded {} instances of {} tenants in {} batches in {:.0} s (not in any figure below)",
        batches as u64 * PER_BATCH,
        TENANTS.len(),
        batches,
        started.elapsed().as_secs_f64(),
    );

    let acme = &tenants[0];
    let window = Window::new(month.from_ms(), now_ms + 1)?;
    let policy = BillingPolicy::default();
    let month_rows = store.metered_instances(acme, window, false).await?;
    let live = month_rows.iter().filter(|i| i.ended_ms.is_none()).count();
    let before = month_rows.iter().filter(|i| i.started_ms.is_some_and(|s| s < month.from_ms())).count();
    println!(
        "acme's month to {now}: {} instances ran in it ({live} still running, {before} started in October); \
         {} prices, two changed at {period}-15 12:00 UTC",
        month_rows.len(),
        store.price_catalogue().await?.prices().len(),
    );

    let (times, total) = timed(|| store.usage(acme, window, None, &policy, now)).await?;
    println!(
        "usage, not grouped     {}  (target <= 200 ms): {} instances charged, total {} micro-units",
        best_and_median(&times),
        total.instances,
        total.total.amounts.total.0,
    );
    for group_by in [GroupBy::Batch, GroupBy::Label("team".into())] {
        let (times, usage) = timed(|| store.usage(acme, window, Some(&group_by), &policy, now)).await?;
        anyhow::ensure!(usage.total == total.total, "usage by {group_by} adds up to another total");
        println!(
            "usage by {:<14} {}: {} groups",
            group_by.to_string(),
            best_and_median(&times),
            usage.groups.len()
        );
    }

    let (times, rows) = timed(|| store.metered_instances(acme, window, false)).await?;
    println!("  SQL read             {}: {} rows", best_and_median(&times), rows.len());
    let (times, _) = timed(|| store.metered_instances(acme, window, true)).await?;
    println!("  SQL read with labels {}", best_and_median(&times));
    let (times, catalogue) = timed(|| store.price_catalogue()).await?;
    println!("  price catalogue      {}", best_and_median(&times));
    let (times, rated) =
        timed(|| async { eci_billing::usage(&rows, &catalogue, &policy.metering, window, now_ms, None) })
            .await?;
    anyhow::ensure!(rated.total == total.total, "rating alone adds up to another total");
    println!("  rating alone         {}", best_and_median(&times));

    if keep {
        store.close().await;
        println!("kept the database: {}", db.url);
    } else {
        db.cleanup().await;
    }
    Ok(())
}
