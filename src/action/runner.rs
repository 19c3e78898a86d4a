//! The action runner: guard rails, intents, effects, verification, audit.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::task::AbortHandle;

use super::cloud_run::{
    after_lost_patch, describe_traffic, missing_role, route_all, short_name, CloudRunApi,
    CloudRunError, LostPatch, OperationState, PlannedBase, Route, ServicePatch, ServiceState,
    TrafficTarget,
};
use super::command;
use super::deps::{
    AlertState, EvidenceSource, ProbeCheck, RequestCounts, ServingHistory, TimeIntervals, Unknown,
};
use super::events::{is_own_alert, Event, EventEmitter, Phase};
use super::judge::{self, Judgement, NotJudged};
use super::metrics::ActionMetrics;
use super::plan::{self, Candidate, ANNOTATION_AT, ANNOTATION_FROM, ANNOTATION_TO};
use crate::alert::{Alert, AlertSink, AlertStatus};
use crate::clock::{to_datetime, Clock, TimestampMs};
use crate::config::actions::{ActionConfig, CloudRunEnvConfig, CloudRunTrafficConfig, Effect};
use crate::config::duration::format_duration;
use crate::config::Config;
use crate::dispatch::notification::{BoxFuture, Notification, NotificationSink};
use crate::labels::Labels;
use crate::store::actions::GLOBAL_HOLD;
use crate::store::{AuditEntry, Hold, Intent, IntentState, Quarantined, Store, StoreError};

/// The stable words a skip is recorded and counted with.
pub mod reason {
    pub const HOLD: &str = "hold";
    pub const MUTED: &str = "muted";
    pub const COOLDOWN: &str = "cooldown";
    pub const BUDGET: &str = "budget";
    pub const ALERT_RESOLVED: &str = "alert_resolved";
    pub const NOT_DEPLOY_REGRESSION: &str = "not_deploy_regression";
    /// The alert names a revision that no longer serves.
    pub const OTHER_REVISION: &str = "evidence_about_other_revision";
    /// The serving revision began serving inside the alert's evidence window.
    pub const STARTED_INSIDE_WINDOW: &str = "started_inside_evidence_window";
    /// Too little evidence (too few requests, or the rule's query fails):
    /// no action, and the alert keeps being watched.
    pub const INCONCLUSIVE: &str = "inconclusive";
    /// A hold during the veto window cancelled the action.
    pub const VETOED: &str = "vetoed";
    /// What serves changed during the veto window.
    pub const SERVING_CHANGED: &str = "serving_changed";
    pub const NO_EARLIER_READY_REVISION: &str = "no_earlier_ready_revision";
    pub const QUARANTINED: &str = "quarantined";
    pub const ALREADY_AT_TARGET: &str = "already_at_target";
    pub const OTHER_ACTOR: &str = "other_actor";
    pub const IN_PROGRESS: &str = "in_progress";
    pub const UNKNOWN_TARGET: &str = "unknown_target";
    pub const SHUTTING_DOWN: &str = "shutting_down";
    pub const CLOUD_RUN_UNAVAILABLE: &str = "cloud_run_unavailable";
    pub const VERIFICATION_FAILED: &str = "verification_failed";
}

/// How often an inconclusive decision is re-checked while its alert fires.
const RECHECK_INCONCLUSIVE: Duration = Duration::from_secs(60);

/// Who set a hold or started a manual action when nobody says.
const SYSTEM_ACTOR: &str = "rearguard";

/// Everything the runner needs from the daemon. [`ActionDeps::new`] fills the
/// optional parts with [`Unknown`]; the daemon replaces them as it wires.
#[derive(Clone)]
pub struct ActionDeps {
    pub clock: Clock,
    pub store: Store,
    pub cloud_run: Arc<dyn CloudRunApi>,
    /// Where action events go (the alert pipeline: routing decides who hears).
    pub events: Arc<dyn AlertSink>,
    pub registry: prometheus::Registry,
    /// The folder of `HOLD`.
    pub state_dir: PathBuf,
    /// `generatorURL` of event alerts (the external URL of the rollbacks API).
    pub generator_url: String,
    pub alert_state: Arc<dyn AlertState>,
    pub probes: Arc<dyn ProbeCheck>,
    pub time_intervals: Arc<dyn TimeIntervals>,
    pub serving_history: Arc<dyn ServingHistory>,
    pub evidence: Arc<dyn EvidenceSource>,
    /// Request counts of revisions (the `min_requests` guard).
    pub requests: Arc<dyn RequestCounts>,
}

impl ActionDeps {
    pub fn new(
        clock: Clock,
        store: Store,
        cloud_run: Arc<dyn CloudRunApi>,
        events: Arc<dyn AlertSink>,
        registry: prometheus::Registry,
        state_dir: PathBuf,
    ) -> Self {
        Self {
            clock,
            store,
            cloud_run,
            events,
            registry,
            state_dir,
            generator_url: String::new(),
            alert_state: Arc::new(Unknown),
            probes: Arc::new(Unknown),
            time_intervals: Arc::new(Unknown),
            serving_history: Arc::new(Unknown),
            evidence: Arc::new(Unknown),
            requests: Arc::new(Unknown),
        }
    }
}

/// Why an action runs.
#[derive(Clone, Debug)]
pub struct Trigger {
    /// The alert that triggered it (none for a manual action).
    pub alert: Option<Alert>,
    /// Manual actions skip holds, mute windows, cooldown, budget, the bake
    /// window and the firing re-check; quarantine and dry run still apply.
    pub manual: bool,
    /// A revision to roll back to, overriding the action's choice.
    pub to_revision: Option<String>,
    /// Decide and tell, change nothing (also when the action says so).
    pub dry_run: bool,
    /// Who asked (for the audit).
    pub actor: String,
}

impl Trigger {
    pub fn alert(alert: Alert) -> Self {
        Self {
            alert: Some(alert),
            manual: false,
            to_revision: None,
            dry_run: false,
            actor: SYSTEM_ACTOR.into(),
        }
    }

    pub fn manual(to_revision: Option<String>, dry_run: bool, actor: impl Into<String>) -> Self {
        Self {
            alert: None,
            manual: true,
            to_revision,
            dry_run,
            actor: actor.into(),
        }
    }

    fn fingerprint(&self) -> String {
        self.alert
            .as_ref()
            .map(|a| a.labels.fingerprint_hex())
            .unwrap_or_else(|| "manual".into())
    }

    fn alertname(&self) -> String {
        self.alert
            .as_ref()
            .map(|a| a.name().to_string())
            .unwrap_or_else(|| "manual".into())
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A guard rail stopped it (`reason` is one of [`reason`]).
    Skipped { reason: String, detail: String },
    /// Dry run: what would have been done.
    DryRun { plan: Vec<String> },
    /// Acted, and the service is healthy again. `step` is 1-based.
    Verified {
        step: usize,
        from_revision: Option<String>,
        to_revision: Option<String>,
    },
    /// Acted, but the alert kept firing or probes kept failing: target held.
    NotVerified { detail: String },
    /// The action itself failed (API refused, command exit != 0): target held.
    Failed { detail: String },
    /// Another actor made the change first (etag conflict).
    Superseded { detail: String },
}

impl Outcome {
    pub fn skip_reason(&self) -> Option<&str> {
        match self {
            Outcome::Skipped { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// The result of one step of a ladder.
#[derive(Debug)]
enum Step {
    Done {
        intent_id: i64,
        from: Option<String>,
        to: Option<String>,
    },
    AlreadyAtTarget(String),
    Skip {
        reason: &'static str,
        detail: String,
        notify: bool,
    },
    DryRun(String),
    Superseded(String),
    Failed(String),
}

/// One run of an action.
struct Run {
    target: String,
    action: ActionConfig,
    trigger: Trigger,
    run_id: String,
    started_ms: TimestampMs,
    /// Full service name, when the action changes a Cloud Run service.
    service: Option<String>,
    /// The revision serving when the run began (the deploy being undone).
    origin: Option<String>,
    /// Revisions the run created or left (never a rollback target).
    left_behind: BTreeSet<String>,
    /// Revisions the alert's evidence may be about (never a rollback target).
    implicated: BTreeSet<String>,
    /// Why the serving revision is judged, for the notices.
    judged: Option<String>,
    /// Start of the alert's evidence window, once judged.
    window_start_ms: Option<TimestampMs>,
    /// The requests the evidence rests on (the `min_requests` guard).
    counted: Option<String>,
    dry_run: bool,
}

impl Run {
    fn service_label(&self) -> String {
        self.service
            .as_deref()
            .map(|s| short_name(s).to_string())
            .or_else(|| {
                self.trigger
                    .alert
                    .as_ref()
                    .and_then(|a| a.labels.get("service").map(str::to_string))
            })
            .unwrap_or_else(|| self.target.clone())
    }

    /// Why the judged revision is judged and what the evidence rests on,
    /// as sentences (empty when not judged).
    fn evidence_text(&self) -> String {
        let mut out = String::new();
        for part in [&self.judged, &self.counted].into_iter().flatten() {
            out.push_str(part);
            out.push_str(". ");
        }
        out
    }

    fn because(&self) -> String {
        match &self.trigger.alert {
            Some(a) => format!(
                "{} (value {}, active since {})",
                a.name(),
                a.value,
                to_datetime(a.active_at_ms).format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => format!("a manual request by {}", self.trigger.actor),
        }
    }
}

struct View {
    actions: BTreeMap<String, ActionConfig>,
    /// receiver name → action names of its rollback_configs.
    receivers: BTreeMap<String, Vec<String>>,
    /// The config's `time_intervals`, for `mute_time_intervals`.
    intervals: crate::dispatch::time_interval::TimeIntervals,
}

impl View {
    fn from_config(config: &Config) -> Self {
        Self {
            actions: config.actions.clone(),
            receivers: config
                .receivers
                .iter()
                .filter(|r| !r.rollback_configs.is_empty())
                .map(|r| {
                    (
                        r.name.clone(),
                        r.rollback_configs
                            .iter()
                            .map(|c| c.action.clone())
                            .collect(),
                    )
                })
                .collect(),
            intervals: crate::dispatch::time_interval::TimeIntervals::from_config(
                &config.time_intervals,
            ),
        }
    }
}

struct Inner {
    deps: ActionDeps,
    emitter: EventEmitter,
    metrics: ActionMetrics,
    view: RwLock<Arc<View>>,
    busy: Mutex<HashSet<String>>,
    running: AtomicUsize,
    idle: tokio::sync::Notify,
    tasks: Mutex<Vec<AbortHandle>>,
    stopping: AtomicBool,
    /// (target, alert fingerprint) of inconclusive decisions already told.
    watching: Mutex<HashSet<(String, u64)>>,
    /// Those with a re-check scheduled (one at a time, however many
    /// notifications dispatch repeats).
    rechecks: Mutex<HashSet<(String, u64)>>,
}

/// Runs actions; cheap to clone. Implements [`NotificationSink`] for the
/// `rollback_configs` of receivers.
#[derive(Clone)]
pub struct ActionRunner {
    inner: Arc<Inner>,
}

/// Releases a target's busy mark when dropped.
struct BusyGuard {
    inner: Arc<Inner>,
    target: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.inner
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.target);
    }
}

/// Decrements the running count (and wakes `idle`) when dropped, also on abort.
struct RunningGuard(Arc<Inner>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn alert_json(a: &Alert) -> serde_json::Value {
    json!({
        "labels": a.labels.to_map(),
        "annotations": a.annotations,
        "value": a.value,
        "active_at_ms": a.active_at_ms,
        "starts_at_ms": a.starts_at_ms,
        "generator_url": a.generator_url,
    })
}

fn alert_from_json(v: &serde_json::Value) -> Option<Alert> {
    let labels: BTreeMap<String, String> = serde_json::from_value(v.get("labels")?.clone()).ok()?;
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(v.get("annotations").cloned().unwrap_or(json!({})))
            .unwrap_or_default();
    Some(Alert {
        labels: Labels::from_map(&labels),
        annotations,
        active_at_ms: v.get("active_at_ms")?.as_i64()?,
        starts_at_ms: v.get("starts_at_ms").and_then(|x| x.as_i64()).unwrap_or(0),
        ends_at_ms: None,
        value: v.get("value").and_then(|x| x.as_f64()).unwrap_or(0.0),
        generator_url: v
            .get("generator_url")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string(),
    })
}

fn traffic_json(s: &ServiceState) -> serde_json::Value {
    json!({
        "etag": s.etag,
        "serving": s.serving_revision(),
        "traffic": s.traffic,
        "traffic_statuses": s.traffic_statuses,
        "latest_ready_revision": s.latest_ready_revision,
    })
}

impl ActionRunner {
    /// Registers the metrics and takes the actions and receivers of `config`.
    pub fn new(deps: ActionDeps, config: &Config) -> Result<Self, prometheus::Error> {
        let metrics = ActionMetrics::register(&deps.registry)?;
        let emitter = EventEmitter::new(deps.events.clone(), deps.generator_url.clone())
            .with_store(deps.store.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                deps,
                emitter,
                metrics,
                view: RwLock::new(Arc::new(View::from_config(config))),
                busy: Mutex::default(),
                running: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
                tasks: Mutex::default(),
                stopping: AtomicBool::new(false),
                watching: Mutex::default(),
                rechecks: Mutex::default(),
            }),
        })
    }

    /// Takes a reloaded config's actions and receivers. Runs in flight finish
    /// with the config they started with.
    pub fn apply(&self, config: &Config) {
        *self.inner.view.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(View::from_config(config));
    }

    fn view(&self) -> Arc<View> {
        self.inner
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The emitter of rollback events (the daemon presents pending ones; dispatch marks them notified).
    pub fn events(&self) -> &EventEmitter {
        &self.inner.emitter
    }

    fn deps(&self) -> &ActionDeps {
        &self.inner.deps
    }

    fn now(&self) -> TimestampMs {
        self.inner.deps.clock.now_ms()
    }

    /// The configured action names.
    pub fn targets(&self) -> Vec<String> {
        self.view().actions.keys().cloned().collect()
    }

    /// Resolves a name given on the command line: an action name, or the
    /// (short or full) name of the one service an action changes.
    pub fn resolve_target(&self, name: &str) -> Option<String> {
        let view = self.view();
        if view.actions.contains_key(name) {
            return Some(name.to_string());
        }
        let matches: Vec<&String> = view
            .actions
            .iter()
            .filter(|(_, a)| {
                a.service()
                    .is_some_and(|s| s == name || short_name(&s) == name)
            })
            .map(|(k, _)| k)
            .collect();
        (matches.len() == 1).then(|| matches[0].clone())
    }

    /// Starts a run in the background (tracked for [`idle`](Self::idle) and shutdown).
    pub fn spawn(&self, target: String, trigger: Trigger) {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        let guard = RunningGuard(self.inner.clone());
        let this = self.clone();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            this.run(&target, trigger).await;
        });
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|h| !h.is_finished());
        tasks.push(handle.abort_handle());
    }

    /// Acts on a notification for a receiver with `rollback_configs`: for each
    /// action, the earliest firing alert of the group (not one of our own
    /// events) is the trigger. Resolved notifications do nothing.
    pub fn handle_notification(&self, n: &Notification) {
        let view = self.view();
        let Some(actions) = view.receivers.get(&n.receiver) else {
            return;
        };
        let trigger = n
            .alerts
            .iter()
            .filter(|a| {
                !is_own_alert(a)
                    && !judge::is_about_rearguard(a)
                    && a.status_at(n.created_at_ms) == AlertStatus::Firing
            })
            .min_by_key(|a| a.active_at_ms);
        let Some(alert) = trigger else { return };
        for target in actions {
            self.spawn(target.clone(), Trigger::alert(alert.clone()));
        }
    }

    /// Waits until no run is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Stops accepting runs and aborts those in flight. Their intents stay
    /// unfinished in the store and are reconciled at the next start.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let tasks: Vec<AbortHandle> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in &tasks {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.idle()).await;
    }

    fn try_busy(&self, target: &str) -> Option<BusyGuard> {
        let mut busy = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(target.to_string()).then(|| BusyGuard {
            inner: self.inner.clone(),
            target: target.to_string(),
        })
    }

    // ---------------------------------------------------------------- holds

    /// The hold that applies to `target`, if any: `state_dir/HOLD`, a global
    /// hold, or one on the target.
    pub async fn hold_for(&self, target: &str) -> Result<Option<Hold>, StoreError> {
        if let Some(reason) = plan::hold_file(&self.deps().state_dir).await {
            return Ok(Some(Hold {
                target: GLOBAL_HOLD.into(),
                reason,
                set_by: "HOLD file".into(),
                at_ms: 0,
            }));
        }
        let holds = self.deps().store.holds().await?;
        Ok(holds
            .iter()
            .find(|h| h.target == GLOBAL_HOLD)
            .or_else(|| holds.iter().find(|h| h.target == target))
            .cloned())
    }

    /// Holds `target` (or every target with `None`).
    /// Holds `target` on rearguard's own decision (budget spent, a rollback
    /// that did not help). The run goes on to tell people either way, so a
    /// store error is logged rather than returned.
    async fn hold_by_rearguard(&self, target: &str, reason: &str) {
        if let Err(e) = self.hold(Some(target), reason, SYSTEM_ACTOR).await {
            tracing::error!(error = %e, "cannot hold the target");
        }
    }

    pub async fn hold(
        &self,
        target: Option<&str>,
        reason: &str,
        set_by: &str,
    ) -> Result<(), StoreError> {
        let target = target.unwrap_or(GLOBAL_HOLD).to_string();
        let now = self.now();
        self.deps()
            .store
            .set_hold(Hold {
                target: target.clone(),
                reason: reason.to_string(),
                set_by: set_by.to_string(),
                at_ms: now,
            })
            .await?;
        self.audit_plain(&target, "hold", reason, json!({"set_by": set_by}))
            .await;
        self.refresh_held_gauge().await;
        Ok(())
    }

    /// Lifts the hold on `target` (or the global one with `None`).
    pub async fn unhold(
        &self,
        target: Option<&str>,
        reason: &str,
        set_by: &str,
    ) -> Result<bool, StoreError> {
        let target = target.unwrap_or(GLOBAL_HOLD).to_string();
        let removed = self.deps().store.remove_hold(&target).await?;
        if removed {
            self.audit_plain(&target, "unhold", reason, json!({"set_by": set_by}))
                .await;
        }
        self.refresh_held_gauge().await;
        Ok(removed)
    }

    /// Sets `rearguard_target_held` from the store and the HOLD file (holds
    /// may be set by `rearguard hold` in another process).
    pub async fn refresh_held_gauge(&self) {
        let holds = self.deps().store.holds().await.unwrap_or_default();
        let file = plan::hold_file(&self.deps().state_dir).await.is_some();
        let global = file || holds.iter().any(|h| h.target == GLOBAL_HOLD);
        for t in self.targets() {
            let held = global || holds.iter().any(|h| h.target == t);
            self.inner
                .metrics
                .held
                .with_label_values(&[&t])
                .set(held as i64);
        }
    }

    // ---------------------------------------------------------------- audit and events

    async fn audit_plain(
        &self,
        target: &str,
        decision: &str,
        reason: &str,
        evidence: serde_json::Value,
    ) {
        let entry = AuditEntry {
            id: 0,
            at_ms: self.now(),
            run_id: None,
            target: target.to_string(),
            service: None,
            intent_id: None,
            alertname: None,
            fingerprint: None,
            decision: decision.to_string(),
            reason: reason.to_string(),
            from_revision: None,
            to_revision: None,
            dry_run: false,
            evidence,
        };
        if let Err(e) = self.deps().store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the action audit");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        run: &Run,
        decision: &str,
        reason: &str,
        intent_id: Option<i64>,
        from: Option<&str>,
        to: Option<&str>,
        evidence: serde_json::Value,
    ) {
        let entry = AuditEntry {
            id: 0,
            at_ms: self.now(),
            run_id: Some(run.run_id.clone()),
            target: run.target.clone(),
            service: run.service.clone(),
            intent_id,
            alertname: Some(run.trigger.alertname()),
            fingerprint: Some(run.trigger.fingerprint()),
            decision: decision.to_string(),
            reason: reason.to_string(),
            from_revision: from.map(str::to_string),
            to_revision: to.map(str::to_string),
            dry_run: run.dry_run,
            evidence,
        };
        if let Err(e) = self.deps().store.append_audit(entry).await {
            tracing::error!(error = %e, target_name = %run.target, "cannot write the action audit");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        run: &Run,
        phase: Phase,
        reason: &str,
        from: Option<&str>,
        to: Option<&str>,
        summary: String,
        description: String,
    ) {
        self.inner
            .emitter
            .emit(
                &Event {
                    phase,
                    target: run.target.clone(),
                    service: run.service_label(),
                    reason: reason.to_string(),
                    trigger: run.trigger.alert.clone(),
                    from_revision: from.map(str::to_string),
                    to_revision: to.map(str::to_string),
                    summary,
                    description,
                },
                self.now(),
            )
            .await;
    }

    /// Like `event`, but nothing when the same notice was recorded at or after `since_ms`.
    #[allow(clippy::too_many_arguments)]
    async fn event_unless_recorded_since(
        &self,
        since_ms: TimestampMs,
        run: &Run,
        phase: Phase,
        reason: &str,
        from: Option<&str>,
        to: Option<&str>,
        summary: String,
        description: String,
    ) {
        let e = Event {
            phase,
            target: run.target.clone(),
            service: run.service_label(),
            reason: reason.to_string(),
            trigger: run.trigger.alert.clone(),
            from_revision: from.map(str::to_string),
            to_revision: to.map(str::to_string),
            summary,
            description,
        };
        if !self.inner.emitter.recorded_since(&e, since_ms).await {
            self.inner.emitter.emit(&e, self.now()).await;
        }
    }

    /// Writes an intent before acting; a store that cannot take it stops the
    /// step (acting without a record could act twice after a restart).
    async fn write_intent(&self, intent: &Intent) -> Result<i64, Step> {
        self.deps()
            .store
            .insert_intent(intent.clone())
            .await
            .map_err(|e| {
                Step::Failed(format!(
                    "cannot write the intent to the store, not acting: {e}"
                ))
            })
    }

    async fn alert_evidence(&self, run: &Run) -> serde_json::Value {
        let mut ev = json!({ "trigger": run.trigger.alert.as_ref().map(alert_json), "actor": run.trigger.actor });
        if let Some(a) = &run.trigger.alert {
            let extra = self
                .deps()
                .evidence
                .collect(a, run.service.as_deref())
                .await;
            if !extra.is_null() {
                ev["evidence"] = extra;
            }
            if let Some(series) = self
                .deps()
                .alert_state
                .history(a.fingerprint(), self.now())
                .await
            {
                ev["series"] = series;
            }
        }
        ev
    }

    async fn skip(&self, run: &Run, reason: &'static str, detail: String, notify: bool) -> Outcome {
        self.inner
            .metrics
            .skipped
            .with_label_values(&[&run.target, reason])
            .inc();
        let mut ev = self.alert_evidence(run).await;
        ev["detail"] = json!(detail);
        self.audit(run, "skipped", reason, None, None, None, ev)
            .await;
        tracing::info!(target_name = %run.target, reason, %detail, "action skipped");
        if notify {
            self.event(
                run,
                Phase::Skipped,
                reason,
                None,
                None,
                format!("not acting on {}: {}", run.service_label(), detail),
                format!("{} fired; {detail}", run.because()),
            )
            .await;
        }
        Outcome::Skipped {
            reason: reason.to_string(),
            detail,
        }
    }

    // ---------------------------------------------------------------- the run

    /// Runs `target` for `trigger` to the end (verification included).
    pub async fn run(&self, target: &str, trigger: Trigger) -> Outcome {
        let view = self.view();
        let now = self.now();
        let Some(action) = view.actions.get(target).cloned() else {
            self.inner
                .metrics
                .skipped
                .with_label_values(&[target, reason::UNKNOWN_TARGET])
                .inc();
            return Outcome::Skipped {
                reason: reason::UNKNOWN_TARGET.into(),
                detail: format!(
                    "no action named {target:?} (defined: {})",
                    self.targets().join(", ")
                ),
            };
        };
        let mut run = Run {
            target: target.to_string(),
            service: action.service(),
            dry_run: action.dry_run || trigger.dry_run,
            action,
            trigger,
            run_id: format!("{target}-{now}"),
            started_ms: now,
            origin: None,
            left_behind: BTreeSet::new(),
            implicated: BTreeSet::new(),
            judged: None,
            window_start_ms: None,
            counted: None,
        };
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Outcome::Skipped {
                reason: reason::SHUTTING_DOWN.into(),
                detail: "rearguard is stopping".into(),
            };
        }
        let Some(_busy) = self.try_busy(target) else {
            // Dispatch repeats notifications while an action runs: count, do not audit each.
            self.inner
                .metrics
                .skipped
                .with_label_values(&[target, reason::IN_PROGRESS])
                .inc();
            return Outcome::Skipped {
                reason: reason::IN_PROGRESS.into(),
                detail: format!("an action on {target} is already running"),
            };
        };
        self.refresh_held_gauge().await;
        let outcome = self.run_guarded(&mut run).await;
        if outcome.skip_reason() != Some(reason::INCONCLUSIVE) {
            if let Some(a) = &run.trigger.alert {
                self.inner
                    .watching
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(run.target.clone(), a.fingerprint()));
            }
        }
        self.record_outcome(&run, &outcome);
        self.refresh_held_gauge().await;
        outcome
    }

    fn record_outcome(&self, run: &Run, outcome: &Outcome) {
        let target = run.target.as_str();
        let result = match outcome {
            Outcome::Skipped { .. } => None,
            Outcome::DryRun { .. } => Some("dry_run"),
            Outcome::Verified { .. } => Some("verified"),
            Outcome::NotVerified { .. } => Some("not_verified"),
            Outcome::Failed { .. } => Some("failed"),
            Outcome::Superseded { .. } => Some("superseded"),
        };
        if let Some(result) = result {
            self.inner
                .metrics
                .rollbacks
                .with_label_values(&[target, result])
                .inc();
            if result != "dry_run" {
                let secs = (self.now() - run.started_ms).max(0) as f64 / 1000.0;
                self.inner
                    .metrics
                    .duration
                    .with_label_values(&[target])
                    .observe(secs);
            }
        }
    }

    async fn run_guarded(&self, run: &mut Run) -> Outcome {
        let now = self.now();
        if !run.trigger.manual {
            if let Some(outcome) = self.check_guard_rails(run, now).await {
                return outcome;
            }
        }
        // The deploy being judged: what serves now.
        if let Some(service) = run.service.clone() {
            let svc = match self.deps().cloud_run.get_service(&service).await {
                Ok(s) => s,
                Err(e) => {
                    return self
                        .skip(
                            run,
                            reason::CLOUD_RUN_UNAVAILABLE,
                            format!("cannot read {service}: {e}"),
                            true,
                        )
                        .await
                }
            };
            run.origin = svc.serving_revision();
            if !run.trigger.manual {
                if let Some(outcome) = self.check_deploy(run, &service, &svc, now).await {
                    return outcome;
                }
                if let Some(outcome) = self.check_requests(run, &service, now).await {
                    return outcome;
                }
            }
        }
        if !run.trigger.manual && !run.dry_run && !run.action.veto.0.is_zero() {
            if let Some(outcome) = self.veto_window(run).await {
                return outcome;
            }
        }
        self.run_ladder(run).await
    }

    /// Holds, mute windows, cooldown, budget, and the firing re-check.
    async fn check_guard_rails(&self, run: &Run, now: TimestampMs) -> Option<Outcome> {
        match self.hold_for(&run.target).await {
            Ok(Some(h)) => {
                let detail = format!(
                    "{} is on hold: {} (set by {})",
                    run.target, h.reason, h.set_by
                );
                return Some(self.skip(run, reason::HOLD, detail, false).await);
            }
            Ok(None) => {}
            Err(e) => {
                // Cannot tell whether held: do not act.
                let detail = format!("cannot read holds from the store: {e}");
                return Some(self.skip(run, reason::HOLD, detail, true).await);
            }
        }
        let view = self.view();
        let muted = |name: &str| {
            view.intervals
                .is_active(name, to_datetime(now))
                .unwrap_or_else(|| self.deps().time_intervals.is_active(name, now))
        };
        if let Some(ti) = run.action.mute_time_intervals.iter().find(|ti| muted(ti)) {
            let detail = format!("time interval {ti:?} is active");
            return Some(self.skip(run, reason::MUTED, detail, false).await);
        }
        let cooldown = run.action.cooldown.as_millis();
        let window = run.action.max_per_window.window.as_millis();
        let runs = match self
            .deps()
            .store
            .action_runs_since(&run.target, now - cooldown.max(window))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("cannot read earlier actions from the store: {e}");
                return Some(self.skip(run, reason::COOLDOWN, detail, true).await);
            }
        };
        if let Some(last) = runs.iter().find(|t| **t >= now - cooldown) {
            let detail = format!(
                "the last action on {} was {} ago (cooldown {})",
                run.target,
                format_duration(Duration::from_millis((now - last).max(0) as u64)),
                run.action.cooldown
            );
            return Some(self.skip(run, reason::COOLDOWN, detail, false).await);
        }
        let in_window = runs.iter().filter(|t| **t >= now - window).count();
        let budget = run.action.max_per_window.count as usize;
        if in_window >= budget {
            let detail = format!(
                "{in_window} actions on {} within {} (budget {budget}): holding it and escalating",
                run.target, run.action.max_per_window.window
            );
            let outcome = self.skip(run, reason::BUDGET, detail.clone(), false).await;
            let hold_reason = format!(
                "budget of {budget} actions per {} used up; it keeps failing after rollbacks: investigate, then `rearguard unhold {}`",
                run.action.max_per_window.window, run.target
            );
            self.hold_by_rearguard(&run.target, &hold_reason).await;
            self.audit(
                run,
                "escalated",
                reason::BUDGET,
                None,
                None,
                None,
                json!({"detail": detail}),
            )
            .await;
            self.event(
                run,
                Phase::Escalated,
                reason::BUDGET,
                None,
                None,
                format!(
                    "{} keeps failing: automatic rollback stopped, a human is needed",
                    run.service_label()
                ),
                format!("{} fired again. {detail}. {hold_reason}.", run.because()),
            )
            .await;
            return Some(outcome);
        }
        if let Some(a) = &run.trigger.alert {
            if self.deps().alert_state.is_firing(a.fingerprint()) == Some(false) {
                let detail = format!("{} is no longer firing", a.name());
                return Some(self.skip(run, reason::ALERT_RESOLVED, detail, false).await);
            }
            // An alert kept through a failing query says nothing new.
            if let Some(error) = self.deps().alert_state.rule_error(a.fingerprint()) {
                let detail = format!(
                    "inconclusive: the last evaluation of the rule of {} failed ({error}); an alert kept through a failing query is not evidence; still watching",
                    a.name()
                );
                return Some(self.inconclusive(run, detail).await);
            }
        }
        None
    }

    /// The `min_requests` guard: an alert whose rule reads request counts
    /// must rest on enough requests to the judged revision.
    async fn check_requests(
        &self,
        run: &mut Run,
        service: &str,
        now: TimestampMs,
    ) -> Option<Outcome> {
        let alert = run.trigger.alert.as_ref()?;
        let revision = run.origin.clone()?;
        let window_start = run.window_start_ms?;
        if run.action.min_requests == 0 {
            return None;
        }
        let reads_requests = self
            .deps()
            .alert_state
            .evidence_metrics(alert.fingerprint())
            .is_some_and(|m| m.contains(judge::REQUEST_COUNT_SERIES));
        if !reads_requests {
            return None;
        }
        let seen = self
            .deps()
            .requests
            .requests(short_name(service), &revision, window_start, now)
            .await;
        match judge::sufficiency(
            run.action.min_requests,
            reads_requests,
            seen,
            &revision,
            now - window_start,
        ) {
            judge::Sufficiency::NotApplicable => None,
            judge::Sufficiency::Enough(c) => {
                let counted = format!(
                    "{} of {} requests to {revision} failed since {}",
                    c.errors.round(),
                    c.total.round(),
                    to_datetime(window_start).format("%H:%M:%S UTC")
                );
                run.counted = Some(counted);
                None
            }
            judge::Sufficiency::Inconclusive(detail) => Some(self.inconclusive(run, detail).await),
        }
    }

    /// The revision a traffic rollback would go to now (for the veto notice).
    async fn planned_target(&self, run: &Run, service: &str) -> Option<String> {
        let cfg = run.action.effects().into_iter().find_map(|e| match e {
            Effect::CloudRunTraffic(c) => Some(c),
            _ => None,
        })?;
        if let Some(p) = run.trigger.to_revision.clone().or(cfg.revision) {
            return Some(short_name(&p).to_string());
        }
        let api = &self.deps().cloud_run;
        let svc = api.get_service(service).await.ok()?;
        let revisions = api.list_revisions(service).await.ok()?;
        let current = svc.serving_revision()?;
        let history = self.deps().serving_history.serving_history(service).await;
        let mut excl = self.excluded_revisions(service, &svc, run).await;
        excl.insert(current.clone());
        excl.extend(run.implicated.iter().cloned());
        let reference = run.origin.clone().unwrap_or(current);
        match plan::previous_ready(&reference, &history, &revisions, &excl) {
            Candidate::Found(r) => Some(r),
            _ => None,
        }
    }

    /// Announces the action and waits `veto`: a hold during the wait cancels
    /// it (audited); at its end the alert must still fire, the same revision
    /// serve, and the evidence still be enough.
    async fn veto_window(&self, run: &mut Run) -> Option<Outcome> {
        let veto = run.action.veto;
        let from = run.origin.clone();
        let to = match run.service.clone() {
            Some(s) => self.planned_target(run, &s).await,
            None => None,
        };
        let what = match (&from, &to) {
            (Some(f), Some(t)) => format!("rolling back {} from {f} to {t}", run.service_label()),
            _ => format!("running {} on {}", run.target, run.service_label()),
        };
        let hold_cmd = format!(
            "rearguard hold {} --reason \"...\"  (or POST /api/v1/holds {{\"target\": \"{}\", \"reason\": \"...\"}})",
            run.target, run.target
        );
        let mut ev = self.alert_evidence(run).await;
        ev["veto"] = json!(veto.to_string());
        ev["judged"] = json!(run.judged);
        self.audit(
            run,
            "veto_window",
            &format!("{what} in {veto} unless held"),
            None,
            from.as_deref(),
            to.as_deref(),
            ev,
        )
        .await;
        self.event(
            run,
            Phase::Vetoable,
            "veto_window",
            from.as_deref(),
            to.as_deref(),
            format!("{what} in {veto} unless held"),
            format!(
                "{} fired. {}To stop it: {hold_cmd}.",
                run.because(),
                run.evidence_text()
            ),
        )
        .await;
        let deadline = self.now() + veto.as_millis();
        loop {
            match self.hold_for(&run.target).await {
                Ok(Some(h)) => {
                    let detail = format!(
                        "{what} cancelled during the veto window: {} is on hold ({}, set by {})",
                        run.target, h.reason, h.set_by
                    );
                    return Some(self.skip(run, reason::VETOED, detail, true).await);
                }
                Ok(None) => {}
                Err(e) => {
                    let detail = format!("cannot read holds from the store: {e}");
                    return Some(self.skip(run, reason::HOLD, detail, true).await);
                }
            }
            let now = self.now();
            if now >= deadline {
                break;
            }
            let wait = (deadline - now).min(5_000) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        if let Some(a) = &run.trigger.alert {
            if self.deps().alert_state.is_firing(a.fingerprint()) == Some(false) {
                let detail = format!(
                    "{} stopped firing during the veto window: not {what}",
                    a.name()
                );
                return Some(self.skip(run, reason::ALERT_RESOLVED, detail, true).await);
            }
        }
        if let Some(service) = run.service.clone() {
            let serving = match self.deps().cloud_run.get_service(&service).await {
                Ok(s) => s.serving_revision(),
                Err(e) => {
                    let detail = format!("cannot read {service}: {e}");
                    return Some(
                        self.skip(run, reason::CLOUD_RUN_UNAVAILABLE, detail, true)
                            .await,
                    );
                }
            };
            if serving != run.origin {
                let detail = format!(
                    "{} serves {} now, not {}: what the alert judged changed during the veto window",
                    short_name(&service),
                    serving.as_deref().unwrap_or("nothing"),
                    run.origin.as_deref().unwrap_or("?")
                );
                return Some(self.skip(run, reason::SERVING_CHANGED, detail, true).await);
            }
            let now = self.now();
            if let Some(outcome) = self.check_requests(run, &service, now).await {
                return Some(outcome);
            }
        }
        None
    }

    /// Too little evidence: tell once (audited), then re-check every
    /// [`RECHECK_INCONCLUSIVE`] while the alert fires, quietly.
    async fn inconclusive(&self, run: &Run, detail: String) -> Outcome {
        let Some(alert) = run.trigger.alert.clone() else {
            return self.skip(run, reason::INCONCLUSIVE, detail, true).await;
        };
        let key = (run.target.clone(), alert.fingerprint());
        let first = self
            .inner
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        let outcome = if first {
            self.skip(run, reason::INCONCLUSIVE, detail, true).await
        } else {
            self.inner
                .metrics
                .skipped
                .with_label_values(&[&run.target, reason::INCONCLUSIVE])
                .inc();
            Outcome::Skipped {
                reason: reason::INCONCLUSIVE.into(),
                detail,
            }
        };
        let scheduled = self
            .inner
            .rechecks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if scheduled {
            let this = self.clone();
            let trigger = run.trigger.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RECHECK_INCONCLUSIVE).await;
                this.inner
                    .rechecks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                if this.deps().alert_state.is_firing(key.1) == Some(true) {
                    this.spawn(key.0, trigger);
                } else {
                    this.inner
                        .watching
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                }
            });
        }
        outcome
    }

    /// Another actor's recent rollback, then whose evidence the alert is
    /// ([`judge::judge`]: the revision it names, its evidence window, the bake window).
    async fn check_deploy(
        &self,
        run: &mut Run,
        service: &str,
        svc: &ServiceState,
        now: TimestampMs,
    ) -> Option<Outcome> {
        let origin = run.origin.clone()?;
        // Done by another rearguard, in effect or still being applied.
        let to = svc.annotations.get(ANNOTATION_TO);
        if to == Some(&origin) || to.is_some_and(|t| svc.requests_fully(t)) {
            let at: Option<i64> = svc
                .annotations
                .get(ANNOTATION_AT)
                .and_then(|v| v.parse().ok());
            if at.is_some_and(|at| at >= now - run.action.cooldown.as_millis()) {
                let detail = format!(
                    "{} was already rolled back to {origin} by another actor (from {})",
                    short_name(service),
                    svc.annotations
                        .get(ANNOTATION_FROM)
                        .map(String::as_str)
                        .unwrap_or("?")
                );
                return Some(self.skip(run, reason::OTHER_ACTOR, detail, false).await);
            }
        }
        let alert = run.trigger.alert.clone()?;
        let history = self.deps().serving_history.serving_history(service).await;
        let revisions = match self.deps().cloud_run.list_revisions(service).await {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("cannot list revisions of {service}: {e}");
                return Some(
                    self.skip(run, reason::CLOUD_RUN_UNAVAILABLE, detail, true)
                        .await,
                );
            }
        };
        // Without the Cloud Run source's traffic history, each Ready revision
        // is taken to have served from its creation until the next one.
        let history = if history.is_empty() {
            judge::history_from_revisions(&revisions)
        } else {
            history
        };
        // Rules unknown (no rule manager, or the alert is gone): the
        // evidence reaches back to when the alert became active.
        let lookback = self
            .deps()
            .alert_state
            .lookback_ms(alert.fingerprint())
            .unwrap_or(0);
        let facts = judge::EvidenceFacts {
            alert_revision: alert.labels.get(judge::REVISION_LABEL),
            alertname: alert.name(),
            active_at_ms: alert.active_at_ms,
            lookback_ms: lookback,
            now_ms: now,
            serving: &origin,
            serving_since_ms: plan::serving_since(&origin, &history, &revisions),
            history: &history,
            bake_window_ms: run.action.bake_window.as_millis(),
        };
        match judge::judge(&facts) {
            Judgement::Judged {
                served_since_ms,
                window_start_ms,
                implicated,
                ..
            } => {
                let fmt = |ms: i64| to_datetime(ms).format("%Y-%m-%d %H:%M:%S UTC").to_string();
                let served = served_since_ms
                    .map(|s| {
                        format!(
                            "{origin} has served since {} ({})",
                            fmt(s),
                            format_duration(Duration::from_millis((now - s).max(0) as u64))
                        )
                    })
                    .unwrap_or_else(|| format!("{origin} serves"));
                let about = match facts.alert_revision {
                    Some(r) => format!("{} is about revision {r}", alert.name()),
                    None => format!(
                        "{} covers {} until now (active at {} minus a lookback of {}), all served by {origin}",
                        alert.name(),
                        fmt(window_start_ms),
                        fmt(alert.active_at_ms),
                        format_duration(Duration::from_millis(lookback.max(0) as u64))
                    ),
                };
                run.judged = Some(format!("{served}; {about}"));
                run.implicated = implicated;
                run.window_start_ms = Some(window_start_ms);
                None
            }
            Judgement::NotJudged { why, detail } => {
                let reason = match why {
                    NotJudged::OtherRevision => reason::OTHER_REVISION,
                    NotJudged::StartedInsideWindow => reason::STARTED_INSIDE_WINDOW,
                    NotJudged::UnknownStart | NotJudged::OutsideBakeWindow => {
                        reason::NOT_DEPLOY_REGRESSION
                    }
                };
                Some(self.skip(run, reason, detail, true).await)
            }
        }
    }

    async fn run_ladder(&self, run: &mut Run) -> Outcome {
        self.run_ladder_from(run, 0, None).await
    }

    /// The ladder from step `start`; `resumed` is that step's result when a
    /// restart already finished it (reconciliation), so it is not run again.
    async fn run_ladder_from(
        &self,
        run: &mut Run,
        start: usize,
        mut resumed: Option<Step>,
    ) -> Outcome {
        let effects = run.action.effects();
        let total = effects.len();
        let mut first_skip: Option<(&'static str, String, bool)> = None;
        let mut plan_lines = Vec::new();
        let mut last_failure: Option<String> = None;
        for (i, effect) in effects.iter().enumerate().skip(start) {
            let step = match resumed.take() {
                Some(step) => step,
                None => match effect {
                    Effect::CloudRunTraffic(c) => self.step_traffic(run, i, c).await,
                    Effect::CloudRunEnv(c) => self.step_env(run, i, c).await,
                    Effect::Command(argv) => self.step_command(run, i, argv).await,
                },
            };
            let label = if total > 1 {
                format!("step {}/{total} ({})", i + 1, effect.kind())
            } else {
                effect.kind().to_string()
            };
            match step {
                Step::AlreadyAtTarget(detail) => {
                    self.audit(
                        run,
                        "skipped",
                        reason::ALREADY_AT_TARGET,
                        None,
                        None,
                        None,
                        json!({"step": i, "detail": detail}),
                    )
                    .await;
                    first_skip.get_or_insert((reason::ALREADY_AT_TARGET, detail, false));
                }
                Step::Skip {
                    reason,
                    detail,
                    notify,
                } => {
                    if total == 1
                        || (i + 1 == total && first_skip.is_none() && last_failure.is_none())
                    {
                        return self.skip(run, reason, detail, notify).await;
                    }
                    self.audit(
                        run,
                        "skipped",
                        reason,
                        None,
                        None,
                        None,
                        json!({"step": i, "detail": detail}),
                    )
                    .await;
                    first_skip.get_or_insert((reason, detail, notify));
                }
                Step::DryRun(line) => plan_lines.push(format!("{label}: {line}")),
                Step::Superseded(detail) => {
                    self.event(
                        run,
                        Phase::Superseded,
                        reason::OTHER_ACTOR,
                        None,
                        None,
                        format!(
                            "{} was already rolled back by another actor",
                            run.service_label()
                        ),
                        detail.clone(),
                    )
                    .await;
                    return Outcome::Superseded { detail };
                }
                Step::Failed(detail) => {
                    self.event(
                        run,
                        Phase::Failed,
                        "action_failed",
                        None,
                        None,
                        format!("{label} on {} failed", run.service_label()),
                        format!("{} fired; {detail}", run.because()),
                    )
                    .await;
                    last_failure = Some(format!("{label}: {detail}"));
                }
                Step::Done {
                    intent_id,
                    from,
                    to,
                } => match self.verify_intent(run, intent_id).await {
                    Ok(attempts) => {
                        let detail = format!("verified after {attempts} check(s)");
                        self.audit(
                            run,
                            "verified",
                            &detail,
                            Some(intent_id),
                            from.as_deref(),
                            to.as_deref(),
                            json!({"step": i}),
                        )
                        .await;
                        let summary = match (&from, &to) {
                            (Some(f), Some(t)) => {
                                format!(
                                    "rolled back {} from {f} to {t} and verified",
                                    run.service_label()
                                )
                            }
                            _ => format!("{label} on {} done and verified", run.service_label()),
                        };
                        self.event(
                            run,
                            Phase::Verified,
                            "verified",
                            from.as_deref(),
                            to.as_deref(),
                            summary,
                            format!("{} fired; {detail}", run.because()),
                        )
                        .await;
                        return Outcome::Verified {
                            step: i + 1,
                            from_revision: from,
                            to_revision: to,
                        };
                    }
                    Err(detail) => {
                        self.audit(
                            run,
                            "not_verified",
                            &detail,
                            Some(intent_id),
                            from.as_deref(),
                            to.as_deref(),
                            json!({"step": i}),
                        )
                        .await;
                        last_failure = Some(format!("{label}: not verified: {detail}"));
                        if i + 1 < total {
                            tracing::warn!(target_name = %run.target, %detail, "step not verified; trying the next step");
                        }
                    }
                },
            }
        }
        if run.dry_run && !plan_lines.is_empty() {
            let text = plan_lines.join("; ");
            self.audit(
                run,
                "dry_run",
                &text,
                None,
                None,
                None,
                self.alert_evidence(run).await,
            )
            .await;
            self.event(
                run,
                Phase::DryRun,
                "dry_run",
                None,
                None,
                format!("dry run: would act on {}: {text}", run.service_label()),
                format!("{} fired; dry run, nothing changed", run.because()),
            )
            .await;
            return Outcome::DryRun { plan: plan_lines };
        }
        if let Some(failure) = last_failure {
            // Acted (or tried) and it did not help: stop acting here.
            let hold_reason =
                format!("rollback did not fix it ({failure}); no further automatic action");
            self.hold_by_rearguard(&run.target, &hold_reason).await;
            self.inner
                .metrics
                .skipped
                .with_label_values(&[&run.target, reason::VERIFICATION_FAILED])
                .inc();
            self.audit(
                run,
                "failed",
                reason::VERIFICATION_FAILED,
                None,
                None,
                None,
                json!({"detail": failure}),
            )
            .await;
            self.event(
                run,
                Phase::Failed,
                reason::VERIFICATION_FAILED,
                None,
                None,
                format!("rollback did not fix {}", run.service_label()),
                format!(
                    "{} fired; {failure}. {} is now on hold.",
                    run.because(),
                    run.target
                ),
            )
            .await;
            let acted = failure.contains("not verified");
            return if acted {
                Outcome::NotVerified { detail: failure }
            } else {
                Outcome::Failed { detail: failure }
            };
        }
        match first_skip {
            Some((reason, detail, notify)) => self.skip(run, reason, detail, notify).await,
            None => {
                self.skip(
                    run,
                    reason::ALREADY_AT_TARGET,
                    "nothing to do".into(),
                    false,
                )
                .await
            }
        }
    }

    // ---------------------------------------------------------------- steps

    fn new_intent(&self, run: &Run, step: usize, kind: &str, detail: serde_json::Value) -> Intent {
        let now = self.now();
        Intent {
            id: 0,
            run_id: run.run_id.clone(),
            target: run.target.clone(),
            kind: kind.to_string(),
            service: run.service.clone(),
            step: step as u32,
            fingerprint: run.trigger.fingerprint(),
            alertname: run.trigger.alertname(),
            from_revision: None,
            to_revision: None,
            etag: None,
            detail,
            state: IntentState::Pending,
            operation: None,
            note: None,
            manual: run.trigger.manual,
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    /// Marks the intent failed with `detail`; the step failed for the same reason.
    async fn fail_intent(&self, id: i64, detail: String) -> Step {
        self.set_intent(id, IntentState::Failed, None, Some(detail.clone()))
            .await;
        Step::Failed(detail)
    }

    async fn set_intent(
        &self,
        id: i64,
        state: IntentState,
        operation: Option<String>,
        note: Option<String>,
    ) {
        if let Err(e) = self
            .deps()
            .store
            .update_intent(id, state, operation, note, self.now())
            .await
        {
            tracing::error!(error = %e, intent = id, "cannot update the intent");
        }
    }

    async fn excluded_revisions(
        &self,
        service: &str,
        svc: &ServiceState,
        run: &Run,
    ) -> BTreeSet<String> {
        let mut excluded: BTreeSet<String> = self
            .deps()
            .store
            .quarantine(Some(service.to_string()))
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|q| q.revision)
            .collect();
        if let Some(from) = svc.annotations.get(ANNOTATION_FROM) {
            excluded.insert(from.clone());
        }
        excluded.extend(run.left_behind.iter().cloned());
        excluded
    }

    async fn step_traffic(&self, run: &mut Run, step: usize, cfg: &CloudRunTrafficConfig) -> Step {
        let service = cfg.service.clone();
        let api = &self.deps().cloud_run;
        let svc = match api.get_service(&service).await {
            Ok(s) => s,
            Err(e) => return Step::Failed(format!("cannot read {service}: {e}")),
        };
        let revisions = match api.list_revisions(&service).await {
            Ok(r) => r,
            Err(e) => return Step::Failed(format!("cannot list revisions of {service}: {e}")),
        };
        let Some(current) = svc.serving_revision() else {
            return Step::Skip {
                reason: reason::NO_EARLIER_READY_REVISION,
                detail: format!("{} serves no revision", short_name(&service)),
                notify: true,
            };
        };
        let excluded = self.excluded_revisions(&service, &svc, run).await;
        let pinned = run
            .trigger
            .to_revision
            .clone()
            .or_else(|| cfg.revision.clone());
        let why_to = match &pinned {
            Some(_) if run.trigger.to_revision.is_some() => "the revision asked for",
            Some(_) => "the revision the action pins",
            None => "the newest Ready revision that served before it, neither quarantined nor one the evidence may be about",
        };
        let to = match pinned {
            Some(p) => {
                let p = short_name(&p).to_string();
                if run.implicated.contains(&p) {
                    return Step::Skip {
                        reason: reason::NO_EARLIER_READY_REVISION,
                        detail: format!("{p} served inside the evidence window of the alert: not rolling back onto a revision the evidence may be about"),
                        notify: true,
                    };
                }
                if excluded.contains(&p) {
                    return Step::Skip {
                        reason: reason::QUARANTINED,
                        detail: format!("{p} is quarantined (it was rolled back from); lift it with DELETE /api/v1/quarantine/{}/{p} if it is good", short_name(&service)),
                        notify: true,
                    };
                }
                match revisions.iter().find(|r| r.name == p) {
                    Some(r) if r.ready => p,
                    Some(_) => {
                        return Step::Skip {
                            reason: reason::NO_EARLIER_READY_REVISION,
                            detail: format!("{p} is not Ready"),
                            notify: true,
                        }
                    }
                    None => {
                        return Step::Skip {
                            reason: reason::NO_EARLIER_READY_REVISION,
                            detail: format!("{p} is not a revision of {}", short_name(&service)),
                            notify: true,
                        }
                    }
                }
            }
            None => {
                let reference = run.origin.clone().unwrap_or_else(|| current.clone());
                let history = self.deps().serving_history.serving_history(&service).await;
                let mut excl = excluded.clone();
                excl.insert(current.clone());
                excl.extend(run.implicated.iter().cloned());
                match plan::previous_ready(&reference, &history, &revisions, &excl) {
                    Candidate::Found(r) => r,
                    Candidate::OnlyQuarantined(q) if q.iter().any(|r| run.implicated.contains(r)) => {
                        return Step::Skip {
                            reason: reason::NO_EARLIER_READY_REVISION,
                            detail: format!(
                                "every earlier Ready revision of {} is quarantined or served inside the evidence window of the alert ({}): not rolling back onto a revision the evidence may be about",
                                short_name(&service),
                                q.join(", ")
                            ),
                            notify: true,
                        }
                    }
                    Candidate::OnlyQuarantined(q) => {
                        return Step::Skip {
                            reason: reason::QUARANTINED,
                            detail: format!(
                                "every earlier Ready revision of {} is quarantined ({}): not rolling back to a revision that was rolled back from",
                                short_name(&service),
                                q.join(", ")
                            ),
                            notify: true,
                        }
                    }
                    Candidate::None => {
                        return Step::Skip {
                            reason: reason::NO_EARLIER_READY_REVISION,
                            detail: format!("{} has no Ready revision that served before {reference}", short_name(&service)),
                            notify: true,
                        }
                    }
                }
            }
        };
        if svc.serves_fully(&to) || svc.requests_fully(&to) {
            return Step::AlreadyAtTarget(format!("{} already serves {to}", short_name(&service)));
        }
        if run.dry_run {
            return Step::DryRun(format!(
                "would send 100% of {} traffic from {current} to {to}",
                short_name(&service)
            ));
        }
        let mut intent = self.new_intent(
            run,
            step,
            "cloud_run_traffic",
            json!({ "alert": run.trigger.alert.as_ref().map(alert_json), "origin": run.origin, "planned": PlannedBase::of(&svc) }),
        );
        intent.from_revision = Some(current.clone());
        intent.to_revision = Some(to.clone());
        intent.etag = Some(svc.etag.clone());
        let id = match self.write_intent(&intent).await {
            Ok(id) => id,
            Err(failed) => return failed,
        };
        intent.id = id;
        let mut ev = self.alert_evidence(run).await;
        ev["before"] = traffic_json(&svc);
        self.audit(
            run,
            "started",
            "rolling back",
            Some(id),
            Some(&current),
            Some(&to),
            ev,
        )
        .await;
        self.event(
            run,
            Phase::Started,
            "rolling_back",
            Some(&current),
            Some(&to),
            format!(
                "rolling back {} from {current} to {to} because {}",
                short_name(&service),
                run.because()
            ),
            format!(
                "{}Sending 100% of traffic to {to} ({why_to}); then verifying.",
                run.evidence_text()
            ),
        )
        .await;
        let result = self
            .execute_traffic(&intent, run.action.operation_timeout.0)
            .await;
        if let Step::Done { .. } = result {
            run.left_behind.insert(current.clone());
            if let Some(o) = &run.origin {
                run.left_behind.insert(o.clone());
            }
            self.quarantine_after(&service, &run.left_behind, &to).await;
            let after = api
                .get_service(&service)
                .await
                .ok()
                .map(|s| traffic_json(&s));
            self.audit(
                run,
                "done",
                "traffic moved",
                Some(id),
                Some(&current),
                Some(&to),
                json!({"after": after}),
            )
            .await;
        } else {
            self.audit_step_result(run, &result, id, Some(&current), Some(&to))
                .await;
        }
        result
    }

    async fn audit_step_result(
        &self,
        run: &Run,
        result: &Step,
        id: i64,
        from: Option<&str>,
        to: Option<&str>,
    ) {
        match result {
            Step::Superseded(d) => {
                self.audit(run, "superseded", d, Some(id), from, to, json!({}))
                    .await;
            }
            Step::Failed(d) => {
                self.audit(run, "failed", d, Some(id), from, to, json!({}))
                    .await;
            }
            _ => {}
        }
    }

    async fn quarantine_after(&self, service: &str, left: &BTreeSet<String>, to: &str) {
        for rev in left.iter().filter(|r| r.as_str() != to) {
            let q = Quarantined {
                service: service.to_string(),
                revision: rev.clone(),
                reason: format!("rolled back from {rev} to {to}"),
                at_ms: self.now(),
            };
            if let Err(e) = self.deps().store.quarantine_revision(q).await {
                tracing::error!(error = %e, "cannot quarantine a revision");
            }
        }
    }

    /// The annotations a change writes; `rolled-back-by` (the intent) tells
    /// our change from another rearguard's made in the same millisecond.
    fn rollback_annotations(&self, intent: &Intent, to: &str) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let from = intent.from_revision.as_deref().unwrap_or("");
        a.insert(ANNOTATION_FROM.to_string(), from.to_string());
        a.insert(ANNOTATION_TO.to_string(), to.to_string());
        a.insert(ANNOTATION_AT.to_string(), self.now().to_string());
        let nonce: u32 = rand::random();
        a.insert(
            ANNOTATION_BY.to_string(),
            format!("{}/{}/{nonce:08x}", intent.run_id, intent.id),
        );
        a
    }

    /// Sends the traffic change of a written intent and waits for it; also
    /// the retry path of reconciliation.
    async fn execute_traffic(&self, intent: &Intent, timeout: Duration) -> Step {
        let (Some(service), Some(to)) = (intent.service.clone(), intent.to_revision.clone()) else {
            self.set_intent(
                intent.id,
                IntentState::Failed,
                None,
                Some("intent without service or revision".into()),
            )
            .await;
            return Step::Failed("intent without service or revision".into());
        };
        let planned = planned_base(intent);
        // Tags of other revisions stay (as `gcloud run services update-traffic`).
        let traffic = match &planned {
            Some(p) => route_all(&p.traffic, Route::Revision(&to)),
            None => vec![TrafficTarget::pinned(&to, 100)],
        };
        let patch = ServicePatch {
            etag: intent.etag.clone().unwrap_or_default(),
            expect: planned,
            traffic: Some(traffic.clone()),
            env: None,
            annotations: self.rollback_annotations(intent, &to),
        };
        let op = match self
            .send_patch(intent, &service, patch, |s| s.requests_fully(&to))
            .await
        {
            Ok(op) => op,
            Err(step) => return step,
        };
        self.set_intent(
            intent.id,
            IntentState::Applied,
            op.as_ref().map(|o| o.name.clone()),
            None,
        )
        .await;
        let deadline = self.now() + timeout.as_millis() as i64;
        if let Some(op) = &op {
            if let Err(e) = self.wait_operation(&op.name, op.done, deadline).await {
                self.set_intent(intent.id, IntentState::Failed, None, Some(e.clone()))
                    .await;
                return Step::Failed(e);
            }
        }
        // The result must be exactly the plan: a change made by someone else
        // meanwhile shows up as a difference and is never overwritten.
        match self
            .wait_service(&service, deadline, |s| {
                s.traffic != traffic || s.serves_fully(&to)
            })
            .await
        {
            Ok(s) if s.traffic != traffic => {
                self.changed_after_ours(intent, &service, &traffic, &s)
                    .await
            }
            Ok(_) => {
                self.set_intent(intent.id, IntentState::Verifying, None, None)
                    .await;
                Step::Done {
                    intent_id: intent.id,
                    from: intent.from_revision.clone(),
                    to: Some(to),
                }
            }
            Err(e) => {
                let detail = format!("traffic did not move to {to}: {e}");
                self.fail_intent(intent.id, detail).await
            }
        }
    }

    /// Sends `patch`, never blindly twice: after an unanswered or failed
    /// patch (timeout, reset, 5xx: the server may have acted) the service is
    /// re-read. Our change is there: Ok(None), continue as ours without an
    /// operation. Nothing changed: send again with the fresh etag. Someone
    /// else changed it: superseded. Ok(Some(op)): the change was accepted.
    async fn send_patch(
        &self,
        intent: &Intent,
        service: &str,
        mut patch: ServicePatch,
        already: impl Fn(&ServiceState) -> bool,
    ) -> Result<Option<OperationState>, Step> {
        const MAX_SENDS: u32 = 3;
        let api = &self.deps().cloud_run;
        let mut sends = 0;
        loop {
            sends += 1;
            let err = match api.patch_service(service, patch.clone()).await {
                Ok(op) => return Ok(Some(op)),
                Err(e) => e,
            };
            if !err.outcome_unknown() {
                return self
                    .patch_refused(intent, service, &patch, err, &already)
                    .await;
            }
            tracing::warn!(error = %err, service, intent = intent.id, "the answer to services.patch was lost; re-reading the service to learn whether it was applied");
            // A 429 or an overloaded front end: pause (1s, 2s, 4s) before
            // the re-read, so a re-send is not hammered at it either.
            tokio::time::sleep(Duration::from_secs(1 << (sends - 1))).await;
            let now = match api.get_service(service).await {
                Ok(s) => s,
                Err(e) => {
                    let detail = format!(
                        "the answer to the change of {} was lost ({err}) and the service cannot be read to learn whether it was made ({e})",
                        short_name(service)
                    );
                    return Err(self.fail_intent(intent.id, detail).await);
                }
            };
            match after_lost_patch(&patch, &now) {
                LostPatch::Applied => {
                    tracing::info!(
                        service,
                        intent = intent.id,
                        "the lost patch was applied: continuing as ours"
                    );
                    return Ok(None);
                }
                LostPatch::NotApplied { etag } if sends < MAX_SENDS => patch.etag = etag,
                LostPatch::NotApplied { .. } => {
                    let detail = format!(
                        "{} did not take the change after {sends} attempts: {err}",
                        short_name(service)
                    );
                    return Err(self.fail_intent(intent.id, detail).await);
                }
                LostPatch::ChangedByOther(why) => {
                    let detail = format!(
                        "{} was changed by someone else while rearguard's change was unanswered ({why}); not retrying",
                        short_name(service)
                    );
                    self.set_intent(
                        intent.id,
                        IntentState::Superseded,
                        None,
                        Some(detail.clone()),
                    )
                    .await;
                    return Err(Step::Superseded(detail));
                }
            }
        }
    }

    /// A patch was refused. A stale etag or a service that is no longer as
    /// planned means someone changed it since we read it: if the change is
    /// ours in effect, another actor did it.
    async fn patch_refused(
        &self,
        intent: &Intent,
        service: &str,
        patch: &ServicePatch,
        err: CloudRunError,
        already: impl Fn(&ServiceState) -> bool,
    ) -> Result<Option<OperationState>, Step> {
        if let CloudRunError::StaleEtag(_) | CloudRunError::Changed(_) = err {
            if let Ok(now_svc) = self.deps().cloud_run.get_service(service).await {
                if patch.is_applied_in(&now_svc) {
                    // Our own change, re-sent by a layer below: it is ours.
                    return Ok(None);
                }
                if already(&now_svc) {
                    let by = now_svc
                        .annotations
                        .get(ANNOTATION_AT)
                        .map(|_| "another rearguard")
                        .unwrap_or("another actor");
                    let detail = format!(
                        "already rolled back by {by}: {} was changed since it was read",
                        short_name(service)
                    );
                    self.set_intent(
                        intent.id,
                        IntentState::Superseded,
                        None,
                        Some(detail.clone()),
                    )
                    .await;
                    return Err(Step::Superseded(detail));
                }
            }
            let detail = format!(
                "{} changed while rearguard planned ({err}); not retrying",
                short_name(service)
            );
            return Err(self.fail_intent(intent.id, detail).await);
        }
        let mut detail = format!("{} refused the change: {err}", short_name(service));
        if let CloudRunError::Api { code: 403, .. } = &err {
            let runtime = self
                .deps()
                .cloud_run
                .get_service(service)
                .await
                .ok()
                .and_then(|s| s.runtime_service_account);
            detail = format!("{detail}. {}", missing_role(&err, runtime.as_deref()));
        }
        Err(self.fail_intent(intent.id, detail).await)
    }

    /// Our change was applied, then the service changed again before it was
    /// in effect: someone else's newer decision, left as it is.
    async fn changed_after_ours(
        &self,
        intent: &Intent,
        service: &str,
        ours: &[TrafficTarget],
        now: &ServiceState,
    ) -> Step {
        let detail = format!(
            "{} was changed by someone else after rearguard's change: traffic is {}, rearguard set {}; not overwriting it",
            short_name(service),
            describe_traffic(&now.traffic),
            describe_traffic(ours)
        );
        self.set_intent(
            intent.id,
            IntentState::Superseded,
            None,
            Some(detail.clone()),
        )
        .await;
        Step::Superseded(detail)
    }

    /// Polls an operation with backoff (1s doubling to 10s) until done or the deadline.
    async fn wait_operation(
        &self,
        name: &str,
        done: bool,
        deadline: TimestampMs,
    ) -> Result<(), String> {
        if done {
            return Ok(());
        }
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            match self.deps().cloud_run.get_operation(name).await {
                Ok(op) if op.done => {
                    return match op.error {
                        Some(e) => Err(format!("operation {name} failed: {e}")),
                        None => Ok(()),
                    }
                }
                Ok(_) => {}
                Err(CloudRunError::NotFound(_)) => {
                    return Err(format!("operation {name} not found"))
                }
                Err(e) => {
                    tracing::warn!(error = %e, operation = name, "polling the operation failed; retrying")
                }
            }
            if self.now() >= deadline {
                return Err(format!("operation {name} not done in time"));
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    /// Polls the service with backoff until `ok` holds or the deadline.
    async fn wait_service(
        &self,
        service: &str,
        deadline: TimestampMs,
        ok: impl Fn(&ServiceState) -> bool,
    ) -> Result<ServiceState, String> {
        let mut wait = Duration::from_millis(500);
        loop {
            match self.deps().cloud_run.get_service(service).await {
                Ok(s) if ok(&s) => return Ok(s),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, service, "reading the service failed; retrying")
                }
            }
            if self.now() >= deadline {
                return Err("not in effect in time".into());
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    async fn step_env(&self, run: &mut Run, step: usize, cfg: &CloudRunEnvConfig) -> Step {
        let service = cfg.service.clone();
        let svc = match self.deps().cloud_run.get_service(&service).await {
            Ok(s) => s,
            Err(e) => return Step::Failed(format!("cannot read {service}: {e}")),
        };
        let vars = cfg
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        if svc.has_env(&cfg.env) {
            return Step::AlreadyAtTarget(format!("{} already has {vars}", short_name(&service)));
        }
        let current = svc.serving_revision();
        if run.dry_run {
            return Step::DryRun(format!(
                "would set {vars} on {} (a new revision)",
                short_name(&service)
            ));
        }
        let mut intent = self.new_intent(
            run,
            step,
            "cloud_run_env",
            json!({ "alert": run.trigger.alert.as_ref().map(alert_json), "env": cfg.env, "origin": run.origin, "planned": PlannedBase::of(&svc) }),
        );
        intent.from_revision = current.clone();
        intent.etag = Some(svc.etag.clone());
        let id = match self.write_intent(&intent).await {
            Ok(id) => id,
            Err(failed) => return failed,
        };
        intent.id = id;
        let mut ev = self.alert_evidence(run).await;
        ev["before"] = traffic_json(&svc);
        ev["env"] = json!(cfg.env);
        self.audit(
            run,
            "started",
            &format!("setting {vars}"),
            Some(id),
            current.as_deref(),
            None,
            ev,
        )
        .await;
        self.event(
            run,
            Phase::Started,
            "setting_env",
            current.as_deref(),
            None,
            format!(
                "setting {vars} on {} because {}",
                short_name(&service),
                run.because()
            ),
            "A new revision with the variables is deployed; then verifying.".into(),
        )
        .await;
        let result = self
            .execute_env(&intent, &cfg.env, run.action.operation_timeout.0)
            .await;
        if let Step::Done { to, .. } = &result {
            if let Some(c) = &current {
                run.left_behind.insert(c.clone());
            }
            let after = self
                .deps()
                .cloud_run
                .get_service(&service)
                .await
                .ok()
                .map(|s| traffic_json(&s));
            self.audit(
                run,
                "done",
                "env set",
                Some(id),
                current.as_deref(),
                to.as_deref(),
                json!({"after": after}),
            )
            .await;
        } else {
            self.audit_step_result(run, &result, id, current.as_deref(), None)
                .await;
        }
        result
    }

    async fn execute_env(
        &self,
        intent: &Intent,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Step {
        let Some(service) = intent.service.clone() else {
            return Step::Failed("intent without service".into());
        };
        let planned = planned_base(intent);
        let traffic = match &planned {
            Some(p) => route_all(&p.traffic, Route::Latest),
            None => vec![TrafficTarget::latest(100)],
        };
        let patch = ServicePatch {
            etag: intent.etag.clone().unwrap_or_default(),
            expect: planned,
            traffic: Some(traffic.clone()),
            env: Some(env.clone()),
            annotations: self.rollback_annotations(intent, ENV_REVERT_TO),
        };
        let op = match self
            .send_patch(intent, &service, patch, |s| s.has_env(env))
            .await
        {
            Ok(op) => op,
            Err(step) => return step,
        };
        self.set_intent(
            intent.id,
            IntentState::Applied,
            op.as_ref().map(|o| o.name.clone()),
            None,
        )
        .await;
        let deadline = self.now() + timeout.as_millis() as i64;
        if let Some(op) = &op {
            if let Err(e) = self.wait_operation(&op.name, op.done, deadline).await {
                self.set_intent(intent.id, IntentState::Failed, None, Some(e.clone()))
                    .await;
                return Step::Failed(e);
            }
        }
        self.finish_env(intent, &service, env, Some(&traffic), deadline)
            .await
    }

    /// Waits until the new revision is Ready and serves everything.
    async fn finish_env(
        &self,
        intent: &Intent,
        service: &str,
        env: &BTreeMap<String, String>,
        ours: Option<&[TrafficTarget]>,
        deadline: TimestampMs,
    ) -> Step {
        let changed = |s: &ServiceState| ours.is_some_and(|t| s.traffic != t);
        let ready = |s: &ServiceState| {
            changed(s)
                || s.has_env(env)
                    && s.latest_created_revision.is_some()
                    && s.latest_created_revision == s.latest_ready_revision
                    && s.latest_ready_revision
                        .as_deref()
                        .is_some_and(|r| s.serves_fully(r))
        };
        match self.wait_service(service, deadline, ready).await {
            Ok(s) if changed(&s) => {
                self.changed_after_ours(intent, service, ours.unwrap_or_default(), &s)
                    .await
            }
            Ok(s) => {
                self.set_intent(intent.id, IntentState::Verifying, None, None)
                    .await;
                Step::Done {
                    intent_id: intent.id,
                    from: intent.from_revision.clone(),
                    to: s.latest_ready_revision,
                }
            }
            Err(e) => {
                let detail = format!("the new revision did not become Ready and serving: {e}");
                self.fail_intent(intent.id, detail).await
            }
        }
    }

    async fn step_command(&self, run: &mut Run, step: usize, argv: &[String]) -> Step {
        let shown = argv.join(" ");
        if run.dry_run {
            return Step::DryRun(format!("would run {shown}"));
        }
        let intent = self.new_intent(
            run,
            step,
            "command",
            json!({ "alert": run.trigger.alert.as_ref().map(alert_json), "argv": argv }),
        );
        let id = match self.write_intent(&intent).await {
            Ok(id) => id,
            Err(failed) => return failed,
        };
        self.audit(
            run,
            "started",
            &format!("running {shown}"),
            Some(id),
            None,
            None,
            self.alert_evidence(run).await,
        )
        .await;
        self.event(
            run,
            Phase::Started,
            "running_command",
            None,
            None,
            format!("running {shown} because {}", run.because()),
            "Then verifying.".into(),
        )
        .await;
        self.set_intent(id, IntentState::Applied, None, None).await;
        let env = command::alert_env(run.trigger.alert.as_ref(), run.service.as_deref());
        let out = command::run(argv, &env, run.action.timeout.0).await;
        let evidence = json!({ "command": out });
        if out.success {
            self.set_intent(id, IntentState::Verifying, None, None)
                .await;
            self.audit(
                run,
                "done",
                "command exited 0",
                Some(id),
                None,
                None,
                evidence,
            )
            .await;
            Step::Done {
                intent_id: id,
                from: None,
                to: None,
            }
        } else {
            let detail = match (&out.error, out.exit_code) {
                (Some(e), _) => format!("{shown}: {e}"),
                (None, Some(code)) => format!("{shown} exited {code}"),
                (None, None) => format!("{shown} was killed by a signal"),
            };
            self.set_intent(id, IntentState::Failed, None, Some(detail.clone()))
                .await;
            self.audit(run, "failed", &detail, Some(id), None, None, evidence)
                .await;
            Step::Failed(detail)
        }
    }

    // ---------------------------------------------------------------- verification

    /// Checks with backoff until the trigger alert stopped firing and every
    /// `verify.probes` passes; returns the number of checks made.
    /// Verifies the change of intent `id`, then marks the intent done (until
    /// then a restart resumes the run at this verification).
    async fn verify_intent(&self, run: &Run, id: i64) -> Result<usize, String> {
        let result = self.verify(run).await;
        let note = result.as_ref().err().map(|e| format!("not verified: {e}"));
        self.set_intent(id, IntentState::Done, None, note).await;
        result
    }

    async fn verify(&self, run: &Run) -> Result<usize, String> {
        let mut last = String::from("not checked");
        for (i, wait) in run.action.verify.backoff.iter().enumerate() {
            tokio::time::sleep(wait.0).await;
            match self.check_healthy(run).await {
                Ok(()) => return Ok(i + 1),
                Err(why) => last = why,
            }
        }
        let total: Duration = run.action.verify.backoff.iter().map(|d| d.0).sum();
        Err(format!("after {}: {last}", format_duration(total)))
    }

    async fn check_healthy(&self, run: &Run) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(a) = &run.trigger.alert {
            // Fresh evidence only: an alert held by the restore grace is unknown,
            // and then the probes decide (or, without probes, verification waits).
            match self.deps().alert_state.is_firing_fresh(a.fingerprint()) {
                Some(true) => problems.push(format!("{} still firing", a.name())),
                None if run.action.verify.probes.is_empty()
                    && self.deps().alert_state.is_firing(a.fingerprint()) == Some(true) =>
                {
                    problems.push(format!("{} not evaluated since the restart", a.name()))
                }
                _ => {}
            }
        }
        for p in &run.action.verify.probes {
            match self.deps().probes.check(p).await {
                Some(true) => {}
                Some(false) => problems.push(format!("probe {p} failing")),
                None => problems.push(format!("probe {p} unknown")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join(", "))
        }
    }

    // ---------------------------------------------------------------- reconciliation

    /// At start: finishes what a crash interrupted. For each unfinished
    /// intent, reads the service: already at the target → done; not, and its
    /// alert still fires → tried once more with a fresh etag; otherwise
    /// abandoned. A command is never re-run (it may or may not have run): while
    /// its alert fires it counts as a failed step. Then the run goes on as the
    /// interrupted one would have, in the background: verification, and the
    /// ladder's next steps if that step did not fix it.
    /// Call after the rule manager has restored its alert states.
    pub async fn reconcile(&self) -> Result<usize, StoreError> {
        let intents = self.deps().store.unfinished_intents().await?;
        let n = intents.len();
        for intent in intents {
            let busy = self.try_busy(&intent.target);
            self.reconcile_one(intent, busy).await;
        }
        self.refresh_held_gauge().await;
        Ok(n)
    }

    fn run_for_intent(&self, intent: &Intent) -> Option<Run> {
        let action = self.view().actions.get(&intent.target).cloned()?;
        let alert = intent.detail.get("alert").and_then(alert_from_json);
        let trigger = match alert {
            Some(a) => Trigger::alert(a),
            None => Trigger::manual(intent.to_revision.clone(), false, "reconcile"),
        };
        Some(Run {
            target: intent.target.clone(),
            service: intent.service.clone(),
            dry_run: false,
            action,
            trigger,
            run_id: intent.run_id.clone(),
            started_ms: intent.created_at_ms,
            origin: intent
                .detail
                .get("origin")
                .and_then(|o| o.as_str())
                .map(str::to_string),
            left_behind: BTreeSet::new(),
            implicated: BTreeSet::new(),
            judged: None,
            window_start_ms: None,
            counted: None,
        })
    }

    /// Whether the alert that started `run` still fires (a manual run: no).
    fn trigger_still_fires(&self, run: &Run) -> bool {
        run.trigger
            .alert
            .as_ref()
            .and_then(|a| self.deps().alert_state.is_firing(a.fingerprint()))
            == Some(true)
    }

    async fn abandon(&self, run: &Run, intent: &Intent, why: &str) {
        let why = format!("found unfinished at start; {why}");
        self.set_intent(intent.id, IntentState::Abandoned, None, Some(why.clone()))
            .await;
        self.audit(
            run,
            "reconciled",
            &why,
            Some(intent.id),
            intent.from_revision.as_deref(),
            intent.to_revision.as_deref(),
            json!({}),
        )
        .await;
    }

    async fn reconcile_one(&self, intent: Intent, busy: Option<BusyGuard>) {
        let Some(mut run) = self.run_for_intent(&intent) else {
            self.set_intent(
                intent.id,
                IntentState::Abandoned,
                None,
                Some("found unfinished at start; its action is no longer configured".into()),
            )
            .await;
            return;
        };
        let step = match intent.kind.as_str() {
            "cloud_run_traffic" | "cloud_run_env" => {
                match self.reconcile_cloud_run(&mut run, &intent).await {
                    Some(step) => step,
                    None => return,
                }
            }
            // The command ran to success; only its verification was cut short.
            _ if intent.state == IntentState::Verifying => Step::Done {
                intent_id: intent.id,
                from: None,
                to: None,
            },
            _ => {
                if !self.trigger_still_fires(&run) {
                    self.abandon(
                        &run,
                        &intent,
                        "a command is never re-run automatically (it may or may not have run), and its alert no longer fires",
                    )
                    .await;
                    return;
                }
                let why = "a restart interrupted the command; it is never re-run automatically \
                           (it may or may not have run), and its alert still fires";
                self.abandon(&run, &intent, why).await;
                Step::Failed(why.to_string())
            }
        };
        if let Step::Done { from, .. } = &step {
            run.left_behind.extend(from.clone());
        }
        // A kill between the intent and its `started` notice would lose the
        // notice: say it now unless it was recorded for this intent. (A
        // command is never resumed: its step fails, and that is said.)
        let resumed = match intent.kind.as_str() {
            "cloud_run_traffic" => Some((
                "rolling_back",
                intent.from_revision.as_deref(),
                intent.to_revision.as_deref(),
            )),
            "cloud_run_env" => Some(("setting_env", intent.from_revision.as_deref(), None)),
            _ => None,
        };
        if let Some((reason, from, to)) = resumed {
            self.event_unless_recorded_since(
                intent.created_at_ms,
                &run,
                Phase::Started,
                reason,
                from,
                to,
                format!(
                    "resuming {} after a restart because {}",
                    intent.kind,
                    run.because()
                ),
                "The action was found unfinished at start; verifying.".into(),
            )
            .await;
        }
        // Go on as the interrupted run would have: verify, then the next steps.
        let this = self.clone();
        let start = intent.step as usize;
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        let guard = RunningGuard(self.inner.clone());
        let handle = tokio::spawn(async move {
            let _guard = guard;
            // Held since `reconcile` so no new run on the target slips in between.
            let _busy = busy;
            let outcome = this.run_ladder_from(&mut run, start, Some(step)).await;
            this.record_outcome(&run, &outcome);
            this.refresh_held_gauge().await;
        });
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle.abort_handle());
    }

    /// A Cloud Run traffic or env intent: the step's result, or None when the
    /// intent was abandoned or must wait for the next start.
    async fn reconcile_cloud_run(&self, run: &mut Run, intent: &Intent) -> Option<Step> {
        let timeout = run.action.operation_timeout.0;
        let deadline = self.now() + timeout.as_millis() as i64;
        let env: BTreeMap<String, String> = intent
            .detail
            .get("env")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default();
        let is_traffic = intent.kind == "cloud_run_traffic";
        let to = intent.to_revision.clone().unwrap_or_default();
        let Some(service) = intent.service.clone() else {
            self.abandon(run, intent, "it names no service").await;
            return None;
        };
        let svc = match self.deps().cloud_run.get_service(&service).await {
            Ok(s) => s,
            Err(e) => {
                // Leave it unfinished: the next start tries again.
                tracing::error!(error = %e, intent = intent.id, "cannot read the service to reconcile an intent");
                return None;
            }
        };
        let already_done = if is_traffic {
            svc.requests_fully(&to) || svc.serves_fully(&to)
        } else {
            svc.has_env(&env)
        };
        let step = if already_done {
            let step = if is_traffic {
                match self
                    .wait_service(&service, deadline, |s| s.serves_fully(&to))
                    .await
                {
                    Ok(_) => {
                        self.set_intent(
                            intent.id,
                            IntentState::Verifying,
                            None,
                            Some("completed after a restart".into()),
                        )
                        .await;
                        Step::Done {
                            intent_id: intent.id,
                            from: intent.from_revision.clone(),
                            to: Some(to.clone()),
                        }
                    }
                    Err(e) => self.fail_intent(intent.id, e).await,
                }
            } else {
                self.finish_env(intent, &service, &env, None, deadline)
                    .await
            };
            self.audit(
                run,
                "reconciled",
                "the change was already made; completed after a restart",
                Some(intent.id),
                intent.from_revision.as_deref(),
                intent.to_revision.as_deref(),
                json!({"service": traffic_json(&svc)}),
            )
            .await;
            step
        } else if intent.state == IntentState::Verifying {
            // The change had taken effect; now it is gone: someone changed
            // the service since. Theirs is the newer decision.
            let why = "the change had been made, and the service has changed since";
            self.set_intent(intent.id, IntentState::Superseded, None, Some(why.into()))
                .await;
            self.audit(
                run,
                "reconciled",
                why,
                Some(intent.id),
                intent.from_revision.as_deref(),
                intent.to_revision.as_deref(),
                json!({"service": traffic_json(&svc)}),
            )
            .await;
            return None;
        } else {
            if !self.trigger_still_fires(run) {
                self.abandon(
                    run,
                    intent,
                    "the change was not made and its alert is not known to fire",
                )
                .await;
                return None;
            }
            if let Err(e) = self
                .deps()
                .store
                .rearm_intent(intent.id, Some(svc.etag.clone()), self.now())
                .await
            {
                tracing::error!(error = %e, "cannot re-arm the intent");
                return None;
            }
            self.audit(
                run,
                "reconciled",
                "the change was not made and the alert still fires: trying once more with a fresh etag",
                Some(intent.id),
                intent.from_revision.as_deref(),
                intent.to_revision.as_deref(),
                json!({}),
            )
            .await;
            let mut fresh = intent.clone();
            fresh.etag = Some(svc.etag.clone());
            fresh.detail["planned"] = json!(PlannedBase::of(&svc));
            if is_traffic {
                self.execute_traffic(&fresh, timeout).await
            } else {
                self.execute_env(&fresh, &env, timeout).await
            }
        };
        match &step {
            Step::Done {
                from: Some(f),
                to: Some(t),
                ..
            } if is_traffic => {
                let mut left: BTreeSet<String> = [f.clone()].into();
                left.extend(run.origin.clone());
                self.quarantine_after(&service, &left, t).await;
            }
            Step::Done { .. } => {}
            other => {
                self.audit_step_result(
                    run,
                    other,
                    intent.id,
                    intent.from_revision.as_deref(),
                    intent.to_revision.as_deref(),
                )
                .await;
            }
        }
        Some(step)
    }
}

/// The run and intent that made a change (`<run id>/<intent id>/<nonce>`;
/// the nonce parts two rearguards acting on the same alert at once).
pub const ANNOTATION_BY: &str = "rearguard.dev/rolled-back-by";

/// `rearguard.dev/rolled-back-to` of an env revert: all traffic to the
/// latest revision, the new one (its name is generated by Cloud Run).
pub const ENV_REVERT_TO: &str = "LATEST";

/// The service as the change was planned against (`None` for an intent
/// written by an older rearguard).
fn planned_base(intent: &Intent) -> Option<PlannedBase> {
    intent
        .detail
        .get("planned")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
}

impl NotificationSink for ActionRunner {
    /// Starts the actions of the notification's receiver; returns at once
    /// (the intent, written before acting, is what survives a restart).
    fn send<'a>(&'a self, notification: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.handle_notification(&notification);
            Ok(())
        })
    }
}
