//! The alert state machine of one alerting rule, as Prometheus runs it
//! (`rules/alerting.go`): inactive → pending → firing → (keep_firing_for) →
//! resolved, kept and re-sent for 15 minutes.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::alert::{Alert, ALERTNAME};
use crate::clock::TimestampMs;
use crate::labels::{Labels, Sample, METRIC_NAME};
use crate::store::alerts::{AlertTransition, StoredAlert, TransitionState};

use crate::template::{expand_alert_template, AlertTemplateData, Funcs};

/// How long a resolved alert is kept (and re-sent).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

pub const ALERTS_METRIC: &str = "ALERTS";
pub const ALERTS_FOR_STATE_METRIC: &str = "ALERTS_FOR_STATE";
pub const ALERTSTATE: &str = "alertstate";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl From<AlertState> for TransitionState {
    fn from(s: AlertState) -> Self {
        match s {
            AlertState::Inactive => TransitionState::Inactive,
            AlertState::Pending => TransitionState::Pending,
            AlertState::Firing => TransitionState::Firing,
        }
    }
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inactive" => Some(AlertState::Inactive),
            "pending" => Some(AlertState::Pending),
            "firing" => Some(AlertState::Firing),
            _ => None,
        }
    }
}

/// One alert of a rule (one label set).
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveAlert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    pub active_at_ms: TimestampMs,
    pub fired_at_ms: Option<TimestampMs>,
    pub resolved_at_ms: Option<TimestampMs>,
    pub keep_firing_since_ms: Option<TimestampMs>,
    pub last_sent_at_ms: Option<TimestampMs>,
    pub valid_until_ms: TimestampMs,
    /// Restored from the store and not yet seen by an evaluation: misses
    /// inside the restore grace window do not count (see docs/rules.md).
    pub restored: bool,
}

impl ActiveAlert {
    /// What is persisted: a change in any of these is written to the store.
    fn persisted(
        &self,
    ) -> (
        AlertState,
        TimestampMs,
        Option<TimestampMs>,
        Option<TimestampMs>,
        Option<TimestampMs>,
    ) {
        (
            self.state,
            self.active_at_ms,
            self.fired_at_ms,
            self.resolved_at_ms,
            self.keep_firing_since_ms,
        )
    }

    fn needs_sending(&self, ts: TimestampMs, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        match (self.resolved_at_ms, self.last_sent_at_ms) {
            (Some(r), Some(s)) if r > s => return true,
            (_, None) => return true,
            _ => {}
        }
        self.last_sent_at_ms
            .is_some_and(|s| s + resend_delay_ms < ts)
    }
}

/// The definition of an alerting rule.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertingRuleDef {
    pub name: String,
    pub expr: String,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// What the templates may see besides the alert itself.
pub struct EvalEnv<'a> {
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub funcs: &'a Funcs<'a>,
    /// Restored alerts are held through misses until this time.
    pub restore_grace_until_ms: TimestampMs,
}

/// The result of one evaluation of an alerting rule.
#[derive(Debug, Default)]
pub struct AlertEvalOutput {
    /// `ALERTS` and `ALERTS_FOR_STATE` samples (at the query time).
    pub series: Vec<Sample>,
    pub upserts: Vec<StoredAlert>,
    pub deletes: Vec<(String, String)>,
    pub transitions: Vec<AlertTransition>,
}

/// A failed evaluation; `deletes` lists alerts the rule dropped (over its limit).
#[derive(Debug)]
pub struct AlertEvalError {
    pub message: String,
    pub deletes: Vec<(String, String)>,
}

/// An alerting rule with its active alerts.
#[derive(Clone, Debug)]
pub struct AlertingRule {
    pub def: AlertingRuleDef,
    /// Identifies the rule in the store (file, group, name, ordinal).
    pub key: String,
    pub active: BTreeMap<u64, ActiveAlert>,
}

fn labels_map(l: &Labels) -> BTreeMap<String, String> {
    l.to_map()
}

impl AlertingRule {
    pub fn new(def: AlertingRuleDef, key: String) -> Self {
        Self {
            def,
            key,
            active: BTreeMap::new(),
        }
    }

    fn stored(&self, a: &ActiveAlert, now: TimestampMs) -> StoredAlert {
        StoredAlert {
            rule_key: self.key.clone(),
            fingerprint: a.labels.fingerprint_hex(),
            labels: labels_map(&a.labels),
            state: a.state.as_str().into(),
            active_at_ms: a.active_at_ms,
            fired_at_ms: a.fired_at_ms,
            resolved_at_ms: a.resolved_at_ms,
            keep_firing_since_ms: a.keep_firing_since_ms,
            last_sent_at_ms: a.last_sent_at_ms,
            value: Some(a.value),
            updated_at_ms: now,
        }
    }

    /// Restores persisted alerts of this rule. Annotations are not stored:
    /// they are expanded again from the stored labels (without the rule's own
    /// labels, which is what the series had) and the last value, so alerts
    /// re-sent before the next evaluation still carry them.
    pub fn restore(
        &mut self,
        stored: &[StoredAlert],
        external_labels: &BTreeMap<String, String>,
        external_url: &str,
    ) {
        let tname = format!("__alert_{}", self.def.name);
        let funcs = Funcs {
            query: None,
            external_url: external_url.to_string(),
        };
        for s in stored {
            let Some(state) = AlertState::parse(&s.state) else {
                continue;
            };
            let labels = Labels::from_map(&s.labels);
            let mut series = labels.builder().remove(ALERTNAME);
            for k in self.def.labels.keys() {
                series = series.remove(k);
            }
            let series = series.build();
            let value = s.value.unwrap_or(f64::NAN);
            let data = AlertTemplateData {
                labels: &series,
                value,
                external_labels,
                external_url,
            };
            let annotations = self
                .def
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), expand_alert_template(&tname, v, &data, &funcs)))
                .collect();
            self.active.insert(
                labels.fingerprint(),
                ActiveAlert {
                    labels,
                    annotations,
                    state,
                    value,
                    active_at_ms: s.active_at_ms,
                    fired_at_ms: s.fired_at_ms,
                    resolved_at_ms: s.resolved_at_ms,
                    keep_firing_since_ms: s.keep_firing_since_ms,
                    last_sent_at_ms: None,
                    valid_until_ms: 0,
                    restored: true,
                },
            );
        }
    }

    /// Evaluates the rule with the query result `samples` at tick `ts`
    /// (`qt` is the query time, `ts - query_offset`). `limit` 0 is no limit.
    pub fn eval(
        &mut self,
        samples: Vec<Sample>,
        ts: TimestampMs,
        qt: TimestampMs,
        limit: usize,
        env: &EvalEnv<'_>,
    ) -> Result<AlertEvalOutput, AlertEvalError> {
        let before: BTreeMap<u64, _> = self
            .active
            .iter()
            .map(|(k, a)| (*k, a.persisted()))
            .collect();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut fresh: Vec<(u64, ActiveAlert)> = Vec::new();
        let tname = format!("__alert_{}", self.def.name);
        for s in samples {
            let metric = s.labels.without_metric_name();
            let data = AlertTemplateData {
                labels: &metric,
                value: s.value,
                external_labels: env.external_labels,
                external_url: env.external_url,
            };
            let mut b = metric.builder();
            for (k, v) in &self.def.labels {
                b.insert(k, expand_alert_template(&tname, v, &data, env.funcs));
            }
            b.insert(ALERTNAME, &self.def.name);
            let labels = b.build();
            let annotations: BTreeMap<String, String> = self
                .def
                .annotations
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        expand_alert_template(&tname, v, &data, env.funcs),
                    )
                })
                .collect();
            let fp = labels.fingerprint();
            if !seen.insert(fp) {
                return Err(AlertEvalError {
                    message:
                        "vector contains metrics with the same labelset after applying alert labels"
                            .into(),
                    deletes: Vec::new(),
                });
            }
            fresh.push((
                fp,
                ActiveAlert {
                    labels,
                    annotations,
                    state: AlertState::Pending,
                    value: s.value,
                    active_at_ms: ts,
                    fired_at_ms: None,
                    resolved_at_ms: None,
                    keep_firing_since_ms: None,
                    last_sent_at_ms: None,
                    valid_until_ms: 0,
                    restored: false,
                },
            ));
        }
        for (fp, a) in fresh {
            match self.active.get_mut(&fp) {
                Some(existing) if existing.state != AlertState::Inactive => {
                    existing.value = a.value;
                    existing.annotations = a.annotations;
                    existing.keep_firing_since_ms = None;
                    existing.restored = false;
                }
                _ => {
                    self.active.insert(fp, a);
                }
            }
        }

        let hold_ms = self.def.for_.as_millis() as i64;
        let keep_ms = self.def.keep_firing_for.as_millis() as i64;
        let mut out = AlertEvalOutput::default();
        let mut remove = Vec::new();
        let mut num_active = 0usize;
        for (fp, a) in self.active.iter_mut() {
            if !seen.contains(fp) {
                // Restored alerts are held through misses while the sources refill the tsdb.
                if a.restored && ts < env.restore_grace_until_ms && a.state != AlertState::Inactive
                {
                    num_active += 1;
                    push_series(&mut out.series, a, qt);
                    continue;
                }
                // The hold is over: an ordinary alert from now on (a
                // `keep_firing_for` window is the rule's own evidence).
                a.restored = false;
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_ms > 0 {
                    let since = *a.keep_firing_since_ms.get_or_insert(ts);
                    if ts - since < keep_ms {
                        keep_firing = true;
                    }
                }
                if a.state == AlertState::Pending
                    || a.resolved_at_ms
                        .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                {
                    remove.push(*fp);
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at_ms = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                num_active += 1;
            }
            if a.state == AlertState::Pending && ts - a.active_at_ms >= hold_ms {
                a.state = AlertState::Firing;
                a.fired_at_ms = Some(ts);
            }
            if a.state != AlertState::Inactive {
                push_series(&mut out.series, a, qt);
            }
        }
        if limit > 0 && num_active > limit {
            let deletes = std::mem::take(&mut self.active)
                .into_values()
                .map(|a| (self.key.clone(), a.labels.fingerprint_hex()))
                .collect();
            return Err(AlertEvalError {
                message: format!("exceeded limit of {limit} with {num_active} alerts"),
                deletes,
            });
        }
        for fp in remove {
            self.active.remove(&fp);
        }

        // What changed, for the store (written before anything is sent).
        for (fp, a) in &self.active {
            let now = a.persisted();
            let prev = before.get(fp);
            if prev == Some(&now) {
                continue;
            }
            out.upserts.push(self.stored(a, ts));
            let from = prev.map(|p| p.0).unwrap_or(AlertState::Inactive);
            let keep_changed = prev.map(|p| p.4) != Some(now.4);
            if prev.is_none()
                || from != a.state
                || (keep_changed && a.keep_firing_since_ms.is_some())
            {
                let to = match a.state {
                    AlertState::Firing if a.keep_firing_since_ms.is_some() => {
                        TransitionState::KeepFiring
                    }
                    AlertState::Inactive => TransitionState::Resolved,
                    state => state.into(),
                };
                out.transitions.push(AlertTransition {
                    rule_key: self.key.clone(),
                    fingerprint: a.labels.fingerprint_hex(),
                    labels: labels_map(&a.labels),
                    from_state: from.into(),
                    to_state: to,
                    at_ms: ts,
                    value: Some(a.value),
                });
            }
        }
        for (fp, prev) in &before {
            if !self.active.contains_key(fp) {
                let fpx = format!("{fp:016x}");
                out.deletes.push((self.key.clone(), fpx.clone()));
                if prev.0 == AlertState::Pending {
                    out.transitions.push(AlertTransition {
                        rule_key: self.key.clone(),
                        fingerprint: fpx,
                        labels: BTreeMap::new(),
                        from_state: TransitionState::Pending,
                        to_state: TransitionState::Inactive,
                        at_ms: ts,
                        value: None,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The alerts to send after this evaluation (firing ones, and resolved
    /// ones again until their retention ends), marking them sent.
    pub fn alerts_to_send(
        &mut self,
        ts: TimestampMs,
        resend_delay_ms: i64,
        interval_ms: i64,
        generator_url: &str,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            if !a.needs_sending(ts, resend_delay_ms) {
                continue;
            }
            a.last_sent_at_ms = Some(ts);
            a.valid_until_ms = ts + 4 * resend_delay_ms.max(interval_ms);
            out.push(Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                active_at_ms: a.active_at_ms,
                starts_at_ms: a.fired_at_ms.unwrap_or(a.active_at_ms),
                ends_at_ms: a.resolved_at_ms,
                value: a.value,
                generator_url: generator_url.to_string(),
            });
        }
        out
    }

    /// Alerts pending or firing (what `ALERTS` and the API show).
    pub fn firing_and_pending(&self) -> impl Iterator<Item = &ActiveAlert> {
        self.active
            .values()
            .filter(|a| a.state != AlertState::Inactive)
    }
}

fn push_series(series: &mut Vec<Sample>, a: &ActiveAlert, qt: TimestampMs) {
    let alerts = a
        .labels
        .builder()
        .set(METRIC_NAME, ALERTS_METRIC)
        .set(ALERTSTATE, a.state.as_str())
        .build();
    series.push(Sample {
        labels: alerts,
        timestamp_ms: qt,
        value: 1.0,
    });
    series.push(Sample {
        labels: a
            .labels
            .builder()
            .set(METRIC_NAME, ALERTS_FOR_STATE_METRIC)
            .build(),
        timestamp_ms: qt,
        value: a.active_at_ms as f64 / 1000.0,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn rule(for_m: u64, keep_m: u64) -> AlertingRule {
        AlertingRule::new(
            AlertingRuleDef {
                name: "HighErrors".into(),
                expr: "x > 1".into(),
                for_: Duration::from_secs(for_m * 60),
                keep_firing_for: Duration::from_secs(keep_m * 60),
                labels: BTreeMap::from([("severity".to_string(), "critical".to_string())]),
                annotations: BTreeMap::from([(
                    "summary".to_string(),
                    "{{ $labels.job }} at {{ $value }}".to_string(),
                )]),
            },
            "f\u{1f}g\u{1f}HighErrors\u{1f}0".into(),
        )
    }

    fn sample(v: f64) -> Vec<Sample> {
        vec![Sample {
            labels: Labels::from_pairs([("__name__", "x"), ("job", "api")]),
            timestamp_ms: 0,
            value: v,
        }]
    }

    fn env<'a>(ext: &'a BTreeMap<String, String>, funcs: &'a Funcs<'a>) -> EvalEnv<'a> {
        EvalEnv {
            external_labels: ext,
            external_url: "",
            funcs,
            restore_grace_until_ms: 0,
        }
    }

    fn state(r: &AlertingRule) -> Option<AlertState> {
        r.active.values().next().map(|a| a.state)
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let ext = BTreeMap::new();
        let funcs = Funcs::default();
        let e = env(&ext, &funcs);
        let mut r = rule(5, 0);
        let out = r.eval(sample(3.0), 0, 0, 0, &e).unwrap();
        assert_eq!(state(&r), Some(AlertState::Pending));
        assert_eq!(out.transitions[0].to_state, TransitionState::Pending);
        assert_eq!(out.series.len(), 2);
        assert_eq!(out.series[0].labels.get("alertstate"), Some("pending"));
        assert_eq!(out.series[1].labels.metric_name(), Some("ALERTS_FOR_STATE"));
        assert!(
            r.alerts_to_send(0, MIN, MIN, "").is_empty(),
            "pending alerts are never sent"
        );
        r.eval(sample(3.0), 4 * MIN, 4 * MIN, 0, &e).unwrap();
        assert_eq!(state(&r), Some(AlertState::Pending));
        let out = r.eval(sample(4.0), 5 * MIN, 5 * MIN, 0, &e).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing));
        assert_eq!(out.transitions[0].to_state, TransitionState::Firing);
        assert_eq!(out.transitions[0].value, Some(4.0));
        let sent = r.alerts_to_send(5 * MIN, MIN, MIN, "");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].starts_at_ms, 5 * MIN);
        assert_eq!(sent[0].active_at_ms, 0);
        assert_eq!(sent[0].annotations["summary"], "api at 4");
        assert_eq!(sent[0].labels.get("severity"), Some("critical"));
        assert_eq!(sent[0].labels.get("alertname"), Some("HighErrors"));
        // Not re-sent before the resend delay.
        r.eval(sample(4.0), 5 * MIN + 30_000, 0, 0, &e).unwrap();
        assert!(r.alerts_to_send(5 * MIN + 30_000, MIN, MIN, "").is_empty());
        // Resolved: sent at once, kept 15 minutes.
        let out = r.eval(vec![], 7 * MIN, 7 * MIN, 0, &e).unwrap();
        assert_eq!(out.transitions[0].to_state, TransitionState::Resolved);
        assert!(out.series.is_empty());
        let sent = r.alerts_to_send(7 * MIN, MIN, MIN, "");
        assert_eq!(sent[0].ends_at_ms, Some(7 * MIN));
        r.eval(vec![], 22 * MIN, 22 * MIN, 0, &e).unwrap();
        assert_eq!(r.active.len(), 1, "kept for 15 minutes");
        let out = r.eval(vec![], 22 * MIN + 1, 0, 0, &e).unwrap();
        assert!(r.active.is_empty());
        assert_eq!(out.deletes.len(), 1);
    }

    #[test]
    fn one_miss_restarts_pending() {
        let ext = BTreeMap::new();
        let funcs = Funcs::default();
        let e = env(&ext, &funcs);
        let mut r = rule(5, 0);
        r.eval(sample(3.0), 0, 0, 0, &e).unwrap();
        let out = r.eval(vec![], MIN, MIN, 0, &e).unwrap();
        assert!(r.active.is_empty());
        assert_eq!(out.deletes.len(), 1);
        r.eval(sample(3.0), 2 * MIN, 0, 0, &e).unwrap();
        assert_eq!(r.active.values().next().unwrap().active_at_ms, 2 * MIN);
    }

    #[test]
    fn for_zero_fires_at_once_and_keep_firing_for_holds() {
        let ext = BTreeMap::new();
        let funcs = Funcs::default();
        let e = env(&ext, &funcs);
        let mut r = rule(0, 3);
        r.eval(sample(3.0), 0, 0, 0, &e).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing));
        let out = r.eval(vec![], MIN, MIN, 0, &e).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing));
        assert_eq!(out.transitions[0].to_state, TransitionState::KeepFiring);
        r.eval(vec![], 3 * MIN, 0, 0, &e).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing), "2m < 3m");
        r.eval(vec![], 4 * MIN, 0, 0, &e).unwrap();
        assert_eq!(state(&r), Some(AlertState::Inactive));
        // Returning resets keep_firing_since.
        let mut r = rule(0, 3);
        r.eval(sample(3.0), 0, 0, 0, &e).unwrap();
        r.eval(vec![], MIN, 0, 0, &e).unwrap();
        r.eval(sample(3.0), 2 * MIN, 0, 0, &e).unwrap();
        assert_eq!(r.active.values().next().unwrap().keep_firing_since_ms, None);
    }

    #[test]
    fn limit_and_duplicates() {
        let ext = BTreeMap::new();
        let funcs = Funcs::default();
        let e = env(&ext, &funcs);
        let mut r = rule(0, 0);
        let two = vec![
            Sample {
                labels: Labels::from_pairs([("job", "a")]),
                timestamp_ms: 0,
                value: 1.0,
            },
            Sample {
                labels: Labels::from_pairs([("job", "b")]),
                timestamp_ms: 0,
                value: 1.0,
            },
        ];
        let err = r.eval(two.clone(), 0, 0, 1, &e).unwrap_err();
        assert_eq!(err.message, "exceeded limit of 1 with 2 alerts");
        assert_eq!(err.deletes.len(), 2);
        assert!(r.active.is_empty());
        let dup = vec![
            Sample {
                labels: Labels::from_pairs([("__name__", "m1"), ("job", "a")]),
                timestamp_ms: 0,
                value: 1.0,
            },
            Sample {
                labels: Labels::from_pairs([("__name__", "m2"), ("job", "a")]),
                timestamp_ms: 0,
                value: 1.0,
            },
        ];
        assert!(r
            .eval(dup, 0, 0, 0, &e)
            .unwrap_err()
            .message
            .contains("same labelset"));
    }

    #[test]
    fn restored_pending_keeps_window_and_is_held_in_grace() {
        let ext = BTreeMap::new();
        let funcs = Funcs::default();
        let mut r = rule(10, 0);
        r.eval(sample(3.0), 0, 0, 0, &env(&ext, &funcs)).unwrap();
        let out = r.eval(sample(3.0), MIN, 0, 0, &env(&ext, &funcs)).unwrap();
        assert!(out.upserts.is_empty(), "nothing persisted changed");
        let stored: Vec<StoredAlert> = r.active.values().map(|a| r.stored(a, MIN)).collect();
        // Restart at 8m: the tsdb is empty at first.
        let mut r2 = rule(10, 0);
        r2.restore(&stored, &ext, "");
        assert_eq!(
            r2.active.values().next().unwrap().annotations["summary"],
            "api at 3",
            "annotations re-expanded"
        );
        let e = EvalEnv {
            restore_grace_until_ms: 9 * MIN,
            ..env(&ext, &funcs)
        };
        let out = r2.eval(vec![], 8 * MIN, 8 * MIN, 0, &e).unwrap();
        assert_eq!(
            state(&r2),
            Some(AlertState::Pending),
            "held through a miss in the grace window"
        );
        assert_eq!(out.series.len(), 2);
        r2.eval(sample(3.0), 10 * MIN, 0, 0, &e).unwrap();
        assert_eq!(
            state(&r2),
            Some(AlertState::Firing),
            "the window started at 0, not at the restart"
        );
    }
}
