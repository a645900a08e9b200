//! What the billing benchmarks (`rating`, `usage`) share: time units, seeded draws, a batch's
//! labels and a price, so that both draw their data the same way.

use std::collections::BTreeMap;

use eci_billing::{Price, PriceTier};
use eci_core::Runtime;
use eci_core::builtin::SplitMix;

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;

/// Label values a batch may carry: a team, a project, an environment.
const TEAMS: &[&str] = &["search", "video", "ads", "maps", "games", "iot"];
const ENVS: &[&str] = &["prod", "staging", "dev"];
const PROJECTS: u64 = 40;

/// A draw from `[lo, hi)`.
pub fn between(rng: &mut SplitMix, lo: i64, hi: i64) -> i64 {
    lo + rng.below((hi - lo) as u64) as i64
}

/// A batch's labels: most have a team, more than half a project, half an environment.
pub fn labels(rng: &mut SplitMix) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if rng.below(5) != 0 {
        labels.insert("team".to_owned(), TEAMS[rng.below(TEAMS.len() as u64) as usize].to_owned());
    }
    if rng.below(5) < 3 {
        labels.insert("project".to_owned(), format!("project-{}", rng.below(PROJECTS)));
    }
    if rng.below(2) == 0 {
        labels.insert("env".to_owned(), ENVS[rng.below(ENVS.len() as u64) as usize].to_owned());
    }
    labels
}

/// One price version; `rates` in micro-units per vCPU-, GiB- and GPU-second.
pub fn price(
    id: &str,
    runtime: Runtime,
    tier: PriceTier,
    effective_from_ms: i64,
    rates: (u64, u64, u64),
) -> Price {
    Price {
        id: id.to_owned(),
        runtime,
        tier,
        effective_from_ms,
        cpu_micros_per_vcpu_second: rates.0,
        memory_micros_per_gib_second: rates.1,
        gpu_micros_per_gpu_second: rates.2,
    }
}
