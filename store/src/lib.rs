//! Persistence of the platform: one set of repository functions over SQLite (the embedded default)
//! and PostgreSQL (production), through sqlx's `Any` driver.
//!
//! - [`Store`]: the connection pool, migrations, and the repository functions grouped by resource:
//!   [`fleet`] (IDCs and their ledger lines), [`tenants`] (tenants, API keys, quotas), [`batches`],
//!   [`instances`], [`reservations`], [`billing`] (prices, metered instances, invoices); [`paging`]
//!   (keyset pages by id, for every listing); [`risk`] (risk control: deletion rules, the gate every
//!   release passes, the audit log, breaker events and held operations).
//! - [`coordination`]: request-rate windows, leases and deletion breakers, in-process by default and in Redis in production.
//! - [`work`]: the port through which writes report the work they give IDC clusters.
//! - `testing` (feature `testing`): fresh SQLite / PostgreSQL stores, seed data and ledger checks
//!   for this crate's tests and for those of the crates built on it.
//!
//! Architecture invariant: only this crate knows SQL. Every write that touches the capacity ledger
//! happens in one transaction with conditional updates (`... WHERE allocated + n <= total`), so two
//! concurrent requests can never over-commit an IDC whatever the database's isolation level.
//! Rows are locked in one order everywhere (tenant, reservation, reservation slots, then IDCs by
//! id), so concurrent transactions on PostgreSQL cannot deadlock.
//! Statements inside a transaction write before they read, which keeps SQLite's single writer from
//! refusing a transaction that started as a reader.

#![warn(missing_docs)]

pub mod batches;
pub mod billing;
pub mod coordination;
mod error;
pub mod fleet;
pub mod groups;
pub mod instances;
mod ledger;
pub mod paging;
pub mod reservations;
pub mod risk;
mod sql;
pub mod tenants;
#[cfg(feature = "testing")]
pub mod testing;
pub mod work;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use error::{Error, Result};

/// Which database the store talks to; a few statements differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: one file, one writer.
    Sqlite,
    /// Production: several replicas on one database.
    Postgres,
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// The pool's size: how many statements may run at once.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing.
    pub acquire_timeout: Duration,
}

impl StoreConfig {
    /// A configuration for `url` with the defaults: 16 connections, a 10 s wait for one.
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig { url: url.into(), max_connections: 16, acquire_timeout: Duration::from_secs(10) }
    }

    /// Sets the pool's size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }
}

/// The handle every other part of the platform uses to read and write its records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Who hears of new work for IDC clusters, if anyone (see [`work`]).
    work: Option<std::sync::Arc<dyn work::WorkSink>>,
    /// Who hears of the alerts the store's writes raise, if anyone (see [`work`]).
    alerts: Option<std::sync::Arc<dyn eci_core::alerts::AlertSink>>,
    /// The fleet's area codes, which every batch and reservation is validated against; refreshed
    /// when this store changes an IDC and at least every [`fleet::AREA_CODES_TTL`] for changes made
    /// by other replicas.
    area_codes: moka::sync::Cache<(), std::sync::Arc<std::collections::BTreeSet<String>>>,
    /// Risk control's deletion windows and breakers: in process, or shared in Redis.
    breakers: coordination::Breakers,
    /// Each tenant's risk rules, for [`risk::RULES_TTL`].
    risk_rules: moka::sync::Cache<String, eci_core::risk::Rules>,
}

impl Store {
    /// Connects and brings the schema up to date.
    #[tracing::instrument(skip_all, fields(backend))]
    pub async fn connect(config: &StoreConfig) -> Result<Store> {
        install_default_drivers();
        let backend = if config.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if config.url.starts_with("postgres:") || config.url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::Connect(sqlx::Error::Configuration(
                "database URL must start with sqlite: or postgres:".into(),
            )));
        };
        tracing::Span::current().record("backend", tracing::field::debug(backend));
        let mut options = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout);
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; the busy timeout makes writers
                    // queue instead of failing when they meet.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&config.url).await.map_err(Error::Connect)?;
        sqlx::migrate!("./migrations").run(&pool).await.map_err(Error::Migrate)?;
        let area_codes =
            moka::sync::Cache::builder().max_capacity(1).time_to_live(fleet::AREA_CODES_TTL).build();
        let risk_rules =
            moka::sync::Cache::builder().max_capacity(100_000).time_to_live(risk::RULES_TTL).build();
        let store = Store {
            pool,
            backend,
            work: None,
            alerts: None,
            area_codes,
            breakers: coordination::Breakers::in_process(),
            risk_rules,
        };
        store.restore_breakers().await?;
        store.upgrade_request_hashes().await?;
        Ok(store)
    }

    /// Which database this store talks to, for the few statements that differ.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; waits for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
