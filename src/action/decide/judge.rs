//! Pure decisions about evidence: how far back an alert's evidence reaches
//! (its lookback, derived from the rule and the sources), which revision that
//! evidence is about, and which revisions may not be rolled back onto.
//! See docs/rollback.md ("Whose evidence").

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::{Expr, Offset};

use crate::action::cloud_run::RevisionState;
use crate::action::deps::{RequestCount, ServingPeriod};
use crate::clock::TimestampMs;

/// The label that names the revision an alert's evidence is about.
pub const REVISION_LABEL: &str = "revision_name";

/// Alerts about rearguard itself (`Rearguard*`, e.g. `RearguardSourceDown`
/// from rules/rearguard.yaml) are never evidence against a deploy, even when
/// a route sends them to a receiver with `rollback_configs`.
pub fn is_about_rearguard(alert: &crate::alert::Alert) -> bool {
    alert.name().starts_with("Rearguard")
}

/// How late the samples of a metric can describe what happened: a metric
/// name (or a prefix ending in `*`) and the lag in milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricLags(pub Vec<(String, i64)>);

impl MetricLags {
    /// The lag of the series named `name` (the largest that matches; 0 for
    /// series rearguard measures itself, such as probes).
    pub fn lag_of(&self, name: &str) -> i64 {
        self.0
            .iter()
            .filter(|(pattern, _)| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
            .map(|(_, lag)| *lag)
            .max()
            .unwrap_or(0)
    }
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        // A negative offset looks forward: it never reaches further back.
        Some(Offset::Neg(_)) | None => 0,
    }
}

/// How far before its evaluation time an expression's result can reach: the
/// longest range selector (plus offsets and subquery ranges), through the
/// recording rules it reads (`recording`: record name → expr), plus the lag
/// of the source behind each selector. Nested windows add up: a 30m range
/// over a recording rule with a 5m rate reaches back 35m.
pub fn expr_lookback_ms(
    expr: &str,
    recording: &BTreeMap<String, String>,
    lags: &MetricLags,
) -> Result<i64, String> {
    let parsed = promql_parser::parser::parse(expr).map_err(|e| e.to_string())?;
    let mut visiting = BTreeSet::new();
    walk(&parsed, recording, lags, &mut visiting)
}

fn selector_lookback(
    name: Option<&str>,
    range_ms: i64,
    recording: &BTreeMap<String, String>,
    lags: &MetricLags,
    visiting: &mut BTreeSet<String>,
) -> Result<i64, String> {
    let Some(name) = name else {
        return Ok(range_ms);
    };
    let inner = match recording.get(name) {
        // A loop between recording rules: its own reach is unknown, do not recurse.
        Some(_) if visiting.contains(name) => 0,
        Some(e) => {
            visiting.insert(name.to_string());
            let parsed = promql_parser::parser::parse(e).map_err(|e| e.to_string())?;
            let r = walk(&parsed, recording, lags, visiting)?;
            visiting.remove(name);
            r
        }
        None => lags.lag_of(name),
    };
    Ok(range_ms + inner)
}

fn walk(
    e: &Expr,
    recording: &BTreeMap<String, String>,
    lags: &MetricLags,
    visiting: &mut BTreeSet<String>,
) -> Result<i64, String> {
    Ok(match e {
        Expr::VectorSelector(vs) => {
            offset_ms(&vs.offset)
                + selector_lookback(vs.name.as_deref(), 0, recording, lags, visiting)?
        }
        Expr::MatrixSelector(ms) => {
            offset_ms(&ms.vs.offset)
                + selector_lookback(
                    ms.vs.name.as_deref(),
                    ms.range.as_millis() as i64,
                    recording,
                    lags,
                    visiting,
                )?
        }
        Expr::Subquery(sq) => {
            offset_ms(&sq.offset)
                + sq.range.as_millis() as i64
                + walk(&sq.expr, recording, lags, visiting)?
        }
        Expr::Aggregate(a) => {
            let p = match &a.param {
                Some(p) => walk(p, recording, lags, visiting)?,
                None => 0,
            };
            p.max(walk(&a.expr, recording, lags, visiting)?)
        }
        Expr::Unary(u) => walk(&u.expr, recording, lags, visiting)?,
        Expr::Binary(b) => {
            walk(&b.lhs, recording, lags, visiting)?.max(walk(&b.rhs, recording, lags, visiting)?)
        }
        Expr::Paren(p) => walk(&p.expr, recording, lags, visiting)?,
        Expr::Call(c) => {
            let mut m = 0;
            for a in &c.args.args {
                m = m.max(walk(a, recording, lags, visiting)?);
            }
            m
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => 0,
    })
}

/// The series names an expression reads, through the recording rules it
/// reads (the recorded names themselves are not included).
pub fn expr_metrics(
    expr: &str,
    recording: &BTreeMap<String, String>,
) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![expr.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(e) = todo.pop() {
        let parsed = promql_parser::parser::parse(&e).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        selector_names(&parsed, &mut names);
        for n in names {
            match recording.get(&n) {
                Some(inner) => {
                    if seen.insert(n) {
                        todo.push(inner.clone());
                    }
                }
                None => {
                    out.insert(n);
                }
            }
        }
    }
    Ok(out)
}

fn selector_names(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::VectorSelector(vs) => out.extend(vs.name.clone()),
        Expr::MatrixSelector(ms) => out.extend(ms.vs.name.clone()),
        Expr::Subquery(sq) => selector_names(&sq.expr, out),
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                selector_names(p, out);
            }
            selector_names(&a.expr, out);
        }
        Expr::Unary(u) => selector_names(&u.expr, out),
        Expr::Binary(b) => {
            selector_names(&b.lhs, out);
            selector_names(&b.rhs, out);
        }
        Expr::Paren(p) => selector_names(&p.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selector_names(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The series of Cloud Run's request counts in the tsdb.
pub const REQUEST_COUNT_SERIES: &str = "run_googleapis_com:request_count";

/// Whether there is enough evidence to act.
#[derive(Clone, Debug, PartialEq)]
pub enum Sufficiency {
    /// The guard does not apply (off, no request-based evidence, or no
    /// source counts requests).
    NotApplicable,
    Enough(RequestCount),
    /// Too few requests: no action, a notice saying what was seen.
    Inconclusive(String),
}

/// The `min_requests` guard: an alert whose rule reads request counts is
/// evidence only when the judged revision served at least `min_requests`
/// over the evidence window.
pub fn sufficiency(
    min_requests: u64,
    reads_requests: bool,
    seen: Option<RequestCount>,
    revision: &str,
    window_ms: i64,
) -> Sufficiency {
    if min_requests == 0 || !reads_requests {
        return Sufficiency::NotApplicable;
    }
    let Some(c) = seen else {
        return Sufficiency::NotApplicable;
    };
    if c.total.is_finite() && c.total >= min_requests as f64 {
        return Sufficiency::Enough(c);
    }
    Sufficiency::Inconclusive(format!(
        "inconclusive: {} of {} requests to {revision} failed in the last {}; at least {min_requests} needed before acting (min_requests); still watching",
        c.errors.max(0.0).round(),
        c.total.max(0.0).round(),
        fmt_dur(window_ms)
    ))
}

/// What the judgement needs to know.
#[derive(Clone, Debug)]
pub struct EvidenceFacts<'a> {
    /// The alert's `revision_name`, when its evidence is about one revision.
    pub alert_revision: Option<&'a str>,
    pub alertname: &'a str,
    pub active_at_ms: TimestampMs,
    /// How far before each evaluation the rule's evidence reaches.
    pub lookback_ms: i64,
    pub now_ms: TimestampMs,
    /// The revision serving now and since when (None: unknown).
    pub serving: &'a str,
    pub serving_since_ms: Option<TimestampMs>,
    /// Which revisions served, oldest first (may be empty).
    pub history: &'a [ServingPeriod],
    /// Act only on revisions that began serving at most this long before the
    /// alert became active; 0 turns the check off.
    pub bake_window_ms: i64,
}

/// Why an alert is not evidence against the serving revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotJudged {
    /// The alert names a revision that no longer serves.
    OtherRevision,
    /// The serving revision began serving inside the alert's evidence window.
    StartedInsideWindow,
    /// When the serving revision began serving is unknown.
    UnknownStart,
    /// It has served longer than the bake window before the alert.
    OutsideBakeWindow,
}

/// The decision about whose evidence an alert is.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    /// The alert is evidence against `revision`.
    Judged {
        revision: String,
        served_since_ms: Option<TimestampMs>,
        /// Start of the evidence window (`activeAt - lookback`).
        window_start_ms: TimestampMs,
        /// Revisions the evidence may be about: never a rollback target.
        implicated: BTreeSet<String>,
    },
    NotJudged {
        why: NotJudged,
        detail: String,
    },
}

fn fmt_ms(ms: TimestampMs) -> String {
    crate::clock::to_datetime(ms)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn fmt_dur(ms: i64) -> String {
    crate::config::duration::format_duration(std::time::Duration::from_millis(ms.max(0) as u64))
}

/// A serving history guessed from revisions alone (no traffic history):
/// each Ready revision serves from its creation until the next one.
pub fn history_from_revisions(revisions: &[RevisionState]) -> Vec<ServingPeriod> {
    let mut ready: Vec<&RevisionState> = revisions.iter().filter(|r| r.ready).collect();
    ready.sort_by(|a, b| (a.create_time_ms, &a.name).cmp(&(b.create_time_ms, &b.name)));
    ready
        .into_iter()
        .map(|r| ServingPeriod {
            revision: r.name.clone(),
            since_ms: r.create_time_ms,
        })
        .collect()
}

/// Revisions that served at some time in `[from, to]` according to `history`.
pub fn served_between(
    history: &[ServingPeriod],
    from: TimestampMs,
    to: TimestampMs,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, p) in history.iter().enumerate() {
        let end = history.get(i + 1).map(|n| n.since_ms).unwrap_or(i64::MAX);
        if p.since_ms <= to && end > from {
            out.insert(p.revision.clone());
        }
    }
    out
}

/// Whether the alert is evidence against the serving revision.
///
/// - An alert with `revision_name` is about that revision: it must serve now.
/// - Otherwise the serving revision must have served for the whole evidence
///   window, `activeAt - lookback` until now; one that began inside it is not
///   judged by this alert (the alert must go active again over it).
/// - Revisions that served inside the window (or the one the alert names)
///   are implicated: never a rollback target for this alert.
pub fn judge(f: &EvidenceFacts) -> Judgement {
    let window_start = f.active_at_ms - f.lookback_ms.max(0);
    let mut implicated = served_between(f.history, window_start, f.now_ms);
    match f.alert_revision {
        Some(r) if r != f.serving => {
            return Judgement::NotJudged {
                why: NotJudged::OtherRevision,
                detail: format!(
                    "{} is about revision {r}, but {} serves now: the evidence is not about the serving revision",
                    f.alertname, f.serving
                ),
            };
        }
        Some(r) => {
            // Per-revision evidence implicates only that revision.
            implicated = BTreeSet::from([r.to_string()]);
        }
        None => {
            let Some(since) = f.serving_since_ms else {
                return Judgement::NotJudged {
                    why: NotJudged::UnknownStart,
                    detail: format!(
                        "not a deploy regression: cannot tell when {} began serving",
                        f.serving
                    ),
                };
            };
            if since > window_start {
                return Judgement::NotJudged {
                    why: NotJudged::StartedInsideWindow,
                    detail: format!(
                        "{} began serving at {}, inside the evidence window of {} ({} before it became active at {} until now): the evidence is partly about {}; the alert must go active again over {} alone",
                        f.serving,
                        fmt_ms(since),
                        f.alertname,
                        fmt_dur(f.lookback_ms),
                        fmt_ms(f.active_at_ms),
                        names(&implicated, f.serving),
                        f.serving
                    ),
                };
            }
        }
    }
    if f.bake_window_ms > 0 {
        match f.serving_since_ms {
            Some(since) if f.active_at_ms - since > f.bake_window_ms => {
                return Judgement::NotJudged {
                    why: NotJudged::OutsideBakeWindow,
                    detail: format!(
                        "not a deploy regression: {} has served since {}, {} before {} became active (bake window {})",
                        f.serving,
                        fmt_ms(since),
                        fmt_dur(f.active_at_ms - since),
                        f.alertname,
                        fmt_dur(f.bake_window_ms)
                    ),
                };
            }
            Some(_) => {}
            None => {
                return Judgement::NotJudged {
                    why: NotJudged::UnknownStart,
                    detail: format!(
                        "not a deploy regression: cannot tell when {} began serving",
                        f.serving
                    ),
                };
            }
        }
    }
    implicated.insert(f.serving.to_string());
    Judgement::Judged {
        revision: f.serving.to_string(),
        served_since_ms: f.serving_since_ms,
        window_start_ms: window_start,
        implicated,
    }
}

fn names(set: &BTreeSet<String>, except: &str) -> String {
    let v: Vec<&str> = set
        .iter()
        .map(String::as_str)
        .filter(|r| *r != except)
        .collect();
    if v.is_empty() {
        "an earlier revision".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn period(r: &str, since: i64) -> ServingPeriod {
        ServingPeriod {
            revision: r.into(),
            since_ms: since,
        }
    }

    fn facts<'a>(history: &'a [ServingPeriod], serving: &'a str) -> EvidenceFacts<'a> {
        EvidenceFacts {
            alert_revision: None,
            alertname: "HighErrorRate",
            active_at_ms: 100 * MIN,
            lookback_ms: 10 * MIN,
            now_ms: 115 * MIN,
            serving,
            serving_since_ms: history.last().map(|p| p.since_ms),
            history,
            bake_window_ms: 120 * MIN,
        }
    }

    #[test]
    fn lookback_follows_recording_rules_and_adds_source_lag() {
        let mut rec = BTreeMap::new();
        rec.insert(
            "revision:errors:ratio_rate5m".to_string(),
            "sum by (revision_name) (rate(run_googleapis_com:request_count[5m]))".to_string(),
        );
        rec.insert(
            "revision:mem:p99".to_string(),
            "max by (revision_name) (run_googleapis_com:container_memory_utilizations)".to_string(),
        );
        let lags = MetricLags(vec![("run_googleapis_com:*".into(), 5 * MIN)]);
        assert_eq!(
            expr_lookback_ms("revision:errors:ratio_rate5m > 0.05", &rec, &lags),
            Ok(10 * MIN)
        );
        // Nested windows add up: 30m over a gauge that lags 5m.
        assert_eq!(
            expr_lookback_ms("deriv(revision:mem:p99[30m]) > 0", &rec, &lags),
            Ok(35 * MIN)
        );
        // Rearguard's own probes have no lag; offsets and subqueries reach back.
        assert_eq!(expr_lookback_ms("probe_success == 0", &rec, &lags), Ok(0));
        assert_eq!(
            expr_lookback_ms("max_over_time(probe_success[2m] offset 1m)", &rec, &lags),
            Ok(3 * MIN)
        );
        assert_eq!(
            expr_lookback_ms("max_over_time(rate(x[1m])[10m:1m])", &rec, &lags),
            Ok(11 * MIN)
        );
        assert!(expr_lookback_ms("rate(", &rec, &lags).is_err());
        // A loop between recording rules terminates.
        let mut looped = BTreeMap::new();
        looped.insert("a".to_string(), "b[1m]".to_string());
        looped.insert("b".to_string(), "a[2m]".to_string());
        assert_eq!(expr_lookback_ms("a", &looped, &lags), Ok(3 * MIN));
    }

    #[test]
    fn a_revision_that_served_the_whole_window_is_judged() {
        let h = [period("s-1", 0), period("s-2", 80 * MIN)];
        match judge(&facts(&h, "s-2")) {
            Judgement::Judged {
                revision,
                window_start_ms,
                implicated,
                ..
            } => {
                assert_eq!(revision, "s-2");
                assert_eq!(window_start_ms, 90 * MIN);
                // s-1 stopped serving before the window: a valid target.
                assert_eq!(implicated, BTreeSet::from(["s-2".to_string()]));
            }
            j => panic!("{j:?}"),
        }
    }

    #[test]
    fn a_fix_deployed_while_the_alert_is_pending_is_not_judged() {
        // s-2 (broken) served; the alert went active at 100; the fix s-3 at 105.
        let h = [period("s-2", 50 * MIN), period("s-3", 105 * MIN)];
        let j = judge(&facts(&h, "s-3"));
        let Judgement::NotJudged { why, detail } = j else {
            panic!("{j:?}")
        };
        assert_eq!(why, NotJudged::StartedInsideWindow);
        assert!(
            detail.contains("s-3 began serving") && detail.contains("s-2"),
            "{detail}"
        );
    }

    #[test]
    fn a_fix_deployed_a_minute_before_the_alert_is_not_judged() {
        let h = [period("s-2", 50 * MIN), period("s-3", 99 * MIN)];
        let j = judge(&facts(&h, "s-3"));
        assert!(
            matches!(
                j,
                Judgement::NotJudged {
                    why: NotJudged::StartedInsideWindow,
                    ..
                }
            ),
            "{j:?}"
        );
        // The window's edge counts as inside; exactly at its start is outside.
        let h = [period("s-2", 50 * MIN), period("s-3", 90 * MIN)];
        let j = judge(&facts(&h, "s-3"));
        assert!(matches!(j, Judgement::Judged { .. }), "{j:?}");
    }

    #[test]
    fn an_alert_about_a_revision_judges_only_that_revision() {
        let h = [period("s-2", 50 * MIN), period("s-3", 99 * MIN)];
        let mut f = facts(&h, "s-3");
        f.alert_revision = Some("s-2");
        let j = judge(&f);
        assert!(
            matches!(j, Judgement::NotJudged { why: NotJudged::OtherRevision, ref detail } if detail.contains("about revision s-2, but s-3 serves")),
            "{j:?}"
        );
        // About the serving revision: judged, even though it began serving
        // inside the window (its own series are its own evidence), and only
        // it is implicated: the revision before it stays a valid target.
        f.alert_revision = Some("s-3");
        match judge(&f) {
            Judgement::Judged { implicated, .. } => {
                assert_eq!(implicated, BTreeSet::from(["s-3".to_string()]))
            }
            j => panic!("{j:?}"),
        }
    }

    #[test]
    fn bake_window_and_unknown_start() {
        let h = [period("s-2", 0)];
        let mut f = facts(&h, "s-2");
        f.bake_window_ms = 60 * MIN;
        let j = judge(&f);
        assert!(
            matches!(j, Judgement::NotJudged { why: NotJudged::OutsideBakeWindow, ref detail } if detail.contains("bake window 1h")),
            "{j:?}"
        );
        f.bake_window_ms = 0;
        assert!(matches!(judge(&f), Judgement::Judged { .. }));
        f.serving_since_ms = None;
        assert!(matches!(
            judge(&f),
            Judgement::NotJudged {
                why: NotJudged::UnknownStart,
                ..
            }
        ));
    }

    #[test]
    fn served_between_takes_periods_that_overlap() {
        let h = [period("a", 0), period("b", 10), period("c", 20)];
        assert_eq!(
            served_between(&h, 12, 30),
            BTreeSet::from(["b".to_string(), "c".to_string()])
        );
        assert_eq!(
            served_between(&h, 20, 30),
            BTreeSet::from(["c".to_string()])
        );
        assert_eq!(served_between(&h, 0, 5), BTreeSet::from(["a".to_string()]));
    }

    #[test]
    fn metrics_are_found_through_recording_rules() {
        let mut rec = BTreeMap::new();
        rec.insert(
            "revision:errors:ratio".to_string(),
            "sum(rate(run_googleapis_com:request_count{response_code_class=\"5xx\"}[5m])) / sum(rate(run_googleapis_com:request_count[5m]))".to_string(),
        );
        let m = expr_metrics("revision:errors:ratio > 0.05 and on() up", &rec).unwrap();
        assert_eq!(
            m,
            BTreeSet::from([REQUEST_COUNT_SERIES.to_string(), "up".to_string()])
        );
        assert_eq!(
            expr_metrics("probe_success == 0", &rec).unwrap(),
            BTreeSet::from(["probe_success".to_string()])
        );
    }

    #[test]
    fn too_few_requests_are_inconclusive() {
        let seen = |total, errors| Some(RequestCount { total, errors });
        let j = sufficiency(100, true, seen(70.0, 6.0), "s-2", 10 * MIN);
        assert_eq!(
            j,
            Sufficiency::Inconclusive(
                "inconclusive: 6 of 70 requests to s-2 failed in the last 10m; at least 100 needed before acting (min_requests); still watching".into()
            )
        );
        assert_eq!(
            sufficiency(100, true, seen(100.0, 6.0), "s-2", MIN),
            Sufficiency::Enough(RequestCount {
                total: 100.0,
                errors: 6.0
            })
        );
        // Off, not request-based evidence, or nothing counts requests.
        assert_eq!(
            sufficiency(0, true, seen(1.0, 1.0), "s-2", MIN),
            Sufficiency::NotApplicable
        );
        assert_eq!(
            sufficiency(100, false, seen(1.0, 1.0), "s-2", MIN),
            Sufficiency::NotApplicable
        );
        assert_eq!(
            sufficiency(100, true, None, "s-2", MIN),
            Sufficiency::NotApplicable
        );
        // No data at all from a configured source is not enough either.
        assert!(matches!(
            sufficiency(100, true, seen(0.0, 0.0), "s-2", MIN),
            Sufficiency::Inconclusive(_)
        ));
    }

    #[test]
    fn lags_match_names_and_prefixes() {
        let l = MetricLags(vec![
            ("run_googleapis_com:*".into(), 300),
            ("log_entries_total".into(), 150),
            ("log_entries_total".into(), 200),
        ]);
        assert_eq!(l.lag_of("run_googleapis_com:request_count"), 300);
        assert_eq!(l.lag_of("log_entries_total"), 200);
        assert_eq!(l.lag_of("probe_success"), 0);
    }
}
