//! What the platform pages on: a tripped deletion breaker, a refused out-of-band deletion, an
//! instance whose Pod or VMI vanished, an IDC that turned disconnected. An [`Alert`] is raised where
//! it happens (the store, through an [`AlertSink`]) and delivered as a Prometheus Alertmanager
//! webhook receiver gets it ([`AlertmanagerMessage`]), so existing alert routing takes it as it is.

use std::collections::BTreeMap;
use std::hash::Hasher;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

crate::word_enum! {
    /// What an alert is about.
    AlertName, "alert", {
        /// A deletion window was full: its breaker opened, and deletions wait for an admin.
        BreakerTripped => "breaker_tripped",
        /// Someone asked an IDC's cluster to delete a live instance's object, and was refused.
        OutOfBandDeletionDenied => "out_of_band_deletion_denied",
        /// A live instance's Pod or VMI disappeared from its cluster: the instance failed.
        InstanceVanished => "instance_vanished",
        /// An IDC's cluster stopped answering: its instances are unknown.
        IdcDisconnected => "idc_disconnected",
    }
}

impl AlertName {
    /// The `alertname` label, in the CamelCase alerting rules use.
    pub fn alertname(self) -> &'static str {
        match self {
            AlertName::BreakerTripped => "EciDeletionBreakerTripped",
            AlertName::OutOfBandDeletionDenied => "EciOutOfBandDeletionDenied",
            AlertName::InstanceVanished => "EciInstanceVanished",
            AlertName::IdcDisconnected => "EciIdcDisconnected",
        }
    }

    /// The `severity` label: a tripped breaker or a lost IDC needs someone now.
    pub fn severity(self) -> &'static str {
        match self {
            AlertName::BreakerTripped | AlertName::IdcDisconnected => "critical",
            AlertName::OutOfBandDeletionDenied | AlertName::InstanceVanished => "warning",
        }
    }
}

/// One alert, raised once where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// What it is about.
    pub name: AlertName,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What it concerns (`idc`, `tenant`, `instance`, `breaker`, ...), as alert labels.
    pub labels: BTreeMap<String, String>,
    /// One sentence for the person paged.
    pub summary: String,
}

impl Alert {
    /// An alert about `name` at `at`, concerning what `labels` name.
    pub fn new(
        name: AlertName,
        at: DateTime<Utc>,
        labels: &[(&str, &str)],
        summary: impl Into<String>,
    ) -> Alert {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Alert { name, at, labels, summary: summary.into() }
    }

    /// Every label of the alert as Alertmanager sees it: `alertname`, `severity`, `service` and
    /// the alert's own.
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("alertname".into(), self.name.alertname().into());
        labels.insert("severity".into(), self.name.severity().into());
        labels.insert("service".into(), "eci".into());
        labels
    }
}

/// Hears of alerts; raising one never waits for its delivery.
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    /// `alert` happened.
    fn raise(&self, alert: Alert);
}

/// The body Alertmanager's webhook receiver posts (version 4), for one group of one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerMessage {
    /// Always `"4"`.
    pub version: &'static str,
    /// Identifies the group, as Alertmanager spells it: `{}:{alertname="…"}`.
    pub group_key: String,
    /// How many alerts were left out (none).
    pub truncated_alerts: u32,
    /// `firing`: every alert the platform raises is news of something that happened.
    pub status: &'static str,
    /// The receiver's name.
    pub receiver: String,
    /// The labels the group is by: `alertname`.
    pub group_labels: BTreeMap<String, String>,
    /// The labels every alert of the group has: all of the one alert's.
    pub common_labels: BTreeMap<String, String>,
    /// The annotations every alert of the group has.
    pub common_annotations: BTreeMap<String, String>,
    /// Where the platform is (its API's address), for links back.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<AlertmanagerAlert>,
}

/// One alert of an [`AlertmanagerMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    /// `firing`.
    pub status: &'static str,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `summary` and `description`.
    pub annotations: BTreeMap<String, String>,
    /// When it happened, RFC 3339.
    pub starts_at: String,
    /// Go's zero time, which is what Alertmanager sends for an alert with no known end.
    pub ends_at: &'static str,
    /// Where to read more: the platform's audit log or IDC view.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// The labels' fingerprint, computed as Prometheus computes it (FNV-1a over the sorted
    /// labels), so that a receiver deduplicating on it agrees with Alertmanager.
    pub fingerprint: String,
}

/// Go's zero `time.Time`, as Alertmanager writes an unset `endsAt`.
const NO_END: &str = "0001-01-01T00:00:00Z";

/// Prometheus's fingerprint of a label set: FNV-1a 64 over each name and value (sorted by name),
/// each followed by the byte 0xff, in lower-case hex.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hasher = fnv::FnvHasher::default();
    for (name, value) in labels {
        hasher.write(name.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(value.as_bytes());
        hasher.write_u8(0xff);
    }
    format!("{:016x}", hasher.finish())
}

/// The message a receiver named `receiver` gets for `alert`, links pointing under `external_url`.
pub fn alertmanager_message(alert: &Alert, receiver: &str, external_url: &str) -> AlertmanagerMessage {
    let labels = alert.all_labels();
    let annotations = BTreeMap::from([
        ("summary".to_string(), alert.summary.clone()),
        ("description".to_string(), format!("{}: {}", alert.name, alert.summary)),
    ]);
    let external_url = external_url.trim_end_matches('/').to_string();
    let generator_url = match alert.labels.get("idc") {
        Some(idc) if alert.name == AlertName::IdcDisconnected => {
            format!("{external_url}/v1/admin/idcs/{idc}")
        }
        _ if alert.name == AlertName::InstanceVanished => format!("{external_url}/v1/risk/audit"),
        _ => format!("{external_url}/v1/risk/events"),
    };
    let group_labels = BTreeMap::from([("alertname".to_string(), alert.name.alertname().to_string())]);
    AlertmanagerMessage {
        version: "4",
        group_key: format!("{{}}:{{alertname=\"{}\"}}", alert.name.alertname()),
        truncated_alerts: 0,
        status: "firing",
        receiver: receiver.to_string(),
        group_labels,
        common_labels: labels.clone(),
        common_annotations: annotations.clone(),
        external_url,
        alerts: vec![AlertmanagerAlert {
            status: "firing",
            fingerprint: fingerprint(&labels),
            labels,
            annotations,
            starts_at: alert.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            ends_at: NO_END,
            generator_url,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_fingerprint_is_prometheus_own() {
        // FNV-1a 64 of `alertname\xffWatchdog\xff`, worked out by hand from the algorithm.
        let labels = BTreeMap::from([("alertname".to_string(), "Watchdog".to_string())]);
        assert_eq!(fingerprint(&labels), "003b0a0f7d3fa569");
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325", "FNV-1a's offset basis");
    }

    #[test]
    fn a_message_is_one_firing_group_of_one_alert_with_every_label() {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 14, 0, 0).unwrap();
        let alert = Alert::new(
            AlertName::IdcDisconnected,
            at,
            &[("idc", "idc-shenzhen-1")],
            "the cluster of idc-shenzhen-1 stopped answering",
        );
        let message = alertmanager_message(&alert, "eci", "http://cp.example:7070/");
        assert_eq!((message.version, message.status, message.alerts.len()), ("4", "firing", 1));
        let one = &message.alerts[0];
        assert_eq!(one.labels["alertname"], "EciIdcDisconnected");
        assert_eq!(one.labels["severity"], "critical");
        assert_eq!(one.labels["idc"], "idc-shenzhen-1");
        assert_eq!(one.starts_at, "2026-12-03T14:00:00.000Z");
        assert_eq!(one.generator_url, "http://cp.example:7070/v1/admin/idcs/idc-shenzhen-1");
        assert_eq!(message.common_labels, one.labels);
        assert_eq!(message.group_key, "{}:{alertname=\"EciIdcDisconnected\"}");
    }
}
