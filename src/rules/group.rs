//! One rule group: its rules evaluated in order at a tick, recording outputs
//! and `ALERTS` written so later rules see them, stale markers for series a
//! rule stopped producing.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::alert::Alert;
use crate::clock::TimestampMs;
use crate::labels::{Labels, Sample, METRIC_NAME};
use crate::store::alerts::{AlertChanges, AlertTransition, StoredAlert};
use crate::tsdb::SampleSink;

use super::alerting::{AlertingRule, AlertingRuleDef, EvalEnv};
use super::file::{Rule, RuleGroup, RuleKind};
use super::querier::Querier;
use crate::template::Funcs;

/// A `query` template function result.
type QueryRows = Result<Vec<(BTreeMap<String, String>, f64)>, String>;

/// Prometheus's group key: `file;name`.
pub fn group_key(file: &std::path::Path, name: &str) -> String {
    format!("{};{}", file.display(), name)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RuleStatus {
    pub health: Health,
    pub last_error: Option<String>,
    pub last_eval_ms: Option<TimestampMs>,
    pub eval_duration: Duration,
}

impl Default for RuleStatus {
    fn default() -> Self {
        Self {
            health: Health::Unknown,
            last_error: None,
            last_eval_ms: None,
            eval_duration: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug)]
pub enum RuleState {
    Recording { record: String },
    Alerting(AlertingRule),
}

/// A rule with its runtime state.
#[derive(Clone, Debug)]
pub struct GroupRule {
    pub def: Rule,
    /// Group labels merged under the rule's own labels.
    pub labels: BTreeMap<String, String>,
    pub state: RuleState,
    pub status: RuleStatus,
    /// Series written at the previous evaluation (for stale markers).
    prev_series: HashSet<Labels>,
}

/// What the group needs from outside at each evaluation.
pub struct GroupEnv<'a> {
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub restore_grace_until_ms: TimestampMs,
}

/// The result of one group evaluation.
#[derive(Debug, Default)]
pub struct GroupEvalOutput {
    pub changes: AlertChanges,
    /// (rule name, error) of every rule that failed.
    pub failures: Vec<(String, String)>,
    pub samples_written: usize,
}

#[derive(Clone, Debug)]
pub struct Group {
    pub def: RuleGroup,
    pub key: String,
    pub interval: Duration,
    pub rules: Vec<GroupRule>,
    pub last_eval_ms: Option<TimestampMs>,
    pub eval_duration: Duration,
}

impl Group {
    pub fn new(def: RuleGroup, default_interval: Duration) -> Self {
        let key = group_key(&def.file, &def.name);
        let mut ordinals: BTreeMap<String, usize> = BTreeMap::new();
        let rules = def
            .rules
            .iter()
            .map(|r| {
                let mut labels = def.labels.clone();
                labels.extend(r.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                let state = match &r.kind {
                    RuleKind::Recording { record } => RuleState::Recording {
                        record: record.clone(),
                    },
                    RuleKind::Alerting {
                        alert,
                        for_,
                        keep_firing_for,
                        annotations,
                    } => {
                        let n = ordinals.entry(alert.clone()).or_default();
                        let rule_key = format!(
                            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                            def.file.display(),
                            def.name,
                            alert,
                            n
                        );
                        *n += 1;
                        RuleState::Alerting(AlertingRule::new(
                            AlertingRuleDef {
                                name: alert.clone(),
                                expr: r.expr.clone(),
                                for_: *for_,
                                keep_firing_for: *keep_firing_for,
                                labels: labels.clone(),
                                annotations: annotations.clone(),
                            },
                            rule_key,
                        ))
                    }
                };
                GroupRule {
                    def: r.clone(),
                    labels,
                    state,
                    status: RuleStatus::default(),
                    prev_series: HashSet::new(),
                }
            })
            .collect();
        Self {
            interval: def.interval.unwrap_or(default_interval),
            key,
            def,
            rules,
            last_eval_ms: None,
            eval_duration: Duration::ZERO,
        }
    }

    pub fn query_offset(&self) -> Duration {
        self.def.query_offset.unwrap_or(Duration::ZERO)
    }

    /// Takes the alert states of `old` for rules that still exist (same alert
    /// name and position among rules of that name), as a reload does.
    pub fn copy_state_from(&mut self, old: &Group) {
        for r in &mut self.rules {
            let RuleState::Alerting(new) = &mut r.state else {
                continue;
            };
            for o in &old.rules {
                if let RuleState::Alerting(prev) = &o.state {
                    if prev.key == new.key {
                        new.active = prev.active.clone();
                        r.status = o.status.clone();
                        r.prev_series = o.prev_series.clone();
                    }
                }
            }
        }
        self.last_eval_ms = old.last_eval_ms;
    }

    /// Alerting rules, for restore and the API.
    pub fn alerting_rules_mut(&mut self) -> impl Iterator<Item = &mut AlertingRule> {
        self.rules.iter_mut().filter_map(|r| match &mut r.state {
            RuleState::Alerting(a) => Some(a),
            _ => None,
        })
    }

    /// Evaluates every rule in order at tick `ts`.
    pub async fn eval(
        &mut self,
        ts: TimestampMs,
        querier: &dyn Querier,
        sink: &dyn SampleSink,
        env: &GroupEnv<'_>,
    ) -> GroupEvalOutput {
        let started = Instant::now();
        let qt = ts - self.query_offset().as_millis() as i64;
        let limit = self.def.limit;
        let mut out = GroupEvalOutput {
            changes: AlertChanges {
                group_key: self.key.clone(),
                eval_ms: ts,
                ..Default::default()
            },
            ..Default::default()
        };
        for rule in &mut self.rules {
            let rule_started = Instant::now();
            let result = eval_rule(rule, ts, qt, limit, querier, env).await;
            rule.status.eval_duration = rule_started.elapsed();
            rule.status.last_eval_ms = Some(ts);
            match result {
                Ok(o) => {
                    rule.status.health = Health::Ok;
                    rule.status.last_error = None;
                    let now: HashSet<Labels> = o.series.iter().map(|s| s.labels.clone()).collect();
                    let stale: Vec<Labels> = rule.prev_series.difference(&now).cloned().collect();
                    sink.append(&o.series);
                    if !stale.is_empty() {
                        sink.mark_stale(&stale, qt);
                    }
                    out.samples_written += o.series.len();
                    rule.prev_series = now;
                    out.changes.upserts.extend(o.upserts);
                    out.changes.deletes.extend(o.deletes);
                    out.changes.transitions.extend(o.transitions);
                }
                Err(e) => {
                    rule.status.health = Health::Err;
                    rule.status.last_error = Some(e.message.clone());
                    out.failures.push((rule.def.name().to_string(), e.message));
                    out.changes.deletes.extend(e.deletes);
                }
            }
        }
        self.last_eval_ms = Some(ts);
        self.eval_duration = started.elapsed();
        out
    }

    /// Alerts to send after an evaluation at `ts`.
    pub fn alerts_to_send(
        &mut self,
        ts: TimestampMs,
        resend_delay: Duration,
        external_url: &str,
    ) -> Vec<Alert> {
        let interval_ms = self.interval.as_millis() as i64;
        let mut out = Vec::new();
        for r in &mut self.rules {
            if let RuleState::Alerting(a) = &mut r.state {
                let url = generator_url(external_url, &a.def.expr);
                out.extend(a.alerts_to_send(
                    ts,
                    resend_delay.as_millis() as i64,
                    interval_ms,
                    &url,
                ));
            }
        }
        out
    }
}

/// Prometheus's generator URL: `<external_url>/graph?g0.expr=<expr>&g0.tab=1`.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    let q: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    format!(
        "{}/graph?g0.expr={q}&g0.tab=1",
        external_url.trim_end_matches('/')
    )
}

/// A rule's failure; a rule over its limit also forgets its alerts (`deletes`).
struct RuleError {
    message: String,
    deletes: Vec<(String, String)>,
}

impl From<String> for RuleError {
    fn from(message: String) -> Self {
        Self {
            message,
            deletes: Vec::new(),
        }
    }
}

#[derive(Default)]
struct RuleOutput {
    series: Vec<Sample>,
    upserts: Vec<StoredAlert>,
    deletes: Vec<(String, String)>,
    transitions: Vec<AlertTransition>,
}

async fn eval_rule(
    rule: &mut GroupRule,
    ts: TimestampMs,
    qt: TimestampMs,
    limit: usize,
    querier: &dyn Querier,
    env: &GroupEnv<'_>,
) -> Result<RuleOutput, RuleError> {
    let samples = querier
        .query(&rule.def.expr, qt)
        .await
        .map_err(|e| RuleError::from(e.0))?;
    match &mut rule.state {
        RuleState::Recording { record } => {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(samples.len());
            for s in samples {
                let mut b = s.labels.builder().set(METRIC_NAME, record.as_str());
                for (k, v) in &rule.labels {
                    b.insert(k, v);
                }
                let labels = b.build();
                if !seen.insert(labels.clone()) {
                    return Err(
                        "vector contains metrics with the same labelset after applying rule labels"
                            .to_string()
                            .into(),
                    );
                }
                out.push(Sample {
                    labels,
                    timestamp_ms: qt,
                    value: s.value,
                });
            }
            if limit > 0 && out.len() > limit {
                return Err(format!("exceeded limit of {limit} with {} series", out.len()).into());
            }
            Ok(RuleOutput {
                series: out,
                ..Default::default()
            })
        }
        RuleState::Alerting(a) => {
            let q = |expr: &str| querier.query_sync(expr, qt);
            let query_fn = move |expr: &str| -> QueryRows {
                match q(expr) {
                    Some(Ok(v)) => Ok(v
                        .into_iter()
                        .map(|s| (s.labels.to_map(), s.value))
                        .collect()),
                    Some(Err(e)) => Err(e.0),
                    None => Err("the query function is not available for this query source".into()),
                }
            };
            let funcs = Funcs {
                query: Some(&query_fn),
                external_url: env.external_url.to_string(),
            };
            let eval_env = EvalEnv {
                external_labels: env.external_labels,
                external_url: env.external_url,
                funcs: &funcs,
                restore_grace_until_ms: env.restore_grace_until_ms,
            };
            match a.eval(samples, ts, qt, limit, &eval_env) {
                Ok(o) => Ok(RuleOutput {
                    series: o.series,
                    upserts: o.upserts,
                    deletes: o.deletes,
                    transitions: o.transitions,
                }),
                Err(e) => Err(RuleError {
                    message: e.message,
                    deletes: e.deletes,
                }),
            }
        }
    }
}
