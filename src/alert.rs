//! The alert as it travels from rule evaluation to dispatch, notifications and actions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::TimestampMs;
use crate::labels::Labels;

/// The label that names the alerting rule.
pub const ALERTNAME: &str = "alertname";

/// A firing or resolved alert, as Prometheus hands it to Alertmanager, plus the
/// value that made it fire (or the value at resolution, once resolved).
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    /// When the rule's expression first returned this series (start of pending).
    pub active_at_ms: TimestampMs,
    /// When the alert started firing (Alertmanager's `startsAt`).
    pub starts_at_ms: TimestampMs,
    /// Set once resolved: when it resolved.
    pub ends_at_ms: Option<TimestampMs>,
    /// The expression's value at the last evaluation (at resolution when resolved).
    pub value: f64,
    pub generator_url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    /// A group's status: `firing` while any of its alerts fires, else `resolved`.
    pub fn of_group(mut statuses: impl Iterator<Item = AlertStatus>) -> AlertStatus {
        if statuses.any(|s| s == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get(ALERTNAME).unwrap_or("")
    }

    pub fn fingerprint(&self) -> u64 {
        self.labels.fingerprint()
    }

    pub fn status_at(&self, now_ms: TimestampMs) -> AlertStatus {
        match self.ends_at_ms {
            Some(end) if end <= now_ms => AlertStatus::Resolved,
            _ => AlertStatus::Firing,
        }
    }

    pub fn is_resolved(&self) -> bool {
        self.ends_at_ms.is_some()
    }
}

/// Where rule evaluation sends alerts, the way Prometheus sends them to
/// Alertmanager: after each evaluation of a group, every firing alert and every
/// alert resolved within the last 15 minutes (re-sent, so a lost update heals).
/// Implementations must not block: queue and return.
pub trait AlertSink: Send + Sync {
    fn send_alerts(&self, alerts: Vec<Alert>);
}
