//! The coordination store: state that several control-plane replicas must share but that does not
//! belong in the database. Today that is fixed request-rate windows per tenant; in-process for the
//! embedded default, Redis in production so that every replica counts against the same window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::{Error, Result};

/// The verdict on one request against a rate window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the limit.
    Allowed,
    /// Over the limit; the window reopens after this long.
    Limited {
        /// How long until the next window opens.
        retry_after: Duration,
    },
}

/// Counts hits in fixed windows of `window`, keyed by e.g. a tenant id.
#[derive(Clone)]
pub enum RateWindows {
    /// Counted in this process: the embedded default, or a single replica.
    InProcess(std::sync::Arc<InProcessWindows>),
    /// Counted in Redis, so that every replica sees the same windows.
    Redis(redis::aio::ConnectionManager),
}

/// Windows kept in this process: `key -> (window number, hits in it)`.
#[derive(Default)]
pub struct InProcessWindows {
    windows: Mutex<HashMap<String, (u64, u64)>>,
}

impl std::fmt::Debug for RateWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateWindows::InProcess(_) => "RateWindows::InProcess",
            RateWindows::Redis(_) => "RateWindows::Redis",
        })
    }
}

impl RateWindows {
    /// Windows kept in this process.
    pub fn in_process() -> Self {
        RateWindows::InProcess(Default::default())
    }

    /// Connects to Redis at `url` (`redis://127.0.0.1:6379`).
    pub async fn redis(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(Error::Coordination)?;
        // The crate's defaults retry a failed connection for minutes (backoff from 1 s, growing a
        // hundredfold) and wait forever for an answer; a rate check in front of every request must
        // fail fast instead, at start-up and when Redis goes away later.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_factor(2)
            .set_max_delay(500)
            .set_number_of_retries(2)
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2));
        let manager = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(Error::Coordination)?;
        Ok(RateWindows::Redis(manager))
    }

    /// Records one hit for `key` at `now_ms` and says whether it is within `limit` per `window`.
    pub async fn hit(&self, key: &str, limit: u64, window: Duration, now_ms: u64) -> Result<RateVerdict> {
        let window_ms = window.as_millis().max(1) as u64;
        let number = now_ms / window_ms;
        let retry_after = Duration::from_millis((number + 1) * window_ms - now_ms);
        let hits = match self {
            RateWindows::InProcess(w) => {
                let mut windows = w.windows.lock().expect("rate windows lock poisoned");
                if windows.len() > 100_000 {
                    windows.retain(|_, (n, _)| *n == number);
                }
                let entry = windows.entry(key.to_string()).or_insert((number, 0));
                if entry.0 != number {
                    *entry = (number, 0);
                }
                entry.1 += 1;
                entry.1
            }
            RateWindows::Redis(conn) => {
                let redis_key = format!("eci:rate:{key}:{number}");
                let mut conn = conn.clone();
                let (hits,): (u64,) = redis::pipe()
                    .atomic()
                    .incr(&redis_key, 1u64)
                    .pexpire(&redis_key, (window_ms * 2) as i64)
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::Coordination)?;
                hits
            }
        };
        Ok(if hits <= limit { RateVerdict::Allowed } else { RateVerdict::Limited { retry_after } })
    }
}
