//! Small adapters that let one component answer another's question without
//! depending on it: the traits live with the asker, the answers here.

use std::sync::{Arc, OnceLock};

use crate::action::{self, CloudRunApi, CloudRunError};
use crate::alert::{Alert, AlertSink};
use crate::clock::TimestampMs;
use crate::dispatch::notification::{BoxFuture, Notification, NotificationSink};
use crate::dispatch::Dispatcher;
use crate::notify::{self, Outbox};
use crate::rules::group::RuleState;
use crate::rules::RuleManager;
use crate::source::cloud_logging::LogEvidenceStore;
use crate::source::cloud_run::CloudRunViews;
use crate::source::probe::ProbeManager;

/// An alert sink set after construction: the action runner sends its events
/// into dispatch, and dispatch (through the effects sink) reaches the runner.
#[derive(Default)]
pub struct LateAlertSink(OnceLock<Arc<dyn AlertSink>>);

impl LateAlertSink {
    pub fn set(&self, sink: Arc<dyn AlertSink>) {
        let _ = self.0.set(sink);
    }
}

impl AlertSink for LateAlertSink {
    fn send_alerts(&self, alerts: Vec<Alert>) {
        if let Some(sink) = self.0.get() {
            sink.send_alerts(alerts);
        }
    }
}

/// Where dispatch's notifications go: email and webhook integrations through
/// the durable outbox, `rollback_configs` to the action runner.
pub struct EffectsSink {
    pub outbox: Outbox,
    pub actions: Arc<action::ActionRunner>,
}

impl NotificationSink for EffectsSink {
    fn send<'a>(&'a self, notification: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.actions.handle_notification(&notification);
            self.outbox.send(notification).await
        })
    }
}

/// Is an alert firing now? Asked of the rule manager's latest group states.
pub struct RuleAlertState(pub Arc<RuleManager>);

impl action::AlertState for RuleAlertState {
    fn is_firing(&self, fingerprint: u64) -> Option<bool> {
        let groups = self.0.groups();
        if groups.iter().all(|g| g.last_eval_ms.is_none()) {
            return None;
        }
        for g in &groups {
            for r in &g.rules {
                if let RuleState::Alerting(rule) = &r.state {
                    if let Some(a) = rule
                        .firing_and_pending()
                        .find(|a| a.labels.fingerprint() == fingerprint)
                    {
                        return Some(a.state == crate::rules::alerting::AlertState::Firing);
                    }
                }
            }
        }
        Some(false)
    }
}

/// Runs a probe now for rollback verification.
pub struct ProbeNow(pub Arc<ProbeManager>);

impl action::ProbeCheck for ProbeNow {
    fn check<'a>(&'a self, probe: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move { self.0.probe_now(probe).await.map(|r| r.success) })
    }
}

/// Dispatch's named time intervals, for the runner's mute windows.
pub struct DispatchIntervals(pub Arc<Dispatcher>);

impl action::TimeIntervals for DispatchIntervals {
    fn is_active(&self, name: &str, at_ms: TimestampMs) -> bool {
        self.0.time_interval_active_at(name, at_ms).unwrap_or(false)
    }
}

/// Which revisions served a service, from the Cloud Run source's view.
pub struct ViewsHistory(pub CloudRunViews);

impl action::ServingHistory for ViewsHistory {
    fn serving_history<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Vec<action::ServingPeriod>> {
        Box::pin(async move {
            self.0
                .get(service)
                .map(|v| {
                    v.traffic_history
                        .iter()
                        .filter_map(|change| {
                            // The revision with the largest share served "the" traffic.
                            let main = change.traffic.iter().max_by_key(|t| t.percent)?;
                            Some(action::ServingPeriod {
                                revision: main.revision.clone(),
                                since_ms: change.at_ms,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
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
