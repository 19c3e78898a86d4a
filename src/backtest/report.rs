//! The backtest's output: a timeline for people with a summary at the end,
//! or one JSON object per line for tools.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::replay::{ActionDecision, AlertEvent, DecisionKind, Event, ReplayResult};
use crate::clock::{to_datetime, TimestampMs};
use crate::gcp::monitoring::rfc3339;

fn time(ms: TimestampMs) -> String {
    rfc3339(to_datetime(ms))
}

fn alert_json(a: &AlertEvent) -> Value {
    json!({
        "time": time(a.time_ms),
        "kind": "alert",
        "alertname": a.alertname,
        "state": a.state,
        "labels": a.labels,
        "value": a.value,
    })
}

fn action_json(d: &ActionDecision) -> Value {
    json!({
        "time": time(d.time_ms),
        "kind": "action",
        "action": d.action,
        "decision": d.decision.as_str(),
        "reason": d.reason,
        "detail": d.detail,
        "service": d.service,
        "from_revision": d.from_revision,
        "to_revision": d.to_revision,
        "alertname": d.alertname,
    })
}

/// The lines of `--format json`: rules not replayed, then every event in
/// time order, then one summary object.
pub fn json_lines(r: &ReplayResult, from_ms: TimestampMs, to_ms: TimestampMs) -> Vec<String> {
    let mut out = Vec::new();
    for n in &r.not_replayable {
        out.push(
            json!({"kind": "not_replayable", "group": n.group, "rule": n.rule, "reason": n.reason})
                .to_string(),
        );
    }
    for e in &r.events {
        let v = match e {
            Event::Alert(a) => alert_json(a),
            Event::Action(d) => action_json(d),
        };
        out.push(v.to_string());
    }
    let deploys: Vec<Value> = r
        .deploys
        .iter()
        .map(|d| {
            json!({
                "time": time(d.time_ms),
                "service": d.service,
                "revision": d.revision,
                "method": d.method,
                "actor": d.actor,
                "would": deploy_verdict(&d.decisions),
            })
        })
        .collect();
    out.push(
        json!({
            "kind": "summary",
            "from": time(from_ms),
            "to": time(to_ms),
            "evaluations": r.evaluations,
            "decisions": decision_counts(r),
            "deploys": deploys,
            "complete": true,
        })
        .to_string(),
    );
    out
}

/// Decisions by kind (`would_roll_back`, `skipped`, ...).
pub fn decision_counts(r: &ReplayResult) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for d in r.decisions() {
        *m.entry(d.decision.as_str()).or_insert(0) += 1;
    }
    m
}

/// What rearguard would have done while a deploy served, in a few words.
pub fn deploy_verdict(decisions: &[ActionDecision]) -> String {
    if let Some(d) = decisions.iter().find(|d| d.decision.acts()) {
        return format!(
            "{} to {} at {} ({})",
            d.decision.as_str().replace('_', " "),
            d.to_revision.as_deref().unwrap_or("-"),
            time(d.time_ms),
            d.alertname
        );
    }
    if let Some(d) = decisions
        .iter()
        .find(|d| d.decision == DecisionKind::DryRun)
    {
        return format!("dry run at {}: {}", time(d.time_ms), d.detail);
    }
    match decisions.first() {
        Some(d) => format!(
            "nothing: {} {} ({}, {})",
            d.decision.as_str(),
            d.reason,
            d.alertname,
            time(d.time_ms)
        ),
        None => "nothing: no alert reached an action".into(),
    }
}

/// The text timeline and summary.
pub fn text(r: &ReplayResult, from_ms: TimestampMs, to_ms: TimestampMs) -> Vec<String> {
    let mut out = vec![format!(
        "backtest {} → {} ({} rule evaluations)",
        time(from_ms),
        time(to_ms),
        r.evaluations
    )];
    if !r.not_replayable.is_empty() {
        out.push(String::new());
        out.push("not replayable:".into());
        for n in &r.not_replayable {
            out.push(format!("  {}/{}: {}", n.group, n.rule, n.reason));
        }
    }
    out.push(String::new());
    for e in &r.events {
        out.push(match e {
            Event::Alert(a) => {
                let rev = a
                    .labels
                    .get("revision_name")
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default();
                let value = a.value.map(|v| format!(" (value {v})")).unwrap_or_default();
                format!(
                    "{}  alert   {:<8} {}{rev}{value}",
                    time(a.time_ms),
                    a.state,
                    a.alertname
                )
            }
            Event::Action(d) => {
                let change = match (&d.from_revision, &d.to_revision) {
                    (Some(f), Some(t)) => format!(" {f} → {t}"),
                    (Some(f), None) => format!(" {f}"),
                    _ => String::new(),
                };
                format!(
                    "{}  action  {:<16} {} on {}{change}: {} {}",
                    time(d.time_ms),
                    d.decision.as_str(),
                    d.action,
                    d.alertname,
                    d.reason,
                    d.detail
                )
            }
        });
    }
    out.push(String::new());
    out.push("summary".into());
    let counts = decision_counts(r);
    if counts.is_empty() {
        out.push("  decisions: none".into());
    } else {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push(format!("  decisions: {}", parts.join(", ")));
    }
    if r.deploys.is_empty() {
        out.push("  deploys in the window: none".into());
    } else {
        out.push("  deploys in the window:".into());
        for d in &r.deploys {
            out.push(format!(
                "    {}  {} {} ({}{}): {}",
                time(d.time_ms),
                d.service,
                d.revision,
                d.method.rsplit('.').next().unwrap_or(&d.method),
                d.actor
                    .as_deref()
                    .map(|a| format!(" by {a}"))
                    .unwrap_or_default(),
                deploy_verdict(&d.decisions)
            ));
        }
    }
    out
}
