//! The coordination store: state that several control-plane replicas must share but that does not
//! belong in the database: fixed request-rate windows per tenant, and leases on work that must run
//! in one replica at a time (the scaler). Both are in-process for the embedded default, and in
//! Redis in production so that every replica counts against the same windows and leases.

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

/// Leases on work that must run in one replica at a time (the scaler), each taken for a time and
/// renewed by its holder. Every taking of a lease has a higher epoch than the one before, which a
/// holder's writes can be fenced by.
#[derive(Clone)]
pub enum Leases {
    /// Held in this process: the embedded default, or a single replica.
    InProcess(std::sync::Arc<Mutex<HashMap<String, Held>>>),
    /// Held in Redis, so that one replica of many holds each.
    Redis(redis::aio::ConnectionManager),
}

/// Who holds an in-process lease, until when, and since which taking.
#[derive(Debug, Clone)]
pub struct Held {
    holder: String,
    until_ms: u64,
    epoch: u64,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Leases::InProcess(_) => "Leases::InProcess",
            Leases::Redis(_) => "Leases::Redis",
        })
    }
}

/// Takes the lease at `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms when it is free (a new epoch from
/// `KEYS[2]`), renews it when `ARGV[1]` holds it, and answers the epoch, or -1 when another holds it.
const TAKE_OR_RENEW: &str = r"
local held = redis.call('GET', KEYS[1])
if not held then
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '@' .. epoch, 'PX', ARGV[2])
  return epoch
end
local holder, epoch = string.match(held, '^(.*)@(%d+)$')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(epoch)
end
return -1
";

/// Gives the lease at `KEYS[1]` up if `ARGV[1]` holds it.
const GIVE_UP: &str = r"
local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^(.*)@%d+$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
";

impl Leases {
    /// Leases kept in this process.
    pub fn in_process() -> Self {
        Leases::InProcess(Default::default())
    }

    /// Leases kept in Redis at `url`.
    pub async fn redis(url: &str) -> Result<Self> {
        match RateWindows::redis(url).await? {
            RateWindows::Redis(manager) => Ok(Leases::Redis(manager)),
            RateWindows::InProcess(_) => unreachable!("RateWindows::redis connects to Redis"),
        }
    }

    /// Takes `name` for `holder` for `ttl` from `now_ms` if no one else holds it, or renews it if
    /// `holder` does. The epoch of the holder's taking when it holds the lease; `None` otherwise.
    /// In Redis the lease runs on Redis's clock, so `now_ms` only matters in process.
    pub async fn hold(&self, name: &str, holder: &str, ttl: Duration, now_ms: u64) -> Result<Option<u64>> {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        match self {
            Leases::InProcess(leases) => {
                let mut leases = leases.lock().expect("leases lock poisoned");
                let next_epoch = leases.get(name).map_or(1, |h| h.epoch + 1);
                let held = leases.entry(name.to_string()).or_insert(Held {
                    holder: holder.to_string(),
                    until_ms: 0,
                    epoch: next_epoch,
                });
                if held.holder == holder && held.until_ms > now_ms {
                    held.until_ms = now_ms + ttl_ms;
                    return Ok(Some(held.epoch));
                }
                if held.until_ms <= now_ms {
                    *held = Held { holder: holder.to_string(), until_ms: now_ms + ttl_ms, epoch: next_epoch };
                    return Ok(Some(next_epoch));
                }
                Ok(None)
            }
            Leases::Redis(conn) => {
                let mut conn = conn.clone();
                let epoch: i64 = redis::cmd("EVAL")
                    .arg(TAKE_OR_RENEW)
                    .arg(2)
                    .arg(format!("eci:lease:{name}"))
                    .arg(format!("eci:lease-epoch:{name}"))
                    .arg(holder)
                    .arg(ttl_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::Coordination)?;
                Ok(u64::try_from(epoch).ok())
            }
        }
    }

    /// Gives `name` up if `holder` holds it, so that another replica can take it at once.
    pub async fn give_up(&self, name: &str, holder: &str) -> Result<()> {
        match self {
            Leases::InProcess(leases) => {
                let mut leases = leases.lock().expect("leases lock poisoned");
                if let Some(held) = leases.get_mut(name).filter(|h| h.holder == holder) {
                    held.until_ms = 0;
                }
                Ok(())
            }
            Leases::Redis(conn) => {
                let mut conn = conn.clone();
                let _: i64 = redis::cmd("EVAL")
                    .arg(GIVE_UP)
                    .arg(1)
                    .arg(format!("eci:lease:{name}"))
                    .arg(holder)
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::Coordination)?;
                Ok(())
            }
        }
    }
}
