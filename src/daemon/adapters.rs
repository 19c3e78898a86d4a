//! Small adapters that let one component answer another's question without
//! depending on it: the traits live with the asker, the answers here.

use std::sync::Arc;

use crate::action::journal::Decision;
use crate::action::{self, CloudRunApi, CloudRunError};
use crate::clock::TimestampMs;
use crate::dispatch::notification::BoxFuture;
use crate::dispatch::Dispatcher;
use crate::notify;
use crate::source::cloud_logging::LogEvidenceStore;
use crate::source::probe::ProbeManager;

/// Dispatch's named time intervals, for the runner's mute windows.
pub struct DispatchIntervals(pub Arc<Dispatcher>);

impl action::TimeIntervals for DispatchIntervals {
    fn is_active(&self, name: &str, at_ms: TimestampMs) -> bool {
        self.0.time_interval_active_at(name, at_ms).unwrap_or(false)
    }
}

/// Evidence for notifications: recent log entries and probe states.
pub struct NotifyEvidence {
    pub logs: Option<LogEvidenceStore>,
    pub probes: Arc<ProbeManager>,
}

impl notify::EvidenceSource for NotifyEvidence {
    fn log_entries(&self, query: &str, limit: usize) -> Vec<notify::LogEvidence> {
        let Some(store) = &self.logs else {
            return Vec::new();
        };
        let entries = store.entries(query).unwrap_or_default();
        let skip = entries.len().saturating_sub(limit);
        entries
            .into_iter()
            .skip(skip)
            .map(|e| notify::LogEvidence {
                timestamp_ms: e.timestamp.map(|t| t.timestamp_millis()).unwrap_or(0),
                severity: e.severity,
                message: e.message,
            })
            .collect()
    }

    fn probe_status(&self, probe: &str) -> Option<notify::ProbeEvidence> {
        let s = self.probes.status(probe)?;
        Some(notify::ProbeEvidence {
            up: s.up?,
            reason: s.reason.map(|r| r.as_str().to_string()),
            status_code: s.status_code,
            since_ms: s.last_run_ms,
        })
    }
}

/// Cloud Run when no `gcp:` section is configured: every call says so.
pub struct NoCloudRun;

impl NoCloudRun {
    fn err() -> CloudRunError {
        CloudRunError::Transport(
            "no `gcp:` section in the config: Cloud Run actions need one".to_string(),
        )
    }
}

impl CloudRunApi for NoCloudRun {
    fn get_service<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<action::ServiceState, CloudRunError>> {
        Box::pin(async { Err(Self::err()) })
    }
    fn list_revisions<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<action::RevisionState>, CloudRunError>> {
        Box::pin(async { Err(Self::err()) })
    }
    fn patch_service<'a>(
        &'a self,
        _: &'a str,
        _: action::ServicePatch,
    ) -> BoxFuture<'a, Result<action::cloud_run::OperationState, CloudRunError>> {
        Box::pin(async { Err(Self::err()) })
    }
    fn get_operation<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<action::cloud_run::OperationState, CloudRunError>> {
        Box::pin(async { Err(Self::err()) })
    }
}

/// Cloud Monitoring's PromQL endpoint as a rules query source.
pub struct GcpPromql(pub crate::gcp::promql::PromqlClient);

#[async_trait::async_trait]
impl crate::rules::Querier for GcpPromql {
    async fn query(
        &self,
        expr: &str,
        t_ms: TimestampMs,
    ) -> Result<Vec<crate::labels::Sample>, crate::rules::QueryError> {
        self.0
            .query(expr, t_ms)
            .await
            .map_err(|e| crate::rules::QueryError(e.to_string()))
    }
}

/// Alert state changes for digest reports, from the rules' transition log.
pub struct StoredAlertHistory(pub crate::store::Store);

/// How many transitions a report reads at most (a day of a busy service).
const REPORT_TRANSITIONS: usize = 100_000;

impl notify::report::AlertHistory for StoredAlertHistory {
    fn changes<'a>(
        &'a self,
        _from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> BoxFuture<'a, Result<Vec<notify::report::AlertStateChange>, String>> {
        Box::pin(async move {
            let history = self
                .0
                .alert_history(REPORT_TRANSITIONS)
                .await
                .map_err(|e| e.to_string())?;
            Ok(history
                .into_iter()
                .filter(|t| t.at_ms < to_ms)
                .map(|t| notify::report::AlertStateChange {
                    rule: t.labels.get("alertname").cloned().unwrap_or(t.rule_key),
                    state: match t.to_state.as_str() {
                        "firing" => notify::report::AlertState::Firing,
                        "pending" => notify::report::AlertState::Pending,
                        _ => notify::report::AlertState::Inactive,
                    },
                    labels: t.labels,
                    at_ms: t.at_ms,
                })
                .collect())
        })
    }
}

/// Rollback decisions for digest reports, from the action audit.
pub struct StoredRollbacks(pub crate::store::Store);

impl notify::report::RollbackHistory for StoredRollbacks {
    fn rollbacks<'a>(
        &'a self,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> BoxFuture<'a, Result<Vec<notify::report::RollbackSummary>, String>> {
        Box::pin(async move {
            let audit = self
                .0
                .audit(None, REPORT_TRANSITIONS)
                .await
                .map_err(|e| e.to_string())?;
            Ok(audit
                .into_iter()
                .filter(|a| a.at_ms >= from_ms && a.at_ms < to_ms)
                .filter(|a| a.decision != Decision::Started)
                .map(|a| notify::report::RollbackSummary {
                    at_ms: a.at_ms,
                    action: a.target,
                    outcome: a.decision.to_string(),
                    reason: a.reason,
                })
                .collect())
        })
    }
}

/// Whether an alert fires, for the action runner: an alert an external
/// sender posted answers from the external alerts (activeAt = its
/// `startsAt`), every other from the rules.
pub struct ExternalThenRules {
    pub external: Arc<crate::dispatch::external::ExternalAlerts>,
    pub rules: Arc<dyn action::AlertState>,
}

impl action::AlertState for ExternalThenRules {
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
