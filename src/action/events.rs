//! Notifications around actions, as synthetic alerts into the routing tree.
//!
//! Every event is an alert named `RearguardRollback` with labels `target`,
//! `service`, `phase` (started, verified, failed, skipped, dry_run, escalated,
//! superseded), `reason`, `severity` and `trigger_alertname`, so the routing
//! tree decides who hears (the team receiver, a pager for `severity=critical`),
//! silences and inhibition apply, and the labels stay stable across repeats
//! so dispatch de-duplicates a skip re-decided on every repeat. The runner
//! never acts on these alerts (see [`is_own_alert`]), which keeps a route
//! like `severity="critical"` → rollback receiver from looping.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::alert::{Alert, AlertSink, ALERTNAME};
use crate::clock::TimestampMs;
use crate::labels::Labels;

pub const EVENT_ALERTNAME: &str = "RearguardRollback";

/// True for the alerts this module emits (never a trigger).
pub fn is_own_alert(a: &Alert) -> bool {
    a.name() == EVENT_ALERTNAME
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Started,
    Verified,
    Failed,
    Skipped,
    DryRun,
    Escalated,
    Superseded,
    /// Announced, acting at the end of the veto window unless held.
    Vetoable,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Verified => "verified",
            Phase::Failed => "failed",
            Phase::Skipped => "skipped",
            Phase::DryRun => "dry_run",
            Phase::Escalated => "escalated",
            Phase::Superseded => "superseded",
            Phase::Vetoable => "veto_window",
        }
    }

    /// Failures need a human now; the rest is information.
    pub fn severity(self) -> &'static str {
        match self {
            Phase::Failed | Phase::Escalated => "critical",
            Phase::Skipped | Phase::Vetoable => "warning",
            _ => "info",
        }
    }
}

/// One event to tell people about.
#[derive(Clone, Debug)]
pub struct Event {
    pub phase: Phase,
    pub target: String,
    /// The service's short name (routing matches `service="..."`), or the target.
    pub service: String,
    pub reason: String,
    pub trigger: Option<Alert>,
    pub from_revision: Option<String>,
    pub to_revision: Option<String>,
    pub summary: String,
    pub description: String,
}

/// Sends events into the alert pipeline.
#[derive(Clone)]
pub struct EventEmitter {
    sink: Arc<dyn AlertSink>,
    generator_url: String,
}

impl EventEmitter {
    pub fn new(sink: Arc<dyn AlertSink>, generator_url: impl Into<String>) -> Self {
        Self {
            sink,
            generator_url: generator_url.into(),
        }
    }

    pub fn to_alert(&self, e: &Event, now_ms: TimestampMs) -> Alert {
        let trigger_name = e
            .trigger
            .as_ref()
            .map(|a| a.name().to_string())
            .unwrap_or_else(|| "manual".into());
        let labels = Labels::from_pairs([
            (ALERTNAME, EVENT_ALERTNAME.to_string()),
            ("target", e.target.clone()),
            ("service", e.service.clone()),
            ("phase", e.phase.as_str().to_string()),
            ("reason", e.reason.clone()),
            ("severity", e.phase.severity().to_string()),
            ("trigger_alertname", trigger_name),
            ("from_revision", e.from_revision.clone().unwrap_or_default()),
            ("to_revision", e.to_revision.clone().unwrap_or_default()),
        ]);
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), e.summary.clone());
        annotations.insert("description".to_string(), e.description.clone());
        Alert {
            labels,
            annotations,
            active_at_ms: now_ms,
            starts_at_ms: now_ms,
            ends_at_ms: None,
            value: e.trigger.as_ref().map(|a| a.value).unwrap_or(0.0),
            generator_url: self.generator_url.clone(),
        }
    }

    pub fn emit(&self, e: &Event, now_ms: TimestampMs) {
        tracing::info!(target_name = %e.target, phase = e.phase.as_str(), reason = %e.reason, "{}", e.summary);
        self.sink.send_alerts(vec![self.to_alert(e, now_ms)]);
    }
}

/// An AlertSink that keeps what it receives (tests, `rearguard rollback --dry-run` output).
#[derive(Default)]
pub struct RecordingSink(pub std::sync::Mutex<Vec<Alert>>);

impl RecordingSink {
    pub fn alerts(&self) -> Vec<Alert> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// The `phase` labels received, in order.
    pub fn phases(&self) -> Vec<String> {
        self.alerts()
            .iter()
            .map(|a| a.labels.get("phase").unwrap_or("").to_string())
            .collect()
    }
}

impl AlertSink for RecordingSink {
    fn send_alerts(&self, alerts: Vec<Alert>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(alerts);
    }
}
