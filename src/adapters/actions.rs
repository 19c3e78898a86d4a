//! What the action runner asks of the daemon's parts (the traits are in
//! `action::deps`): whether an alert fires and how far back its evidence
//! reaches (the rule manager, or the external alerts), request counts (the
//! tsdb), probes, mute windows (dispatch) and the audit's evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;

use crate::action::deps::{
    AlertState, EvidenceSource, ProbeCheck, RequestCount, RequestCounts, TimeIntervals,
};
use crate::action::judge::{expr_lookback_ms, expr_metrics, MetricLags};
use crate::alert::Alert;
use crate::clock::TimestampMs;
use crate::dispatch::notification::BoxFuture;
use crate::dispatch::Dispatcher;
use crate::promql::quoting::go_quote;
use crate::rules::alerting::AlertState as RuleAlertState;
use crate::rules::group::RuleState;
use crate::rules::manager::RuleManager;
use crate::rules::querier::Querier;
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
                    go_quote(service),
                    go_quote(revision)
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

/// Whether an alert fires, for the action runner: an alert an external
/// sender posted answers from the external alerts (activeAt = its
/// `startsAt`), every other from the rules.
pub struct ExternalThenRules {
    pub external: Arc<crate::dispatch::external::ExternalAlerts>,
    pub rules: Arc<dyn AlertState>,
}

impl AlertState for ExternalThenRules {
    fn is_firing(&self, fingerprint: u64) -> Option<bool> {
        self.external
            .is_firing(fingerprint)
            .or_else(|| self.rules.is_firing(fingerprint))
    }

    /// A posted alert is always fresh: its sender evaluated it.
    fn is_firing_fresh(&self, fingerprint: u64) -> Option<bool> {
        self.external
            .is_firing(fingerprint)
            .or_else(|| self.rules.is_firing_fresh(fingerprint))
    }

    /// A posted alert's evidence window starts at its `startsAt` (its
    /// expression is the sender's, unknown here); a rule's is derived.
    fn lookback_ms(&self, fingerprint: u64) -> Option<i64> {
        match self.external.get(fingerprint) {
            Some(_) => Some(0),
            None => self.rules.lookback_ms(fingerprint),
        }
    }

    fn evidence_metrics(&self, fingerprint: u64) -> Option<std::collections::BTreeSet<String>> {
        match self.external.get(fingerprint) {
            Some(_) => None,
            None => self.rules.evidence_metrics(fingerprint),
        }
    }

    fn rule_error(&self, fingerprint: u64) -> Option<String> {
        match self.external.get(fingerprint) {
            Some(_) => None,
            None => self.rules.rule_error(fingerprint),
        }
    }

    fn history<'a>(
        &'a self,
        fingerprint: u64,
        now_ms: TimestampMs,
    ) -> BoxFuture<'a, Option<serde_json::Value>> {
        Box::pin(async move {
            match self.external.get(fingerprint) {
                // No expression behind it: the audit records what the sender said.
                Some(r) => Some(serde_json::json!({
                    "source": "external",
                    "startsAt": crate::clock::to_datetime(r.starts_at_ms).to_rfc3339(),
                    "endsAt": crate::clock::to_datetime(r.ends_at_ms).to_rfc3339(),
                    "generatorURL": r.generator_url,
                })),
                None => self.rules.history(fingerprint, now_ms).await,
            }
        })
    }
}

/// Dispatch's named time intervals, for the runner's mute windows.
pub struct DispatchIntervals(pub Arc<Dispatcher>);

impl TimeIntervals for DispatchIntervals {
    fn is_active(&self, name: &str, at_ms: TimestampMs) -> bool {
        self.0.time_interval_active_at(name, at_ms).unwrap_or(false)
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
