//! Running the control plane: `eci up` (embedded default) and `eci serve` (production).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use eci_api::alerts::AlertConfig;
use eci_api::scaling::ScalerConfig;
use eci_api::{ApiConfig, AppState};
use eci_billing::Metering;
use eci_core::{Clock, Fleet, Quota, SystemClock};
use eci_instance_manager::{ManagerConfig, WorkQueue};
use eci_store::billing::BillingPolicy;
use eci_store::coordination::{Breakers, Leases, RateWindows};
use eci_store::{Store, StoreConfig};
use tokio::sync::watch;

use crate::fleet_clusters::{FleetClusters, Simulated};
use crate::webhook::{GuardListener, GuardTls};

/// `eci up`: everything in one process, no services needed.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the SQLite database and the credentials file live.
    #[arg(long, env = "ECI_DATA_DIR", default_value = ".eci")]
    pub data_dir: PathBuf,
    /// Address the API listens on.
    #[arg(long, env = "ECI_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// A fleet file to use instead of the built-in fleet.
    #[arg(long, env = "ECI_FLEET")]
    pub fleet: Option<PathBuf>,
    /// How long a simulated Pod takes from scheduled to running, in milliseconds.
    #[arg(long, env = "ECI_SIM_BOOT_DELAY_MS", default_value_t = 500)]
    pub sim_boot_delay_ms: u64,
    /// Address the deletion guard (the simulated clusters' admission webhook) listens on, over TLS
    /// with a certificate authority made at each start.
    #[arg(long, env = "ECI_WEBHOOK_LISTEN", default_value = "127.0.0.1:0")]
    pub webhook_listen: SocketAddr,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// `eci serve`: the production control plane against PostgreSQL (and Redis).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// `postgres://user@host/db` (or `sqlite://file?mode=rwc`).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Shares request-rate windows, deletion windows and breakers, and leases between replicas;
    /// in-process when absent.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    #[arg(long, env = "ECI_LISTEN", default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,
    /// Fleet file loaded into the store at start (IDCs added or updated, none removed).
    #[arg(long, env = "ECI_FLEET")]
    pub fleet: Option<PathBuf>,
    /// An admin API key to make sure exists, for bootstrapping a new installation.
    #[arg(long, env = "ECI_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    #[arg(long, env = "ECI_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,
    /// Serve the API only; another replica runs the instance manager. Until reconcilers take leases,
    /// exactly one replica may run it.
    #[arg(long, env = "ECI_NO_INSTANCE_MANAGER")]
    pub no_instance_manager: bool,
    /// Address the deletion guard (the member clusters' admission webhook, see
    /// `eci webhook-manifest`) listens on, over TLS; not served when absent.
    #[arg(long, env = "ECI_WEBHOOK_LISTEN", requires_all = ["webhook_tls_cert", "webhook_tls_key"])]
    pub webhook_listen: Option<SocketAddr>,
    /// The deletion guard's certificate chain (PEM), the authority that signed it last.
    #[arg(long, env = "ECI_WEBHOOK_TLS_CERT", requires = "webhook_listen")]
    pub webhook_tls_cert: Option<PathBuf>,
    /// The deletion guard's private key (PEM).
    #[arg(long, env = "ECI_WEBHOOK_TLS_KEY", requires = "webhook_listen")]
    pub webhook_tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Tunables shared by both modes.
#[derive(Debug, Clone, clap::Args)]
pub struct Tuning {
    /// Requests per second for tenants without their own limit.
    #[arg(long, env = "ECI_DEFAULT_RATE", default_value_t = 100)]
    pub default_requests_per_second: u32,
    /// How often expired batches and reservations are released, in seconds.
    #[arg(long, env = "ECI_EXPIRY_INTERVAL", default_value_t = 1)]
    pub expiry_interval_secs: u64,
    /// How long a checked API key is trusted before the database is asked again, in seconds: the
    /// longest a key revoked through another replica keeps working.
    #[arg(long, env = "ECI_KEY_CACHE_TTL", default_value_t = 2)]
    pub key_cache_ttl_secs: u64,
    /// The least an instance that ran at all is billed for, in seconds.
    #[arg(long, env = "ECI_MIN_CHARGE", default_value_t = 60)]
    pub min_charge_secs: u32,
    /// How long after its month an invoice stays a draft that takes corrections, in hours.
    #[arg(long, env = "ECI_INVOICE_GRACE", default_value_t = 72)]
    pub invoice_grace_hours: u32,
    /// How often the scaler looks at every autoscaled group, in seconds (it also wakes at each
    /// window's boundary, and when a group is created or changed).
    #[arg(long, env = "ECI_SCALER_TICK", default_value_t = 15)]
    pub scaler_tick_secs: u64,
    /// How often each IDC's pod metrics (the CPU autoscaled groups follow) are read, in seconds.
    #[arg(long, env = "ECI_METRICS_INTERVAL", default_value_t = 15)]
    pub metrics_interval_secs: u64,
    /// Where to post alerts (a tripped deletion breaker, a refused out-of-band deletion, a vanished
    /// Pod, a disconnected IDC), as Alertmanager's webhook receiver gets them; repeatable, or
    /// comma-separated in the variable.
    #[arg(long = "alert-webhook", env = "ECI_ALERT_WEBHOOKS", value_delimiter = ',')]
    pub alert_webhooks: Vec<reqwest::Url>,
    /// A risk rules file (YAML or JSON: `platform:` rules, given whole, and `tenants:` overrides by
    /// tenant name) applied at start, over what the admin API stored.
    #[arg(long, env = "ECI_RISK_RULES")]
    pub risk_rules: Option<PathBuf>,
    /// The platform's address as the readers of alerts reach it, for their links;
    /// `http://<listen address>` by default.
    #[arg(long, env = "ECI_EXTERNAL_URL")]
    pub external_url: Option<String>,
}

/// Applies the rules file at `path` to `store`: the platform's rules, then each named tenant's.
/// Nothing is changed when any of it is wrong (a rule that cannot hold, a tenant that does not
/// exist).
async fn apply_risk_rules(
    store: &Store,
    path: &Path,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read risk rules file {}", path.display()))?;
    let stored = store.platform_rules().await?;
    let file = eci_core::risk::RulesFile::from_yaml(&text, &stored)
        .with_context(|| format!("risk rules file {} is invalid", path.display()))?;
    let mut tenants = Vec::new();
    for (name, rules) in &file.tenants {
        let Some(tenant) = store.find_tenant_by_name(name).await? else {
            anyhow::bail!("risk rules file {}: there is no tenant named {name}", path.display());
        };
        tenants.push((tenant.id, rules));
    }
    if let Some(platform) = &file.platform {
        store.set_platform_rules(platform, now).await?;
    }
    for (tenant, rules) in tenants {
        store.set_tenant_rules(&tenant, rules, now).await?;
    }
    tracing::info!(file = %path.display(), tenants = file.tenants.len(), "risk rules applied");
    Ok(())
}

fn read_fleet(path: &Path) -> anyhow::Result<Fleet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read fleet file {}", path.display()))?;
    Fleet::from_yaml(&text).with_context(|| format!("fleet file {} is invalid", path.display()))
}

/// Open files `eci up` needs per simulated IDC, measured: about 9 at rest (its API listener, both
/// ends of the reconciler's three watches and of the probe's connection) and 22 during a
/// 10,000-instance burst (the client's bounded pool: both ends of every loopback connection live in
/// this one process).
const OPEN_FILES_PER_SIMULATED_IDC: u64 = 26;
/// Open files the rest of the process needs: the database, the API's listener, its callers.
const OPEN_FILES_BASE: u64 = 256;

/// Raises the soft open-files limit to the hard limit, as most servers do: desktops default to a
/// soft 1,024, far below what one process serving many clusters needs. Returns the limit now.
fn raise_open_files_limit() -> anyhow::Result<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-files limit")?;
    tracing::debug!(limit, "open-files limit");
    Ok(limit)
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let fleet = match &args.fleet {
        Some(path) => read_fleet(path)?,
        None => eci_core::builtin::builtin_fleet(),
    };
    let needed = OPEN_FILES_BASE + OPEN_FILES_PER_SIMULATED_IDC * fleet.idcs.len() as u64;
    let limit = raise_open_files_limit()?;
    if limit < needed {
        anyhow::bail!(
            "eci up needs about {needed} open files for its {} simulated IDCs, but this process may open only \
             {limit} (the hard limit); raise it (`ulimit -Hn {needed}` as root, or `nofile` in \
             /etc/security/limits.conf) or give a smaller --fleet",
            fleet.idcs.len()
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let db = args.data_dir.join("eci.db");
    let store = Store::connect(&StoreConfig::new(sqlite_url(&args.data_dir)?))
        .await
        .context("cannot open the embedded database")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    store.sync_fleet(&fleet, clock.now()).await?;
    let credentials = args.data_dir.join("credentials");
    if store.list_keys(None).await?.iter().all(|k| !k.admin) {
        let admin = eci_api::auth::new_secret();
        store.create_key(None, true, "bootstrap admin", &admin, clock.now()).await?;
        let tenant = match store.find_tenant_by_name("demo").await? {
            Some(t) => t,
            None => store.create_tenant("demo", Quota::default(), clock.now()).await?,
        };
        let demo = eci_api::auth::new_secret();
        store.create_key(Some(&tenant.id), false, "demo", &demo, clock.now()).await?;
        write_credentials(&credentials, &admin, &demo)?;
    }
    if let Some(path) = &args.tuning.risk_rules {
        apply_risk_rules(&store, path, clock.now()).await?;
    }
    let text = std::fs::read_to_string(&credentials).with_context(|| {
        format!("cannot read {}; delete {} to start afresh", credentials.display(), args.data_dir.display())
    })?;
    let kubeconfig = args.data_dir.join("kubeconfig");
    println!("eci up: {} IDCs, API on http://{}, database {}", fleet.idcs.len(), args.listen, db.display());
    // The keys' names only: a banner ends up in terminal scrollback and logs, the keys must not.
    println!(
        "keys: {} ({})",
        credentials.display(),
        text.lines().filter_map(|l| l.split_once('=')).map(|(name, _)| name).collect::<Vec<_>>().join(", ")
    );
    if let Some(idc) = fleet.idcs.first() {
        println!(
            "clusters: {} (kubectl --kubeconfig {} --context {} get pods -A)",
            kubeconfig.display(),
            kubeconfig.display(),
            idc.id
        );
    }
    println!(
        "next: export ECI_ENDPOINT=http://{} $(grep ^ECI_TOKEN= {}); eci areas",
        args.listen,
        credentials.display()
    );
    let state = AppState::new(store, RateWindows::in_process(), clock, api_config(&args.tuning));
    let boot_delay = Duration::from_millis(args.sim_boot_delay_ms);
    let objects = args.data_dir.join("clusters.db");
    let clusters = Clusters::Simulated { fleet, boot_delay, kubeconfig, objects };
    let guard = Some((
        args.webhook_listen,
        GuardTls::ephemeral().context("cannot make the deletion guard's certificate")?,
    ));
    serve_until_shutdown(state, Leases::in_process(), args.listen, &args.tuning, clusters, guard).await
}

/// The URL of `eci.db` in the (existing) data directory `dir`. The path is made absolute and
/// canonical, so that no `.`/`..` segment is folded away by URL parsing and the first directory is
/// not taken for a host, and every byte outside `[A-Za-z0-9-._~/]` is percent-encoded, so that a
/// directory named `my data`, `a?b`, `x#1` or `50%` is opened as written.
fn sqlite_url(dir: &Path) -> anyhow::Result<String> {
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve data directory {}", dir.display()))?;
    let file = dir.join("eci.db");
    let path =
        file.to_str().with_context(|| format!("the data directory {} is not valid UTF-8", dir.display()))?;
    let mut url = String::from("sqlite://");
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url.push_str("?mode=rwc");
    Ok(url)
}

fn write_credentials(path: &Path, admin: &str, demo: &str) -> anyhow::Result<()> {
    let text = format!("ECI_ADMIN_TOKEN={admin}\nECI_TOKEN={demo}\n");
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    raise_open_files_limit()?;
    let store =
        Store::connect(&StoreConfig::new(&args.database_url).max_connections(args.db_max_connections))
            .await
            .context("cannot open the database")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if let Some(path) = &args.fleet {
        store.sync_fleet(&read_fleet(path)?, clock.now()).await?;
    }
    if let Some(secret) = &args.admin_key
        && store.authenticate(secret).await?.is_none()
    {
        store.create_key(None, true, "bootstrap admin", secret, clock.now()).await?;
    }
    if let Some(path) = &args.tuning.risk_rules {
        apply_risk_rules(&store, path, clock.now()).await?;
    }
    let (rate, leases, store) = match &args.redis_url {
        Some(url) => {
            // Every replica counts deletions in the same windows and sees the same open breakers;
            // those the database says are open are opened in Redis too (it may have been emptied).
            let store = store.with_breakers(Breakers::redis(url).await.context("cannot connect to Redis")?);
            store.restore_breakers().await.context("cannot restore the open deletion breakers")?;
            (
                RateWindows::redis(url).await.context("cannot connect to Redis")?,
                Leases::redis(url).await.context("cannot connect to Redis")?,
                store,
            )
        }
        None => (RateWindows::in_process(), Leases::in_process(), store),
    };
    let clusters = if args.no_instance_manager {
        Clusters::None
    } else {
        Clusters::Kubeconfig { fleet: store.snapshot().await?.fleet }
    };
    let guard = match (args.webhook_listen, &args.webhook_tls_cert, &args.webhook_tls_key) {
        (Some(listen), Some(cert), Some(key)) => Some((listen, GuardTls::from_files(cert, key)?)),
        _ => None,
    };
    let state = AppState::new(store, rate, clock, api_config(&args.tuning));
    serve_until_shutdown(state, leases, args.listen, &args.tuning, clusters, guard).await
}

/// Which clusters the instance manager drives.
enum Clusters {
    /// One in-process edge-sim cluster per IDC (the embedded default), their objects kept in the
    /// SQLite file `objects` so that a restart finds every workload as it was. Their addresses are
    /// written to `kubeconfig`, a context per IDC, for kubectl.
    Simulated { fleet: Fleet, boot_delay: Duration, kubeconfig: PathBuf, objects: PathBuf },
    /// The kubeconfig context each IDC names (production). IDCs added later need a restart.
    Kubeconfig { fleet: Fleet },
    /// None: this replica serves the API only.
    None,
}

fn api_config(tuning: &Tuning) -> ApiConfig {
    ApiConfig {
        default_requests_per_second: tuning.default_requests_per_second,
        key_cache_ttl: Duration::from_secs(tuning.key_cache_ttl_secs),
        billing: BillingPolicy {
            metering: Metering::default().with_min_charge_ms(i64::from(tuning.min_charge_secs) * 1000),
            grace: chrono::Duration::hours(i64::from(tuning.invoice_grace_hours)),
        },
    }
}

/// Serves the API (and the deletion guard on its own listener, when given one) and runs the expiry
/// pass and the scaler until Ctrl-C or SIGTERM, then drains them.
async fn serve_until_shutdown(
    mut state: AppState,
    leases: Leases,
    listen: SocketAddr,
    tuning: &Tuning,
    clusters: Clusters,
    guard: Option<(SocketAddr, GuardTls)>,
) -> anyhow::Result<()> {
    let alerts = AlertConfig {
        receivers: tuning.alert_webhooks.clone(),
        external_url: tuning.external_url.clone().unwrap_or_else(|| format!("http://{listen}")),
        ..AlertConfig::default()
    };
    for receiver in &alerts.receivers {
        if !matches!(receiver.scheme(), "http" | "https") {
            anyhow::bail!("--alert-webhook {receiver} is no http(s) URL");
        }
    }
    state = state.raising_alerts(alerts);
    // The writes of every request reach this process's reconcilers at once through the queue.
    let queue = WorkQueue::default();
    if !matches!(clusters, Clusters::None) {
        state.store = state.store.clone().reporting_work_to(Arc::new(queue.clone()));
    }
    // Listen for the signals before the API answers anything: a SIGTERM that comes as soon as
    // `/healthz` says ready must drain, not kill the process.
    let shutdown = shutdown_signal();
    let (stop, stopped) = watch::channel(false);
    let expiry = tokio::spawn(eci_api::expiry::run(
        state.clone(),
        Duration::from_secs(tuning.expiry_interval_secs.max(1)),
        stopped.clone(),
    ));
    let scaler_config =
        ScalerConfig { tick: Duration::from_secs(tuning.scaler_tick_secs.max(1)), ..ScalerConfig::default() };
    let scaler = tokio::spawn(eci_api::scaling::run(state.clone(), leases, scaler_config, stopped.clone()));
    // The API's port first: the simulated clusters take free ports, and one must not take this one.
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    // The guard answers before any cluster is started: with `failurePolicy: Fail`, a cluster that
    // cannot reach it cannot delete even what the reconcilers release.
    let guard = match guard {
        Some((guard_listen, tls)) => {
            let guard_listener = GuardListener::bind(guard_listen, &tls).await?;
            let base_url = guard_listener.base_url();
            tracing::info!(url = %base_url, "deletion guard listening");
            let mut guard_stopped = stopped.clone();
            let server = axum::serve(guard_listener, eci_api::admission::router(state.clone()))
                .with_graceful_shutdown(async move {
                    let _ = guard_stopped.changed().await;
                });
            Some((tokio::spawn(async move { server.await }), base_url, tls.ca_pem))
        }
        None => None,
    };
    let manager = ManagerConfig {
        clock: state.clock.clone(),
        metrics_interval: Duration::from_secs(tuning.metrics_interval_secs.max(1)),
        ..ManagerConfig::default()
    };
    let reconcilers = match &clusters {
        Clusters::Simulated { fleet, boot_delay, kubeconfig, objects } => {
            let guard = guard.as_ref().map(|(_, url, ca_pem)| (url.as_str(), ca_pem.as_str()));
            let simulated = Simulated { boot_delay: *boot_delay, objects, guard };
            let clusters =
                FleetClusters::simulated(fleet, simulated, &state.store, &queue, &manager, &stopped).await?;
            clusters.write_kubeconfig(kubeconfig)?;
            Some(clusters)
        }
        Clusters::Kubeconfig { fleet } => {
            Some(FleetClusters::from_kubeconfig(fleet, &state.store, &queue, &manager, &stopped).await?)
        }
        Clusters::None => None,
    };
    tracing::info!(%listen, "API listening");
    let store = state.store.clone();
    let mut api_stopped = stopped.clone();
    let server = axum::serve(listener, eci_api::router(state)).with_graceful_shutdown(async move {
        let _ = api_stopped.changed().await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!("shutting down: draining requests");
    let _ = stop.send(true);
    server.await??;
    if let Some((guard, _, _)) = guard {
        guard.await??;
    }
    expiry.await?;
    scaler.await?;
    if let Some(reconcilers) = reconcilers {
        reconcilers.drain().await;
    }
    store.close().await;
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so signals are caught from that moment on.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    };
    async move {
        #[cfg(unix)]
        {
            async fn recv(s: std::io::Result<tokio::signal::unix::Signal>) {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
            let (int, term) = signals;
            tokio::select! { _ = recv(int) => {}, _ = recv(term) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
