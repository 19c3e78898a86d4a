//! Runs every rule group on its interval on the shared [`Clock`], persists
//! alert transitions before sending alerts on, restores them at start, and
//! keeps alert state across reloads.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alert::AlertSink;
use crate::clock::{Clock, TimestampMs};
use crate::config::locate::{LocatedError, Pos};
use crate::config::LoadedConfig;
use crate::labels::{Labels, METRIC_NAME};
use crate::store::alerts::StoredAlert;
use crate::store::Store;
use crate::tsdb::SampleSink;

use super::alerting::{ActiveAlert, AlertState, AlertingRuleDef};
use super::file::{load_rule_files, ParseOptions, RuleFile};
use super::group::RuleState;
use super::group::{Group, GroupEnv};
use super::querier::{Querier, RemoteQuerier};

/// What the rule manager is built from.
#[derive(Clone)]
pub struct RulesDeps {
    pub clock: Clock,
    /// The local PromQL engine over the tsdb.
    pub local: Arc<dyn Querier>,
    /// Where recording rule outputs and `ALERTS` are written (the tsdb).
    pub sink: Arc<dyn SampleSink>,
    pub store: Store,
    pub registry: prometheus::Registry,
    /// Where alerts go after each group evaluation (dispatch).
    pub alerts: Arc<dyn AlertSink>,
}

/// Tunables, with Prometheus's defaults.
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    /// How often a firing alert is re-sent (Prometheus `--rules.alert.resend-delay`, 1m).
    pub resend_delay: Duration,
    /// A restored *pending* alert is dropped if the group was last evaluated
    /// longer ago than this (Prometheus `--rules.alert.for-outage-tolerance`, 1h).
    pub outage_tolerance: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            resend_delay: Duration::from_secs(60),
            outage_tolerance: Duration::from_secs(3600),
        }
    }
}

/// The rule configuration to apply (built from the config file on start and reload).
#[derive(Clone, Default)]
pub struct RulesConfig {
    pub files: Vec<RuleFile>,
    pub evaluation_interval: Duration,
    pub external_url: String,
    pub external_labels: BTreeMap<String, String>,
    /// Remote queriers by `query_sources` name.
    pub sources: BTreeMap<String, Arc<dyn Querier>>,
    /// Rule group name → query source name (config key `rule_group_sources`).
    pub group_sources: BTreeMap<String, String>,
    /// The longest interval of the sources that write the local tsdb (probes,
    /// Cloud Monitoring, Cloud Logging, Cloud Run); zero when there are none.
    /// Sizes the restore hold of local groups ([`restore_hold`]).
    pub source_interval: Duration,
}

/// How long, after a restart, a restored alert that the expression does not
/// return is held (see docs/rules.md, "Persistence and restore"): the tsdb
/// is in memory, so a local group needs the sources to write two samples
/// again (enough for `rate` over any window) and two evaluations to see them;
/// a group on a remote query source kept its data and needs only the two
/// evaluations.
pub fn restore_hold(group_interval: Duration, remote: bool, source_interval: Duration) -> Duration {
    let evaluations = group_interval * 2;
    if remote {
        evaluations
    } else {
        evaluations + source_interval * 2
    }
}

/// The longest interval of the sources that write the local tsdb.
fn longest_source_interval(c: &crate::config::Config) -> Duration {
    c.probes
        .iter()
        .map(|p| p.interval.0)
        .chain(c.cloud_monitoring.iter().map(|m| m.interval.0))
        .chain(c.cloud_logging.iter().map(|l| l.interval.0))
        .chain(c.cloud_run.iter().map(|r| r.interval.0))
        .max()
        .unwrap_or(Duration::ZERO)
}

impl RulesConfig {
    /// Reads the rule files a loaded config names and builds the remote query sources.
    pub fn from_loaded(loaded: &LoadedConfig) -> Result<Self, Vec<LocatedError>> {
        let files = load_rule_files(&loaded.rule_file_paths, ParseOptions::default())?;
        let c = &loaded.config;
        let mut errors = Vec::new();
        let mut sources: BTreeMap<String, Arc<dyn Querier>> = BTreeMap::new();
        for (name, cfg) in &c.query_sources {
            match RemoteQuerier::from_config(cfg, &loaded.base_dir) {
                Some(Ok(q)) => {
                    sources.insert(name.clone(), Arc::new(q));
                }
                Some(Err(e)) => errors.push(LocatedError::new(
                    &loaded.path,
                    Pos { line: 0, col: 0 },
                    format!("query_sources.{name}: {e}"),
                )),
                None => {}
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            files,
            evaluation_interval: c.evaluation_interval.0,
            external_url: c.external_url.clone().unwrap_or_default(),
            external_labels: c.external_labels.clone(),
            sources,
            group_sources: c.rule_group_sources.clone(),
            source_interval: longest_source_interval(c),
        })
    }
}

struct Metrics {
    eval_duration: Histogram,
    evaluations: IntCounterVec,
    failures: IntCounterVec,
    last_eval: GaugeVec,
    last_duration: GaugeVec,
    interval: GaugeVec,
    missed: IntCounterVec,
    alerts: IntGaugeVec,
}

impl Metrics {
    fn new(r: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let g = &["rule_group"];
        let m = Self {
            eval_duration: Histogram::with_opts(HistogramOpts::new(
                "rearguard_rule_evaluation_duration_seconds",
                "The duration of rule evaluations.",
            ))?,
            evaluations: IntCounterVec::new(
                Opts::new("rearguard_rule_evaluations_total", "Rule evaluations."),
                g,
            )?,
            failures: IntCounterVec::new(
                Opts::new(
                    "rearguard_rule_evaluation_failures_total",
                    "Rule evaluations that failed.",
                ),
                g,
            )?,
            last_eval: GaugeVec::new(
                Opts::new(
                    "rearguard_rule_group_last_evaluation_timestamp_seconds",
                    "When the group was last evaluated.",
                ),
                g,
            )?,
            last_duration: GaugeVec::new(
                Opts::new(
                    "rearguard_rule_group_last_duration_seconds",
                    "How long the last group evaluation took.",
                ),
                g,
            )?,
            interval: GaugeVec::new(
                Opts::new(
                    "rearguard_rule_group_interval_seconds",
                    "The interval of the rule group.",
                ),
                g,
            )?,
            missed: IntCounterVec::new(
                Opts::new(
                    "rearguard_rule_group_iterations_missed_total",
                    "Group evaluations skipped because an evaluation took too long.",
                ),
                g,
            )?,
            alerts: IntGaugeVec::new(
                Opts::new("rearguard_alerts", "Active alerts by name and state."),
                &["alertname", "state"],
            )?,
        };
        r.register(Box::new(m.eval_duration.clone()))?;
        r.register(Box::new(m.evaluations.clone()))?;
        r.register(Box::new(m.failures.clone()))?;
        r.register(Box::new(m.last_eval.clone()))?;
        r.register(Box::new(m.last_duration.clone()))?;
        r.register(Box::new(m.interval.clone()))?;
        r.register(Box::new(m.missed.clone()))?;
        r.register(Box::new(m.alerts.clone()))?;
        Ok(m)
    }
}

/// Shared by the group tasks.
struct Shared {
    deps: RulesDeps,
    opts: ManagerOptions,
    metrics: Metrics,
    /// The latest state of every group, for the API.
    snapshots: RwLock<BTreeMap<String, Group>>,
    /// Each group's querier (local or a remote source), for [`RuleManager::alert_history`].
    queriers: RwLock<BTreeMap<String, Arc<dyn Querier>>>,
}

/// A pending or firing alert, found by its fingerprint, with its rule.
#[derive(Clone, Debug)]
pub struct FoundAlert {
    pub group_key: String,
    pub interval: Duration,
    pub rule: AlertingRuleDef,
    pub alert: ActiveAlert,
}

/// An alert's expression over time: what the audit keeps as evidence.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AlertHistory {
    pub expr: String,
    pub from_ms: TimestampMs,
    pub to_ms: TimestampMs,
    pub step_ms: i64,
    /// `[time_ms, value]` of the alert's own series, where it had a value.
    pub points: Vec<(TimestampMs, f64)>,
}

struct Running {
    stop: watch::Sender<bool>,
    handle: JoinHandle<Group>,
}

/// Runs the rule groups.
pub struct RuleManager {
    shared: Arc<Shared>,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
}

/// The settings a group task evaluates with.
#[derive(Clone)]
struct TaskSettings {
    querier: Arc<dyn Querier>,
    external_url: String,
    external_labels: BTreeMap<String, String>,
    restore_grace_until_ms: TimestampMs,
}

impl RuleManager {
    /// Registers the rule metrics in `deps.registry`.
    pub fn new(deps: RulesDeps, opts: ManagerOptions) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::new(&deps.registry)?;
        Ok(Self {
            shared: Arc::new(Shared {
                deps,
                opts,
                metrics,
                snapshots: RwLock::new(BTreeMap::new()),
                queriers: RwLock::new(BTreeMap::new()),
            }),
            running: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Starts (or, on reload, replaces) the groups. Alert states of rules that
    /// still exist carry over; groups seen for the first time restore their
    /// alerts from the store. Errors name groups whose query source is unknown.
    pub async fn apply(&self, cfg: RulesConfig) -> Result<(), Vec<String>> {
        let mut running = self.running.lock().await;
        let mut old: HashMap<String, Group> = HashMap::new();
        for (key, r) in running.drain() {
            let _ = r.stop.send(true);
            match r.handle.await {
                Ok(g) => {
                    old.insert(key, g);
                }
                Err(e) => tracing::error!(group = %key, error = %e, "rule group task failed"),
            }
        }
        let stored = match self.shared.deps.store.load_alerts().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read alert states from the store; starting without them");
                Vec::new()
            }
        };
        let mut by_rule: HashMap<String, Vec<StoredAlert>> = HashMap::new();
        for s in stored {
            by_rule.entry(s.rule_key.clone()).or_default().push(s);
        }
        let now = self.shared.deps.clock.now_ms();
        let mut errors = Vec::new();
        let mut new_keys = Vec::new();
        for file in &cfg.files {
            for def in &file.groups {
                let querier = match cfg.group_sources.get(&def.name) {
                    None => self.shared.deps.local.clone(),
                    Some(src) => match cfg.sources.get(src) {
                        Some(q) => q.clone(),
                        None => {
                            errors.push(format!("rule group {:?} names query source {src:?}, which is not a prometheus entry of query_sources", def.name));
                            continue;
                        }
                    },
                };
                let mut group = Group::new(def.clone(), cfg.evaluation_interval);
                let mut grace_until = 0;
                if let Some(prev) = old.remove(&group.key) {
                    group.copy_state_from(&prev);
                } else {
                    let last_eval = self
                        .shared
                        .deps
                        .store
                        .last_group_evaluation(&group.key)
                        .await
                        .ok()
                        .flatten();
                    let outage_ok = last_eval.is_some_and(|t| {
                        now - t <= self.shared.opts.outage_tolerance.as_millis() as i64
                    });
                    let mut restored = 0;
                    for rule in group.alerting_rules_mut() {
                        if let Some(list) = by_rule.get(&rule.key) {
                            let keep: Vec<StoredAlert> = list
                                .iter()
                                .filter(|s| outage_ok || s.state != AlertState::Pending.as_str())
                                .cloned()
                                .collect();
                            restored += keep.len();
                            rule.restore(&keep, &cfg.external_labels, &cfg.external_url);
                        }
                    }
                    if restored > 0 {
                        let remote = cfg.group_sources.contains_key(&def.name);
                        let hold = restore_hold(group.interval, remote, cfg.source_interval);
                        grace_until = now + hold.as_millis() as i64;
                        tracing::info!(group = %group.key, alerts = restored, hold_s = hold.as_secs_f64(), "restored alert states");
                    }
                }
                self.shared
                    .metrics
                    .interval
                    .with_label_values(&[group.key.as_str()])
                    .set(group.interval.as_secs_f64());
                self.shared
                    .queriers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(group.key.clone(), querier.clone());
                let settings = TaskSettings {
                    querier,
                    external_url: cfg.external_url.clone(),
                    external_labels: cfg.external_labels.clone(),
                    restore_grace_until_ms: grace_until,
                };
                let key = group.key.clone();
                if running.contains_key(&key) {
                    errors.push(format!(
                        "rule group {:?} appears twice in {}",
                        def.name,
                        def.file.display()
                    ));
                    continue;
                }
                self.shared
                    .snapshots
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), group.clone());
                let (stop, stop_rx) = watch::channel(false);
                let handle = tokio::spawn(run_group(group, settings, self.shared.clone(), stop_rx));
                new_keys.push(key.clone());
                running.insert(key, Running { stop, handle });
            }
        }
        // Alert states of rules that no longer exist would otherwise stay in the store forever.
        if errors.is_empty() {
            let keep: Vec<String> = {
                let snaps = self
                    .shared
                    .snapshots
                    .read()
                    .unwrap_or_else(|p| p.into_inner());
                snaps
                    .iter()
                    .filter(|(k, _)| running.contains_key(*k))
                    .flat_map(|(_, g)| {
                        g.rules.iter().filter_map(|r| match &r.state {
                            super::group::RuleState::Alerting(a) => Some(a.key.clone()),
                            _ => None,
                        })
                    })
                    .collect()
            };
            if let Err(e) = self
                .shared
                .deps
                .store
                .delete_alerts_of_other_rules(keep)
                .await
            {
                tracing::warn!(error = %e, "cannot forget alert states of removed rules");
            }
        }
        // Groups that are gone: forget their metrics, snapshots and queriers.
        {
            let mut snaps = self
                .shared
                .snapshots
                .write()
                .unwrap_or_else(|p| p.into_inner());
            snaps.retain(|k, _| running.contains_key(k));
        }
        self.shared
            .queriers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| running.contains_key(k));
        for key in old.keys() {
            for m in [
                &self.shared.metrics.last_eval,
                &self.shared.metrics.interval,
                &self.shared.metrics.last_duration,
            ] {
                let _ = m.remove_label_values(&[key.as_str()]);
            }
        }
        update_alert_gauge(&self.shared);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Stops every group (the state stays in the store for the next start).
    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        for (_, r) in running.drain() {
            let _ = r.stop.send(true);
            let _ = r.handle.await;
        }
    }

    /// Whether any rule group runs (before the first apply, alert states are unknown).
    pub fn has_groups(&self) -> bool {
        !self
            .shared
            .snapshots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The latest state of every group (rules, health, active alerts), in file and name order.
    pub fn groups(&self) -> Vec<Group> {
        let snaps = self
            .shared
            .snapshots
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Group> = snaps.values().cloned().collect();
        v.sort_by(|a, b| (&a.def.file, &a.def.name).cmp(&(&b.def.file, &b.def.name)));
        v
    }
}

impl RuleManager {
    /// The pending or firing alert whose labels (alone, or with the external
    /// labels added, as notifications carry them) have `fingerprint`.
    pub fn find_alert(
        &self,
        fingerprint: u64,
        external_labels: &BTreeMap<String, String>,
    ) -> Option<FoundAlert> {
        // Read in place: cloning every group (as `groups` does) to find one
        // alert would copy all their alerts on each verification check.
        let snaps = self
            .shared
            .snapshots
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for g in snaps.values() {
            for r in &g.rules {
                let RuleState::Alerting(rule) = &r.state else {
                    continue;
                };
                for a in rule.firing_and_pending() {
                    let mut with_external = a.labels.builder();
                    for (k, v) in external_labels {
                        if a.labels.get(k).is_none() {
                            with_external = with_external.set(k, v);
                        }
                    }
                    if a.labels.fingerprint() == fingerprint
                        || with_external.build().fingerprint() == fingerprint
                    {
                        return Some(FoundAlert {
                            group_key: g.key.clone(),
                            interval: g.interval,
                            rule: rule.def.clone(),
                            alert: a.clone(),
                        });
                    }
                }
            }
        }
        None
    }

    /// The rule expression of the alert `fingerprint` from one evaluation
    /// interval before it became active until `to_ms`, at most `max_points`
    /// evaluations, through the group's own querier; only the alert's series.
    pub async fn alert_history(
        &self,
        fingerprint: u64,
        external_labels: &BTreeMap<String, String>,
        to_ms: TimestampMs,
        max_points: usize,
    ) -> Option<AlertHistory> {
        let found = self.find_alert(fingerprint, external_labels)?;
        let querier = self
            .shared
            .queriers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&found.group_key)
            .cloned()?;
        let interval_ms = (found.interval.as_millis() as i64).max(1);
        let from_ms = found.alert.active_at_ms - interval_ms;
        let span = (to_ms - from_ms).max(0);
        let step_ms = interval_ms.max(span / max_points.max(1) as i64 + 1);
        // The expression's own labels: the alert's, less those the rule sets.
        let own = |l: &Labels| {
            l.iter()
                .filter(|l| &*l.name != METRIC_NAME && !found.rule.labels.contains_key(&*l.name))
                .all(|l| found.alert.labels.get(&l.name) == Some(&*l.value))
        };
        let mut points = Vec::new();
        let mut t = from_ms;
        while t <= to_ms {
            if let Ok(samples) = querier.query(&found.rule.expr, t).await {
                if let Some(s) = samples.iter().find(|s| own(&s.labels)) {
                    points.push((t, s.value));
                }
            }
            t += step_ms;
        }
        Some(AlertHistory {
            expr: found.rule.expr,
            from_ms,
            to_ms,
            step_ms,
            points,
        })
    }
}

/// The phase of a group's ticks inside its interval (stable per group key).
pub fn slot_offset(key: &str, interval_ms: i64) -> i64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % interval_ms.max(1) as u64) as i64
}

async fn run_group(
    mut group: Group,
    settings: TaskSettings,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Group {
    let clock = shared.deps.clock.clone();
    let interval_ms = (group.interval.as_millis() as i64).max(1);
    let offset = slot_offset(&group.key, interval_ms);
    let now = clock.now_ms();
    // Consistent slots: ticks at offset + k·interval.
    let mut next = now - (now - offset).rem_euclid(interval_ms) + interval_ms;
    if let Some(last) = group.last_eval_ms {
        while next <= last {
            next += interval_ms;
        }
    }
    let key = group.key.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = clock.sleep_until_ms(next) => {}
        }
        let now = clock.now_ms();
        let missed = (now - next) / interval_ms;
        if missed > 0 {
            shared
                .metrics
                .missed
                .with_label_values(&[key.as_str()])
                .inc_by(missed as u64);
            next += missed * interval_ms;
        }
        evaluate(&mut group, next, &settings, &shared).await;
        next += interval_ms;
    }
    group
}

async fn evaluate(group: &mut Group, ts: TimestampMs, settings: &TaskSettings, shared: &Shared) {
    let env = GroupEnv {
        external_labels: &settings.external_labels,
        external_url: &settings.external_url,
        restore_grace_until_ms: settings.restore_grace_until_ms,
    };
    let out = group
        .eval(
            ts,
            settings.querier.as_ref(),
            shared.deps.sink.as_ref(),
            &env,
        )
        .await;
    let key = group.key.as_str();
    let m = &shared.metrics;
    m.evaluations
        .with_label_values(&[key])
        .inc_by(group.rules.len() as u64);
    for r in &group.rules {
        m.eval_duration
            .observe(r.status.eval_duration.as_secs_f64());
    }
    if !out.failures.is_empty() {
        m.failures
            .with_label_values(&[key])
            .inc_by(out.failures.len() as u64);
        for (rule, err) in &out.failures {
            tracing::warn!(group = %key, rule = %rule, error = %err, "evaluating rule failed");
        }
    }
    m.last_eval
        .with_label_values(&[key])
        .set(ts as f64 / 1000.0);
    m.last_duration
        .with_label_values(&[key])
        .set(group.eval_duration.as_secs_f64());
    // Persist before anything acts on the alerts.
    if let Err(e) = shared.deps.store.apply_alert_changes(out.changes).await {
        tracing::error!(group = %key, error = %e, "cannot persist alert states; sending alerts anyway");
    }
    let alerts = group.alerts_to_send(ts, shared.opts.resend_delay, &settings.external_url);
    shared
        .snapshots
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(group.key.clone(), group.clone());
    update_alert_gauge(shared);
    if !alerts.is_empty() {
        shared.deps.alerts.send_alerts(alerts);
    }
}

fn update_alert_gauge(shared: &Shared) {
    let snaps = shared.snapshots.read().unwrap_or_else(|p| p.into_inner());
    let mut counts: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for g in snaps.values() {
        for r in &g.rules {
            if let super::group::RuleState::Alerting(a) = &r.state {
                counts.entry((a.def.name.clone(), "pending")).or_default();
                counts.entry((a.def.name.clone(), "firing")).or_default();
                for al in a.firing_and_pending() {
                    *counts
                        .entry((a.def.name.clone(), al.state.as_str()))
                        .or_default() += 1;
                }
            }
        }
    }
    shared.metrics.alerts.reset();
    for ((name, state), n) in counts {
        shared
            .metrics
            .alerts
            .with_label_values(&[name.as_str(), state])
            .set(n);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::alert::Alert;
    use crate::labels::{Labels, Sample};
    use crate::rules::file::parse_rule_file;
    use crate::rules::querier::QueryError;

    /// Answers `expr` with whatever the test set; other expressions return nothing.
    #[derive(Default)]
    struct FakeQuerier {
        answer: Mutex<Vec<(String, f64)>>,
    }

    #[async_trait]
    impl Querier for FakeQuerier {
        async fn query(&self, expr: &str, t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError> {
            if expr == "broken" {
                return Err(QueryError("boom".into()));
            }
            Ok(self
                .answer
                .lock()
                .unwrap()
                .iter()
                .filter(|_| expr == "errors > 1")
                .map(|(job, v)| Sample {
                    labels: Labels::from_pairs([("__name__", "errors"), ("job", job.as_str())]),
                    timestamp_ms: t_ms,
                    value: *v,
                })
                .collect())
        }
    }

    #[derive(Default)]
    struct Sent(Mutex<Vec<Alert>>);
    impl AlertSink for Sent {
        fn send_alerts(&self, alerts: Vec<Alert>) {
            self.0.lock().unwrap().extend(alerts);
        }
    }

    #[derive(Default)]
    struct Written(Mutex<Vec<Sample>>, Mutex<Vec<Labels>>);
    impl SampleSink for Written {
        fn append(&self, samples: &[Sample]) {
            self.0.lock().unwrap().extend_from_slice(samples);
        }
        fn mark_stale(&self, series: &[Labels], _t: TimestampMs) {
            self.1.lock().unwrap().extend_from_slice(series);
        }
    }

    const T0: i64 = 1_700_000_000_000;
    const MIN: u64 = 60;

    /// Advances paused time in 1s steps, letting store writes (blocking pool) finish.
    async fn run_for(secs: u64) {
        for _ in 0..secs {
            tokio::time::advance(Duration::from_secs(1)).await;
            for _ in 0..3 {
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_micros(300));
            }
            tokio::task::yield_now().await;
        }
    }

    fn rules(text: &str) -> RulesConfig {
        let f = parse_rule_file(
            std::path::Path::new("r.yaml"),
            text,
            ParseOptions::default(),
        )
        .unwrap();
        RulesConfig {
            files: vec![f],
            evaluation_interval: Duration::from_secs(60),
            external_url: "http://rg".into(),
            ..Default::default()
        }
    }

    struct Rig {
        manager: RuleManager,
        querier: Arc<FakeQuerier>,
        sent: Arc<Sent>,
        written: Arc<Written>,
        registry: prometheus::Registry,
    }

    fn rig(store: &Store, clock: &Clock) -> Rig {
        let querier = Arc::new(FakeQuerier::default());
        let sent = Arc::new(Sent::default());
        let written = Arc::new(Written::default());
        let registry = prometheus::Registry::new();
        let manager = RuleManager::new(
            RulesDeps {
                clock: clock.clone(),
                local: querier.clone(),
                sink: written.clone(),
                store: store.clone(),
                registry: registry.clone(),
                alerts: sent.clone(),
            },
            ManagerOptions::default(),
        )
        .unwrap();
        Rig {
            manager,
            querier,
            sent,
            written,
            registry,
        }
    }

    fn firing(sent: &Sent) -> Vec<Alert> {
        sent.0
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.ends_at_ms.is_none())
            .cloned()
            .collect()
    }

    const FOR_10M: &str = "groups:\n- name: g\n  rules:\n  - alert: HighErrors\n    expr: errors > 1\n    for: 10m\n    keep_firing_for: 5m\n    labels: {severity: critical}\n";

    #[tokio::test(start_paused = true)]
    async fn restart_inside_for_window_keeps_the_window() {
        let clock = Clock::starting_at(T0);
        let store = Store::open_in_memory().unwrap();
        let a = rig(&store, &clock);
        a.manager.apply(rules(FOR_10M)).await.unwrap();
        *a.querier.answer.lock().unwrap() = vec![("api".into(), 5.0)];
        run_for(6 * MIN).await;
        assert!(firing(&a.sent).is_empty(), "still pending");
        let active_at = store.load_alerts().await.unwrap()[0].active_at_ms;
        a.manager.shutdown().await;
        // Down for 2 minutes; a new process with an empty tsdb.
        tokio::time::advance(Duration::from_secs(2 * MIN)).await;
        let b = rig(&store, &clock);
        b.manager.apply(rules(FOR_10M)).await.unwrap();
        run_for(MIN + 1).await;
        let groups = b.manager.groups();
        let crate::rules::group::RuleState::Alerting(rule) = &groups[0].rules[0].state else {
            panic!()
        };
        assert_eq!(
            rule.active.len(),
            1,
            "held through the empty first evaluation"
        );
        *b.querier.answer.lock().unwrap() = vec![("api".into(), 5.0)];
        // The window started before the restart: firing at active_at + 10m, not restart + 10m.
        run_for(3 * MIN).await;
        let f = firing(&b.sent);
        assert_eq!(f.len(), 1, "fires 10m after the original activation");
        assert_eq!(f[0].active_at_ms, active_at);
        assert!(
            f[0].starts_at_ms - active_at >= 10 * 60_000
                && f[0].starts_at_ms - active_at < 11 * 60_000
        );
        let text = String::from_utf8(
            prometheus::TextEncoder::new()
                .encode_to_string(&b.registry.gather())
                .unwrap()
                .into_bytes(),
        )
        .unwrap();
        assert!(
            text.contains("rearguard_alerts{alertname=\"HighErrors\",state=\"firing\"} 1"),
            "{text}"
        );
        b.manager.shutdown().await;
    }

    #[test]
    fn restore_hold_covers_two_source_samples_and_two_evaluations() {
        let s = Duration::from_secs;
        assert_eq!(restore_hold(s(60), false, s(15)), s(150));
        assert_eq!(restore_hold(s(1), false, s(1)), s(4));
        assert_eq!(
            restore_hold(s(60), true, s(15)),
            s(120),
            "remote data survives"
        );
        assert_eq!(restore_hold(s(30), false, Duration::ZERO), s(60));
    }

    /// A firing alert restored after a restart, whose expression no longer
    /// returns it: firing for the hold (2 × 60 s + 2 × 15 s), but not fresh
    /// evidence for verification; an evaluation that returns it makes it fresh.
    #[tokio::test(start_paused = true)]
    async fn a_restored_alert_held_by_the_grace_is_not_fresh_evidence() {
        use crate::action::AlertState as _;
        use crate::adapters::RulesAlertState;
        let clock = Clock::starting_at(T0);
        let store = Store::open_in_memory().unwrap();
        let a = rig(&store, &clock);
        let text = FOR_10M
            .replace("for: 10m", "for: 0s")
            .replace("    keep_firing_for: 5m\n", "");
        a.manager.apply(rules(&text)).await.unwrap();
        *a.querier.answer.lock().unwrap() = vec![("api".into(), 5.0)];
        run_for(2 * MIN).await;
        let fired = firing(&a.sent);
        assert_eq!(fired.len(), 1);
        let fp = fired[0].fingerprint();
        a.manager.shutdown().await;

        // The restart: the service is healthy again, the expression returns nothing.
        let Rig {
            manager, querier, ..
        } = rig(&store, &clock);
        let cfg = RulesConfig {
            source_interval: Duration::from_secs(15),
            ..rules(&text)
        };
        manager.apply(cfg).await.unwrap();
        let manager = Arc::new(manager);
        let state = RulesAlertState {
            rules: manager.clone(),
            external_labels: BTreeMap::new(),
            lags: Default::default(),
        };
        run_for(MIN + 1).await;
        assert_eq!(state.is_firing(fp), Some(true), "held by the restore grace");
        assert_eq!(state.is_firing_fresh(fp), None, "but not fresh evidence");
        run_for(3 * MIN).await;
        assert_eq!(state.is_firing(fp), Some(false), "the 150 s hold ended");
        assert_eq!(state.is_firing_fresh(fp), Some(false));

        // Firing again, evaluated after the restart: fresh evidence.
        *querier.answer.lock().unwrap() = vec![("api".into(), 5.0)];
        run_for(MIN + 1).await;
        assert_eq!(state.is_firing_fresh(fp), Some(true));
        manager.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn keep_firing_for_survives_restart_and_resolution_is_sent() {
        let clock = Clock::starting_at(T0);
        let store = Store::open_in_memory().unwrap();
        let a = rig(&store, &clock);
        let text = FOR_10M.replace("for: 10m", "for: 0s");
        a.manager.apply(rules(&text)).await.unwrap();
        *a.querier.answer.lock().unwrap() = vec![("api".into(), 5.0)];
        run_for(2 * MIN).await;
        assert_eq!(firing(&a.sent).len(), 1);
        a.querier.answer.lock().unwrap().clear();
        run_for(2 * MIN).await;
        let stored = store.load_alerts().await.unwrap();
        assert_eq!(stored[0].state, "firing");
        let since = stored[0]
            .keep_firing_since_ms
            .expect("keep_firing_since persisted");
        a.manager.shutdown().await;
        let b = rig(&store, &clock);
        b.manager.apply(rules(&text)).await.unwrap();
        run_for(5 * MIN).await;
        // Resolved once keep_firing_for (counted from before the restart) ran out.
        let resolved: Vec<Alert> = b
            .sent
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.ends_at_ms.is_some())
            .cloned()
            .collect();
        assert!(!resolved.is_empty(), "resolution sent after restart");
        let ended = resolved[0].ends_at_ms.unwrap();
        assert!(
            ended >= since + 5 * 60_000 && ended <= since + 6 * 60_000 + 1,
            "ended {} since {}",
            ended - T0,
            since - T0
        );
        let hist = store.alert_history(20).await.unwrap();
        let states: Vec<&str> = hist.iter().map(|t| t.to_state.as_str()).collect();
        assert_eq!(states, ["firing", "keep_firing", "resolved"]);
        b.manager.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn writes_alerts_series_counts_failures_and_keeps_state_on_reload() {
        let clock = Clock::starting_at(T0);
        let store = Store::open_in_memory().unwrap();
        let a = rig(&store, &clock);
        let text = "groups:\n- name: g\n  interval: 30s\n  rules:\n  - record: bad\n    expr: broken\n  - alert: HighErrors\n    expr: errors > 1\n    for: 1m\n";
        a.manager.apply(rules(text)).await.unwrap();
        *a.querier.answer.lock().unwrap() = vec![("api".into(), 5.0)];
        run_for(MIN).await;
        {
            let w = a.written.0.lock().unwrap();
            assert!(w.iter().any(|s| s.labels.metric_name() == Some("ALERTS")
                && s.labels.get("alertstate") == Some("pending")));
            assert!(w
                .iter()
                .any(|s| s.labels.metric_name() == Some("ALERTS_FOR_STATE")));
        }
        let g = a.manager.groups();
        assert_eq!(
            g[0].rules[0].status.health,
            crate::rules::group::Health::Err
        );
        assert_eq!(g[0].rules[0].status.last_error.as_deref(), Some("boom"));
        // Reload with an extra rule: the pending alert keeps its activation time.
        let active_before = store.load_alerts().await.unwrap()[0].active_at_ms;
        let text2 = format!("{text}  - record: extra\n    expr: vector(1)\n");
        a.manager.apply(rules(&text2)).await.unwrap();
        run_for(MIN).await;
        let after = store.load_alerts().await.unwrap();
        assert_eq!(after[0].active_at_ms, active_before);
        assert_eq!(after[0].state, "firing");
        let metrics = prometheus::TextEncoder::new()
            .encode_to_string(&a.registry.gather())
            .unwrap();
        assert!(
            metrics.contains("rearguard_rule_evaluation_failures_total{rule_group=\"r.yaml;g\"}"),
            "{metrics}"
        );
        // Series stop → stale markers.
        a.querier.answer.lock().unwrap().clear();
        run_for(MIN).await;
        assert!(a
            .written
            .1
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.metric_name() == Some("ALERTS")));
        a.manager.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn alert_history_is_the_alerts_own_series_over_its_window() {
        let clock = Clock::starting_at(T0);
        let store = Store::open_in_memory().unwrap();
        let a = rig(&store, &clock);
        a.manager.apply(rules(FOR_10M)).await.unwrap();
        // Two series cross the threshold; the history of "api" holds only its own.
        *a.querier.answer.lock().unwrap() = vec![("api".into(), 5.0), ("web".into(), 9.0)];
        run_for(12 * MIN).await;
        let api = firing(&a.sent)
            .into_iter()
            .find(|x| x.labels.get("job") == Some("api"))
            .expect("api fires");
        let now = clock.now_ms();
        let found = a
            .manager
            .find_alert(api.labels.fingerprint(), &BTreeMap::new())
            .unwrap();
        assert_eq!(found.rule.name, "HighErrors");
        let h = a
            .manager
            .alert_history(api.labels.fingerprint(), &BTreeMap::new(), now, 5)
            .await
            .unwrap();
        assert_eq!(h.expr, "errors > 1");
        assert_eq!(h.from_ms, found.alert.active_at_ms - 60_000);
        // At most 5 points, spread over the window, each a value of "api".
        assert!((2..=5).contains(&h.points.len()), "{h:?}");
        assert!(h.points.iter().all(|(_, v)| *v == 5.0), "{h:?}");
        assert!(h.step_ms >= (now - h.from_ms) / 5, "{h:?}");
        // An unknown fingerprint has no history.
        assert!(a
            .manager
            .alert_history(42, &BTreeMap::new(), now, 5)
            .await
            .is_none());
        a.manager.shutdown().await;
    }
}
