//! Small helpers shared by the repository modules: time and enum columns, placeholder lists.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

use crate::{Error, Result};

/// Times are stored as UTC milliseconds since the epoch, the one type both backends agree on.
pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn time(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single().ok_or_else(|| Error::Corrupt { what: "time", why: ms.to_string() })
}

pub fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    ms.map(time).transpose()
}

/// Parses a stored product word (a state, a carrier, a runtime).
pub fn word<T: FromStr>(what: &'static str, s: &str) -> Result<T> {
    s.parse().map_err(|_| Error::Corrupt { what, why: format!("unknown value `{s}`") })
}

/// Parses a stored comma-separated list of product words.
pub fn words<T: FromStr>(what: &'static str, s: &str) -> Result<Vec<T>> {
    s.split(',').filter(|w| !w.is_empty()).map(|w| word(what, w)).collect()
}

pub fn json<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt { what, why: e.to_string() })
}

pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize to JSON")
}

/// Unsigned amounts go into BIGINT columns; nothing the platform counts comes near 2^63.
pub fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn uint(what: &'static str, n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::Corrupt { what, why: format!("negative amount {n}") })
}

/// `$first, $first+1, ...` for `n` parameters, the placeholder form both backends accept.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Placeholders for statements with thousands of parameters. SQLite looks numbered parameters up
/// by a linear scan, which makes a 6,000-parameter INSERT quadratic; its anonymous `?` is bound by
/// position at no cost. PostgreSQL only knows `$N`.
pub fn bulk_placeholders(backend: crate::Backend, first: usize, n: usize) -> String {
    match backend {
        crate::Backend::Sqlite => vec!["?"; n].join(", "),
        crate::Backend::Postgres => placeholders(first, n),
    }
}

/// A fresh time-ordered id with the kind's prefix; ordering by id is ordering by creation.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// `state IN (...)` over instance states named by core; the words are the enum's own, never input.
pub fn state_in(states: &[eci_core::InstanceState]) -> String {
    let words: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("state IN ({})", words.join(", "))
}
