//! The scaler's loop: every tick (and at the next window boundary, and when a group is created or
//! changed), each active group is decided by the scaler crate's pure [`tick`] and the decision is
//! applied through the store: growth by the same allocation and batch transaction as
//! `POST /v1/batches`, shrinking through the same release path as `DELETE`, both conditional on the
//! revision it was decided at. Only the replica holding the `scaler` lease acts, and it stops acting the
//! moment its hold on the lease may have run out.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eci_core::IdcId;
use eci_scaler::group::{Condition, EventKind, Group, Mode};
use eci_scaler::tick::{Action, FAILURE_WINDOW_SECONDS, Tick, remember, tick};
use eci_store::coordination::Leases;
use eci_store::groups::{NewEvent, Scaled};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::AppState;

/// The name of the lease that one replica holds to run the scaler.
pub const LEASE: &str = "scaler";

/// How the scaler runs.
#[derive(Debug, Clone)]
pub struct ScalerConfig {
    /// How often every group is looked at: 15 s, the HPA's sync period.
    pub tick: Duration,
    /// How long a taking of the lease lasts unless renewed; renewed every tick.
    pub lease_ttl: Duration,
    /// Who this replica is to the lease.
    pub holder: String,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            tick: Duration::from_secs(15),
            lease_ttl: Duration::from_secs(45),
            holder: format!("scaler-{}-{:016x}", std::process::id(), rand::random::<u64>()),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Groups looked at.
    pub groups: usize,
    /// Instances placed.
    pub placed: u64,
    /// Instances released.
    pub released: u64,
    /// Groups changed by someone else since they were read: decided again next pass.
    pub stale: usize,
    /// Groups whose pass failed (logged).
    pub failed: usize,
    /// Groups left alone because the lease may have run out.
    pub skipped: usize,
    /// The earliest window boundary of any group: the scaler looks again then.
    pub next_boundary: Option<DateTime<Utc>>,
}

/// One pass over every active group at `now`. `holding` is asked before each group: once it says
/// the lease may be lost, nothing more is written.
pub async fn pass(
    state: &AppState,
    now: DateTime<Utc>,
    holding: &(dyn Fn() -> bool + Sync),
) -> eci_store::Result<PassReport> {
    let mut report = PassReport::default();
    for scaled in state.store.active_groups().await? {
        if !holding() {
            report.skipped += 1;
            continue;
        }
        report.groups += 1;
        let id = scaled.group.id.clone();
        match scale_group(state, scaled, now).await {
            Ok(done) => {
                report.placed += done.placed;
                report.released += done.released;
                report.next_boundary = match (report.next_boundary, done.next_boundary) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Err(eci_store::Error::StaleGeneration(_)) => report.stale += 1,
            Err(error) => {
                report.failed += 1;
                tracing::warn!(group.id = %id, error = ?error, "scaling a group failed; will retry next tick");
            }
        }
    }
    Ok(report)
}

/// What one group's tick did.
#[derive(Debug, Default)]
struct Done {
    placed: u64,
    released: u64,
    next_boundary: Option<DateTime<Utc>>,
}

async fn scale_group(state: &AppState, scaled: Scaled, now: DateTime<Utc>) -> eci_store::Result<Done> {
    let Scaled { group, mut history } = scaled;
    let schedule = match group.policy.schedule() {
        Ok(schedule) => schedule,
        Err(error) => {
            // Refused when the group was stored; a stored policy that no longer reads is a bug.
            tracing::error!(group.id = %group.id, error = %error, "group policy does not read; group left alone");
            return Ok(Done::default());
        }
    };
    let failed_since = now - chrono::Duration::seconds(FAILURE_WINDOW_SECONDS);
    let (members, failures) = state.store.group_members(&group, failed_since).await?;
    let decided = tick(&group, &schedule, &members, &failures, &history, now);
    let mut events = Vec::new();
    if decision_changed(&group, &decided) {
        events.push(decision_event(&group, &decided));
    }
    let Tick { decision, action, mut status } = decided;
    let current = status.current;
    let mut revision = group.revision;
    for (idc, avoidance) in &status.avoided {
        if avoidance.until > now && group.status.avoided.get(idc) != Some(avoidance) {
            events.push(NewEvent {
                kind: EventKind::AvoidingIdc,
                current,
                desired: status.desired,
                message: format!(
                    "keeping away from IDC {idc} until {} after instances kept failing there (avoidance {} in a row)",
                    avoidance.until.to_rfc3339(),
                    avoidance.strikes
                ),
                details: json!({ "idc_id": idc.0, "until": avoidance.until, "strikes": avoidance.strikes }),
            });
        }
    }

    let mut done = Done { next_boundary: decision.next_boundary, ..Done::default() };
    let reached = match &action {
        Action::Hold => current,
        Action::Grow { count, avoid } => {
            let grown = state.store.grow_group(&group, *count, avoid, now).await?;
            if grown.batch.is_some() {
                revision += 1;
            }
            let placed = grown.count();
            done.placed = placed;
            if placed > 0 {
                events.push(NewEvent {
                    kind: EventKind::ScaledOut,
                    current,
                    desired: status.desired,
                    message: format!("placed {placed} of {count}: {}", by_idc(&grown.placed)),
                    details: json!({
                        "asked": count,
                        "placed": grown.placed.iter().map(|(k, v)| (k.0.clone(), *v)).collect::<BTreeMap<_, _>>(),
                        "batch_id": grown.batch.as_ref().map(|b| b.0.clone()),
                        "avoided_idcs": avoid.iter().map(|i| i.0.clone()).collect::<Vec<_>>(),
                    }),
                });
            }
            if let Some(short) = &grown.short {
                status.conditions.push(Condition::CapacityLimited);
                if !group.status.conditions.contains(&Condition::CapacityLimited) || placed > 0 {
                    events.push(NewEvent {
                        kind: EventKind::CapacityLimited,
                        current,
                        desired: status.desired,
                        message: format!("{short}; trying again every tick"),
                        details: json!({ "asked": count, "placed": placed }),
                    });
                }
            }
            current + u32::try_from(placed).unwrap_or(u32::MAX)
        }
        Action::Shrink { instances } => {
            let released = match state.store.shrink_group(&group, instances, now).await {
                Ok(released) => {
                    revision += 1;
                    released
                }
                // Deferred, not dropped: nothing was released, and the next tick decides again.
                Err(
                    held @ (eci_store::Error::DeletionRateLimited(_)
                    | eci_store::Error::DeleteProtected { .. }),
                ) => {
                    tracing::warn!(group.id = %group.id, reason = %held, "scale-in held by risk control");
                    status.reason = format!("{}; scale-in held by risk control: {held}", status.reason);
                    BTreeMap::new()
                }
                Err(other) => return Err(other),
            };
            let n: u64 = released.values().sum();
            done.released = n;
            if n == 0 {
                current
            } else {
                events.push(NewEvent {
                kind: EventKind::ScaledIn,
                current,
                desired: status.desired,
                message: format!("released {n}: {}", by_idc(&released)),
                details: json!({
                    "released": released.iter().map(|(k, v)| (k.0.clone(), *v)).collect::<BTreeMap<_, _>>(),
                    "order": "never started first, then running ones from the IDCs holding the most, newest first",
                }),
            });
                current.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX))
            }
        }
    };
    remember(&mut history, &group, &decision, current, reached, now);
    status.current = reached;
    state.store.record_group_tick(&group.id, revision, &status, &history, &events, now).await?;
    if done.placed > 0 || done.released > 0 {
        tracing::info!(group.id = %group.id, from = current, to = reached, desired = status.desired,
            reason = %status.reason, "group scaled");
    }
    Ok(done)
}

/// A decision is recorded when it asks for another count, the active window or the conditions
/// change, or it is the group's first: a steady group writes nothing.
fn decision_changed(group: &Group, tick: &Tick) -> bool {
    let before = &group.status;
    let after = &tick.status;
    before.decided_at.is_none()
        || before.desired != after.desired
        || before.active_window.map(|w| (w.index, w.occurrence.starts_at))
            != after.active_window.map(|w| (w.index, w.occurrence.starts_at))
        || before.conditions.iter().filter(|c| **c != Condition::CapacityLimited).ne(after.conditions.iter())
}

fn decision_event(group: &Group, tick: &Tick) -> NewEvent {
    let (decision, status) = (&tick.decision, &tick.status);
    let window = decision.booking.map(|b| {
        let spec = &group.policy.schedules[b.window];
        json!({
            "index": b.window,
            "desired": b.desired,
            "start": spec.start,
            "end": spec.end,
            "timezone": spec.timezone,
            "lead_seconds": spec.lead_seconds,
            "opens_at": b.occurrence.opens_at,
            "starts_at": b.occurrence.starts_at,
            "ends_at": b.occurrence.ends_at,
        })
    });
    let load = decision.load.map(|l| {
        let spec = group.policy.load.as_ref().expect("a load decision comes from a load policy");
        let usage = l.recommendation.map(|r| {
            json!({
                "average": r.usage.average,
                "reporting": r.usage.reporting,
                "missing": r.usage.missing,
                "fresh": r.usage.fresh,
                "recommended": r.count,
            })
        });
        json!({
            "metric": spec.metric,
            "target": spec.target.value(),
            "count": l.count,
            "reason": l.reason.to_string(),
            "usage": usage,
        })
    });
    let would = match (group.policy.mode, status.desired.cmp(&status.current)) {
        (Mode::Preview, std::cmp::Ordering::Greater) => json!({ "grow": status.desired - status.current }),
        (Mode::Preview, std::cmp::Ordering::Less) => json!({ "shrink": status.current - status.desired }),
        _ => serde_json::Value::Null,
    };
    let mode_note = if group.policy.mode == Mode::Preview { " (preview: nothing done)" } else { "" };
    let warnings: Vec<&str> =
        status.conditions.iter().filter(|c| **c != Condition::Preview).map(|c| c.as_str()).collect();
    let warnings = if warnings.is_empty() { String::new() } else { format!(" [{}]", warnings.join(", ")) };
    NewEvent {
        kind: EventKind::Decided,
        current: status.current,
        desired: status.desired,
        message: format!("{} -> {}: {}{warnings}{mode_note}", status.current, status.desired, status.reason),
        details: json!({
            "reason": status.reason,
            "min": group.policy.min,
            "max": group.policy.max,
            "window": window,
            "load": load,
            "conditions": status.conditions,
            "next_boundary": status.next_boundary,
            "would": would,
        }),
    }
}

fn by_idc(counts: &BTreeMap<IdcId, u64>) -> String {
    counts.iter().map(|(idc, n)| format!("{idc} {n}")).collect::<Vec<_>>().join(", ")
}

/// Runs the scaler until `shutdown` turns true: each tick it takes or renews the `scaler` lease
/// and, while it holds it, makes a [`pass`]; it wakes early at the next window boundary and when a
/// group is created or changed. On shutdown it gives the lease up so another replica takes over
/// at once.
pub async fn run(state: AppState, leases: Leases, config: ScalerConfig, mut shutdown: watch::Receiver<bool>) {
    loop {
        let started = Instant::now();
        let now = state.clock.now();
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let mut next = started + config.tick;
        match leases.hold(LEASE, &config.holder, config.lease_ttl, now_ms).await {
            Ok(Some(epoch)) => {
                // Acting stops well before the taking could run out, whatever the pass costs.
                let deadline = started + config.lease_ttl.mul_f32(2.0 / 3.0);
                let holding = || Instant::now() < deadline;
                match pass(&state, now, &holding).await {
                    Ok(report) => {
                        if report.placed > 0 || report.released > 0 || report.stale > 0 || report.skipped > 0
                        {
                            tracing::info!(
                                epoch,
                                groups = report.groups,
                                placed = report.placed,
                                released = report.released,
                                stale = report.stale,
                                skipped = report.skipped,
                                "scaler pass"
                            );
                        }
                        if let Some(boundary) = report.next_boundary {
                            let until = (boundary - state.clock.now()).to_std().unwrap_or(Duration::ZERO);
                            next = next.min(Instant::now() + until);
                        }
                    }
                    Err(error) => tracing::warn!(error = ?error, "scaler pass failed; will retry"),
                }
            }
            Ok(None) => tracing::debug!("another replica holds the scaler lease"),
            Err(error) => tracing::warn!(error = ?error, "scaler lease unavailable; not scaling this tick"),
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = state.scaler_wake.notified() => {}
            _ = shutdown.changed() => {
                if let Err(error) = leases.give_up(LEASE, &config.holder).await {
                    tracing::warn!(error = ?error, "giving the scaler lease up failed; it runs out on its own");
                }
                break;
            }
        }
    }
}
