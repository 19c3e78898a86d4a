//! The dispatcher's notification sink ([`notification_channel`], then
//! [`FanOut`]: the outbox first, then the actions), the evidence
//! notifications show, and the history digest reports read from the store.

use std::sync::Arc;

use crate::action::journal::Decision;
use crate::action::ActionRunner;
use crate::clock::TimestampMs;
use crate::dispatch::notification::{BoxFuture, Notification, NotificationSink};
use crate::notify;
use crate::source::cloud_logging::LogEvidenceStore;
use crate::source::probe::ProbeManager;
use crate::store::alerts::TransitionState;

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
    pub actions: ActionRunner,
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
                    state: match t.to_state {
                        TransitionState::Firing | TransitionState::KeepFiring => {
                            notify::report::AlertState::Firing
                        }
                        TransitionState::Pending => notify::report::AlertState::Pending,
                        TransitionState::Inactive | TransitionState::Resolved => {
                            notify::report::AlertState::Inactive
                        }
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
