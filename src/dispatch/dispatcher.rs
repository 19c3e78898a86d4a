//! The dispatcher: Alertmanager's aggregation groups, timing, muting and
//! notification log, on the shared [`Clock`].
//!
//! Alerts arrive through [`AlertSink`] (non-blocking: queued to one task). Each
//! alert goes to every route it matches; per route it joins the group of its
//! `group_by` labels. A new group flushes after `group_wait` (at once if the
//! alert started more than `group_wait` ago, as Alertmanager does), then every
//! `group_interval`. A flush:
//! 1. skips the whole group while a route's `mute_time_intervals` is active or
//!    none of its `active_time_intervals` is;
//! 2. drops inhibited and silenced alerts;
//! 3. asks the notification log (per receiver + group key, persisted in the
//!    store so a restart does not resend) whether to notify: the group was
//!    never notified and something fires; the firing set grew or changed;
//!    everything resolved after something was notified firing; the resolved
//!    set changed and the receiver wants resolved alerts; or `repeat_interval`
//!    passed. Flushes happen on `group_interval` ticks, so the repeat is in
//!    effect rounded up to a multiple of `group_interval`;
//! 4. hands one [`Notification`] to the sink and logs it;
//! 5. forgets the resolved alerts it just handled, and the group once empty.
//!
//! `send_resolved` (decided here, documented for the integrations): a
//! notification carries every alert of the group, firing and resolved. The
//! notification log treats a receiver as wanting resolved alerts when any of
//! its integrations does (email defaults to false, webhook to true, rollback
//! to false); an integration whose `send_resolved` is false drops the resolved
//! alerts and sends nothing when none fire, which is what Alertmanager's
//! per-integration retry stage does. Alertmanager keeps one log entry per
//! integration; with one per receiver, a receiver that mixes `send_resolved`
//! values may show its non-resolved integrations the still-firing alerts again
//! when only the resolved set changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alert::{Alert, AlertSink, AlertStatus};
use crate::clock::{Clock, TimestampMs};
use crate::config::{Config, LoadedConfig};
use crate::labels::Labels;
use crate::store::silences::{NotificationLogEntry, SilenceRecord};
use crate::store::{Store, StoreError};

use super::inhibit::{inhibited_by, InhibitRule};
use super::notification::{Notification, NotificationSink};
use super::route::{RouteOpts, RouteTree};
use super::silence::{SilenceError, SilenceInput, SilenceState, Silences};
use crate::time_interval::TimeIntervals;

/// Alertmanager's `resolve_timeout`: a firing alert not re-sent for this long is resolved.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long resolved alerts stay in the dispatcher's alert store (Prometheus re-sends them this long).
const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;
/// How long a notification log entry is kept at least (Alertmanager's `--data.retention`).
const NFLOG_RETENTION_MS: i64 = 120 * 3_600_000;
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
const GC_EVERY_MS: i64 = 15 * 60_000;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot register dispatch metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What the dispatcher needs from the daemon.
#[derive(Clone)]
pub struct DispatcherDeps {
    pub clock: Clock,
    pub store: Store,
    pub sink: Arc<dyn NotificationSink>,
    pub registry: prometheus::Registry,
}

#[derive(Clone, Copy, Debug, Default)]
struct ReceiverInfo {
    send_resolved: bool,
    integrations: usize,
}

/// The compiled routing config.
pub struct DispatchConfig {
    routes: Option<RouteTree>,
    inhibit_rules: Vec<InhibitRule>,
    intervals: TimeIntervals,
    receivers: HashMap<String, ReceiverInfo>,
    resolve_timeout_ms: i64,
}

impl DispatchConfig {
    pub fn from_config(config: &Config) -> Self {
        let receivers = config
            .receivers
            .iter()
            .map(|r| {
                let send_resolved = r
                    .email_configs
                    .iter()
                    .any(|e| e.send_resolved.unwrap_or(false))
                    || r.webhook_configs
                        .iter()
                        .any(|w| w.send_resolved.unwrap_or(true));
                let integrations =
                    r.email_configs.len() + r.webhook_configs.len() + r.rollback_configs.len();
                (
                    r.name.clone(),
                    ReceiverInfo {
                        send_resolved,
                        integrations,
                    },
                )
            })
            .collect();
        // Prometheus marks an alert valid for 4 evaluation intervals; never less than the default.
        let resolve_timeout = DEFAULT_RESOLVE_TIMEOUT.max(config.evaluation_interval.0 * 4);
        Self {
            routes: config.route.as_ref().map(RouteTree::from_config),
            inhibit_rules: config
                .inhibit_rules
                .iter()
                .filter_map(InhibitRule::from_config)
                .collect(),
            intervals: TimeIntervals::from_config(&config.time_intervals),
            receivers,
            resolve_timeout_ms: resolve_timeout.as_millis() as i64,
        }
    }

    pub fn routes(&self) -> Option<&RouteTree> {
        self.routes.as_ref()
    }
}

#[derive(Clone, Debug)]
struct AlertEntry {
    alert: Alert,
    received_ms: TimestampMs,
    version: u64,
    /// For external alerts: the sender's `endsAt` (or its resolve timeout),
    /// which replaces the dispatcher's own resolve timeout.
    valid_until_ms: Option<TimestampMs>,
}

impl AlertEntry {
    /// When a firing alert resolves unless refreshed.
    fn timeout_at(&self, timeout_ms: i64) -> TimestampMs {
        self.valid_until_ms.unwrap_or(self.received_ms + timeout_ms)
    }

    /// The alert as of `now`: a firing alert not refreshed within the resolve timeout is resolved.
    fn effective(&self, timeout_ms: i64, now_ms: TimestampMs) -> Alert {
        let mut a = self.alert.clone();
        let until = self.timeout_at(timeout_ms);
        if a.ends_at_ms.is_none() && now_ms >= until {
            a.ends_at_ms = Some(until);
        }
        a
    }
}

/// An alert from an external sender (`POST /api/v2/alerts`), for [`Dispatcher::send_external`].
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalUpdate {
    /// `ends_at_ms` is `None` while firing.
    pub alert: Alert,
    /// When it resolves unless updated again: the sender's `endsAt`.
    pub valid_until_ms: TimestampMs,
    /// When the sender's update arrived.
    pub updated_at_ms: TimestampMs,
}

struct Metrics {
    silences: prometheus::IntGaugeVec,
    groups: prometheus::IntGauge,
    alerts: prometheus::IntGaugeVec,
    received: prometheus::IntCounter,
    notifications: prometheus::IntCounterVec,
}

impl Metrics {
    fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let silences = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "rearguard_silences",
                "Silences by state (active, pending, expired).",
            ),
            &["state"],
        )?;
        let groups = prometheus::IntGauge::new(
            "rearguard_dispatch_aggregation_groups",
            "Alert groups the dispatcher currently holds.",
        )?;
        let alerts = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "rearguard_dispatch_alerts",
                "Firing alerts known to the dispatcher, by state (active, suppressed).",
            ),
            &["state"],
        )?;
        let received = prometheus::IntCounter::new(
            "rearguard_dispatch_alerts_received_total",
            "Alert updates received from rule evaluation and external senders (POST /api/v2/alerts).",
        )?;
        let notifications = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "rearguard_dispatch_notifications_total",
                "Notifications handed to the notifier, by receiver and result (sent, failed).",
            ),
            &["receiver", "result"],
        )?;
        registry.register(Box::new(silences.clone()))?;
        registry.register(Box::new(groups.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        for st in ["active", "pending", "expired"] {
            silences.with_label_values(&[st]).set(0);
        }
        Ok(Self {
            silences,
            groups,
            alerts,
            received,
            notifications,
        })
    }
}

struct Shared {
    clock: Clock,
    silences: Silences,
    config: RwLock<Arc<DispatchConfig>>,
    alerts: Mutex<HashMap<u64, AlertEntry>>,
    /// Route id → group key → receiver, of the groups that exist now (for the status view).
    groups: Mutex<Vec<GroupView>>,
    metrics: Metrics,
}

impl Shared {
    fn config(&self) -> Arc<DispatchConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn alerts(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AlertEntry>> {
        self.alerts.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn update_silence_gauge(&self) {
        for (state, n) in self.silences.counts(self.clock.now_ms()) {
            self.metrics
                .silences
                .with_label_values(&[state.as_str()])
                .set(n as i64);
        }
    }
    /// Firing alerts (fingerprint, labels) as of `now`.
    fn firing(&self, cfg: &DispatchConfig, now_ms: TimestampMs) -> Vec<(u64, Labels)> {
        self.alerts()
            .iter()
            .filter(|(_, e)| {
                e.effective(cfg.resolve_timeout_ms, now_ms)
                    .ends_at_ms
                    .is_none_or(|end| end > now_ms)
            })
            .map(|(fp, e)| (*fp, e.alert.labels.clone()))
            .collect()
    }
}

/// Why an alert is or is not being notified (the dispatch side of `/api/v1/alerts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertDispatchStatus {
    /// The receivers of the routes the alert matches.
    pub receivers: Vec<String>,
    /// `active`, or `suppressed` when silenced, inhibited or muted.
    pub state: &'static str,
    /// Ids of the active silences that match it.
    pub silenced_by: Vec<String>,
    /// Fingerprints of the firing alerts that inhibit it.
    pub inhibited_by: Vec<String>,
    /// Time intervals muting every route it matches now.
    pub muted_by: Vec<String>,
}

/// An alert as the dispatcher holds it, with its status.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchAlertView {
    pub fingerprint: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub starts_at: String,
    pub updated_at: String,
    /// When it resolves unless refreshed (Alertmanager's `endsAt` of a firing alert).
    pub ends_at: String,
    pub value: f64,
    pub generator_url: String,
    pub status: AlertDispatchStatus,
}

/// One alert group, for `/api/v1/status` and tests.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub route_id: String,
    pub receiver: String,
    pub group_key: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub alerts: usize,
    pub next_flush_at: String,
    /// The alerts of the group (for `/api/v2/alerts/groups`).
    #[serde(skip)]
    pub fingerprints: Vec<u64>,
}

/// Whether an alert is suppressed, for the rollback work and the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suppression {
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<u64>,
}

impl Suppression {
    pub fn is_suppressed(&self) -> bool {
        !self.silenced_by.is_empty() || !self.inhibited_by.is_empty()
    }
}

enum Command {
    Alerts(Vec<Alert>),
    External(Vec<ExternalUpdate>),
    Apply(Arc<DispatchConfig>),
    /// Answered once everything sent before it has been handled (tests, shutdown).
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// The dispatcher. Cheap to share behind an `Arc`; implements [`AlertSink`].
pub struct Dispatcher {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Command>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Dispatcher {
    /// Loads silences and the notification log from the store, registers the
    /// metrics and starts the dispatch task.
    pub async fn start(
        deps: DispatcherDeps,
        config: &LoadedConfig,
    ) -> Result<Arc<Self>, DispatchError> {
        Self::start_with(deps, &config.config).await
    }

    /// Like [`Dispatcher::start`], from a bare [`Config`].
    pub async fn start_with(
        deps: DispatcherDeps,
        config: &Config,
    ) -> Result<Arc<Self>, DispatchError> {
        let metrics = Metrics::new(&deps.registry)?;
        let silences = Silences::load(deps.store.clone()).await?;
        let now = deps.clock.now_ms();
        let nflog = deps
            .store
            .load_notification_log(now)
            .await?
            .into_iter()
            .map(|e| ((e.receiver.clone(), e.group_key.clone()), e))
            .collect();
        let shared = Arc::new(Shared {
            clock: deps.clock.clone(),
            silences,
            config: RwLock::new(Arc::new(DispatchConfig::from_config(config))),
            alerts: Mutex::new(HashMap::new()),
            groups: Mutex::new(Vec::new()),
            metrics,
        });
        shared.update_silence_gauge();
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let actor = Actor {
            shared: shared.clone(),
            sink: deps.sink,
            store: deps.store,
            config: shared.config(),
            groups: HashMap::new(),
            nflog,
            version: 0,
            last_gc_ms: now,
        };
        let task = tokio::spawn(actor.run(rx, stop_rx));
        Ok(Arc::new(Self {
            shared,
            tx,
            task: tokio::sync::Mutex::new(Some(task)),
            stop,
        }))
    }

    /// Applies a reloaded config: the routing tree, inhibit rules, time
    /// intervals and receivers are replaced; alert groups are rebuilt from
    /// the alerts held (the notification log keeps them from being re-sent),
    /// as Alertmanager does on reload.
    pub fn apply(&self, config: &LoadedConfig) {
        self.apply_config(&config.config)
    }

    pub fn apply_config(&self, config: &Config) {
        let compiled = Arc::new(DispatchConfig::from_config(config));
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner()) = compiled.clone();
        let _ = self.tx.send(Command::Apply(compiled));
    }

    /// Stops the dispatch task. Pending group flushes are dropped; their
    /// alerts are re-sent by rule evaluation after a restart and the
    /// notification log keeps what was already notified from repeating.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.task.lock().await.take() {
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Waits until every alert and config sent so far has been processed.
    pub async fn sync(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Command::Sync(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    // ----- silences -----

    pub async fn set_silence(&self, input: SilenceInput) -> Result<String, SilenceError> {
        let r = self
            .shared
            .silences
            .set(input, self.shared.clock.now_ms())
            .await;
        self.shared.update_silence_gauge();
        r
    }

    pub async fn expire_silence(&self, id: &str) -> Result<(), SilenceError> {
        let r = self
            .shared
            .silences
            .expire(id, self.shared.clock.now_ms())
            .await;
        self.shared.update_silence_gauge();
        r
    }

    pub fn silence(&self, id: &str) -> Option<SilenceRecord> {
        self.shared.silences.get(id)
    }

    pub fn silences(&self) -> Vec<SilenceRecord> {
        self.shared.silences.list()
    }

    pub fn silence_state(&self, s: &SilenceRecord) -> SilenceState {
        SilenceState::at(s.starts_at_ms, s.ends_at_ms, self.shared.clock.now_ms())
    }

    // ----- questions other areas ask -----

    /// Whether the named time interval is active at `at_ms`; `None` if the config has no such interval.
    pub fn time_interval_active_at(&self, name: &str, at_ms: TimestampMs) -> Option<bool> {
        self.shared
            .config()
            .intervals
            .is_active(name, crate::clock::to_datetime(at_ms))
    }

    /// Whether the named time interval is active now; `None` if the config has no such interval.
    pub fn time_interval_active(&self, name: &str) -> Option<bool> {
        self.shared
            .config()
            .intervals
            .is_active(name, self.shared.clock.now())
    }

    /// The silences and inhibitions that mute an alert with `labels` now.
    pub fn suppression(&self, labels: &Labels) -> Suppression {
        let now = self.shared.clock.now_ms();
        let cfg = self.shared.config();
        let firing = self.shared.firing(&cfg, now);
        let mut inhibited = Vec::new();
        if let Some(by) = inhibited_by(
            &cfg.inhibit_rules,
            labels,
            firing.iter().map(|(f, l)| (*f, l)),
        ) {
            inhibited.push(by);
        }
        Suppression {
            silenced_by: self.shared.silences.mutes(labels, now),
            inhibited_by: inhibited,
        }
    }

    pub fn is_suppressed(&self, labels: &Labels) -> bool {
        self.suppression(labels).is_suppressed()
    }

    /// Receivers, silences, inhibitions and mute windows of an alert with `labels`, now.
    pub fn alert_status(&self, labels: &Labels) -> AlertDispatchStatus {
        let cfg = self.shared.config();
        let now = self.shared.clock.now();
        let mut receivers: Vec<String> = Vec::new();
        let mut muted_by = BTreeSet::new();
        let mut all_routes_muted = true;
        let mut any_route = false;
        if let Some(tree) = &cfg.routes {
            for idx in tree.match_labels(labels) {
                any_route = true;
                let opts = &tree.nodes[idx].opts;
                if !receivers.contains(&opts.receiver) {
                    receivers.push(opts.receiver.clone());
                }
                let why = mute_reasons(&cfg.intervals, opts, now);
                if why.is_empty() {
                    all_routes_muted = false;
                }
                muted_by.extend(why);
            }
        }
        if !any_route || !all_routes_muted {
            muted_by.clear();
        }
        let s = self.suppression(labels);
        let suppressed = s.is_suppressed() || !muted_by.is_empty();
        AlertDispatchStatus {
            receivers,
            state: if suppressed { "suppressed" } else { "active" },
            silenced_by: s.silenced_by,
            inhibited_by: s.inhibited_by.iter().map(|f| format!("{f:016x}")).collect(),
            muted_by: muted_by.into_iter().collect(),
        }
    }

    /// The receivers that would notify an alert with `labels`: those of the
    /// routes it matches that have at least one integration.
    pub fn notifying_receivers(&self, labels: &Labels) -> Vec<String> {
        let cfg = self.shared.config();
        let mut out: Vec<String> = Vec::new();
        if let Some(tree) = &cfg.routes {
            for idx in tree.match_labels(labels) {
                let r = &tree.nodes[idx].opts.receiver;
                let notifies = cfg.receivers.get(r).is_some_and(|i| i.integrations > 0);
                if notifies && !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// The firing alerts the dispatcher holds, with their status, sorted by labels.
    pub fn alerts(&self) -> Vec<DispatchAlertView> {
        let now = self.shared.clock.now_ms();
        let cfg = self.shared.config();
        let mut entries: Vec<AlertEntry> = self.shared.alerts().values().cloned().collect();
        entries.sort_by(|a, b| a.alert.labels.cmp(&b.alert.labels));
        entries
            .into_iter()
            .filter(|e| {
                e.effective(cfg.resolve_timeout_ms, now)
                    .ends_at_ms
                    .is_none_or(|end| end > now)
            })
            .map(|e| DispatchAlertView {
                fingerprint: e.alert.labels.fingerprint_hex(),
                labels: e.alert.labels.to_map(),
                annotations: e.alert.annotations.clone(),
                starts_at: rfc3339(e.alert.starts_at_ms),
                updated_at: rfc3339(e.received_ms),
                ends_at: rfc3339(
                    e.alert
                        .ends_at_ms
                        .unwrap_or_else(|| e.timeout_at(cfg.resolve_timeout_ms)),
                ),
                value: e.alert.value,
                generator_url: e.alert.generator_url.clone(),
                status: self.alert_status(&e.alert.labels),
            })
            .collect()
    }

    /// The alert groups that exist now.
    pub fn groups(&self) -> Vec<GroupView> {
        self.shared
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The routing tree: (route id, receiver, continue) in tree order.
    pub fn routes(&self) -> Vec<(String, String, bool)> {
        self.shared
            .config()
            .routes
            .as_ref()
            .map(|t| {
                t.nodes
                    .iter()
                    .map(|n| (n.id.clone(), n.opts.receiver.clone(), n.r#continue))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Dispatcher {
    /// Takes alerts from an external sender: they go through the same
    /// routing, grouping and muting as rule alerts, and resolve at their
    /// `valid_until_ms` unless updated again.
    pub fn send_external(&self, alerts: Vec<ExternalUpdate>) {
        if alerts.is_empty() {
            return;
        }
        self.shared.metrics.received.inc_by(alerts.len() as u64);
        let _ = self.tx.send(Command::External(alerts));
    }

    /// The compiled routing tree, if the config has a `route:`.
    pub fn route_tree(&self) -> Option<RouteTree> {
        self.shared.config().routes.clone()
    }

    /// The configured receivers' names, sorted.
    pub fn receiver_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.config().receivers.keys().cloned().collect();
        names.sort();
        names
    }

    /// The resolve timeout in force (Alertmanager's `resolve_timeout`).
    pub fn resolve_timeout_ms(&self) -> i64 {
        self.shared.config().resolve_timeout_ms
    }

    /// The alert with this fingerprint as of now, if held (firing or recently resolved).
    pub fn alert(&self, fingerprint: u64) -> Option<Alert> {
        let now = self.shared.clock.now_ms();
        let cfg = self.shared.config();
        self.shared
            .alerts()
            .get(&fingerprint)
            .map(|e| e.effective(cfg.resolve_timeout_ms, now))
    }
}

impl AlertSink for Dispatcher {
    fn send_alerts(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        self.shared.metrics.received.inc_by(alerts.len() as u64);
        let _ = self.tx.send(Command::Alerts(alerts));
    }
}

fn rfc3339(ms: TimestampMs) -> String {
    crate::clock::to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The names of the intervals that mute a route at `now`: its active mute
/// intervals, or all its active_time_intervals when none of them is active.
fn mute_reasons(
    intervals: &TimeIntervals,
    opts: &RouteOpts,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let mut why: Vec<String> = opts
        .mute_time_intervals
        .iter()
        .filter(|n| intervals.is_active(n, now) == Some(true))
        .cloned()
        .collect();
    if !opts.active_time_intervals.is_empty()
        && !opts
            .active_time_intervals
            .iter()
            .any(|n| intervals.is_active(n, now) == Some(true))
    {
        why.extend(opts.active_time_intervals.iter().cloned());
    }
    why
}

struct Group {
    route_id: String,
    labels: Labels,
    key: String,
    opts: RouteOpts,
    alerts: HashMap<u64, AlertEntry>,
    next_flush_ms: TimestampMs,
    has_flushed: bool,
}

struct Actor {
    shared: Arc<Shared>,
    sink: Arc<dyn NotificationSink>,
    store: Store,
    config: Arc<DispatchConfig>,
    groups: HashMap<(usize, Labels), Group>,
    nflog: HashMap<(String, String), NotificationLogEntry>,
    version: u64,
    last_gc_ms: TimestampMs,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let clock = self.shared.clock.clone();
        let mut maintenance = tokio::time::interval(MAINTENANCE_EVERY);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.groups.values().map(|g| g.next_flush_ms).min();
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(Command::Alerts(alerts)) => self.ingest(
                        alerts.into_iter().map(|a| (a, None)).collect(),
                    ),
                    Some(Command::External(updates)) => self.ingest(
                        updates
                            .into_iter()
                            .map(|u| (u.alert, Some(u.valid_until_ms)))
                            .collect(),
                    ),
                    Some(Command::Apply(cfg)) => self.reconfigure(cfg),
                    Some(Command::Sync(done)) => {
                        // Flushes due by now count as "handled" too.
                        self.flush_due().await;
                        let _ = done.send(());
                    }
                },
                _ = clock.sleep_until_ms(next.unwrap_or(0)), if next.is_some() => {
                    self.flush_due().await;
                }
                _ = maintenance.tick() => self.maintain().await,
            }
            self.publish_groups();
        }
    }

    fn ingest(&mut self, alerts: Vec<(Alert, Option<TimestampMs>)>) {
        let now = self.shared.clock.now_ms();
        for (alert, valid_until_ms) in alerts {
            self.version += 1;
            let entry = AlertEntry {
                alert,
                received_ms: now,
                version: self.version,
                valid_until_ms,
            };
            self.shared
                .alerts()
                .insert(entry.alert.fingerprint(), entry.clone());
            self.route(entry, now);
        }
    }

    /// Puts an alert into the group of every route it matches.
    fn route(&mut self, entry: AlertEntry, now: TimestampMs) {
        let Some(tree) = &self.config.routes else {
            return;
        };
        let fp = entry.alert.fingerprint();
        for idx in tree.match_labels(&entry.alert.labels) {
            let node = &tree.nodes[idx];
            let labels = node.opts.group_labels(&entry.alert.labels);
            let group = self
                .groups
                .entry((idx, labels.clone()))
                .or_insert_with(|| Group {
                    route_id: node.id.clone(),
                    key: format!("{}:{}", node.key, labels),
                    labels,
                    opts: node.opts.clone(),
                    alerts: HashMap::new(),
                    next_flush_ms: now + node.opts.group_wait.as_millis() as i64,
                    has_flushed: false,
                });
            // An alert older than group_wait does not wait again (Alertmanager's insert).
            if !group.has_flushed
                && entry.alert.starts_at_ms + (group.opts.group_wait.as_millis() as i64) < now
            {
                group.next_flush_ms = now;
            }
            group.alerts.insert(fp, entry.clone());
        }
    }

    fn reconfigure(&mut self, cfg: Arc<DispatchConfig>) {
        self.config = cfg;
        self.groups.clear();
        let now = self.shared.clock.now_ms();
        let mut entries: Vec<AlertEntry> = self.shared.alerts().values().cloned().collect();
        entries.sort_by_key(|e| e.version);
        for e in entries {
            self.route(e, now);
        }
    }

    async fn flush_due(&mut self) {
        let now = self.shared.clock.now_ms();
        let mut due: Vec<((usize, Labels), TimestampMs)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush_ms <= now)
            .map(|(k, g)| (k.clone(), g.next_flush_ms))
            .collect();
        due.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        for (key, _) in due {
            self.flush(key).await;
        }
    }

    async fn flush(&mut self, key: (usize, Labels)) {
        let now = self.shared.clock.now_ms();
        let cfg = self.config.clone();
        let Some(group) = self.groups.get_mut(&key) else {
            return;
        };
        // Ticks stay on the group's own grid, so repeat_interval lands on a group_interval multiple.
        let tick = group.next_flush_ms;
        let interval = (group.opts.group_interval.as_millis() as i64).max(1);
        // After a stall (a suspended host), skip the missed ticks instead of flushing in a burst.
        let missed = (now - tick).max(0) / interval;
        group.next_flush_ms = tick + (missed + 1) * interval;
        group.has_flushed = true;
        let snapshot: Vec<(u64, u64, Alert)> = group
            .alerts
            .iter()
            .map(|(fp, e)| (*fp, e.version, e.effective(cfg.resolve_timeout_ms, now)))
            .collect();
        let opts = group.opts.clone();
        let group_key = group.key.clone();
        let group_labels = group.labels.clone();

        let ok = self
            .notify(&cfg, &opts, group_key, group_labels, &snapshot, tick, now)
            .await;
        let Some(group) = self.groups.get_mut(&key) else {
            return;
        };
        if ok {
            // Forget the resolved alerts just handled, unless they changed meanwhile.
            for (fp, version, alert) in &snapshot {
                if alert.status_at(now) == AlertStatus::Resolved
                    && group.alerts.get(fp).is_some_and(|e| e.version == *version)
                {
                    group.alerts.remove(fp);
                }
            }
        }
        if group.alerts.is_empty() {
            self.groups.remove(&key);
        }
    }

    /// Runs the notification pipeline for one group; `false` when it must be retried.
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &mut self,
        cfg: &DispatchConfig,
        opts: &RouteOpts,
        group_key: String,
        group_labels: Labels,
        snapshot: &[(u64, u64, Alert)],
        tick: TimestampMs,
        now: TimestampMs,
    ) -> bool {
        if !mute_reasons(&cfg.intervals, opts, self.shared.clock.now()).is_empty() {
            return true;
        }
        let firing_now = self.shared.firing(cfg, now);
        let mut alerts: Vec<Alert> = snapshot
            .iter()
            .map(|(_, _, a)| a)
            .filter(|a| {
                inhibited_by(
                    &cfg.inhibit_rules,
                    &a.labels,
                    firing_now.iter().map(|(f, l)| (*f, l)),
                )
                .is_none()
                    && self.shared.silences.mutes(&a.labels, now).is_empty()
            })
            .cloned()
            .collect();
        if alerts.is_empty() {
            return true;
        }
        let Some(receiver) = cfg.receivers.get(&opts.receiver).copied() else {
            tracing::warn!(receiver = %opts.receiver, "route names a receiver that is not configured; dropping the notification");
            return true;
        };
        if receiver.integrations == 0 {
            return true;
        }
        let mut firing: Vec<u64> = Vec::new();
        let mut resolved: Vec<u64> = Vec::new();
        for a in &alerts {
            // An alert may carry a future endsAt (the runner's events): firing until then.
            if a.status_at(now) == AlertStatus::Resolved {
                resolved.push(a.fingerprint());
            } else {
                firing.push(a.fingerprint());
            }
        }
        firing.sort_unstable();
        resolved.sort_unstable();
        let log_key = (opts.receiver.clone(), group_key.clone());
        let entry = self.nflog.get(&log_key);
        if !needs_update(
            entry,
            &firing,
            &resolved,
            receiver.send_resolved,
            opts.repeat_interval,
            tick,
        ) {
            return true;
        }
        sort_alerts(&mut alerts);
        let notification = Notification {
            receiver: opts.receiver.clone(),
            group_key: group_key.clone(),
            group_labels,
            alerts,
            created_at_ms: now,
        };
        if let Err(e) = self.sink.send(notification).await {
            tracing::warn!(receiver = %opts.receiver, group = %group_key, error = %e, "notification not accepted; retrying at the next group interval");
            self.shared
                .metrics
                .notifications
                .with_label_values(&[opts.receiver.as_str(), "failed"])
                .inc();
            return false;
        }
        self.shared
            .metrics
            .notifications
            .with_label_values(&[opts.receiver.as_str(), "sent"])
            .inc();
        let retention = NFLOG_RETENTION_MS.max(2 * opts.repeat_interval.as_millis() as i64);
        let entry = NotificationLogEntry {
            receiver: opts.receiver.clone(),
            group_key,
            firing,
            resolved,
            timestamp_ms: tick,
            expires_at_ms: tick + retention,
        };
        if let Err(e) = self.store.upsert_notification_log(entry.clone()).await {
            tracing::error!(error = %e, "cannot record the notification log; a restart may repeat this notification");
        }
        self.nflog.insert(log_key, entry);
        true
    }

    async fn maintain(&mut self) {
        let now = self.shared.clock.now_ms();
        let cfg = self.config.clone();
        // Resolved alerts stay while rule evaluation may still re-send them.
        self.shared.alerts().retain(|_, e| {
            e.effective(cfg.resolve_timeout_ms, now)
                .ends_at_ms
                .is_none_or(|end| end + RESOLVED_RETENTION_MS > now)
        });
        if now - self.last_gc_ms >= GC_EVERY_MS {
            self.last_gc_ms = now;
            if let Err(e) = self.shared.silences.gc(now).await {
                tracing::warn!(error = %e, "silence garbage collection failed");
            }
            self.nflog.retain(|_, e| e.expires_at_ms > now);
            if let Err(e) = self.store.delete_expired_notification_log(now).await {
                tracing::warn!(error = %e, "notification log garbage collection failed");
            }
        }
        self.shared.update_silence_gauge();
        let firing = self.shared.firing(&cfg, now);
        let mut suppressed = 0;
        for (_, labels) in &firing {
            let inhibited = inhibited_by(
                &cfg.inhibit_rules,
                labels,
                firing.iter().map(|(f, l)| (*f, l)),
            )
            .is_some();
            if inhibited || !self.shared.silences.mutes(labels, now).is_empty() {
                suppressed += 1;
            }
        }
        let m = &self.shared.metrics;
        m.alerts
            .with_label_values(&["active"])
            .set((firing.len() - suppressed) as i64);
        m.alerts
            .with_label_values(&["suppressed"])
            .set(suppressed as i64);
    }

    fn publish_groups(&self) {
        let mut views: Vec<GroupView> = self
            .groups
            .values()
            .map(|g| GroupView {
                route_id: g.route_id.clone(),
                receiver: g.opts.receiver.clone(),
                group_key: g.key.clone(),
                labels: g.labels.to_map(),
                alerts: g.alerts.len(),
                next_flush_at: rfc3339(g.next_flush_ms),
                fingerprints: {
                    let mut f: Vec<u64> = g.alerts.keys().copied().collect();
                    f.sort_unstable();
                    f
                },
            })
            .collect();
        views.sort_by(|a, b| {
            a.group_key
                .cmp(&b.group_key)
                .then_with(|| a.receiver.cmp(&b.receiver))
        });
        self.shared.metrics.groups.set(views.len() as i64);
        *self.shared.groups.lock().unwrap_or_else(|p| p.into_inner()) = views;
    }
}

/// Alertmanager's DedupStage.needsUpdate.
fn needs_update(
    entry: Option<&NotificationLogEntry>,
    firing: &[u64],
    resolved: &[u64],
    send_resolved: bool,
    repeat: Duration,
    now: TimestampMs,
) -> bool {
    let Some(entry) = entry else {
        return !firing.is_empty();
    };
    let subset = |sub: &[u64], of: &[u64]| sub.iter().all(|f| of.contains(f));
    if !subset(firing, &entry.firing) {
        return true;
    }
    if firing.is_empty() {
        // All resolved: tell the receiver only if it was told something fired.
        return !entry.firing.is_empty();
    }
    if send_resolved && !subset(resolved, &entry.resolved) {
        return true;
    }
    now - entry.timestamp_ms >= repeat.as_millis() as i64
}

/// Alertmanager's order: by `job`, then `instance`, then the whole label set.
fn sort_alerts(alerts: &mut [Alert]) {
    alerts.sort_by(|a, b| {
        for k in ["job", "instance"] {
            match (a.labels.get(k), b.labels.get(k)) {
                (Some(x), Some(y)) if x != y => return x.cmp(y),
                _ => {}
            }
        }
        a.labels.cmp(&b.labels)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(firing: &[u64], resolved: &[u64], ts: i64) -> NotificationLogEntry {
        NotificationLogEntry {
            receiver: "r".into(),
            group_key: "g".into(),
            firing: firing.to_vec(),
            resolved: resolved.to_vec(),
            timestamp_ms: ts,
            expires_at_ms: i64::MAX,
        }
    }

    #[test]
    fn dedup_follows_alertmanager() {
        let rep = Duration::from_secs(3600);
        // Never notified: only if something fires.
        assert!(needs_update(None, &[1], &[], false, rep, 0));
        assert!(!needs_update(None, &[], &[1], true, rep, 0));
        let e = entry(&[1, 2], &[], 0);
        assert!(
            !needs_update(Some(&e), &[1, 2], &[], true, rep, 1000),
            "nothing changed"
        );
        assert!(
            needs_update(Some(&e), &[1, 2, 3], &[], false, rep, 1000),
            "a new alert fires"
        );
        assert!(
            !needs_update(Some(&e), &[1], &[2], false, rep, 1000),
            "one resolved, receiver does not want it"
        );
        assert!(
            needs_update(Some(&e), &[1], &[2], true, rep, 1000),
            "one resolved, receiver wants it"
        );
        assert!(
            needs_update(Some(&e), &[], &[1, 2], false, rep, 1000),
            "all resolved is always told"
        );
        assert!(
            !needs_update(Some(&entry(&[], &[1], 0)), &[], &[1, 2], true, rep, 1000),
            "never told they fired"
        );
        assert!(
            needs_update(Some(&e), &[1, 2], &[], false, rep, 3_600_000),
            "repeat interval passed"
        );
        assert!(!needs_update(Some(&e), &[1, 2], &[], false, rep, 3_599_999));
    }
}
