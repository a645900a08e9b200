//! The coordination store: state that several control-plane replicas must share but that does not
//! belong in the database: fixed request-rate windows per tenant, and leases on work that must run
//! in one replica at a time (the scaler), and risk control's deletion windows and breakers. All are
//! in-process for the embedded default, and in Redis in production so that every replica counts
//! against the same windows and leases.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use eci_core::risk::{Budget, SlidingLog, Take, Window};

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

/// The deletion windows and their breakers (see [`eci_core::risk`]): a sliding log of deletions per
/// window, and the windows whose breaker is open. In process for the embedded default, in Redis in
/// production so that every replica counts in the same windows and sees the same breakers.
#[derive(Clone)]
pub enum Breakers {
    /// Kept in this process.
    InProcess(std::sync::Arc<Mutex<InProcessBreakers>>),
    /// Kept in Redis.
    Redis(redis::aio::ConnectionManager),
}

/// The windows kept in this process: each window's log, and when each open breaker tripped.
#[derive(Debug, Default)]
pub struct InProcessBreakers {
    logs: HashMap<String, SlidingLog>,
    open: HashMap<String, u64>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Breakers::InProcess(_) => "Breakers::InProcess",
            Breakers::Redis(_) => "Breakers::Redis",
        })
    }
}

/// What the windows said to a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It fits in every window and was counted in each.
    Admitted,
    /// A window is full or its breaker open: nothing was counted anywhere.
    Refused(Refusal),
}

/// Why the windows refused a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The window that refused it.
    pub window: Window,
    /// Its budget.
    pub budget: Budget,
    /// How many deletions it held in its last window.
    pub used: u64,
    /// This deletion filled it: its breaker opened just now (a breaker that was open already says
    /// `false`).
    pub tripped: bool,
    /// When the window would have room for this deletion again, once its breaker is reset.
    pub retry_after: Duration,
}

/// Counts a deletion in every window of `KEYS` (`KEYS[1]`: the hash of open breakers; then each
/// window's log, a sorted set of `<id>:<count>` members scored by their moment) unless a breaker of
/// one of them is open or the deletion does not fit in it, in which case that breaker opens and the
/// answer names the window (its index from 1, whether it tripped just now, its log as score/count
/// pairs). `ARGV`: now (ms), bypass (1 counts without refusing), the member's id, then window (ms),
/// limit, count and the window's name for each log.
const TAKE_DELETIONS: &str = r"
local now = tonumber(ARGV[1])
local bypass = ARGV[2] == '1'
local n = #KEYS - 1
for i = 1, n do
  local log = KEYS[i + 1]
  local window, limit, count = tonumber(ARGV[4 * i]), tonumber(ARGV[4 * i + 1]), tonumber(ARGV[4 * i + 2])
  local name = ARGV[4 * i + 3]
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  if not bypass then
    local open = redis.call('HEXISTS', KEYS[1], name) == 1
    local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    local used = 0
    local pairs_out = {}
    for j = 1, #entries, 2 do
      local c = tonumber(string.match(entries[j], ':(%d+)$'))
      used = used + c
      table.insert(pairs_out, entries[j + 1])
      table.insert(pairs_out, tostring(c))
    end
    if open or used + count > limit then
      if not open then redis.call('HSET', KEYS[1], name, now) end
      return {i, open and 0 or 1, used, pairs_out}
    end
  end
end
for i = 1, n do
  local log = KEYS[i + 1]
  redis.call('ZADD', log, now, ARGV[3] .. ':' .. ARGV[4 * i + 2])
  redis.call('PEXPIRE', log, tonumber(ARGV[4 * i]))
end
return {0, 0, 0, {}}
";

impl Breakers {
    /// Windows kept in this process.
    pub fn in_process() -> Self {
        Breakers::InProcess(Default::default())
    }

    /// Windows kept in Redis at `url`.
    pub async fn redis(url: &str) -> Result<Self> {
        match RateWindows::redis(url).await? {
            RateWindows::Redis(manager) => Ok(Breakers::Redis(manager)),
            RateWindows::InProcess(_) => unreachable!("RateWindows::redis connects to Redis"),
        }
    }

    /// Counts a deletion in each window of `takes` at `now_ms`, all or nothing: refused when a
    /// window's breaker is open or the deletion would overfill it, which trips its breaker. With
    /// `bypass` (an admin approved it) it is counted and never refused.
    pub async fn take(&self, takes: &[Take], now_ms: u64, bypass: bool) -> Result<Admission> {
        match self {
            Breakers::InProcess(breakers) => {
                let mut breakers = breakers.lock().expect("breakers lock poisoned");
                let breakers = &mut *breakers;
                for take in takes {
                    let key = take.window.key();
                    let log = breakers.logs.entry(key.clone()).or_default();
                    log.prune(now_ms, take.budget.window());
                    if bypass {
                        continue;
                    }
                    let open = breakers.open.contains_key(&key);
                    if open || log.used() + take.count > take.budget.deletions {
                        let refusal = Refusal {
                            window: take.window.clone(),
                            budget: take.budget,
                            used: log.used(),
                            tripped: !open,
                            retry_after: log.room_after(
                                now_ms,
                                take.budget.window(),
                                take.budget.deletions,
                                take.count,
                            ),
                        };
                        breakers.open.entry(key).or_insert(now_ms);
                        return Ok(Admission::Refused(refusal));
                    }
                }
                for take in takes {
                    breakers.logs.entry(take.window.key()).or_default().record(now_ms, take.count);
                }
                if breakers.logs.len() > 100_000 {
                    breakers.logs.retain(|_, log| log.used() > 0);
                }
                Ok(Admission::Admitted)
            }
            Breakers::Redis(conn) => {
                let mut script = redis::cmd("EVAL");
                script.arg(TAKE_DELETIONS).arg(takes.len() + 1).arg(OPEN_BREAKERS);
                for take in takes {
                    script.arg(format!("eci:deletions:{}", take.window.key()));
                }
                script
                    .arg(now_ms)
                    .arg(if bypass { 1 } else { 0 })
                    .arg(uuid::Uuid::now_v7().simple().to_string());
                for take in takes {
                    script
                        .arg(take.budget.window_ms())
                        .arg(take.budget.deletions)
                        .arg(take.count)
                        .arg(take.window.key());
                }
                let mut conn = conn.clone();
                let (index, tripped, used, entries): (usize, u8, u64, Vec<u64>) =
                    script.query_async(&mut conn).await.map_err(Error::Coordination)?;
                let Some(take) = index.checked_sub(1).and_then(|i| takes.get(i)) else {
                    return Ok(Admission::Admitted);
                };
                let mut log = SlidingLog::default();
                for pair in entries.chunks_exact(2) {
                    log.record(pair[0], pair[1]);
                }
                Ok(Admission::Refused(Refusal {
                    window: take.window.clone(),
                    budget: take.budget,
                    used,
                    tripped: tripped == 1,
                    retry_after: log.room_after(
                        now_ms,
                        take.budget.window(),
                        take.budget.deletions,
                        take.count,
                    ),
                }))
            }
        }
    }

    /// Closes `window`'s breaker and empties its log, so that it lets a whole budget through again;
    /// says whether it was open.
    pub async fn reset(&self, window: &Window) -> Result<bool> {
        let key = window.key();
        match self {
            Breakers::InProcess(breakers) => {
                let mut breakers = breakers.lock().expect("breakers lock poisoned");
                breakers.logs.remove(&key);
                Ok(breakers.open.remove(&key).is_some())
            }
            Breakers::Redis(conn) => {
                let mut conn = conn.clone();
                let (closed, _): (u64, u64) = redis::pipe()
                    .atomic()
                    .hdel(OPEN_BREAKERS, &key)
                    .del(format!("eci:deletions:{key}"))
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::Coordination)?;
                Ok(closed == 1)
            }
        }
    }

    /// The open breakers, each with the moment (UTC ms) it tripped.
    pub async fn open(&self) -> Result<Vec<(Window, u64)>> {
        let open: Vec<(String, u64)> = match self {
            Breakers::InProcess(breakers) => {
                let breakers = breakers.lock().expect("breakers lock poisoned");
                breakers.open.iter().map(|(k, at)| (k.clone(), *at)).collect()
            }
            Breakers::Redis(conn) => {
                let mut conn = conn.clone();
                redis::cmd("HGETALL")
                    .arg(OPEN_BREAKERS)
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::Coordination)?
            }
        };
        let mut open: Vec<(Window, u64)> =
            open.into_iter().filter_map(|(k, at)| Some((Window::parse(&k)?, at))).collect();
        open.sort();
        Ok(open)
    }

    /// Opens the breakers of `open` again (each with when it tripped), as the audit log remembers
    /// them: an in-process breaker must not close because the control plane restarted.
    pub async fn restore(&self, open: &[(Window, u64)]) -> Result<()> {
        match self {
            Breakers::InProcess(breakers) => {
                let mut breakers = breakers.lock().expect("breakers lock poisoned");
                for (window, at) in open {
                    breakers.open.entry(window.key()).or_insert(*at);
                }
                Ok(())
            }
            // Redis outlives the control plane; what it holds is the truth.
            Breakers::Redis(_) => Ok(()),
        }
    }
}

/// The Redis hash of open breakers: window key -> when it tripped (UTC ms).
const OPEN_BREAKERS: &str = "eci:breakers:open";
