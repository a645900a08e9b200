//! What risk control adds to a delete: instances released one after another through the store as
//! `DELETE /v1/instances/{id}` releases them, each timed whole and in its risk check (the
//! protection lookup and the gate inside the release's transaction: the bulk guard, an approval,
//! the windows, the audit line), read from the `risk_check` spans the store opens around them.
//!
//! `cargo run --release -p eci-bench --bin risk`: 5,000 deletions on the embedded SQLite database
//! with the deletion windows in process. `-- --postgres [--redis-url redis://…]` runs them on a
//! fresh database of the PostgreSQL at `ECI_TEST_DATABASE_URL` (the tests' server by default), the
//! windows in Redis when given. Target: the risk check adds at most
//! 1 ms p99 to a delete.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use eci_core::risk::{Budget, Rules};
use eci_core::{Carrier, Fleet, InstanceId, Quota};
use eci_store::coordination::Breakers;
use eci_store::risk::Deletion;
use eci_store::{Store, StoreConfig, testing};
use tracing::span;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Parser)]
struct Args {
    /// Deletions to time.
    #[arg(long, default_value_t = 5_000)]
    deletions: u64,
    /// Run on a fresh PostgreSQL database instead of the embedded SQLite one.
    #[arg(long)]
    postgres: bool,
    /// Redis to keep the deletion windows in.
    #[arg(long)]
    redis_url: Option<String>,
}

/// Sums the time spent inside `risk_check` spans, which the deletions run one after another.
#[derive(Clone, Default)]
struct RiskTime(Arc<Mutex<Duration>>);

struct Opened(Instant);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for RiskTime {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() == "risk_check"
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(Opened(at)) = span.extensions().get::<Opened>()
        {
            *self.0.lock().expect("the sum") += at.elapsed();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let risk = RiskTime::default();
    // Spans at debug are built only for the layer; nothing is printed.
    let filter = tracing_subscriber::filter::Targets::new().with_target("eci_store", tracing::Level::DEBUG);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(risk.clone().with_filter(filter)),
    )?;

    let dir = testing::TempDirGuard::new("eci-bench-risk")?;
    let (store, database) = if args.postgres {
        let db = testing::postgres_database(16).await.context("no PostgreSQL to run on")?;
        (db.store.clone(), Some(db))
    } else {
        (Store::connect(&StoreConfig::new(testing::sqlite_url(&dir))).await?, None)
    };
    let store = match &args.redis_url {
        Some(url) => store.with_breakers(Breakers::redis(url).await?),
        None => store,
    };
    let area = ("south-china", "guangdong", "shenzhen");
    let idcs = (0..10)
        .map(|n| {
            testing::idc(&format!("sz-{n}"), area, &[Carrier::Telecom], testing::resources(1_000, 4_000))
        })
        .collect();
    testing::seed_fleet(&store, &Fleet { idcs }).await;
    let tenant = testing::seed_tenant(&store, "bench", Quota::default()).await;
    let key = store.create_key(Some(&tenant.id), false, "bench", "eci_bench_secret", testing::t0()).await?;
    // Windows that never fill, so every deletion passes the whole gate and none is refused.
    let wide = Budget { deletions: 1_000_000, window_seconds: 300 };
    let rules = Rules { per_idc: wide, per_tenant: wide, platform: wide, ..Rules::default() };
    store.set_platform_rules(&rules, testing::t0()).await?;

    let mut left = args.deletions;
    while left > 0 {
        let count = left.min(1_000);
        store.create_batch(&tenant.id, &testing::batch_request(count), None, testing::t0()).await?;
        left -= count;
    }
    let mut ids = Vec::new();
    for idc in store.list_idcs().await? {
        ids.extend(store.live_in_idc(&idc.0.id).await?.into_keys());
    }
    let running: Vec<(InstanceId, _, _)> = ids.iter().map(|id| (id.clone(), None, None)).collect();
    store.record_running(&running, testing::t0()).await?;

    let deletion = Deletion::by_tenant(&key.id, None);
    let (mut whole, mut checks) = (Vec::new(), Vec::new());
    for (n, id) in ids.iter().enumerate() {
        let now = testing::t0() + chrono::Duration::milliseconds(n as i64);
        *risk.0.lock().expect("the sum") = Duration::ZERO;
        let started = Instant::now();
        store.release_instance(&tenant.id, id, &deletion, now).await?;
        whole.push(started.elapsed());
        checks.push(*risk.0.lock().expect("the sum"));
    }
    whole.sort();
    checks.sort();
    let backend = match (args.postgres, &args.redis_url) {
        (false, None) => "SQLite, windows in process",
        (false, Some(_)) => "SQLite, windows in Redis",
        (true, None) => "PostgreSQL, windows in process",
        (true, Some(_)) => "PostgreSQL, windows in Redis",
    };
    println!("{} deletions ({backend})", ids.len());
    println!("| | p50 | p99 | max |");
    println!("| --- | --- | --- | --- |");
    for (what, figures) in [("delete", &whole), ("risk check", &checks)] {
        println!(
            "| {what} | {} | {} | {} |",
            ms(percentile(figures, 0.50)),
            ms(percentile(figures, 0.99)),
            ms(*figures.last().expect("a deletion"))
        );
    }
    if let Some(db) = database {
        db.cleanup().await;
    }
    Ok(())
}
