//! Where the platform's alerts go once the store raises them: each is counted in `/metrics`
//! (`eci_alerts_total`), logged as an event with `alert=<name>`, and posted to every configured
//! receiver (`--alert-webhook`) in the JSON Prometheus Alertmanager's webhook receiver sends
//! (`core::alerts::alertmanager_message`), so existing alert routing takes it as it is.
//!
//! Raising never waits: alerts are queued (a bounded queue; when it is full the alert is dropped
//! from delivery, still counted and logged), and a task of their own delivers them, retrying a
//! receiver that fails or answers 5xx or 429 with jittered exponential delays. What is queued when
//! the process stops is not delivered; the log and the metrics have it all the same.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use eci_core::alerts::{Alert, AlertSink, alertmanager_message};
use reqwest::Url;
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::{DeliveryOutcome, Metrics};

/// Alerts waiting for delivery at most; more are dropped from delivery.
const QUEUE: usize = 1024;

/// Deliveries under way at once, over all receivers.
const DELIVERIES_AT_ONCE: usize = 16;

/// How alerts are delivered.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Where to post them (Alertmanager webhook receivers); none: counted and logged only.
    pub receivers: Vec<Url>,
    /// The platform's address, for the links in each alert.
    pub external_url: String,
    /// Attempts per receiver and alert, the first included.
    pub attempts: usize,
    /// The delay before the first retry; each next one doubles, with jitter, up to `max_delay`.
    pub first_retry: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            receivers: Vec::new(),
            external_url: String::new(),
            attempts: 6,
            first_retry: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why one attempt to deliver an alert failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    /// The receiver could not be reached, or did not answer in time.
    #[error("posting the alert failed: {0}")]
    PostFailed(reqwest::Error),
    /// The receiver answered with an error status.
    #[error("the receiver answered {0}")]
    ReceiverRefused(reqwest::StatusCode),
}

impl DeliveryError {
    /// Whether trying again may help: a network failure, a 5xx or a 429 may pass; another 4xx is
    /// the receiver refusing this request as it is.
    fn may_pass(&self) -> bool {
        match self {
            DeliveryError::PostFailed(_) => true,
            DeliveryError::ReceiverRefused(status) => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

/// The store's alert sink: counts, logs and queues each alert for delivery.
#[derive(Debug)]
pub struct Alerter {
    queue: Option<mpsc::Sender<Alert>>,
    metrics: Arc<Metrics>,
}

impl Alerter {
    /// An alerter counting in `metrics`, with a delivery task when `config` names receivers (which
    /// needs a Tokio runtime).
    pub fn start(config: AlertConfig, metrics: Arc<Metrics>) -> Arc<Alerter> {
        if config.receivers.is_empty() {
            return Arc::new(Alerter { queue: None, metrics });
        }
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(waiting, config, metrics.clone()));
        Arc::new(Alerter { queue: Some(queue), metrics })
    }
}

impl AlertSink for Alerter {
    fn raise(&self, alert: Alert) {
        self.metrics.alert_raised(&alert);
        tracing::warn!(
            alert = alert.name.as_str(),
            labels = ?alert.labels,
            summary = %alert.summary,
            "alert"
        );
        if let Some(queue) = &self.queue
            && let Err(mpsc::error::TrySendError::Full(alert)) = queue.try_send(alert)
        {
            self.metrics.alert_delivered(DeliveryOutcome::Dropped);
            tracing::error!(
                alert = alert.name.as_str(),
                "the alert queue is full; this alert is not delivered"
            );
        }
    }
}

async fn deliver(mut waiting: mpsc::Receiver<Alert>, config: AlertConfig, metrics: Arc<Metrics>) {
    let client = match reqwest::Client::builder().timeout(config.timeout).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the alert receivers' client; alerts are only logged");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(DELIVERIES_AT_ONCE));
    let config = Arc::new(config);
    while let Some(alert) = waiting.recv().await {
        for (index, receiver) in config.receivers.iter().enumerate() {
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let message = alertmanager_message(&alert, "eci", &config.external_url);
            let (client, receiver, config, metrics) =
                (client.clone(), receiver.clone(), config.clone(), metrics.clone());
            let name = alert.name;
            tokio::spawn(async move {
                let attempt = || async {
                    let answer = client
                        .post(receiver.clone())
                        .json(&message)
                        .send()
                        .await
                        .map_err(|e| DeliveryError::PostFailed(e.without_url()))?;
                    match answer.status() {
                        status if status.is_success() => Ok(()),
                        status => Err(DeliveryError::ReceiverRefused(status)),
                    }
                };
                let backoff = ExponentialBuilder::new()
                    .with_min_delay(config.first_retry)
                    .with_max_delay(config.max_delay)
                    .with_max_times(config.attempts.saturating_sub(1))
                    .with_jitter();
                let delivered = attempt
                    .retry(backoff)
                    .when(DeliveryError::may_pass)
                    .notify(|error, after| {
                        tracing::debug!(alert = name.as_str(), receiver = index, %error, ?after, "alert delivery retried")
                    })
                    .await;
                match delivered {
                    Ok(()) => metrics.alert_delivered(DeliveryOutcome::Delivered),
                    Err(error) => {
                        metrics.alert_delivered(DeliveryOutcome::Failed);
                        // The receiver's address may carry a secret: it is named by its place only.
                        tracing::error!(alert = name.as_str(), receiver = index, %error, "an alert could not be delivered");
                    }
                }
                drop(permit);
            });
        }
    }
}
