//! What an outbox row carries (a notification as stored, or a rendered report),
//! and the shapes built from it: Alertmanager's webhook payload version 4 and
//! the data custom templates see.

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::alert::{Alert, AlertStatus, ALERTNAME};
use crate::clock::{to_datetime, TimestampMs};
use crate::dispatch::Notification;
use crate::labels::Labels;

/// The body of an outbox row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    Alerts(StoredNotification),
    Report(RenderedReport),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderedReport {
    pub name: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A [`Notification`] as written to the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredNotification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    pub alerts: Vec<StoredAlert>,
    pub created_at_ms: TimestampMs,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub active_at_ms: TimestampMs,
    pub starts_at_ms: TimestampMs,
    pub ends_at_ms: Option<TimestampMs>,
    /// JSON has no NaN/Inf: kept as Prometheus formats it.
    pub value: String,
    pub generator_url: String,
}

/// Prometheus's float formatting: `NaN`, `+Inf`, `-Inf`, else the shortest form.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

pub fn parse_value(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

impl From<&Alert> for StoredAlert {
    fn from(a: &Alert) -> Self {
        StoredAlert {
            labels: a.labels.to_map(),
            annotations: a.annotations.clone(),
            active_at_ms: a.active_at_ms,
            starts_at_ms: a.starts_at_ms,
            ends_at_ms: a.ends_at_ms,
            value: format_value(a.value),
            generator_url: a.generator_url.clone(),
        }
    }
}

impl StoredAlert {
    pub fn to_alert(&self) -> Alert {
        Alert {
            labels: Labels::from_map(&self.labels),
            annotations: self.annotations.clone(),
            active_at_ms: self.active_at_ms,
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            value: parse_value(&self.value),
            generator_url: self.generator_url.clone(),
        }
    }
    pub fn name(&self) -> &str {
        self.labels.get(ALERTNAME).map(String::as_str).unwrap_or("")
    }
    pub fn fingerprint_hex(&self) -> String {
        Labels::from_map(&self.labels).fingerprint_hex()
    }
    pub fn status_at(&self, now_ms: TimestampMs) -> AlertStatus {
        match self.ends_at_ms {
            Some(end) if end <= now_ms => AlertStatus::Resolved,
            _ => AlertStatus::Firing,
        }
    }
}

impl From<&Notification> for StoredNotification {
    fn from(n: &Notification) -> Self {
        StoredNotification {
            receiver: n.receiver.clone(),
            group_key: n.group_key.clone(),
            group_labels: n.group_labels.to_map(),
            alerts: n.alerts.iter().map(StoredAlert::from).collect(),
            created_at_ms: n.created_at_ms,
        }
    }
}

impl StoredNotification {
    pub fn status(&self) -> AlertStatus {
        AlertStatus::of_group(self.alerts.iter().map(|a| a.status_at(self.created_at_ms)))
    }
    pub fn firing(&self) -> impl Iterator<Item = &StoredAlert> {
        self.alerts
            .iter()
            .filter(|a| a.status_at(self.created_at_ms) == AlertStatus::Firing)
    }
    pub fn resolved(&self) -> impl Iterator<Item = &StoredAlert> {
        self.alerts
            .iter()
            .filter(|a| a.status_at(self.created_at_ms) == AlertStatus::Resolved)
    }
    /// Labels every alert carries with the same value.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|a| &a.labels))
    }
    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|a| &a.annotations))
    }
    /// Without resolved alerts (for integrations with `send_resolved: false`);
    /// `None` when nothing fires.
    pub fn only_firing(&self) -> Option<StoredNotification> {
        let alerts: Vec<StoredAlert> = self.firing().cloned().collect();
        if alerts.is_empty() {
            return None;
        }
        Some(StoredNotification {
            alerts,
            ..self.clone()
        })
    }
}

fn common<'a>(
    mut sets: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let Some(first) = sets.next() else {
        return BTreeMap::new();
    };
    let mut out = first.clone();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}

/// RFC 3339 as Go marshals a time.Time (UTC, fractional seconds only when non-zero).
pub fn rfc3339(ms: TimestampMs) -> String {
    to_datetime(ms).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Go's zero time, which Alertmanager sends as `endsAt` when it is unknown.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Alertmanager's webhook payload, version 4. Each alert also carries `value`
/// (the expression's value, at resolution for a resolved alert): an extra field
/// that receivers written for Alertmanager ignore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    pub status: AlertStatus,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
    pub value: String,
}

impl WebhookMessage {
    /// Builds the payload; `max_alerts` 0 means no limit. Like Alertmanager,
    /// status and common labels are computed over all alerts before truncation.
    pub fn build(n: &StoredNotification, external_url: &str, max_alerts: usize) -> Self {
        let mut alerts: Vec<WebhookAlert> = n
            .alerts
            .iter()
            .map(|a| WebhookAlert {
                status: a.status_at(n.created_at_ms),
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: rfc3339(a.starts_at_ms),
                ends_at: a
                    .ends_at_ms
                    .map(rfc3339)
                    .unwrap_or_else(|| ZERO_TIME.to_string()),
                generator_url: a.generator_url.clone(),
                fingerprint: a.fingerprint_hex(),
                value: a.value.clone(),
            })
            .collect();
        let mut truncated = 0;
        if max_alerts > 0 && alerts.len() > max_alerts {
            truncated = (alerts.len() - max_alerts) as u64;
            alerts.truncate(max_alerts);
        }
        WebhookMessage {
            version: "4".into(),
            group_key: n.group_key.clone(),
            truncated_alerts: truncated,
            status: n.status(),
            receiver: n.receiver.clone(),
            group_labels: n.group_labels.clone(),
            common_labels: n.common_labels(),
            common_annotations: n.common_annotations(),
            external_url: external_url.to_string(),
            alerts,
        }
    }
}

/// A link to the alert in rearguard's API.
pub fn alert_link(external_url: &str, a: &StoredAlert) -> String {
    format!(
        "{}/api/v1/alerts?fingerprint={}",
        external_url.trim_end_matches('/'),
        a.fingerprint_hex()
    )
}

/// The data custom templates see: Alertmanager's template data
/// (`.Status`, `.Receiver`, `.GroupLabels`, `.CommonLabels`, `.CommonAnnotations`,
/// `.ExternalURL`, `.Alerts` with `.Status .Labels .Annotations .StartsAt .EndsAt
/// .GeneratorURL .Fingerprint`), plus `.Value` and `.Link` per alert and
/// `.Alerts.Firing`/`.Alerts.Resolved` as `.FiringAlerts`/`.ResolvedAlerts`.
pub fn template_data(n: &StoredNotification, external_url: &str) -> Value {
    let alert = |a: &StoredAlert| {
        json!({
            "Status": a.status_at(n.created_at_ms),
            "Labels": a.labels,
            "Annotations": a.annotations,
            "StartsAt": rfc3339(a.starts_at_ms),
            "EndsAt": a.ends_at_ms.map(rfc3339).unwrap_or_else(|| ZERO_TIME.to_string()),
            "GeneratorURL": a.generator_url,
            "Fingerprint": a.fingerprint_hex(),
            "Value": a.value,
            "Link": alert_link(external_url, a),
        })
    };
    json!({
        "Status": n.status(),
        "Receiver": n.receiver,
        "GroupKey": n.group_key,
        "GroupLabels": n.group_labels,
        "CommonLabels": n.common_labels(),
        "CommonAnnotations": n.common_annotations(),
        "ExternalURL": external_url,
        "Alerts": n.alerts.iter().map(alert).collect::<Vec<_>>(),
        "FiringAlerts": n.firing().map(alert).collect::<Vec<_>>(),
        "ResolvedAlerts": n.resolved().map(alert).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, sev: &str, ends: Option<i64>) -> StoredAlert {
        StoredAlert {
            labels: [("alertname", name), ("severity", sev), ("service", "api")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), format!("{name} is bad"))].into(),
            active_at_ms: 0,
            starts_at_ms: 60_000,
            ends_at_ms: ends,
            value: "0.05".into(),
            generator_url: "http://x/graph".into(),
        }
    }

    #[test]
    fn webhook_v4_fields_common_labels_and_truncation() {
        let n = StoredNotification {
            receiver: "team".into(),
            group_key: "{}:{service=\"api\"}".into(),
            group_labels: [("service".to_string(), "api".to_string())].into(),
            alerts: vec![
                alert("A", "critical", None),
                alert("B", "critical", Some(100_000)),
                alert("C", "warning", None),
            ],
            created_at_ms: 200_000,
        };
        let m = WebhookMessage::build(&n, "http://rg", 2);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["status"], "firing");
        assert_eq!(v["externalURL"], "http://rg");
        assert_eq!(v["commonLabels"], json!({"service": "api"}));
        assert_eq!(v["commonAnnotations"], json!({}));
        assert_eq!(v["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(v["alerts"][0]["startsAt"], "1970-01-01T00:01:00Z");
        assert_eq!(v["alerts"][1]["status"], "resolved");
        assert_eq!(v["alerts"][1]["endsAt"], "1970-01-01T00:01:40Z");
        assert_eq!(v["alerts"][0]["generatorURL"], "http://x/graph");
        assert_eq!(v["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn values_round_trip_including_nan() {
        for v in [1.5, f64::INFINITY, f64::NEG_INFINITY, 0.0] {
            assert_eq!(parse_value(&format_value(v)), v);
        }
        assert!(parse_value(&format_value(f64::NAN)).is_nan());
    }
}
