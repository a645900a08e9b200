//! Prometheus metrics: every request by route and status, with its latency, what the platform
//! handed out, and each IDC's ledger line as the store holds it at the scrape (what it sells, what
//! is allocated and reserved, whether it is short). Served at `GET /metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eci_store::fleet::IdcReport;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route's pattern (`/v1/batches/{id}`), never the raw path, so ids cannot explode the series.
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdcLabels {
    idc: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    alert: String,
    /// Empty for an alert of no one IDC (a tenant's or the platform's breaker).
    idc: String,
}

/// What became of one alert's delivery to one receiver.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver took it.
    Delivered,
    /// Every attempt failed, or the receiver refused it for good.
    Failed,
    /// The queue was full: it was never posted.
    Dropped,
}

impl EncodeLabelValue for DeliveryOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Dropped => "dropped",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: DeliveryOutcome,
}

/// Per-IDC gauges, set from the store's reports at each scrape: the store is the truth every
/// replica shares, so no replica keeps figures of its own that could disagree.
#[derive(Default)]
struct IdcGauges {
    sellable_cpu: Family<IdcLabels, Gauge>,
    allocated_cpu: Family<IdcLabels, Gauge>,
    reserved_cpu: Family<IdcLabels, Gauge>,
    sellable_memory: Family<IdcLabels, Gauge>,
    allocated_memory: Family<IdcLabels, Gauge>,
    reserved_memory: Family<IdcLabels, Gauge>,
    capacity_short: Family<IdcLabels, Gauge>,
    read_at: Family<IdcLabels, Gauge<f64, AtomicU64>>,
}

impl IdcGauges {
    fn register(&self, registry: &mut Registry) {
        let families = [
            ("idc_sellable_cpu_millis", "What the IDC sells, in milli-vCPU", &self.sellable_cpu),
            ("idc_allocated_cpu_millis", "Milli-vCPU live instances take in the IDC", &self.allocated_cpu),
            ("idc_reserved_cpu_millis", "Milli-vCPU reservations hold in the IDC", &self.reserved_cpu),
            ("idc_sellable_memory_mib", "What the IDC sells, in MiB", &self.sellable_memory),
            ("idc_allocated_memory_mib", "MiB live instances take in the IDC", &self.allocated_memory),
            ("idc_reserved_memory_mib", "MiB reservations hold in the IDC", &self.reserved_memory),
            (
                "idc_capacity_short",
                "1 when the IDC sells less than it promised to instances and reservations",
                &self.capacity_short,
            ),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "idc_capacity_read_timestamp_seconds",
            "When the IDC's cluster was last read, in seconds since the Unix epoch",
            self.read_at.clone(),
        );
    }

    /// Replaces every IDC's figures with those of `reports`; with `None` (the store could not be
    /// read) there are none, rather than stale ones an alert would go on trusting.
    fn set(&self, reports: Option<&[IdcReport]>) {
        let every = [
            &self.sellable_cpu,
            &self.allocated_cpu,
            &self.reserved_cpu,
            &self.sellable_memory,
            &self.allocated_memory,
            &self.reserved_memory,
            &self.capacity_short,
        ];
        for family in every {
            family.clear();
        }
        self.read_at.clear();
        for IdcReport { idc, line, cluster } in reports.unwrap_or_default() {
            let labels = IdcLabels { idc: idc.id.0.clone() };
            let set = |family: &Family<IdcLabels, Gauge>, n: u64| {
                family.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            set(&self.sellable_cpu, line.total.cpu.0);
            set(&self.allocated_cpu, line.allocated.cpu.0);
            set(&self.reserved_cpu, line.reserved.cpu.0);
            set(&self.sellable_memory, line.total.memory.0);
            set(&self.allocated_memory, line.allocated.memory.0);
            set(&self.reserved_memory, line.reserved.memory.0);
            set(&self.capacity_short, u64::from(line.short().is_some()));
            if let Some((_, read_at)) = cluster {
                // Milliseconds since the epoch stay below 2^53 (exact in an f64) for 285,000 years.
                self.read_at.get_or_create(&labels).set(read_at.timestamp_millis() as f64 / 1000.0);
            }
        }
    }
}

/// The platform's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    idcs: IdcGauges,
    /// Held from setting the IDC gauges to encoding them, so that two scrapes at once cannot
    /// interleave their clearing and setting.
    scrape: Mutex<()>,
    /// Instances accepted into new batches.
    pub instances_created: Counter,
    /// Batches created (idempotent replays not counted).
    pub batches_created: Counter,
    /// Alerts raised, by alert and IDC.
    alerts: Family<AlertLabels, Counter>,
    /// Alert deliveries to receivers, by outcome.
    alert_deliveries: Family<DeliveryLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eci");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let instances_created = Counter::default();
        let batches_created = Counter::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer an HTTP request", latency.clone());
        registry.register(
            "instances_created",
            "Instances accepted into new batches",
            instances_created.clone(),
        );
        registry.register("batches_created", "Batches created", batches_created.clone());
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("alerts", "Alerts raised, by alert and IDC", alerts.clone());
        let alert_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "alert_deliveries",
            "Alerts posted to the alert receivers: delivered, failed after every retry, or dropped from a full queue",
            alert_deliveries.clone(),
        );
        let idcs = IdcGauges::default();
        idcs.register(&mut registry);
        Metrics {
            registry,
            requests,
            latency,
            idcs,
            scrape: Mutex::new(()),
            instances_created,
            batches_created,
            alerts,
            alert_deliveries,
        }
    }
}

impl Metrics {
    /// Counts a raised alert.
    pub fn alert_raised(&self, alert: &eci_core::alerts::Alert) {
        let idc = alert.labels.get("idc").cloned().unwrap_or_default();
        self.alerts.get_or_create(&AlertLabels { alert: alert.name.as_str().to_string(), idc }).inc();
    }

    /// Counts one alert's delivery to one receiver.
    pub fn alert_delivered(&self, outcome: DeliveryOutcome) {
        self.alert_deliveries.get_or_create(&DeliveryLabels { outcome }).inc();
    }

    /// The text of a scrape, with the IDC gauges of `reports` (none when they could not be read).
    fn encode(&self, reports: Option<&[IdcReport]>) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.idcs.set(reports);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Counts and times every request.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status })
        .inc();
    metrics.latency.get_or_create(&RouteLabels { method, route }).observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` in the Prometheus text format. Unauthenticated, like `/healthz`: scrapers carry no
/// API key, and it names no tenant. The IDC gauges are read from the store at each scrape; when it
/// cannot be read they are left out and the rest is served.
#[utoipa::path(get, path = "/metrics", security(()),
    responses((status = 200, description = "The metrics, in the OpenMetrics text format.", body = String,
        content_type = "application/openmetrics-text")))]
pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    let reports = match state.store.idc_reports().await {
        Ok(reports) => Some(reports),
        Err(error) => {
            tracing::error!(?error, "reading the IDCs for /metrics; their gauges are left out");
            None
        }
    };
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(reports.as_deref()),
    )
}
