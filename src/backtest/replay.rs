//! Replays a window of history: fills an in-memory tsdb as the samples would
//! have arrived, evaluates the real rule groups at their ticks (the alert
//! state machine of `rules/`), routes the alerts as dispatch does, and asks
//! the real decisions (`action::decide`: guard rails, judge, plan) with facts
//! rebuilt from the recorded deploy and traffic history. Cooldown, budget and
//! holds evolve in memory. Nothing here can change anything: there is no
//! store, no notifier, no Cloud Run client, only the tsdb this replay owns.
//!
//! The recorded history goes on as it happened: after a would-be rollback the
//! bad revision still serves in the data, so its alert keeps firing and later
//! decisions meet the cooldown, as they would have had the rollback failed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::history::{History, ServiceHistory};
use crate::action::cloud_run::{short_name, RevisionState};
use crate::action::decide::guard_rails::{self, AlertRecheck, RateLimit};
use crate::action::decide::judge::{self, EvidenceFacts, Judgement, MetricLags, NotJudged};
use crate::action::decide::plan::{self, Candidate};
use crate::action::deps::{RequestCounts, ServingPeriod};
use crate::action::reason;
use crate::adapters::{metric_lags, TsdbRequestCounts};
use crate::alert::{Alert, AlertStatus};
use crate::clock::{to_datetime, TimestampMs};
use crate::config::actions::{ActionConfig, Effect};
use crate::config::duration::format_duration;
use crate::config::Config;
use crate::dispatch::route::RouteTree;
use crate::labels::Labels;
use crate::promql::{Engine, EngineOptions};
use crate::rules::alerting::AlertState;
use crate::rules::file::{RuleFile, RuleKind};
use crate::rules::group::{Group, GroupEnv, RuleState};
use crate::rules::querier::{LocalQuerier, Querier};
use crate::store::alerts::TransitionState;
use crate::time_interval::TimeIntervals;
use crate::tsdb::Tsdb;

/// How often the live runner re-checks an inconclusive decision while its
/// alert fires (`RECHECK_INCONCLUSIVE` in `action/runner`).
const RECHECK_INCONCLUSIVE_MS: i64 = 60_000;
/// Prometheus's `--rules.alert.resend-delay`, as the rule manager uses it.
const RESEND_DELAY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub from_ms: TimestampMs,
    pub to_ms: TimestampMs,
    /// Evaluate every group at this step instead of its own interval.
    pub step: Option<Duration>,
}

/// An alert changing state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertEvent {
    pub time_ms: TimestampMs,
    pub alertname: String,
    /// The state entered, in the words of the alert history
    /// (`pending`, `firing`, `keep_firing`, `resolved`, `inactive`).
    pub state: TransitionState,
    pub labels: BTreeMap<String, String>,
    pub value: Option<f64>,
}

/// What an action would have decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A `cloud_run_traffic` step would have moved traffic back.
    WouldRollBack,
    /// A `cloud_run_env` step would have reverted environment variables.
    WouldRevertEnv,
    /// A `command` step would have run.
    WouldRunCommand,
    /// The action is `dry_run`: it would only have told.
    DryRun,
    /// A guard rail stopped it (`reason` says which).
    Skipped,
    /// Too little evidence: no action, still watching.
    Inconclusive,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::WouldRollBack => "would_roll_back",
            DecisionKind::WouldRevertEnv => "would_revert_env",
            DecisionKind::WouldRunCommand => "would_run_command",
            DecisionKind::DryRun => "dry_run",
            DecisionKind::Skipped => "skipped",
            DecisionKind::Inconclusive => "inconclusive",
        }
    }

    /// Whether rearguard would have changed something.
    pub fn acts(self) -> bool {
        matches!(
            self,
            DecisionKind::WouldRollBack
                | DecisionKind::WouldRevertEnv
                | DecisionKind::WouldRunCommand
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionDecision {
    pub time_ms: TimestampMs,
    pub action: String,
    pub alertname: String,
    pub decision: DecisionKind,
    /// One of `action::reason` for skips and inconclusive decisions; the
    /// effect otherwise (`cloud_run_traffic`, ...).
    pub reason: String,
    pub detail: String,
    pub service: Option<String>,
    pub from_revision: Option<String>,
    pub to_revision: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Event {
    Alert(AlertEvent),
    Action(ActionDecision),
}

impl Event {
    pub fn time_ms(&self) -> TimestampMs {
        match self {
            Event::Alert(a) => a.time_ms,
            Event::Action(a) => a.time_ms,
        }
    }
}

/// A rule the replay cannot judge: its series have no history in Google.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotReplayable {
    pub group: String,
    pub rule: String,
    pub reason: String,
}

/// A change of what a service serves inside the window, and what rearguard
/// would have done while it served.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeployOutcome {
    pub time_ms: TimestampMs,
    pub service: String,
    pub revision: String,
    pub method: String,
    pub actor: Option<String>,
    /// The decisions made while this revision served (indexes into the events).
    pub decisions: Vec<ActionDecision>,
}

#[derive(Clone, Debug, Default)]
pub struct ReplayResult {
    pub events: Vec<Event>,
    pub not_replayable: Vec<NotReplayable>,
    pub deploys: Vec<DeployOutcome>,
    pub evaluations: usize,
}

impl ReplayResult {
    pub fn decisions(&self) -> impl Iterator<Item = &ActionDecision> {
        self.events.iter().filter_map(|e| match e {
            Event::Action(a) => Some(a),
            Event::Alert(_) => None,
        })
    }
}

/// Names of series the Google sources of `config` write (patterns ending in
/// `*` are prefixes), i.e. the series that have a history to read.
fn replayable_series(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = config
        .cloud_monitoring
        .iter()
        .map(|m| {
            format!(
                "{}*",
                crate::source::cloud_monitoring::gmp_metric_name(&m.metric)
            )
        })
        .collect();
    if !config.cloud_logging.is_empty() {
        out.push(crate::source::cloud_logging::METRIC.to_string());
    }
    out.push(crate::rules::alerting::ALERTS_METRIC.to_string());
    out
}

fn has_history(name: &str, replayable: &[String]) -> bool {
    replayable.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

fn why_not_replayable(name: &str) -> String {
    if name.starts_with("probe_") {
        format!("reads {name}, which only a running rearguard measures (probes keep no history in Google)")
    } else if name.starts_with("rearguard_") {
        format!("reads {name}, rearguard's own metric, which has no history in Google")
    } else if name.starts_with("cloud_run_") {
        format!("reads {name}, which the cloud_run source writes while running; its history is not replayed")
    } else {
        format!(
            "reads {name}, which no cloud_monitoring or cloud_logging entry of the config reads"
        )
    }
}

/// How far before `--from` the history must be read: the longest reach of
/// any rule (ranges through recording rules, plus each source's lag), plus
/// the longest source overlap, plus the engine's 5m instant lookback.
pub fn longest_lookback(config: &Config, files: &[RuleFile]) -> i64 {
    let recording: BTreeMap<String, String> = files
        .iter()
        .flat_map(|f| f.groups.iter())
        .flat_map(|g| g.rules.iter())
        .filter_map(|r| match &r.kind {
            RuleKind::Recording { record } => Some((record.clone(), r.expr.clone())),
            RuleKind::Alerting { .. } => None,
        })
        .collect();
    let lags = metric_lags(config);
    let rules = files
        .iter()
        .flat_map(|f| f.groups.iter())
        .flat_map(|g| g.rules.iter())
        .filter_map(|r| judge::expr_lookback_ms(&r.expr, &recording, &lags).ok())
        .max()
        .unwrap_or(0);
    let overlap = config
        .cloud_monitoring
        .iter()
        .map(|m| m.overlap.as_millis())
        .chain(config.cloud_logging.iter().map(|l| l.overlap.as_millis()))
        .max()
        .unwrap_or(0);
    rules + overlap + EngineOptions::default().lookback_delta_ms
}

/// Per alerting rule: how far back its evidence reaches and what it reads.
#[derive(Clone, Debug, Default)]
struct RuleFacts {
    lookback_ms: i64,
    metrics: BTreeSet<String>,
}

/// The groups to replay (rules without history removed) and those removed.
fn replayable_groups(
    config: &Config,
    files: &[RuleFile],
    step: Option<Duration>,
) -> (Vec<Group>, Vec<NotReplayable>) {
    let replayable = replayable_series(config);
    let recording: BTreeMap<String, String> = files
        .iter()
        .flat_map(|f| f.groups.iter())
        .flat_map(|g| g.rules.iter())
        .filter_map(|r| match &r.kind {
            RuleKind::Recording { record } => Some((record.clone(), r.expr.clone())),
            RuleKind::Alerting { .. } => None,
        })
        .collect();
    let mut groups = Vec::new();
    let mut skipped = Vec::new();
    for file in files {
        for def in &file.groups {
            if let Some(src) = config.rule_group_sources.get(&def.name) {
                for r in &def.rules {
                    skipped.push(NotReplayable {
                        group: def.name.clone(),
                        rule: r.name().to_string(),
                        reason: format!(
                            "its group queries the remote source {src:?}, which is not replayed"
                        ),
                    });
                }
                continue;
            }
            let mut def = def.clone();
            def.rules.retain(|r| {
                let missing = match judge::expr_metrics(&r.expr, &recording) {
                    Ok(m) => m.into_iter().find(|n| !has_history(n, &replayable)),
                    Err(e) => {
                        skipped.push(NotReplayable {
                            group: def.name.clone(),
                            rule: r.name().to_string(),
                            reason: format!("its expression does not parse: {e}"),
                        });
                        return false;
                    }
                };
                match missing {
                    Some(n) => {
                        skipped.push(NotReplayable {
                            group: def.name.clone(),
                            rule: r.name().to_string(),
                            reason: why_not_replayable(&n),
                        });
                        false
                    }
                    None => true,
                }
            });
            if def.rules.is_empty() {
                continue;
            }
            if let Some(s) = step {
                def.interval = Some(s);
            }
            groups.push(Group::new(def, config.evaluation_interval.0));
        }
    }
    (groups, skipped)
}

/// What the serving history says at a time.
struct ServiceView<'a> {
    history: &'a ServiceHistory,
}

impl ServiceView<'_> {
    /// Which revisions served until `t`, oldest first (consecutive changes
    /// to the same main revision are one period).
    fn periods_until(&self, t: TimestampMs) -> Vec<ServingPeriod> {
        let mut out: Vec<ServingPeriod> = Vec::new();
        if let Some(first) = &self.history.initial {
            out.push(first.clone());
        }
        for c in self.history.changes.iter().filter(|c| c.at_ms <= t) {
            let Some(rev) = c.main_revision() else {
                continue;
            };
            if out.last().is_some_and(|p| p.revision == rev) {
                continue;
            }
            out.push(ServingPeriod {
                revision: rev.to_string(),
                since_ms: c.at_ms,
            });
        }
        out
    }

    /// Revisions that existed at `t`.
    fn revisions_at(&self, t: TimestampMs) -> Vec<RevisionState> {
        self.history
            .revisions
            .iter()
            .filter(|r| r.create_time_ms <= t)
            .cloned()
            .collect()
    }
}

/// The in-memory state of one action, as the store would have held it.
#[derive(Default)]
struct ActionState {
    /// When the action would have acted (cooldown and budget read these).
    runs: Vec<TimestampMs>,
    /// Held by rearguard's own decision (budget used up).
    held: Option<String>,
    /// Revisions rolled back from (never a target again).
    quarantined: BTreeSet<String>,
}

/// An aggregation group of dispatch, for a receiver with `rollback_configs`.
struct AggGroup {
    actions: Vec<String>,
    group_interval_ms: i64,
    repeat_interval_ms: i64,
    next_flush_ms: TimestampMs,
    last_notified_ms: Option<TimestampMs>,
    notified: BTreeSet<u64>,
    alerts: BTreeMap<u64, Alert>,
}

struct Replayer<'a> {
    config: &'a Config,
    history: &'a History,
    routes: Option<RouteTree>,
    /// receiver name → its rollback actions.
    receivers: BTreeMap<String, Vec<String>>,
    intervals: TimeIntervals,
    groups: Vec<Group>,
    facts: Vec<Vec<RuleFacts>>,
    querier: Arc<LocalQuerier>,
    requests: TsdbRequestCounts,
    agg: BTreeMap<(usize, u64), AggGroup>,
    actions: BTreeMap<String, ActionState>,
    /// (action, alert fingerprint) told inconclusive and still watched.
    watching: HashSet<(String, u64)>,
    /// Re-checks due: (time, action, alert).
    rechecks: Vec<(TimestampMs, String, Alert)>,
    events: Vec<Event>,
}

/// Replays `history` through the rules of `files` and the actions of `config`.
pub async fn replay(
    config: &Config,
    files: &[RuleFile],
    history: &History,
    opts: &ReplayOptions,
    progress: &mut (dyn FnMut(TimestampMs) + Send),
) -> ReplayResult {
    let (mut groups, not_replayable) = replayable_groups(config, files, opts.step);
    let recording: BTreeMap<String, String> = groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .filter_map(|r| match &r.state {
            RuleState::Recording { record } => Some((record.clone(), r.def.expr.clone())),
            RuleState::Alerting(_) => None,
        })
        .collect();
    let lags: MetricLags = metric_lags(config);
    let facts: Vec<Vec<RuleFacts>> = groups
        .iter()
        .map(|g| {
            g.rules
                .iter()
                .map(|r| RuleFacts {
                    lookback_ms: judge::expr_lookback_ms(&r.def.expr, &recording, &lags)
                        .unwrap_or(0),
                    metrics: judge::expr_metrics(&r.def.expr, &recording).unwrap_or_default(),
                })
                .collect()
        })
        .collect();
    let longest = facts
        .iter()
        .flatten()
        .map(|f| f.lookback_ms)
        .max()
        .unwrap_or(0);
    // The tsdb keeps what the longest rule reads, plus the engine's lookback.
    let tsdb = Arc::new(Tsdb::new(longest + 2 * 3_600_000));
    let engine = Engine::new(EngineOptions {
        timeout: Some(config.query.timeout.0),
        max_samples: config.query.max_samples,
        ..EngineOptions::default()
    });
    let querier = Arc::new(LocalQuerier::new(tsdb.clone(), engine));
    let requests = TsdbRequestCounts {
        querier: querier.clone() as Arc<dyn Querier>,
        configured: AtomicBool::new(TsdbRequestCounts::reads_requests(config)),
    };
    let receivers = config
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
        .collect();
    // Ticks on the live manager's slots: offset + k·interval.
    let mut next: Vec<TimestampMs> = groups
        .iter()
        .map(|g| {
            let interval = (g.interval.as_millis() as i64).max(1);
            let offset = crate::rules::manager::slot_offset(&g.key, interval);
            let from = opts.from_ms;
            let first = from - (from - offset).rem_euclid(interval);
            if first < from {
                first + interval
            } else {
                first
            }
        })
        .collect();
    let mut r = Replayer {
        config,
        history,
        routes: config.route.as_ref().map(RouteTree::from_config),
        receivers,
        intervals: TimeIntervals::from_config(&config.time_intervals),
        groups: Vec::new(),
        facts,
        querier,
        requests,
        agg: BTreeMap::new(),
        actions: BTreeMap::new(),
        watching: HashSet::new(),
        rechecks: Vec::new(),
        events: Vec::new(),
    };
    std::mem::swap(&mut r.groups, &mut groups);
    let samples = &history.samples;
    let mut fed = 0usize;
    let mut evaluations = 0usize;
    let mut last_gc = opts.from_ms;
    let sink = tsdb.clone();
    let external_labels = config.external_labels.clone();
    let external_url = config.external_url.clone().unwrap_or_default();
    loop {
        let next_eval = next.iter().copied().min().unwrap_or(i64::MAX);
        let next_due = r.next_due();
        let t = next_eval.min(next_due);
        if t > opts.to_ms || t == i64::MAX {
            break;
        }
        if next_due < next_eval {
            r.run_due(t).await;
            continue;
        }
        // Samples arrive when the live sources would have had them.
        let start = fed;
        while fed < samples.len()
            && history
                .visible_at
                .get(fed)
                .copied()
                .unwrap_or(samples[fed].timestamp_ms)
                <= t
        {
            fed += 1;
        }
        if fed > start {
            tsdb.append_batch(&samples[start..fed]);
        }
        if t - last_gc > 3_600_000 {
            tsdb.gc(t);
            last_gc = t;
            progress(t);
        }
        let env = GroupEnv {
            external_labels: &external_labels,
            external_url: &external_url,
            restore_grace_until_ms: 0,
        };
        let mut sent = Vec::new();
        for (gi, g) in r.groups.iter_mut().enumerate() {
            if next[gi] != t {
                continue;
            }
            let out = g.eval(t, r.querier.as_ref(), sink.as_ref(), &env).await;
            evaluations += 1;
            for tr in out.changes.transitions {
                let name = tr.labels.get("alertname").cloned().unwrap_or_default();
                r.events.push(Event::Alert(AlertEvent {
                    time_ms: tr.at_ms,
                    alertname: name,
                    state: tr.to_state,
                    labels: tr.labels,
                    value: tr.value,
                }));
            }
            sent.extend(g.alerts_to_send(t, RESEND_DELAY, &external_url));
            next[gi] += (g.interval.as_millis() as i64).max(1);
        }
        r.route(t, sent);
        // Notifications due at this very tick see its evaluation.
        if r.next_due() <= t {
            r.run_due(t).await;
        }
    }
    // What is still due inside the window.
    while r.next_due() <= opts.to_ms {
        let t = r.next_due();
        r.run_due(t).await;
    }
    progress(opts.to_ms);
    let deploys = deploy_outcomes(history, &r.events, opts);
    ReplayResult {
        events: r.events,
        not_replayable,
        deploys,
        evaluations,
    }
}

impl Replayer<'_> {
    fn next_due(&self) -> TimestampMs {
        let flush = self.agg.values().map(|g| g.next_flush_ms).min();
        let recheck = self.rechecks.iter().map(|(t, _, _)| *t).min();
        flush.into_iter().chain(recheck).min().unwrap_or(i64::MAX)
    }

    /// Alerts sent after an evaluation, into the aggregation groups of the
    /// receivers that have rollback actions (the others change nothing here).
    fn route(&mut self, t: TimestampMs, alerts: Vec<Alert>) {
        let Some(routes) = &self.routes else { return };
        for a in alerts {
            for idx in routes.match_labels(&a.labels) {
                let opts = &routes.nodes[idx].opts;
                let Some(actions) = self.receivers.get(&opts.receiver) else {
                    continue;
                };
                let key = (idx, opts.group_labels(&a.labels).fingerprint());
                let g = self.agg.entry(key).or_insert_with(|| AggGroup {
                    actions: actions.clone(),
                    group_interval_ms: opts.group_interval.as_millis() as i64,
                    repeat_interval_ms: opts.repeat_interval.as_millis() as i64,
                    next_flush_ms: t + opts.group_wait.as_millis() as i64,
                    last_notified_ms: None,
                    notified: BTreeSet::new(),
                    alerts: BTreeMap::new(),
                });
                g.alerts.insert(a.fingerprint(), a.clone());
            }
        }
    }

    /// Flushes and re-checks due at `t`.
    async fn run_due(&mut self, t: TimestampMs) {
        let due: Vec<(usize, u64)> = self
            .agg
            .iter()
            .filter(|(_, g)| g.next_flush_ms <= t)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(alerts) = self.agg.get(&key).map(|g| g.alerts.clone()) else {
                continue;
            };
            // Sent as firing and still firing in the rules (a resolved one was re-sent as resolved).
            let firing: Vec<Alert> = alerts
                .into_values()
                .filter(|a| {
                    a.status_at(t) == AlertStatus::Firing
                        && self.is_firing(a.fingerprint()) != Some(false)
                })
                .collect();
            let Some(g) = self.agg.get_mut(&key) else {
                continue;
            };
            if firing.is_empty() {
                // Resolved: dispatch tells the receiver, the actions do nothing.
                self.agg.remove(&key);
                continue;
            }
            let fps: BTreeSet<u64> = firing.iter().map(Alert::fingerprint).collect();
            let changed = fps != g.notified;
            let repeat = g
                .last_notified_ms
                .is_none_or(|l| t - l >= g.repeat_interval_ms);
            g.next_flush_ms = t + g.group_interval_ms.max(1);
            g.alerts.retain(|fp, _| fps.contains(fp));
            if !(changed || repeat) {
                continue;
            }
            g.notified = fps;
            g.last_notified_ms = Some(t);
            let actions = g.actions.clone();
            // As the runner: the earliest firing alert not about rearguard.
            let trigger = firing
                .iter()
                .filter(|a| !crate::action::is_own_alert(a) && !judge::is_about_rearguard(a))
                .min_by_key(|a| a.active_at_ms)
                .cloned();
            let Some(trigger) = trigger else { continue };
            for action in actions {
                self.decide_and_record(t, &action, &trigger).await;
            }
        }
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rechecks)
            .into_iter()
            .partition(|(due, _, _)| *due <= t);
        self.rechecks = later;
        for (_, action, alert) in now {
            if self.is_firing(alert.fingerprint()) == Some(true) {
                self.decide_and_record(t, &action, &alert).await;
            } else {
                self.watching.remove(&(action, alert.fingerprint()));
            }
        }
    }

    /// The rule and alert behind a fingerprint, if the alert is active.
    fn find(&self, fp: u64) -> Option<(usize, usize, AlertState)> {
        for (gi, g) in self.groups.iter().enumerate() {
            for (ri, r) in g.rules.iter().enumerate() {
                if let RuleState::Alerting(a) = &r.state {
                    if let Some(x) = a
                        .firing_and_pending()
                        .find(|x| x.labels.fingerprint() == fp)
                    {
                        return Some((gi, ri, x.state));
                    }
                }
            }
        }
        None
    }

    fn is_firing(&self, fp: u64) -> Option<bool> {
        Some(matches!(self.find(fp), Some((_, _, AlertState::Firing))))
    }

    async fn decide_and_record(&mut self, t: TimestampMs, action: &str, alert: &Alert) {
        let d = self.decide(t, action, alert).await;
        let key = (action.to_string(), alert.fingerprint());
        if d.decision == DecisionKind::Inconclusive {
            let first = self.watching.insert(key.clone());
            if !self
                .rechecks
                .iter()
                .any(|(_, a, x)| *a == key.0 && x.fingerprint() == key.1)
            {
                self.rechecks.push((
                    t + RECHECK_INCONCLUSIVE_MS,
                    action.to_string(),
                    alert.clone(),
                ));
            }
            // The live runner tells an inconclusive decision once, then re-checks quietly.
            if !first {
                return;
            }
        } else {
            self.watching.remove(&key);
        }
        if d.decision.acts() {
            let st = self.actions.entry(action.to_string()).or_default();
            st.runs.push(t);
            if let Some(from) = &d.from_revision {
                st.quarantined.insert(from.clone());
            }
        }
        self.events.push(Event::Action(d));
    }

    /// The runner's `run_guarded`, over facts from the recorded history.
    async fn decide(&mut self, now: TimestampMs, target: &str, alert: &Alert) -> ActionDecision {
        let mut d = ActionDecision {
            time_ms: now,
            action: target.to_string(),
            alertname: alert.name().to_string(),
            decision: DecisionKind::Skipped,
            reason: String::new(),
            detail: String::new(),
            service: None,
            from_revision: None,
            to_revision: None,
        };
        let skip = |mut d: ActionDecision, why: &str, detail: String| {
            d.reason = why.to_string();
            d.detail = detail;
            d
        };
        let Some(action) = self.config.actions.get(target).cloned() else {
            return skip(
                d,
                reason::UNKNOWN_TARGET,
                format!("no action named {target:?}"),
            );
        };
        d.service = action.service().map(|s| short_name(&s).to_string());
        let st = self.actions.entry(target.to_string()).or_default();
        if let Some(h) = &st.held {
            return skip(
                d,
                reason::HOLD,
                format!("{target} is on hold: {h} (set by rearguard)"),
            );
        }
        let muted = |name: &str| {
            self.intervals
                .is_active(name, to_datetime(now))
                .unwrap_or(false)
        };
        if let Some(ti) = guard_rails::first_muted(&action.mute_time_intervals, muted) {
            return skip(d, reason::MUTED, format!("time interval {ti:?} is active"));
        }
        let cooldown = action.cooldown.as_millis();
        let window = action.max_per_window.window.as_millis();
        let budget = action.max_per_window.count as usize;
        let st = self.actions.entry(target.to_string()).or_default();
        match guard_rails::rate_limit(&st.runs, now, cooldown, window, budget) {
            RateLimit::Cooldown { last } => {
                let detail = format!(
                    "the last action on {target} was {} ago (cooldown {})",
                    format_duration(Duration::from_millis((now - last).max(0) as u64)),
                    action.cooldown
                );
                return skip(d, reason::COOLDOWN, detail);
            }
            RateLimit::Budget { in_window } => {
                st.held = Some(format!(
                    "budget of {budget} actions per {} used up",
                    action.max_per_window.window
                ));
                let detail = format!(
                    "{in_window} actions on {target} within {} (budget {budget}): holding it and escalating",
                    action.max_per_window.window
                );
                return skip(d, reason::BUDGET, detail);
            }
            RateLimit::Clear => {}
        }
        let fp = alert.fingerprint();
        let found = self.find(fp);
        let rule_error =
            found.and_then(|(gi, ri, _)| self.groups[gi].rules[ri].status.last_error.clone());
        match guard_rails::alert_recheck(self.is_firing(fp), rule_error) {
            AlertRecheck::Resolved => {
                return skip(
                    d,
                    reason::ALERT_RESOLVED,
                    format!("{} is no longer firing", alert.name()),
                )
            }
            AlertRecheck::RuleFailing { error } => {
                d.decision = DecisionKind::Inconclusive;
                return skip(d, reason::INCONCLUSIVE, format!("inconclusive: the last evaluation of the rule of {} failed ({error}); still watching", alert.name()));
            }
            AlertRecheck::Act => {}
        }
        let facts = found
            .map(|(gi, ri, _)| self.facts[gi][ri].clone())
            .unwrap_or_default();
        let mut implicated = BTreeSet::new();
        let mut origin = None;
        let mut view_history = Vec::new();
        let mut revisions = Vec::new();
        if let Some(service) = action.service() {
            let Some(h) = self.history.services.get(&service) else {
                return skip(
                    d,
                    reason::CLOUD_RUN_UNAVAILABLE,
                    format!("no history of {service} was read"),
                );
            };
            let view = ServiceView { history: h };
            view_history = view.periods_until(now);
            revisions = view.revisions_at(now);
            let Some(serving) = view_history.last().map(|p| p.revision.clone()) else {
                return skip(
                    d,
                    reason::CLOUD_RUN_UNAVAILABLE,
                    format!("what {service} served at this time is unknown"),
                );
            };
            d.from_revision = Some(serving.clone());
            let ef = EvidenceFacts {
                alert_revision: alert.labels.get(judge::REVISION_LABEL),
                alertname: alert.name(),
                active_at_ms: alert.active_at_ms,
                lookback_ms: facts.lookback_ms,
                now_ms: now,
                serving: &serving,
                serving_since_ms: plan::serving_since(&serving, &view_history, &revisions),
                history: &view_history,
                bake_window_ms: action.bake_window.as_millis(),
            };
            let window_start = match judge::judge(&ef) {
                Judgement::Judged {
                    implicated: i,
                    window_start_ms,
                    ..
                } => {
                    implicated = i;
                    window_start_ms
                }
                Judgement::NotJudged { why, detail } => {
                    let why = match why {
                        NotJudged::OtherRevision => reason::OTHER_REVISION,
                        NotJudged::StartedInsideWindow => reason::STARTED_INSIDE_WINDOW,
                        NotJudged::UnknownStart | NotJudged::OutsideBakeWindow => {
                            reason::NOT_DEPLOY_REGRESSION
                        }
                    };
                    return skip(d, why, detail);
                }
            };
            let reads_requests = facts.metrics.contains(judge::REQUEST_COUNT_SERIES);
            if action.min_requests > 0 && reads_requests {
                let seen = self
                    .requests
                    .requests(short_name(&service), &serving, window_start, now)
                    .await;
                if let judge::Sufficiency::Inconclusive(detail) = judge::sufficiency(
                    action.min_requests,
                    reads_requests,
                    seen,
                    &serving,
                    now - window_start,
                ) {
                    d.decision = DecisionKind::Inconclusive;
                    return skip(d, reason::INCONCLUSIVE, detail);
                }
            }
            origin = Some(serving);
        }
        self.plan_first_step(
            d,
            &action,
            target,
            origin,
            &view_history,
            &revisions,
            &implicated,
        )
    }

    /// What the first step of the ladder would have done.
    #[allow(clippy::too_many_arguments)]
    fn plan_first_step(
        &self,
        mut d: ActionDecision,
        action: &ActionConfig,
        target: &str,
        origin: Option<String>,
        history: &[ServingPeriod],
        revisions: &[RevisionState],
        implicated: &BTreeSet<String>,
    ) -> ActionDecision {
        let Some(effect) = action.effects().into_iter().next() else {
            d.reason = reason::ALREADY_AT_TARGET.into();
            d.detail = "the action has no step".into();
            return d;
        };
        let quarantined = self
            .actions
            .get(target)
            .map(|s| s.quarantined.clone())
            .unwrap_or_default();
        d.reason = effect.kind().to_string();
        match effect {
            Effect::CloudRunTraffic(c) => {
                let Some(current) = origin.clone() else {
                    d.reason = reason::CLOUD_RUN_UNAVAILABLE.into();
                    return d;
                };
                let to = match c.revision {
                    Some(r) => short_name(&r).to_string(),
                    None => {
                        let mut excl = quarantined;
                        excl.insert(current.clone());
                        excl.extend(implicated.iter().cloned());
                        match plan::previous_ready(&current, history, revisions, &excl) {
                            Candidate::Found(r) => r,
                            Candidate::OnlyQuarantined(q) => {
                                d.reason = reason::QUARANTINED.into();
                                d.detail = format!(
                                    "every earlier Ready revision of {} is quarantined or implicated ({})",
                                    short_name(&c.service),
                                    q.join(", ")
                                );
                                return d;
                            }
                            Candidate::None => {
                                d.reason = reason::NO_EARLIER_READY_REVISION.into();
                                d.detail = format!(
                                    "{} has no Ready revision that served before {current}",
                                    short_name(&c.service)
                                );
                                return d;
                            }
                        }
                    }
                };
                if to == current {
                    d.reason = reason::ALREADY_AT_TARGET.into();
                    d.detail = format!("{} already serves {to}", short_name(&c.service));
                    return d;
                }
                d.decision = DecisionKind::WouldRollBack;
                d.detail = format!(
                    "would move all traffic of {} from {current} to {to}",
                    short_name(&c.service)
                );
                d.to_revision = Some(to);
            }
            Effect::CloudRunEnv(c) => {
                d.decision = DecisionKind::WouldRevertEnv;
                let names: Vec<&str> = c.env.keys().map(String::as_str).collect();
                d.detail = format!(
                    "would set {} on {} (a new revision)",
                    names.join(", "),
                    short_name(&c.service)
                );
            }
            Effect::Command(argv) => {
                d.decision = DecisionKind::WouldRunCommand;
                d.detail = format!(
                    "would run {}",
                    argv.first().map(String::as_str).unwrap_or("")
                );
            }
        }
        if action.dry_run {
            d.detail = format!("dry run: {}", d.detail);
            d.decision = DecisionKind::DryRun;
        }
        d
    }
}

/// The changes inside the window that put another revision in front, each
/// with the decisions made while it served.
fn deploy_outcomes(
    history: &History,
    events: &[Event],
    opts: &ReplayOptions,
) -> Vec<DeployOutcome> {
    let mut out = Vec::new();
    for (service, h) in &history.services {
        let short = short_name(service).to_string();
        let mut previous = h.initial.as_ref().map(|p| p.revision.clone());
        let changes: Vec<_> = h
            .changes
            .iter()
            .filter(|c| c.main_revision().is_some())
            .collect();
        for (i, c) in changes.iter().enumerate() {
            let Some(rev) = c.main_revision().map(str::to_string) else {
                continue;
            };
            if previous.as_deref() == Some(rev.as_str()) {
                continue;
            }
            previous = Some(rev.clone());
            if c.at_ms < opts.from_ms || c.at_ms > opts.to_ms {
                continue;
            }
            let until = changes
                .iter()
                .skip(i + 1)
                .find(|n| n.main_revision() != Some(rev.as_str()))
                .map(|n| n.at_ms)
                .unwrap_or(i64::MAX);
            let decisions = events
                .iter()
                .filter_map(|e| match e {
                    Event::Action(a)
                        if a.service.as_deref() == Some(short.as_str())
                            && a.time_ms >= c.at_ms
                            && a.time_ms < until =>
                    {
                        Some(a.clone())
                    }
                    _ => None,
                })
                .collect();
            out.push(DeployOutcome {
                time_ms: c.at_ms,
                service: short.clone(),
                revision: rev,
                method: c.method.clone(),
                actor: c.actor.clone(),
                decisions,
            });
        }
    }
    out.sort_by_key(|d| d.time_ms);
    out
}

/// Labels as a map (for JSON), without `__name__`.
pub fn label_map(l: &Labels) -> BTreeMap<String, String> {
    l.to_map()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcp::audit::ServiceChange;
    use crate::labels::{Sample, METRIC_NAME};

    const MIN: i64 = 60_000;
    const T0: i64 = 1_790_000_000_000;
    const SVC: &str = "projects/p/locations/l/services/api";

    const RULES: &str = r#"groups:
  - name: api
    interval: 1m
    rules:
      - alert: ApiErrorRatio
        expr: |
          sum by (service_name) (rate(run_googleapis_com:request_count{response_code_class="5xx"}[5m]))
            / sum by (service_name) (rate(run_googleapis_com:request_count[5m])) > 0.05
        for: 2m
        labels: { severity: critical }
"#;

    fn loaded(dir: &std::path::Path) -> crate::config::LoadedConfig {
        std::fs::write(dir.join("rules.yaml"), RULES).unwrap();
        let cfg = format!(
            "state_dir: {}\nevaluation_interval: 1m\ngcp: {{ project: p }}\ncloud_monitoring:\n  - name: requests\n    metric: run.googleapis.com/request_count\nrule_files: [rules.yaml]\nroute:\n  receiver: rollback\n  group_wait: 30s\nreceivers:\n  - name: rollback\n    rollback_configs: [{{ action: api }}]\nactions:\n  api:\n    cloud_run_traffic: {{ service: {SVC} }}\n    min_requests: 0\n",
            dir.join("state").display()
        );
        let path = dir.join("rearguard.yaml");
        std::fs::write(&path, cfg).unwrap();
        crate::config::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn sample(rev: &str, class: &str, t: i64, v: f64) -> Sample {
        Sample {
            labels: Labels::from_pairs([
                (METRIC_NAME, "run_googleapis_com:request_count"),
                ("service_name", "api"),
                ("revision_name", rev),
                ("response_code_class", class),
            ]),
            timestamp_ms: t,
            value: v,
        }
    }

    /// r1 breaks at +27m, r2 (as bad) is deployed at +30m: the service-wide
    /// alert fires over a window r1 served part of. The traffic history says
    /// r2 began inside the evidence window: not r2's evidence, no action.
    #[tokio::test]
    async fn a_deploy_inside_the_evidence_window_of_a_service_alert_is_not_judged_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = loaded(dir.path());
        let files = crate::rules::manager::RulesConfig::from_loaded(&loaded)
            .unwrap_or_else(|_| panic!("rules"))
            .files;
        let mut samples = Vec::new();
        let (mut ok, mut bad) = (0.0, 0.0);
        for m in 0..=60 {
            let t = T0 + m * MIN;
            let rev = if m <= 30 { "api-1" } else { "api-2" };
            let errors = if m > 27 { 20.0 } else { 0.0 };
            if m == 31 {
                (ok, bad) = (0.0, 0.0);
            }
            ok += 100.0 - errors;
            bad += errors;
            samples.push(sample(rev, "2xx", t, ok));
            samples.push(sample(rev, "5xx", t, bad));
        }
        samples.sort_by_key(|s| s.timestamp_ms);
        let rev = |n: &str, t: i64| RevisionState {
            name: n.into(),
            create_time_ms: t,
            ready: true,
        };
        let history = History {
            samples,
            visible_at: Vec::new(),
            services: BTreeMap::from([(
                SVC.to_string(),
                ServiceHistory {
                    initial: Some(ServingPeriod {
                        revision: "api-1".into(),
                        since_ms: T0 - 600 * MIN,
                    }),
                    changes: vec![ServiceChange {
                        at_ms: T0 + 30 * MIN,
                        method: "google.cloud.run.v2.Services.UpdateService".into(),
                        actor: None,
                        serving: vec![("api-2".into(), 100)],
                        latest_ready: Some("api-2".into()),
                    }],
                    revisions: vec![rev("api-1", T0 - 600 * MIN), rev("api-2", T0 + 29 * MIN)],
                },
            )]),
        };
        let opts = ReplayOptions {
            from_ms: T0 + 10 * MIN,
            to_ms: T0 + 60 * MIN,
            step: None,
        };
        let r = replay(&loaded.config, &files, &history, &opts, &mut |_| {}).await;
        let d: Vec<&ActionDecision> = r.decisions().collect();
        assert_eq!(d.len(), 1, "{:#?}", r.events);
        assert_eq!(d[0].decision, DecisionKind::Skipped);
        assert_eq!(
            d[0].reason,
            reason::STARTED_INSIDE_WINDOW,
            "{}",
            d[0].detail
        );
        assert_eq!(d[0].from_revision.as_deref(), Some("api-2"));
        assert!(
            d[0].detail.contains("api-2 began serving"),
            "{}",
            d[0].detail
        );
        assert_eq!(r.deploys.len(), 1);
        assert_eq!(r.deploys[0].revision, "api-2");
    }
}
