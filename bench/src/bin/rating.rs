//! Rating: a month of 1,000,000 metered instances into invoice lines and usage, in `eci-billing`
//! alone (no store, no I/O).
//!
//! `cargo run --release -p eci-bench --bin rating`: 10,000 batches of 100 instances over the
//! built-in fleet's areas, carriers and runtimes, with lives from a second to the whole month (some
//! started in October, some still live), rated for November 2026 as of ten minutes after it ended,
//! against a catalogue of base prices, area/carrier tiers and mid-month changes. Prints the best and
//! the median of 3 runs of `invoice_lines` for the month (target: at most 1 s), then of `usage`
//! ungrouped and grouped by batch, day and label, and the charges, lines and total that show the
//! work was real. Generating the instances is timed on its own and is in no other figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use eci_bench::{HOUR_MS, MINUTE_MS, SECOND_MS, between, labels, price};
use eci_billing::{
    Catalogue, DAY_MS, GroupBy, MeteredInstance, Metering, Period, PriceTier, Rater, Window, invoice_lines,
    usage,
};
use eci_core::builtin::{SplitMix, builtin_fleet};
use eci_core::{BatchId, Carrier, Idc, InstanceId, MiB, MilliCpu, Resources, Runtime};

const BATCHES: u64 = 10_000;
const PER_BATCH: u64 = 100;
const RUNS: usize = 3;

/// Base prices for the three runtimes from the epoch, tiers at every depth (region, province, city,
/// carrier alone, region + carrier), new versions of some at 12:00 on the 15th so that the pieces
/// running through it are cut, a tier that first appears then, and a version that only takes
/// effect after the month.
fn catalogue(month: Window) -> anyhow::Result<Catalogue> {
    use Runtime::{Container, Rich, Vm};
    let mid = month.from_ms() + 14 * DAY_MS + 12 * HOUR_MS;
    let after = month.to_ms();
    let anywhere = PriceTier::default;
    let south = || PriceTier::new(Some("south-china"), None, None, None);
    let guangdong = || PriceTier::new(Some("south-china"), Some("guangdong"), None, None);
    let shenzhen_telecom =
        PriceTier::new(Some("south-china"), Some("guangdong"), Some("shenzhen"), Some(Carrier::Telecom));
    let east_bgp = || PriceTier::new(Some("east-china"), None, None, Some(Carrier::Bgp));
    let zhejiang = PriceTier::new(Some("east-china"), Some("zhejiang"), None, None);
    let sichuan = PriceTier::new(Some("southwest"), Some("sichuan"), None, None);
    let mobile = PriceTier::new(None, None, None, Some(Carrier::Mobile));
    let prices = vec![
        price("container-base", Container, anywhere(), 0, (49, 5, 1_700)),
        price("container-base-2026-11-15", Container, anywhere(), mid, (52, 6, 1_750)),
        price("container-base-2026-12", Container, anywhere(), after, (55, 6, 1_800)),
        price("rich-base", Rich, anywhere(), 0, (58, 7, 1_900)),
        price("vm-base", Vm, anywhere(), 0, (64, 8, 2_000)),
        price("container-south", Container, south(), 0, (46, 5, 1_650)),
        price("rich-south", Rich, south(), 0, (55, 6, 1_850)),
        price("container-guangdong", Container, guangdong(), 0, (44, 5, 1_600)),
        price("container-guangdong-2026-11-15", Container, guangdong(), mid, (47, 5, 1_650)),
        price("vm-guangdong", Vm, guangdong(), 0, (60, 7, 1_950)),
        price("container-shenzhen-telecom", Container, shenzhen_telecom, 0, (42, 4, 1_550)),
        price("container-east-bgp", Container, east_bgp(), 0, (53, 6, 1_750)),
        price("container-east-bgp-2026-11-15", Container, east_bgp(), mid, (51, 6, 1_700)),
        price("rich-east-bgp", Rich, east_bgp(), 0, (61, 7, 1_950)),
        price("container-zhejiang", Container, zhejiang, 0, (48, 5, 1_700)),
        price("container-sichuan-2026-11-15", Container, sichuan, mid, (40, 4, 1_500)),
        price("container-mobile", Container, mobile, 0, (50, 5, 1_700)),
    ];
    Ok(Catalogue::new(prices)?)
}

/// How long a batch's instances live, before each instance's own spread.
fn batch_life(rng: &mut SplitMix, before_the_month: bool) -> Option<i64> {
    // Batches started in October and still metered in November are long-running services.
    let class = if before_the_month { 90 + rng.below(10) } else { rng.below(100) };
    match class {
        // Short tasks, most under the minimum charge.
        0..=29 => Some(between(rng, SECOND_MS, 2 * MINUTE_MS)),
        30..=59 => Some(between(rng, 2 * MINUTE_MS, 6 * HOUR_MS)),
        60..=84 => Some(between(rng, 6 * HOUR_MS, 5 * DAY_MS)),
        85..=94 => Some(between(rng, 5 * DAY_MS, 45 * DAY_MS)),
        // Services that are never stopped.
        _ => None,
    }
}

/// Tallies of the generated instances, printed so a reader sees the spread.
#[derive(Default)]
struct Spread {
    before_the_month: u64,
    live: u64,
    never_ran: u64,
    with_gpus: u64,
    under_a_minute: u64,
}

/// 10,000 batches of 100 instances, in the order of their batches' creation (the order of their
/// time-ordered ids). A batch has one runtime, size and set of labels and spreads over 1 to 4 IDCs
/// of the built-in fleet that run its runtime (and have GPUs, if it asks for some); each instance
/// takes one of its IDC's carriers.
fn instances(month: Window, now_ms: i64) -> anyhow::Result<(Vec<MeteredInstance>, Spread)> {
    let fleet = builtin_fleet();
    let mut rng = SplitMix(0x2026_1101);
    let month_ms = (month.to_ms() - month.from_ms()) as u64;
    let mut created: Vec<i64> = (0..BATCHES)
        .map(|_| {
            if rng.below(20) == 0 {
                month.from_ms() - 1 - rng.below(30 * DAY_MS as u64) as i64
            } else {
                month.from_ms() + rng.below(month_ms) as i64
            }
        })
        .collect();
    created.sort_unstable();

    let mut spread = Spread::default();
    let mut all = Vec::with_capacity((BATCHES * PER_BATCH) as usize);
    for (b, &created_ms) in created.iter().enumerate() {
        let runtime = match rng.below(10) {
            0..=6 => Runtime::Container,
            7..=8 => Runtime::Rich,
            _ => Runtime::Vm,
        };
        let wants_gpus = rng.below(50) == 0;
        let fits =
            |idc: &&Idc, gpus: bool| idc.runtimes.contains(&runtime) && (!gpus || idc.capacity.gpu > 0);
        let mut candidates: Vec<&Idc> = fleet.idcs.iter().filter(|i| fits(i, wants_gpus)).collect();
        let gpu = if wants_gpus && !candidates.is_empty() { 1 + rng.below(2) as u32 } else { 0 };
        if candidates.is_empty() {
            candidates = fleet.idcs.iter().filter(|i| fits(i, false)).collect();
        }
        anyhow::ensure!(!candidates.is_empty(), "no IDC of the built-in fleet runs {runtime}");
        let places: Vec<&Idc> =
            (0..1 + rng.below(4)).map(|_| candidates[rng.below(candidates.len() as u64) as usize]).collect();

        // 0.25 to 8 vCPU, 2 or 4 GiB per vCPU, from 512 MiB to 32 GiB.
        let cpu = [250, 500, 1_000, 2_000, 4_000, 8_000][rng.below(6) as usize];
        let memory = (cpu * [2_048, 4_096][rng.below(2) as usize] / 1_000).clamp(512, 32 * 1_024);
        let resources = Resources::new(MilliCpu(cpu), MiB(memory), gpu);

        let labels = labels(&mut rng);

        let before_the_month = created_ms < month.from_ms();
        let life = batch_life(&mut rng, before_the_month);
        let batch = BatchId(format!("b-{:032x}", (created_ms as u128) << 64 | b as u128));
        for n in 0..PER_BATCH {
            let idc = places[(n * places.len() as u64 / PER_BATCH) as usize];
            let carrier = idc.carriers[rng.below(idc.carriers.len() as u64) as usize];
            // A few never get to run; the rest boot within half a minute, and a few of those fail
            // within a minute.
            let started_ms = (rng.below(200) != 0).then(|| created_ms + 1 + rng.below(30_000) as i64);
            let ended_ms = started_ms.and_then(|start| {
                let lived = if rng.below(50) == 0 {
                    Some(rng.below(60_000) as i64)
                } else {
                    life.map(|ms| ms / 1_000 * (800 + rng.below(400) as i64) + rng.below(1_000) as i64)
                };
                lived.map(|ms| start + ms).filter(|&end| end <= now_ms)
            });
            spread.before_the_month += u64::from(started_ms.is_some_and(|s| s < month.from_ms()));
            spread.live += u64::from(started_ms.is_some() && ended_ms.is_none());
            spread.never_ran += u64::from(started_ms.is_none());
            spread.with_gpus += u64::from(gpu > 0);
            spread.under_a_minute +=
                u64::from(started_ms.zip(ended_ms).is_some_and(|(s, e)| e - s < MINUTE_MS));
            all.push(MeteredInstance {
                id: InstanceId(format!(
                    "i-{:032x}",
                    (created_ms as u128) << 64 | (b as u128) << 8 | n as u128
                )),
                batch: batch.clone(),
                runtime,
                area: idc.area.clone(),
                carrier,
                resources,
                labels: labels.clone(),
                started_ms,
                ended_ms,
            });
        }
    }
    Ok((all, spread))
}

/// Runs `f` `RUNS` times; returns its times, fastest first, and its last result.
fn timed<T>(mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(Vec<Duration>, T)> {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let result = black_box(f()?);
        times.push(started.elapsed());
        last = Some(result);
    }
    times.sort_unstable();
    Ok((times, last.context("no run")?))
}

fn best_and_median(times: &[Duration]) -> String {
    format!("best {:>7.1} ms, median {:>7.1} ms", millis(times[0]), millis(times[times.len() / 2]))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A `/proc/self/status` figure in MiB (`VmRSS` now, `VmHWM` the peak).
fn memory_mib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

fn main() -> anyhow::Result<()> {
    let period = Period::new(2026, 11)?;
    let month = period.window();
    let now_ms = month.to_ms() + 10 * MINUTE_MS;
    let metering = Metering::default();
    let catalogue = catalogue(month)?;

    let started = Instant::now();
    let (instances, spread) = instances(month, now_ms)?;
    let generated_in = started.elapsed();
    println!(
        "generated {} instances in {BATCHES} batches in {:.2} s (not in any figure below): {} started \
         before {period}, {} live at the end, {} never ran, {} ran under a minute, {} with GPUs; RSS {} MiB",
        instances.len(),
        generated_in.as_secs_f64(),
        spread.before_the_month,
        spread.live,
        spread.never_ran,
        spread.under_a_minute,
        spread.with_gpus,
        memory_mib("VmRSS:").unwrap_or(0),
    );
    println!(
        "catalogue: {} prices, 3 of them changed at {period}-15 12:00 UTC; period {period}, rated 10 minutes after it ended",
        catalogue.prices().len(),
    );

    // The target: a month's invoice lines for 1,000,000 instances in at most 1 s.
    let (times, lines) = timed(|| Ok(invoice_lines(&instances, &catalogue, &metering, month, now_ms)?))?;
    let invoice_total: u64 = lines.iter().map(|l| l.totals.amounts.total.0).sum();
    let billed_ms: i64 = lines.iter().map(|l| l.totals.billed_ms).sum();
    println!(
        "invoice_lines          {}  (target <= 1000 ms): {} lines, total {invoice_total} micro-units, {:.0} vCPU-hours billed",
        best_and_median(&times),
        lines.len(),
        lines.iter().map(|l| l.totals.quantities.cpu_milli_vcpu_ms).sum::<u128>() as f64 / 1e3 / 3.6e6,
    );

    for group_by in [None, Some(GroupBy::Batch), Some(GroupBy::Day), Some(GroupBy::Label("team".into()))] {
        let (times, usage) =
            timed(|| Ok(usage(&instances, &catalogue, &metering, month, now_ms, group_by.as_ref())?))?;
        anyhow::ensure!(
            usage.total.amounts.total.0 == invoice_total && usage.total.billed_ms == billed_ms,
            "usage by {group_by:?} adds up to {:?}, the invoice to {invoice_total}",
            usage.total.amounts.total,
        );
        let name = group_by.map_or_else(|| "none".to_owned(), |g| g.to_string());
        println!(
            "usage by {name:<13} {}: {} groups, {} instances charged",
            best_and_median(&times),
            usage.groups.len(),
            usage.instances,
        );
    }

    // The charges behind the figures, counted through the public `Rater`.
    let (times, (charges, total)) = timed(|| {
        let mut rater = Rater::new(&catalogue, &metering, month, now_ms);
        let (mut charges, mut total) = (0u64, 0u64);
        for instance in &instances {
            rater.rate(instance, |charge| {
                charges += 1;
                total += charge.amounts.total.0;
            })?;
        }
        Ok((charges, total))
    })?;
    anyhow::ensure!(total == invoice_total, "charges add up to {total}, the invoice to {invoice_total}");
    println!(
        "Rater::rate alone      {}: {charges} charges ({:.2} per instance), total {total} micro-units",
        best_and_median(&times),
        charges as f64 / instances.len() as f64,
    );
    println!("peak RSS {} MiB", memory_mib("VmHWM:").unwrap_or(0));
    Ok(())
}
