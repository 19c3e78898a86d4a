//! Adapters from the daemon's parts to what the action runner asks of them,
//! so the daemon wires with one line each:
//!
//! - [`ProbeCheck`] for the probe engine (`probe_now`),
//! - [`RulesAlertState`]: whether an alert fires, from the rule manager,
//! - [`ServingHistory`] for the Cloud Run source's views (traffic history),
//! - [`LogAndProbeEvidence`]: the notify evidence (last log lines, probe state),
//! - [`FanOut`]: one NotificationSink for dispatch that feeds the outbox and the actions,
//!   reached through [`notification_channel`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;

use super::cloud_run::short_name;
use super::deps::{AlertState, EvidenceSource, ProbeCheck, ServingHistory, ServingPeriod};
use super::deps::{RequestCount, RequestCounts};
use super::judge::{expr_lookback_ms, expr_metrics, MetricLags};
use crate::alert::Alert;
use crate::clock::TimestampMs;
use crate::dispatch::notification::{BoxFuture, Notification, NotificationSink};
use crate::rules::alerting::AlertState as RuleAlertState;
use crate::rules::group::RuleState;
use crate::rules::manager::RuleManager;
use crate::rules::querier::Querier;
use crate::source::cloud_run::CloudRunViews;
use crate::source::probe::ProbeManager;

impl ProbeCheck for ProbeManager {
    fn check<'a>(&'a self, probe: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move { self.probe_now(probe).await.map(|r| r.success) })
    }
}

/// Whether an alert fires, from the rule manager's latest group states. The
/// fingerprint dispatch sees may include `external_labels`: both are matched.
pub struct RulesAlertState {
    pub rules: Arc<RuleManager>,
    pub external_labels: BTreeMap<String, String>,
    /// The lag of each source's series (replaced on reload).
    pub lags: std::sync::RwLock<MetricLags>,
}

/// Google's delay before a sampled point of a Cloud Monitoring metric can be
/// read: Cloud Run's metrics are "Sampled every 60 seconds. After sampling,
/// data is not visible for up to 180 seconds."
/// (https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run)
pub const CLOUD_MONITORING_VISIBILITY_DELAY_MS: i64 = 180_000;
/// Cloud Monitoring's sample period when no alignment period is configured.
pub const CLOUD_MONITORING_SAMPLE_PERIOD_MS: i64 = 60_000;

/// How late each source's series can describe what happened (see
/// docs/rollback.md, "Whose evidence"): a Cloud Monitoring metric by its
/// sample (or alignment) period, Google's visibility delay and the poll
/// interval; `log_entries_total` by the longest overlap plus interval of the
/// log queries (entries arrive late and are counted when read); the Cloud
/// Run series by the poll interval. Probes are measured here: no lag.
pub fn metric_lags(config: &crate::config::Config) -> MetricLags {
    let mut out = Vec::new();
    for m in &config.cloud_monitoring {
        let period = m
            .aggregation
            .as_ref()
            .and_then(|a| a.alignment_period)
            .map(|d| d.as_millis())
            .unwrap_or(CLOUD_MONITORING_SAMPLE_PERIOD_MS);
        let lag = period + CLOUD_MONITORING_VISIBILITY_DELAY_MS + m.interval.as_millis();
        // The metric and its histogram series (_bucket, _sum, _count).
        out.push((
            format!(
                "{}*",
                crate::source::cloud_monitoring::gmp_metric_name(&m.metric)
            ),
            lag,
        ));
    }
    for l in &config.cloud_logging {
        out.push((
            "log_entries_total".to_string(),
            l.overlap.as_millis() + l.interval.as_millis(),
        ));
    }
    for r in &config.cloud_run {
        out.push(("cloud_run_*".to_string(), r.interval.as_millis()));
    }
    MetricLags(out)
}

/// How many evaluations of the trigger's expression the audit keeps.
const HISTORY_POINTS: usize = 60;

impl RulesAlertState {
    /// Record name → expression of every recording rule.
    fn recording_rules(&self) -> BTreeMap<String, String> {
        self.rules
            .groups()
            .iter()
            .flat_map(|g| g.rules.iter())
            .filter_map(|r| match &r.state {
                RuleState::Recording { record } => Some((record.clone(), r.def.expr.clone())),
                RuleState::Alerting(_) => None,
            })
            .collect()
    }
}

/// Request counts of a revision from the tsdb's
/// `run_googleapis_com:request_count` (a `cloud_monitoring` entry reading
/// `run.googleapis.com/request_count`); nothing when no entry reads it.
pub struct TsdbRequestCounts {
    pub querier: Arc<dyn Querier>,
    /// Whether a source reads request counts (follows reloads).
    pub configured: std::sync::atomic::AtomicBool,
}

impl TsdbRequestCounts {
    /// Whether `config` reads Cloud Run's request counts.
    pub fn reads_requests(config: &crate::config::Config) -> bool {
        config
            .cloud_monitoring
            .iter()
            .any(|m| m.metric == "run.googleapis.com/request_count")
    }
}

fn promql_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl RequestCounts for TsdbRequestCounts {
    fn requests<'a>(
        &'a self,
        service: &'a str,
        revision: &'a str,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> BoxFuture<'a, Option<RequestCount>> {
        Box::pin(async move {
            if !self.configured.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            let range_ms = (to_ms - from_ms).max(60_000);
            let selector = |extra: &str| {
                format!(
                    "sum(increase({}{{service_name={},revision_name={}{extra}}}[{range_ms}ms]))",
                    crate::action::judge::REQUEST_COUNT_SERIES,
                    promql_string(service),
                    promql_string(revision)
                )
            };
            let value = |r: Result<Vec<crate::labels::Sample>, _>| -> f64 {
                match r {
                    Ok(v) => v.first().map(|s| s.value).unwrap_or(0.0),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot count requests; counting none");
                        0.0
                    }
                }
            };
            let total = value(self.querier.query(&selector(""), to_ms).await);
            let errors = value(
                self.querier
                    .query(&selector(",response_code_class=\"5xx\""), to_ms)
                    .await,
            );
            Some(RequestCount { total, errors })
        })
    }
}

impl AlertState for RulesAlertState {
    fn is_firing(&self, fingerprint: u64) -> Option<bool> {
        if !self.rules.has_groups() {
            return None;
        }
        Some(
            self.rules
                .find_alert(fingerprint, &self.external_labels)
                .is_some_and(|f| f.alert.state == RuleAlertState::Firing),
        )
    }

    fn is_firing_fresh(&self, fingerprint: u64) -> Option<bool> {
        if !self.rules.has_groups() {
            return None;
        }
        match self.rules.find_alert(fingerprint, &self.external_labels) {
            // Held by the restore grace, not seen by an evaluation since the restart.
            Some(f) if f.alert.restored => None,
            Some(f) => Some(f.alert.state == RuleAlertState::Firing),
            None => Some(false),
        }
    }

    fn lookback_ms(&self, fingerprint: u64) -> Option<i64> {
        let found = self.rules.find_alert(fingerprint, &self.external_labels)?;
        let recording = self.recording_rules();
        let lags = self.lags.read().unwrap_or_else(|p| p.into_inner()).clone();
        match expr_lookback_ms(&found.rule.expr, &recording, &lags) {
            Ok(ms) => Some(ms),
            Err(e) => {
                tracing::warn!(error = %e, rule = %found.rule.name, "cannot derive the lookback of a rule");
                None
            }
        }
    }

    fn evidence_metrics(&self, fingerprint: u64) -> Option<BTreeSet<String>> {
        let found = self.rules.find_alert(fingerprint, &self.external_labels)?;
        expr_metrics(&found.rule.expr, &self.recording_rules()).ok()
    }

    fn rule_error(&self, fingerprint: u64) -> Option<String> {
        let found = self.rules.find_alert(fingerprint, &self.external_labels)?;
        let groups = self.rules.groups();
        let group = groups.iter().find(|g| g.key == found.group_key)?;
        group
            .rules
            .iter()
            .find(|r| matches!(&r.state, RuleState::Alerting(a) if a.def == found.rule))
            .and_then(|r| r.status.last_error.clone())
    }

    fn history<'a>(
        &'a self,
        fingerprint: u64,
        now_ms: TimestampMs,
    ) -> BoxFuture<'a, Option<serde_json::Value>> {
        Box::pin(async move {
            let h = self
                .rules
                .alert_history(fingerprint, &self.external_labels, now_ms, HISTORY_POINTS)
                .await?;
            serde_json::to_value(h).ok()
        })
    }
}

/// Serving periods from a traffic history (the revision with the largest
/// share of each split). A split is seen at a poll, up to one interval after
/// it happened, so each period is dated by the earliest time consistent with
/// what was seen: its revision's creation (`created`), but not before the
/// previous split was seen; the first split, by its revision's creation.
pub fn serving_periods(
    changes: &[crate::source::cloud_run::TrafficChange],
    created: impl Fn(&str) -> Option<TimestampMs>,
) -> Vec<ServingPeriod> {
    let mut out: Vec<ServingPeriod> = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let Some(main) = change.traffic.iter().max_by_key(|s| s.percent) else {
            continue;
        };
        let revision = short_name(&main.revision).to_string();
        if out.last().is_some_and(|p| p.revision == revision) {
            continue;
        }
        let mut since_ms = change.at_ms;
        if let Some(created) = created(&revision) {
            since_ms = match i.checked_sub(1).map(|p| changes[p].at_ms) {
                Some(previous_seen) => created.max(previous_seen).min(since_ms),
                None => since_ms.min(created),
            };
        }
        out.push(ServingPeriod { revision, since_ms });
    }
    out
}

impl ServingHistory for CloudRunViews {
    /// See [`serving_periods`].
    fn serving_history<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Vec<ServingPeriod>> {
        Box::pin(async move {
            let Some(view) = self.get(service) else {
                return Vec::new();
            };
            serving_periods(&view.traffic_history, |r| {
                view.revision(r)
                    .and_then(|r| r.create_time)
                    .map(|t| t.timestamp_millis())
            })
        })
    }
}

/// Evidence for the audit from the notify evidence source: the last log lines
/// of the query and the state of the probe the alert names (the same rules as
/// the email: annotation `evidence_log_query` or label `query`; annotation
/// `evidence_probe` or label `probe`).
pub struct LogAndProbeEvidence(pub Arc<dyn crate::notify::EvidenceSource>);

fn named(a: &Alert, annotation: &str, label: &str) -> Option<String> {
    a.annotations
        .get(annotation)
        .map(String::as_str)
        .or_else(|| a.labels.get(label))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl EvidenceSource for LogAndProbeEvidence {
    fn collect<'a>(
        &'a self,
        alert: &'a Alert,
        _service: Option<&'a str>,
    ) -> BoxFuture<'a, serde_json::Value> {
        Box::pin(async move {
            let query = named(alert, "evidence_log_query", "query");
            let probe = named(alert, "evidence_probe", "probe");
            let logs = query
                .as_deref()
                .map(|q| self.0.log_entries(q, 10))
                .unwrap_or_default();
            let probe_status = probe.as_deref().and_then(|p| self.0.probe_status(p));
            json!({
                "log_query": query,
                "logs": logs,
                "probe": probe,
                "probe_status": probe_status,
            })
        })
    }
}

/// What dispatch sends to: the outbox (email, webhook), then the actions of
/// receivers with `rollback_configs` (the runner ignores other receivers and
/// its own `RearguardRollback` events).
///
/// Persist, then act: the outbox has the notification before the runner is
/// handed its alert, so a crash during the action still tells people what
/// triggered it. An outbox that refuses it does not hold the action back (a
/// critical alert is acted on either way); its error goes back to dispatch,
/// which sends the notification again at the next group interval (the
/// runner's guard rails keep that from acting twice).
pub struct FanOut {
    pub outbox: Arc<dyn NotificationSink>,
    pub actions: super::ActionRunner,
}

impl NotificationSink for FanOut {
    fn send<'a>(&'a self, notification: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let handed = notification.clone();
            let persisted = self.outbox.send(notification).await;
            if persisted.is_ok() {
                // Accepted by the outbox (durable): the events it carries are notified.
                self.actions.events().mark_notified(&handed).await;
            }
            self.actions.handle_notification(&handed);
            persisted
        })
    }
}

/// One notification on its way, with where its result goes.
type Delivery = (
    Notification,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// How many notifications wait for the queue before dispatch waits too.
const QUEUED_NOTIFICATIONS: usize = 64;

/// The dispatcher's notification sink, made before what it feeds: the
/// dispatcher is built with the [`NotificationIntake`], the outbox and the
/// runner (which need the dispatcher) after it, and the
/// [`NotificationQueue`] then hands every notification to them. So nothing
/// is bound after construction and nothing holds itself.
pub fn notification_channel() -> (NotificationIntake, NotificationQueue) {
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUED_NOTIFICATIONS);
    (NotificationIntake(tx), NotificationQueue(rx))
}

/// The sending end: returns once the sink behind the queue took the
/// notification (persisted, see [`FanOut`]), with its answer.
pub struct NotificationIntake(tokio::sync::mpsc::Sender<Delivery>);

impl NotificationSink for NotificationIntake {
    fn send<'a>(&'a self, notification: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.0
                .send((notification, reply))
                .await
                .map_err(|_| "rearguard is stopping: the notification was not taken".to_string())?;
            answer
                .await
                .map_err(|_| "rearguard stopped before the notification was taken".to_string())?
        })
    }
}

/// The receiving end, started once the sink it feeds exists.
pub struct NotificationQueue(tokio::sync::mpsc::Receiver<Delivery>);

impl NotificationQueue {
    /// Hands every notification to `sink`, each in a task of its own (dispatch
    /// sends groups concurrently), and answers its sender with the result.
    /// Ends when every intake is gone.
    pub fn spawn(mut self, sink: Arc<dyn NotificationSink>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some((notification, reply)) = self.0.recv().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let _ = reply.send(sink.send(notification).await);
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::cloud_run::{TrafficChange, TrafficShare};

    fn change(at_ms: i64, revision: &str) -> TrafficChange {
        TrafficChange {
            at_ms,
            traffic: vec![TrafficShare {
                revision: revision.into(),
                percent: 100,
                tag: None,
                latest: false,
            }],
        }
    }

    #[test]
    fn periods_are_dated_by_the_earliest_time_the_polls_allow() {
        let changes = [
            change(1_000, "s-1"),
            // s-2 was created at 4_500 and seen serving at 5_000 (a poll
            // later): it began serving at 4_500 at the earliest.
            change(5_000, "s-2"),
            change(6_000, "s-2"),
            // s-3 was created long before it got traffic: not before the
            // previous split was seen.
            change(9_000, "s-3"),
        ];
        let created = |r: &str| match r {
            "s-1" => Some(100),
            "s-2" => Some(4_500),
            "s-3" => Some(2_000),
            _ => None,
        };
        let p = serving_periods(&changes, created);
        let got: Vec<(&str, i64)> = p
            .iter()
            .map(|p| (p.revision.as_str(), p.since_ms))
            .collect();
        assert_eq!(got, [("s-1", 100), ("s-2", 4_500), ("s-3", 6_000)]);
        // Unknown creation: when it was seen.
        let p = serving_periods(&changes, |_| None);
        assert_eq!(p[1].since_ms, 5_000);
    }
}
