//! The action runner: guard rails, intents, effects, verification, audit.

mod command_step;
mod effect;
mod env;
mod guard_rails;
mod journal;
mod patch_and_wait;
mod reconcile;
mod steps;
mod traffic;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::task::AbortHandle;

use self::command_step::Command;
use self::effect::{Applied, Effect, Planned};
use self::env::CloudRunEnv;
use self::patch_and_wait::CloudRunChange;
use self::traffic::CloudRunTraffic;
use super::cloud_run::{
    after_lost_patch, describe_traffic, missing_role, route_all, short_name, CloudRunApi,
    CloudRunError, LostPatch, OperationState, PlannedBase, Route, ServicePatch, ServiceState,
    TrafficTarget,
};
use super::command;
use super::decide::ladder::{self, Conclusion, StepFailure};
use super::deps::{
    AlertState, EvidenceSource, ProbeCheck, RequestCounts, ServingHistory, TimeIntervals,
};
use super::events::{is_own_alert, Event, EventEmitter, Phase, Receivers};
use super::journal::{Decision, IntentDetail, IntentKind, StoredAlert};
use super::judge::{self, Judgement, NotJudged};
use super::metrics::ActionMetrics;
use super::plan::{self, Candidate, ANNOTATION_AT, ANNOTATION_FROM, ANNOTATION_TO};
use crate::alert::{Alert, AlertSink, AlertStatus};
use crate::clock::{to_datetime, Clock, TimestampMs};
use crate::config::actions::{
    ActionConfig, CloudRunEnvConfig, CloudRunTrafficConfig, Effect as EffectConfig,
};
use crate::config::duration::format_duration;
use crate::config::Config;
use crate::dispatch::notification::{BoxFuture, Notification, NotificationSink};
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

/// Everything the runner needs from the daemon, all given at construction
/// (a struct literal: a forgotten dependency does not compile). What does
/// not apply is said by a type named for it (the daemon's
/// `adapters::NoCloudRun`; tests use [`Unknown`](super::deps::Unknown)).
#[derive(Clone)]
pub struct ActionDeps {
    pub clock: Clock,
    pub store: Store,
    pub cloud_run: Arc<dyn CloudRunApi>,
    /// Where action events go (the alert pipeline: routing decides who hears).
    pub events: Arc<dyn AlertSink>,
    /// Which receivers notify an event (dispatch's routing), so an event
    /// counts as notified once each of them accepted it.
    pub event_receivers: Receivers,
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
    intervals: crate::time_interval::TimeIntervals,
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
            intervals: crate::time_interval::TimeIntervals::from_config(&config.time_intervals),
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

/// The alert as the audit's evidence shows it (the shape intents keep it in).
fn alert_json(a: &Alert) -> serde_json::Value {
    serde_json::to_value(StoredAlert::from(a)).unwrap_or_default()
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
            .with_store(deps.store.clone())
            .with_receivers(deps.event_receivers.clone());
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
        self.audit_plain(&target, Decision::Hold, reason, json!({"set_by": set_by}))
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
            self.audit_plain(&target, Decision::Unhold, reason, json!({"set_by": set_by}))
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
}

/// The run and intent that made a change (`<run id>/<intent id>/<nonce>`;
/// the nonce parts two rearguards acting on the same alert at once).
pub const ANNOTATION_BY: &str = "rearguard.dev/rolled-back-by";

/// `rearguard.dev/rolled-back-to` of an env revert: all traffic to the
/// latest revision, the new one (its name is generated by Cloud Run).
pub const ENV_REVERT_TO: &str = "LATEST";

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
