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
//!
//! With a store, every event is written to it (table `event_alerts`) before
//! it reaches the dispatcher, with a stable id (annotation `event_id`) and an
//! explicit `endsAt` ([`EVENT_HOLD`] after its last emission). Until a
//! notification carrying it was accepted by the outbox the event stays
//! pending: [`EventEmitter::present_pending`] hands it to the dispatcher again
//! at start and periodically (extending its `endsAt`), so a crash between the
//! event and its group's flush does not lose it; the dispatcher's persisted
//! notification log keeps an already notified event from being sent again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::alert::{Alert, AlertSink, AlertStatus, ALERTNAME};
use crate::clock::{Clock, TimestampMs};
use crate::dispatch::Notification;
use crate::labels::Labels;
use crate::store::events::StoredEvent;
use crate::store::Store;

pub const EVENT_ALERTNAME: &str = "RearguardRollback";
/// The annotation carrying an event's stable id (`<fingerprint>-<startsAt ms>`):
/// the same in every notification and after restarts, so a receiver can
/// drop the repeats of an at-least-once delivery.
pub const EVENT_ID_ANNOTATION: &str = "event_id";
/// How long an event alert fires in dispatch after its last emission: the
/// dispatcher's resolve timeout, as before events had an explicit `endsAt`.
pub const EVENT_HOLD: Duration = crate::dispatch::dispatcher::DEFAULT_RESOLVE_TIMEOUT;
/// How often pending events are presented to the dispatcher again.
pub const EVENT_REPRESENT_EVERY: Duration = Duration::from_secs(60);
/// A pending event never notified (silenced, no route) is given up after this long.
const EVENT_RETENTION_MS: i64 = 24 * 3_600_000;

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

/// Sends events into the alert pipeline (through the store when it has one).
#[derive(Clone)]
pub struct EventEmitter {
    sink: Arc<dyn AlertSink>,
    generator_url: String,
    store: Option<Store>,
    receivers: Option<Receivers>,
}

/// The receivers that notify an alert with these labels (dispatch's routing).
pub type Receivers = Arc<dyn Fn(&Labels) -> Vec<String> + Send + Sync>;

impl EventEmitter {
    pub fn new(sink: Arc<dyn AlertSink>, generator_url: impl Into<String>) -> Self {
        Self {
            sink,
            generator_url: generator_url.into(),
            store: None,
            receivers: None,
        }
    }

    /// How to find the receivers of an event (dispatch's routing): an event
    /// is notified once each of them accepted it. Without, the first
    /// receiver that accepts it does.
    pub fn with_receivers(mut self, receivers: Receivers) -> Self {
        self.receivers = Some(receivers);
        self
    }

    /// Writes every event to `store` before sending it, and delivers it after a restart.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
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

    /// Records the event (when there is a store), then hands it to the
    /// dispatcher. A store that cannot take it does not hold the notice back:
    /// it is sent unrecorded (and logged), as before events were recorded.
    pub async fn emit(&self, e: &Event, now_ms: TimestampMs) {
        tracing::info!(target_name = %e.target, phase = e.phase.as_str(), reason = %e.reason, "{}", e.summary);
        let alert = self.to_alert(e, now_ms);
        let alert = match &self.store {
            None => alert,
            Some(store) => {
                let row = pending_row(&alert, now_ms + EVENT_HOLD.as_millis() as i64);
                match store.record_event(row, now_ms).await {
                    Ok(stored) => stored_to_alert(&stored),
                    Err(err) => {
                        tracing::error!(error = %err, target_name = %e.target, "cannot record the rollback event; sending it unrecorded (a crash before its notification loses it)");
                        alert
                    }
                }
            }
        };
        self.sink.send_alerts(vec![alert]);
    }

    /// Whether this notice (its label set) was recorded at or after `since_ms`.
    /// Without a store, or when the store cannot tell: false.
    pub async fn recorded_since(&self, e: &Event, since_ms: TimestampMs) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let fingerprint = self.to_alert(e, since_ms).labels.fingerprint_hex();
        match store.event_by_fingerprint(fingerprint).await {
            Ok(Some(row)) => row.starts_at_ms >= since_ms,
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read recorded rollback events");
                false
            }
        }
    }

    /// Presents every live event (pending, or notified and still active) to
    /// the dispatcher again; a pending one whose `endsAt` is near gets a new
    /// one, so it fires until notified. Call at start and every
    /// [`EVENT_REPRESENT_EVERY`]. Returns how many were presented.
    pub async fn present_pending(&self, now_ms: TimestampMs) -> usize {
        let Some(store) = &self.store else {
            return 0;
        };
        let hold_ms = EVENT_HOLD.as_millis() as i64;
        let live = match store.live_events(now_ms).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read pending rollback events");
                return 0;
            }
        };
        let mut alerts = Vec::with_capacity(live.len());
        for mut ev in live {
            if ev.notified_at_ms.is_none() {
                if now_ms - ev.starts_at_ms > EVENT_RETENTION_MS {
                    continue;
                }
                if ev.ends_at_ms < now_ms + hold_ms / 2 {
                    ev.ends_at_ms = now_ms + hold_ms;
                    if let Err(e) = store.extend_event(ev.event_id.clone(), ev.ends_at_ms).await {
                        tracing::warn!(error = %e, "cannot extend a pending rollback event");
                    }
                }
            }
            alerts.push(stored_to_alert(&ev));
        }
        let n = alerts.len();
        if n > 0 {
            self.sink.send_alerts(alerts);
        }
        if let Err(e) = store
            .delete_events_before(now_ms - EVENT_RETENTION_MS)
            .await
        {
            tracing::warn!(error = %e, "cannot delete old rollback events");
        }
        n
    }

    /// Marks the events a notification carries (firing) as notified; call
    /// once the notification was accepted for delivery.
    pub async fn mark_notified(&self, n: &Notification) {
        let Some(store) = &self.store else {
            return;
        };
        let routes = self.receivers.as_ref();
        let ids: Vec<(String, Vec<String>)> = n
            .alerts
            .iter()
            .filter(|a| is_own_alert(a) && a.status_at(n.created_at_ms) == AlertStatus::Firing)
            .filter_map(|a| {
                let id = a.annotations.get(EVENT_ID_ANNOTATION)?.clone();
                Some((id, routes.map(|r| r(&a.labels)).unwrap_or_default()))
            })
            .collect();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = store
            .mark_events_notified(ids, n.receiver.clone(), n.created_at_ms)
            .await
        {
            tracing::warn!(error = %e, "cannot mark rollback events notified; they are presented again (the notification log keeps them from repeating)");
        }
    }

    /// Presents pending events every [`EVENT_REPRESENT_EVERY`] until `shutdown`.
    pub fn spawn_presenter(
        &self,
        clock: Clock,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep(EVENT_REPRESENT_EVERY) => {
                        this.present_pending(clock.now_ms()).await;
                    }
                }
            }
        })
    }
}

/// The row of a new event alert, pending, ending at `ends_at_ms`.
fn pending_row(a: &Alert, ends_at_ms: TimestampMs) -> StoredEvent {
    let fingerprint = a.labels.fingerprint_hex();
    StoredEvent {
        event_id: format!("{fingerprint}-{}", a.starts_at_ms),
        fingerprint,
        labels: a.labels.to_map(),
        annotations: a.annotations.clone(),
        value: a.value,
        generator_url: a.generator_url.clone(),
        starts_at_ms: a.starts_at_ms,
        ends_at_ms,
        notified_at_ms: None,
    }
}

/// The alert dispatch sees for a stored event: its id as an annotation, its end set.
fn stored_to_alert(ev: &StoredEvent) -> Alert {
    let mut annotations = ev.annotations.clone();
    annotations.insert(EVENT_ID_ANNOTATION.to_string(), ev.event_id.clone());
    Alert {
        labels: Labels::from_map(&ev.labels),
        annotations,
        active_at_ms: ev.starts_at_ms,
        starts_at_ms: ev.starts_at_ms,
        ends_at_ms: Some(ev.ends_at_ms),
        value: ev.value,
        generator_url: ev.generator_url.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: TimestampMs = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    fn event() -> Event {
        Event {
            phase: Phase::Failed,
            target: "backend".into(),
            service: "backend".into(),
            reason: "verification_failed".into(),
            trigger: None,
            from_revision: Some("backend-00002".into()),
            to_revision: Some("backend-00001".into()),
            summary: "rollback did not fix it".into(),
            description: String::new(),
        }
    }

    /// A pending notice is presented again with a fresh endsAt while it is not
    /// notified, never after it was (once ended), and is given up after a day.
    #[tokio::test]
    async fn pending_notices_are_presented_until_notified_or_given_up() {
        let store = Store::open_in_memory().unwrap();
        let sink = Arc::new(RecordingSink::default());
        let em = EventEmitter::new(sink.clone(), "http://rg").with_store(store.clone());
        em.emit(&event(), T0).await;
        let sent = sink.alerts();
        assert_eq!(sent.len(), 1);
        let id = sent[0].annotations[EVENT_ID_ANNOTATION].clone();
        assert_eq!(sent[0].ends_at_ms, Some(T0 + 5 * MIN));
        assert_eq!(sent[0].status_at(T0 + 5 * MIN - 1), AlertStatus::Firing);

        // An hour later (the dispatcher never notified it): presented, firing again.
        assert_eq!(em.present_pending(T0 + 60 * MIN).await, 1);
        let again = sink.alerts().pop().unwrap();
        assert_eq!(again.annotations[EVENT_ID_ANNOTATION], id);
        assert_eq!(again.starts_at_ms, T0, "the same notice");
        assert_eq!(again.ends_at_ms, Some(T0 + 65 * MIN));

        // A day later it is given up (and deleted).
        assert_eq!(em.present_pending(T0 + 25 * 60 * MIN).await, 0);
        assert!(store.live_events(0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_notified_notice_is_not_presented_once_it_ended() {
        let store = Store::open_in_memory().unwrap();
        let sink = Arc::new(RecordingSink::default());
        let em = EventEmitter::new(sink.clone(), "http://rg").with_store(store.clone());
        em.emit(&event(), T0).await;
        let alert = sink.alerts().pop().unwrap();
        let n = Notification {
            receiver: "team".into(),
            group_key: "{}:{}".into(),
            group_labels: Labels::empty(),
            alerts: vec![alert],
            created_at_ms: T0 + 1_000,
        };
        em.mark_notified(&n).await;
        // Still active: presented (the notification log keeps it from repeating).
        assert_eq!(em.present_pending(T0 + MIN).await, 1);
        // Ended: nothing.
        assert_eq!(em.present_pending(T0 + 6 * MIN).await, 0);
        // A new emission after the end is a new notice with a new id.
        em.emit(&event(), T0 + 10 * MIN).await;
        let new = sink.alerts().pop().unwrap();
        assert_eq!(new.starts_at_ms, T0 + 10 * MIN);
        assert_ne!(
            new.annotations[EVENT_ID_ANNOTATION],
            n.alerts[0].annotations[EVENT_ID_ANNOTATION]
        );
    }

    #[tokio::test]
    async fn without_a_store_events_are_sent_as_before() {
        let sink = Arc::new(RecordingSink::default());
        let em = EventEmitter::new(sink.clone(), "http://rg");
        em.emit(&event(), T0).await;
        let a = sink.alerts().pop().unwrap();
        assert_eq!(a.ends_at_ms, None);
        assert!(!a.annotations.contains_key(EVENT_ID_ANNOTATION));
        assert_eq!(em.present_pending(T0).await, 0);
    }
}
