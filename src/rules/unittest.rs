//! `promtool test rules` files: input series, rule evaluation at every tick,
//! alert and PromQL expectations (format: PROMTOOL_TEST_FORMAT.md in the
//! shared conformance folder).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::file::{parse_rule_file, ParseOptions};
use super::group::{Group, GroupEnv, RuleState};
use super::querier::{LocalQuerier, Querier};
use crate::alert::ALERTNAME;
use crate::config::duration::{format_duration, Dur};
use crate::labels::Labels;
use crate::promql::notation::{parse_metric, parse_values, Point};
use crate::promql::{Engine, EngineOptions};
use crate::template::gofmt::format_e_shortest;
use crate::tsdb::{SampleSink, Tsdb};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<Dur>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    fuzzy_compare: bool,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<Dur>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    start_timestamp: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    #[serde(default)]
    eval_time: Dur,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    #[serde(default)]
    eval_time: Dur,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    #[serde(default)]
    value: f64,
    #[serde(default)]
    histogram: Option<String>,
}

/// Options of `rearguard test rules`.
#[derive(Clone, Debug, Default)]
pub struct TestOptions {
    /// Only test groups whose name matches one of these (OR-ed, unanchored).
    pub run: Vec<regex::Regex>,
    pub ignore_unknown_fields: bool,
}

/// The result of one test file.
#[derive(Clone, Debug, Default)]
pub struct FileResult {
    /// Every failure, formatted like promtool's.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Failures caused only by native histograms (which rearguard does not support).
    pub histogram_failures: usize,
}

impl FileResult {
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
    }
}

fn start_ms(v: &Option<serde_yaml_ng::Value>) -> Result<i64, String> {
    match v {
        None | Some(serde_yaml_ng::Value::Null) => Ok(0),
        Some(serde_yaml_ng::Value::Number(n)) => n
            .as_i64()
            .map(|s| s * 1000)
            .or_else(|| n.as_f64().map(|f| (f * 1000.0) as i64))
            .ok_or_else(|| format!("invalid start_timestamp {n}")),
        Some(serde_yaml_ng::Value::String(s)) => {
            if let Ok(secs) = s.parse::<i64>() {
                return Ok(secs * 1000);
            }
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| {
                    format!("invalid start_timestamp {s:?}: {e} (use Unix seconds or RFC 3339)")
                })
        }
        Some(other) => Err(format!("invalid start_timestamp {other:?}")),
    }
}

/// Runs one test file.
pub fn run_test_file(path: &Path, opts: &TestOptions) -> FileResult {
    let mut result = FileResult::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            result
                .errors
                .push(format!("  cannot read {}: {e}", path.display()));
            return result;
        }
    };
    if let Err(e) = crate::config::locate::check_yaml_limits(path, &text) {
        result.errors.push(format!("  {e}"));
        return result;
    }
    let file: TestFile = match serde_yaml_ng::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            result.errors.push(format!(
                "  {}",
                crate::config::locate::from_yaml_error(path, &e)
            ));
            return result;
        }
    };
    let eval_interval = file
        .evaluation_interval
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(60));
    if eval_interval.is_zero() {
        result
            .errors
            .push("  evaluation_interval must be greater than 0".into());
        return result;
    }
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for g in &file.group_eval_order {
        if !seen.insert(g.clone()) {
            result
                .errors
                .push(format!("  group name repeated in evaluation order: {g}"));
            return result;
        }
        order.push(g.clone());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rule_paths: Vec<PathBuf> = Vec::new();
    for pat in &file.rule_files {
        let full = base.join(pat);
        match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => {
                let mut m: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                m.sort();
                if m.is_empty() {
                    if pat.contains(['*', '?', '[']) {
                        result.warnings.push(format!(
                            "  WARNING: no file match pattern {}",
                            full.display()
                        ));
                    } else {
                        m.push(full);
                    }
                }
                rule_paths.extend(m);
            }
            Err(e) => result
                .errors
                .push(format!("  invalid rule file pattern {pat:?}: {e}")),
        }
    }
    for tg in &file.tests {
        if !opts.run.is_empty() && !opts.run.iter().any(|r| r.is_match(&tg.name)) {
            continue;
        }
        let prefix = if tg.name.is_empty() {
            String::new()
        } else {
            format!("    name: {},\n", tg.name)
        };
        let (errs, hist) = run_group(
            tg,
            &rule_paths,
            eval_interval,
            &order,
            file.fuzzy_compare,
            opts,
        );
        result.histogram_failures += hist;
        for e in errs {
            let e = if e.starts_with("    ") {
                e
            } else {
                format!("    {e}")
            };
            result.errors.push(format!("{prefix}{e}"));
        }
    }
    result
}

fn fuzzy_eq(a: f64, b: f64, fuzzy: bool) -> bool {
    if a == b {
        return true;
    }
    if !fuzzy || a.is_nan() || b.is_nan() {
        return false;
    }
    next_after(a, b) == b
}

fn next_after(a: f64, b: f64) -> f64 {
    if a == b || a.is_nan() || b.is_nan() {
        return a;
    }
    if a == 0.0 {
        return f64::from_bits(1).copysign(b);
    }
    let bits = a.to_bits();
    let up = (b > a) == (a > 0.0);
    f64::from_bits(if up { bits + 1 } else { bits - 1 })
}

/// Runs one test group; returns its errors and how many of them are native-histogram cases.
fn run_group(
    tg: &TestGroup,
    rule_paths: &[PathBuf],
    eval_interval: Duration,
    order: &[String],
    fuzzy: bool,
    opts: &TestOptions,
) -> (Vec<String>, usize) {
    let mut errs = Vec::new();
    let start = match start_ms(&tg.start_timestamp) {
        Ok(s) => s,
        Err(e) => return (vec![e], 0),
    };
    // Rule files.
    let popts = ParseOptions {
        ignore_unknown_fields: opts.ignore_unknown_fields,
    };
    let mut groups: Vec<Group> = Vec::new();
    for p in rule_paths {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                return (
                    vec![format!("cannot read rule file {}: {e}", p.display())],
                    0,
                )
            }
        };
        match parse_rule_file(p, &text, popts) {
            Ok(f) => groups.extend(f.groups.into_iter().map(|g| Group::new(g, eval_interval))),
            Err(e) => return (e.iter().map(|e| e.to_string()).collect(), 0),
        }
    }
    // Listed groups first, in the listed order; the rest in file order.
    let mut ordered: Vec<Group> = Vec::new();
    for name in order {
        if let Some(i) = groups.iter().position(|g| &g.def.name == name) {
            ordered.push(groups.remove(i));
        }
    }
    ordered.append(&mut groups);
    let mut groups = ordered;

    // Input series.
    let interval_ms = tg
        .interval
        .map(|d| d.0)
        .unwrap_or(eval_interval)
        .as_millis() as i64;
    let mut input: Vec<(i64, Labels, f64)> = Vec::new();
    let mut histogram_series = HashSet::new();
    for s in &tg.input_series {
        let labels = match parse_metric(&s.series) {
            Ok(l) => l,
            Err(e) => {
                return (
                    vec![format!("parse error in series {:?}: {e}", s.series)],
                    0,
                )
            }
        };
        let points = match parse_values(&s.values) {
            Ok(p) => p,
            Err(e) => {
                return (
                    vec![format!("parse error in values of {:?}: {e}", s.series)],
                    0,
                )
            }
        };
        for (i, p) in points.into_iter().enumerate() {
            match p {
                Point::Float(v) => input.push((start + i as i64 * interval_ms, labels.clone(), v)),
                Point::Histogram => {
                    histogram_series.insert(labels.metric_name().unwrap_or("").to_string());
                }
                Point::Missing => {}
            }
        }
    }
    input.sort_by_key(|(t, _, _)| *t);

    let max_t = tg
        .alert_rule_test
        .iter()
        .map(|a| a.eval_time.as_millis())
        .chain(tg.promql_expr_test.iter().map(|e| e.eval_time.as_millis()))
        .max()
        .unwrap_or(0);
    let step = eval_interval.as_millis() as i64;
    let db = Arc::new(Tsdb::new(i64::MAX / 4));
    let engine = Engine::new(EngineOptions {
        default_subquery_step_ms: step,
        ..EngineOptions::default()
    });
    let querier = LocalQuerier::new(db.clone(), engine);

    // Alert tests by tick index.
    let mut alert_tests: Vec<&AlertTest> = tg.alert_rule_test.iter().collect();
    alert_tests.sort_by_key(|a| a.eval_time.as_millis());
    let mut next_alert = 0;
    let mut loaded = 0;
    let env = GroupEnv {
        external_labels: &tg.external_labels,
        external_url: &tg.external_url,
        restore_grace_until_ms: 0,
    };
    let mut tick: i64 = 0;
    loop {
        let ts = start + tick * step;
        if ts > start + max_t {
            break;
        }
        while loaded < input.len() && input[loaded].0 <= ts {
            let (t, l, v) = &input[loaded];
            let _ = db.append_sample(l, *t, *v);
            loaded += 1;
        }
        let mut eval_errs = Vec::new();
        for g in groups.iter_mut() {
            let out = block_on_ready(g.eval(ts, &querier, db.as_ref() as &dyn SampleSink, &env));
            for (rule, e) in out.failures {
                eval_errs.push(format!(
                    "rule: {rule}, time: {}, err: {e}",
                    format_duration(Duration::from_millis((ts - start).max(0) as u64))
                ));
            }
        }
        if !eval_errs.is_empty() {
            return (eval_errs, 0);
        }
        // Alert tests that belong to this tick.
        while next_alert < alert_tests.len()
            && alert_tests[next_alert].eval_time.as_millis() < (tick + 1) * step
        {
            let at = alert_tests[next_alert];
            next_alert += 1;
            if let Some(e) = check_alerts(at, &groups) {
                errs.push(e);
            }
        }
        tick += 1;
    }

    // Expression tests over the final storage.
    let mut hist_failures = 0;
    for et in &tg.promql_expr_test {
        let t = start + et.eval_time.as_millis();
        let got = match querier.query_sync(&et.expr, t) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                errs.push(format!(
                    "    expr: {:?}, time: {}, err: {e}",
                    et.expr, et.eval_time
                ));
                continue;
            }
            None => continue,
        };
        let mut exp: Vec<(Labels, f64, bool)> = Vec::new();
        let mut bad = None;
        for s in &et.exp_samples {
            match if s.labels.trim().is_empty() {
                Ok(Labels::empty())
            } else {
                parse_metric(&s.labels)
            } {
                Ok(l) => exp.push((l, s.value, s.histogram.is_some())),
                Err(e) => {
                    bad = Some(format!(
                        "    expr: {:?}, time: {}, err: parse labels {:?}: {e}",
                        et.expr, et.eval_time, s.labels
                    ))
                }
            }
        }
        if let Some(b) = bad {
            errs.push(b);
            continue;
        }
        let mut got: Vec<(Labels, f64)> = got.into_iter().map(|s| (s.labels, s.value)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        let equal = got.len() == exp.len()
            && got
                .iter()
                .zip(&exp)
                .all(|(g, e)| g.0 == e.0 && !e.2 && fuzzy_eq(g.1, e.1, fuzzy));
        if !equal {
            let involves_histograms =
                exp.iter().any(|e| e.2) || touches(&et.expr, &histogram_series);
            if involves_histograms {
                hist_failures += 1;
            }
            let fmt = |v: &[(Labels, f64)]| -> String {
                if v.is_empty() {
                    return "nil".into();
                }
                v.iter()
                    .map(|(l, x)| format!("{} {}", l, format_e_shortest(*x)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let exp_plain: Vec<(Labels, f64)> = exp.iter().map(|e| (e.0.clone(), e.1)).collect();
            let mut msg = format!(
                "    expr: {:?}, time: {},\n        exp: {}\n        got: {}",
                et.expr,
                et.eval_time,
                fmt(&exp_plain),
                fmt(&got)
            );
            if involves_histograms {
                msg.push_str("\n        (native histograms are not supported by rearguard)");
            }
            errs.push(msg);
        }
    }
    (errs, hist_failures)
}

/// Drives a future that never waits (the local engine answers synchronously),
/// so test files run without a runtime and from inside one alike.
fn block_on_ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn touches(expr: &str, histogram_series: &HashSet<String>) -> bool {
    histogram_series
        .iter()
        .any(|h| !h.is_empty() && expr.contains(h.as_str()))
}

type LabelsAndAnnotations = Vec<(Labels, BTreeMap<String, String>)>;

fn format_alerts(v: &LabelsAndAnnotations) -> String {
    if v.is_empty() {
        return "[]".into();
    }
    let mut s = String::from("[");
    for (i, (l, a)) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let ann: Vec<String> = a.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let _ = write!(
            s,
            "\n{i}:\n  Labels:{l}\n  Annotations:{{{}}}",
            ann.join(", ")
        );
    }
    s.push_str("\n]");
    s
}

fn check_alerts(at: &AlertTest, groups: &[Group]) -> Option<String> {
    let mut got: LabelsAndAnnotations = Vec::new();
    for g in groups {
        for r in &g.rules {
            if let RuleState::Alerting(a) = &r.state {
                if a.def.name != at.alertname {
                    continue;
                }
                for al in a.active.values() {
                    if al.state == super::alerting::AlertState::Firing {
                        got.push((al.labels.clone(), al.annotations.clone()));
                    }
                }
            }
        }
    }
    let mut exp: LabelsAndAnnotations = at
        .exp_alerts
        .iter()
        .map(|e| {
            let mut b = Labels::from_map(&e.exp_labels).builder();
            b.insert(ALERTNAME, &at.alertname);
            (b.build(), e.exp_annotations.clone())
        })
        .collect();
    got.sort();
    exp.sort();
    if got == exp {
        return None;
    }
    Some(format!(
        "    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
        at.alertname,
        at.eval_time,
        format_alerts(&exp),
        format_alerts(&got)
    ))
}

/// Runs every file and prints promtool's report; returns whether all passed.
pub fn run_files(
    files: &[PathBuf],
    opts: &TestOptions,
    out: &mut impl std::io::Write,
    err: &mut impl std::io::Write,
) -> bool {
    let mut ok = true;
    let mut failed = 0;
    for (i, f) in files.iter().enumerate() {
        // promtool's line; with many files, which one of how many goes to stderr.
        if files.len() > 1 {
            let _ = writeln!(err, "[{}/{}] {}", i + 1, files.len(), f.display());
        }
        let _ = writeln!(out, "Unit Testing:  {}", f.display());
        let r = run_test_file(f, opts);
        for w in &r.warnings {
            let _ = writeln!(err, "{w}");
        }
        if r.passed() {
            let _ = writeln!(out, "  SUCCESS");
        } else {
            ok = false;
            failed += 1;
            let _ = writeln!(err, "  FAILED:");
            for e in &r.errors {
                let _ = writeln!(err, "{e}");
                let _ = writeln!(out);
            }
        }
        let _ = writeln!(out);
    }
    if files.len() > 1 {
        let _ = writeln!(
            err,
            "{} files: {} passed, {failed} failed",
            files.len(),
            files.len() - failed
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_file(dir: &std::path::Path, name: &str, want: f64) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "tests:\n  - interval: 1m\n    input_series:\n      - series: 'up{{job=\"a\"}}'\n        values: '1 1 1'\n    promql_expr_test:\n      - expr: up\n        eval_time: 1m\n        exp_samples:\n          - labels: 'up{{job=\"a\"}}'\n            value: {want}\n"
            ),
        )
        .unwrap();
        path
    }

    #[test]
    fn many_files_show_which_one_runs_and_a_summary() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            test_file(dir.path(), "good.yml", 1.0),
            test_file(dir.path(), "bad.yml", 2.0),
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!run_files(
            &files,
            &TestOptions::default(),
            &mut out,
            &mut err
        ));
        let out = String::from_utf8(out).unwrap();
        let err = String::from_utf8(err).unwrap();
        assert_eq!(out.matches("Unit Testing:").count(), 2, "{out}");
        assert!(err.contains("[1/2] ") && err.contains("good.yml"), "{err}");
        assert!(err.contains("[2/2] ") && err.contains("bad.yml"), "{err}");
        assert!(err.contains("2 files: 1 passed, 1 failed"), "{err}");
    }
}
