//! Releases batches whose TTL ran out and ends reservations past their end time, makes invoices
//! final once their month and grace period are over (they also become final when first read then),
//! and forgets metric samples an hour old.

use std::time::Duration;

use tokio::sync::watch;

use crate::AppState;

/// One pass: expire everything due at the clock's now. Returns how many batches and reservations ended.
pub async fn expire_due(state: &AppState) -> eci_store::Result<(usize, usize)> {
    let now = state.clock.now();
    let batches = state.store.expire_batches(now).await?;
    let reservations = state.store.expire_reservations(now).await?;
    Ok((batches.len(), reservations.len()))
}

/// How often due invoices are made final (a month's grace period is days long) and old samples
/// forgotten.
const INVOICE_PASS: Duration = Duration::from_secs(3600);

/// How long a metric sample is kept: far past the two minutes it counts for.
const SAMPLES_KEPT: chrono::Duration = chrono::Duration::hours(1);

/// Runs [`expire_due`] every `every`, and makes due invoices final every hour, until `shutdown`
/// turns true.
pub async fn run(state: AppState, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut invoices = tokio::time::interval(INVOICE_PASS);
    invoices.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(error) = expire_due(&state).await {
                    tracing::warn!(error = ?error, "expiry pass failed; will retry");
                }
            }
            _ = invoices.tick() => {
                match state.store.finalize_due_invoices(&state.config.billing, state.clock.now()).await {
                    Ok(0) => {}
                    Ok(made) => tracing::info!(made, "invoices made final"),
                    Err(error) => tracing::warn!(error = ?error, "making invoices final failed; will retry"),
                }
                if let Err(error) = state.store.forget_samples_before(state.clock.now() - SAMPLES_KEPT).await {
                    tracing::warn!(error = ?error, "forgetting old metric samples failed; will retry");
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}
