//! Turning API answers into text: borderless kubectl-style tables, key/value views, timestamps in
//! local time, and the pretty JSON of `-o json`. Everything here is a pure function of its input.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Local, TimeZone};
use comfy_table::{CellAlignment, Table, presets};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::OutputFormat;

/// Space between two table columns.
const GAP: u16 = 3;

/// A borderless table with `header`; columns in `right` (numbers) are right-aligned.
pub fn table(header: &[&str], right: &[usize]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header.iter().copied());
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, GAP));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// The table as text, without the padding comfy-table leaves at the end of each line.
pub fn finish(table: &Table) -> String {
    table.lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// `Key:  value` lines with the values aligned, for views of a single resource.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<width$}  {v}", format!("{k}:")).trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// An RFC 3339 timestamp in the local time zone; `-` when absent.
pub fn when(ts: Option<&str>) -> String {
    when_in(ts, &Local)
}

/// [`when`] in a given time zone, so tests do not depend on the machine's.
pub fn when_in<Tz: TimeZone>(ts: Option<&str>, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match ts.filter(|t| !t.is_empty()) {
        None => "-".to_string(),
        Some(t) => match DateTime::parse_from_rfc3339(t) {
            Ok(at) => at.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string(),
            Err(_) => t.to_string(),
        },
    }
}

/// An optional text, `-` when absent or empty.
pub fn dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

/// A JSON scalar as plain text (strings without quotes); `-` for null.
pub fn plain(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An instance size as `cpu=2 memory=4Gi gpu=1`; the GPU part only when there is one.
pub fn spec(spec: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["cpu", "memory", "gpu"] {
        match spec.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if key == "gpu" && v.as_u64() == Some(0) => {}
            Some(v) => parts.push(format!("{key}={}", plain(v))),
        }
    }
    if parts.is_empty() { "-".to_string() } else { parts.join(" ") }
}

/// Labels as `k=v, k2=v2`; `-` when there are none.
pub fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_string();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// A page of a list answer, as every list endpoint shapes it.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    /// The resources on this page.
    pub items: Vec<T>,
    /// Where the next page starts; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Reads an answer into the client's view of a resource, naming `what` if it does not fit.
pub fn decode<T: DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| anyhow!("unexpected {what} from the server: {e}"))
}

/// The text for a single-resource answer: its JSON, or `view` of it decoded as `T`.
pub fn one<T: DeserializeOwned>(
    output: OutputFormat,
    answer: Value,
    what: &str,
    view: impl FnOnce(&T) -> String,
) -> Result<String> {
    match output {
        OutputFormat::Json => Ok(json(&answer)),
        OutputFormat::Table => Ok(view(&decode(answer, what)?)),
    }
}

/// The text for a list answer: its JSON, or `view` of its items (`No <what> found.` when there
/// are none). In table mode a further page is pointed out on stderr, since its cursor is not shown.
pub fn many<T: DeserializeOwned>(
    output: OutputFormat,
    answer: Value,
    what: &str,
    view: impl FnOnce(&[T]) -> String,
) -> Result<String> {
    if output == OutputFormat::Json {
        return Ok(json(&answer));
    }
    let page: Page<T> = decode(answer, &format!("list of {what}"))?;
    if page.next_cursor.is_some_and(|c| !c.is_empty()) {
        super::note(&format!("(more {what} exist: pass --all to list every page, or a larger --limit)"));
    }
    if page.items.is_empty() {
        return Ok(format!("No {what} found."));
    }
    Ok(view(&page.items))
}

/// The answer of `-o json`, pretty-printed.
pub fn json(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};
    use serde_json::json;

    #[test]
    fn tables_are_borderless_and_trimmed() {
        let mut t = table(&["ID", "COUNT"], &[1]);
        t.add_row(["b-1", "5"]).add_row(["b-22", "120"]);
        assert_eq!(finish(&t), "ID     COUNT\nb-1        5\nb-22     120");
    }

    #[test]
    fn key_values_are_aligned() {
        let text = key_values(&[("ID", "b-1".into()), ("Reservation", "-".into())]);
        assert_eq!(text, "ID:           b-1\nReservation:  -");
    }

    #[test]
    fn timestamps_are_shown_in_the_given_zone() {
        assert_eq!(when_in(Some("2025-03-01T10:00:00Z"), &Utc), "2025-03-01 10:00:00");
        let cst = FixedOffset::east_opt(8 * 3600).unwrap();
        assert_eq!(when_in(Some("2025-03-01T10:00:00.123Z"), &cst), "2025-03-01 18:00:00");
        assert_eq!(when_in(None, &Utc), "-");
        assert_eq!(when_in(Some("yesterday"), &Utc), "yesterday");
    }

    #[test]
    fn specs_skip_a_zero_gpu() {
        assert_eq!(spec(&json!({"cpu":"2","memory":"4Gi","gpu":0})), "cpu=2 memory=4Gi");
        assert_eq!(spec(&json!({"cpu":"500m","memory":"1Gi","gpu":1})), "cpu=500m memory=1Gi gpu=1");
        assert_eq!(spec(&Value::Null), "-");
    }
}
