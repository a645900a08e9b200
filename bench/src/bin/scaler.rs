//! Scaler benchmark: one tick's decisions for 10,000 groups of 100 instances each, metrics in hand
//! (every group with two windows in different time zones and a CPU load policy with a history of
//! five minutes of ticks), and prints the median, p99 and min wall time of a whole tick.
//!
//! Run with `cargo run --release -p eci-bench --bin scaler`. Target: at most 100 ms per tick.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use eci_core::builtin::SplitMix;
use eci_scaler::decision::{GroupInput, LoadPolicy, decide};
use eci_scaler::load::{Behaviour, LoadHistory, MetricKind, PastRecommendation, Sample, ScaleEvent, Target};
use eci_scaler::schedule::{Schedule, Window};

const GROUPS: usize = 10_000;
const INSTANCES: u32 = 100;
const WARM_UP: usize = 3;
const ITERATIONS: usize = 30;

/// What a tick holds for one group: its windows, instances' samples and remembered decisions.
struct Group {
    schedule: Schedule,
    samples: Vec<Sample>,
    history: LoadHistory,
    current: u32,
}

fn groups(now: DateTime<Utc>) -> Vec<Group> {
    let mut rng = SplitMix(0x5CA1_E000);
    let zones = ["Asia/Shanghai", "America/New_York", "Europe/London", "Asia/Kolkata"];
    (0..GROUPS)
        .map(|_| {
            let zone = zones[rng.below(zones.len() as u64) as usize];
            let hour = rng.below(24);
            let windows = vec![
                Window::new(
                    &format!("0 {hour} * * *"),
                    &format!("0 {} * * *", (hour + 3) % 24),
                    zone,
                    200,
                    600,
                )
                .expect("a window"),
                Window::new("30 8 * * 1-5", "0 18 * * 1-5", "Asia/Shanghai", 150, 0).expect("a window"),
            ];
            let samples = (0..INSTANCES)
                .map(|i| Sample {
                    instance_started_at: now - Span::seconds(rng.below(3600) as i64 + i64::from(i)),
                    value: (rng.below(50) != 0).then(|| 20.0 + rng.below(8000) as f64 / 100.0),
                })
                .collect();
            let history = LoadHistory {
                recommendations: (1..=20)
                    .map(|n| PastRecommendation {
                        at: now - Span::seconds(15 * n),
                        count: 80 + rng.below(40) as u32,
                    })
                    .collect(),
                scale_events: ScaleEvent::between(now - Span::seconds(30), 96, INSTANCES)
                    .into_iter()
                    .collect(),
                last_count: Some(INSTANCES),
            };
            Group { schedule: Schedule { windows }, samples, history, current: INSTANCES }
        })
        .collect()
}

fn tick(groups: &[Group], behaviour: &Behaviour, target: Target, now: DateTime<Utc>) -> u64 {
    groups
        .iter()
        .map(|g| {
            let policy = LoadPolicy {
                metric: MetricKind::Cpu,
                target,
                behaviour,
                samples: &g.samples,
                history: &g.history,
            };
            let input = GroupInput {
                current: g.current,
                min: 10,
                max: 1000,
                schedule: &g.schedule,
                load: Some(policy),
            };
            u64::from(decide(&input, now).desired)
        })
        .sum()
}

fn main() {
    let now = Utc.with_ymd_and_hms(2030, 3, 10, 6, 59, 30).unwrap();
    let groups = groups(now);
    let behaviour = Behaviour::default();
    let target = Target::new(60.0).expect("a target");
    let mut times: Vec<Duration> = Vec::with_capacity(ITERATIONS);
    for n in 0..WARM_UP + ITERATIONS {
        let started = Instant::now();
        black_box(tick(black_box(&groups), &behaviour, target, now + Span::seconds(n as i64 * 15)));
        if n >= WARM_UP {
            times.push(started.elapsed());
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "scaler: one tick for {GROUPS} groups of {INSTANCES} instances: median {:.1} ms, p99 {:.1} ms, min {:.1} ms",
        ms(times[times.len() / 2]),
        ms(times[(times.len() * 99).div_ceil(100) - 1]),
        ms(times[0]),
    );
}
