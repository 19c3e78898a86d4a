//! Prometheus's PromQL test scripts (`promqltest` `*.test` files): parsing and
//! running them against [`Engine`] over a fresh [`Tsdb`].

use std::collections::HashSet;
use std::fmt::Write as _;

use regex::Regex;

use super::engine::{Engine, EngineOptions, QueryError};
use super::functions::almost_equal;
use super::notation::{parse_metric_prefix, parse_series_line, Point};
use super::value::{format_value, QueryResult, Value};
use crate::labels::Labels;
use crate::tsdb::{is_stale_nan, native_histogram_marker, Tsdb};

/// How an expected message is matched.
#[derive(Clone, Debug)]
pub enum MsgMatch {
    Any,
    Exact(String),
    Regex(Regex),
}

impl MsgMatch {
    fn matches(&self, s: &str) -> bool {
        match self {
            MsgMatch::Any => true,
            MsgMatch::Exact(m) => m == s,
            MsgMatch::Regex(r) => r.is_match(s),
        }
    }
}

#[derive(Clone, Debug)]
pub enum EvalKind {
    Instant { at: i64 },
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Clone, Debug)]
pub enum Expected {
    /// Series lines (possibly none: an empty result).
    Series(Vec<(Labels, Vec<Point>)>),
    Scalar(f64),
    Str(String),
    /// `expect range vector from a to b step s` plus series lines.
    RangeVector {
        from: i64,
        step: i64,
        series: Vec<(Labels, Vec<Point>)>,
    },
}

#[derive(Clone, Debug)]
pub struct EvalCmd {
    pub line: usize,
    pub expr: String,
    pub kind: EvalKind,
    pub fail: Option<MsgMatch>,
    pub warn: Vec<MsgMatch>,
    pub info: Vec<MsgMatch>,
    pub no_warn: bool,
    pub no_info: bool,
    pub ordered: bool,
    pub expected: Expected,
}

#[derive(Clone, Debug)]
pub enum Command {
    Clear,
    Load {
        line: usize,
        step: i64,
        series: Vec<(Labels, Vec<Point>)>,
        /// `load_with_nhcb`: classic histograms also become native ones.
        nhcb: bool,
    },
    Eval(Box<EvalCmd>),
    /// A command that could not be parsed (reported as a failure).
    Invalid {
        line: usize,
        error: String,
    },
}

/// Parses a duration (`5m`, `1h30m`, `0`, `0s`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-') {
        return parse_duration_ms(rest).map(|v| -v);
    }
    if s == "0" {
        return Ok(0);
    }
    let bad = || format!("invalid duration {s:?}");
    let b = s.as_bytes();
    let (mut i, mut total) = (0usize, 0i64);
    if b.is_empty() {
        return Err(bad());
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(bad());
        }
        let n: i64 = s[start..i].parse().map_err(|_| bad())?;
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| v.checked_add(total))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

fn instant_re() -> Regex {
    Regex::new(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
        .expect("valid regex")
}

fn range_re() -> Regex {
    Regex::new(
        r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
    )
    .expect("valid regex")
}

/// Splits a script into commands.
pub fn parse_script(text: &str) -> Vec<Command> {
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let (ire, rre) = (instant_re(), range_re());
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let lineno = i + 1;
        let mut j = i + 1;
        while j < lines.len() && !lines[j].is_empty() {
            j += 1;
        }
        let body: Vec<&str> = lines[i + 1..j].iter().map(String::as_str).collect();
        let word = l.split_whitespace().next().unwrap_or("");
        if word == "clear" {
            // `clear` is one line; a `load` may follow without a blank line.
            cmds.push(Command::Clear);
            i += 1;
            continue;
        }
        let cmd = if word == "load" || word == "load_with_nhcb" {
            parse_load(lineno, l, &body)
        } else if word.starts_with("eval") {
            match parse_eval(lineno, l, &body, &ire, &rre) {
                Ok(e) => Command::Eval(Box::new(e)),
                Err(error) => Command::Invalid {
                    line: lineno,
                    error,
                },
            }
        } else {
            Command::Invalid {
                line: lineno,
                error: format!("unknown command {word:?}"),
            }
        };
        cmds.push(cmd);
        i = j;
    }
    cmds
}

fn parse_load(line: usize, header: &str, body: &[&str]) -> Command {
    let parts: Vec<&str> = header.split_whitespace().collect();
    if parts.len() != 2 {
        return Command::Invalid {
            line,
            error: format!("invalid load command {header:?}"),
        };
    }
    let step = match parse_duration_ms(parts[1]) {
        Ok(s) => s,
        Err(error) => return Command::Invalid { line, error },
    };
    let mut series: Vec<(Labels, Vec<Point>)> = Vec::new();
    for (k, l) in body.iter().enumerate() {
        // Start-timestamp lines (`metric@st …`) are skipped.
        if let Ok((_, rest)) = parse_metric_prefix(l) {
            if rest.starts_with("@st") {
                continue;
            }
        }
        match parse_series_line(l) {
            Ok((labels, points)) => {
                series.retain(|(l2, _)| l2 != &labels);
                series.push((labels, points));
            }
            Err(e) => {
                return Command::Invalid {
                    line: line + 1 + k,
                    error: e.0,
                }
            }
        }
    }
    Command::Load {
        line,
        step,
        series,
        nhcb: header.starts_with("load_with_nhcb"),
    }
}

fn parse_msg(rest: &str) -> Result<MsgMatch, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(MsgMatch::Any);
    }
    if let Some(m) = rest.strip_prefix("msg:") {
        return Ok(MsgMatch::Exact(m.trim().to_string()));
    }
    if let Some(r) = rest.strip_prefix("regex:") {
        return Regex::new(r.trim())
            .map(MsgMatch::Regex)
            .map_err(|e| format!("invalid regex: {e}"));
    }
    Err(format!("invalid expect line suffix {rest:?}"))
}

fn parse_eval(
    line: usize,
    header: &str,
    body: &[&str],
    ire: &Regex,
    rre: &Regex,
) -> Result<EvalCmd, String> {
    let (modifier, kind, expr) = if let Some(c) = rre.captures(header) {
        let start = parse_duration_ms(&c[2])?;
        let end = parse_duration_ms(&c[3])?;
        let step = parse_duration_ms(&c[4])?;
        if end < start {
            return Err("end time must not be before start time".into());
        }
        (
            c.get(1).map(|m| m.as_str().to_string()),
            EvalKind::Range { start, end, step },
            c[5].to_string(),
        )
    } else if let Some(c) = ire.captures(header) {
        let at = match c.get(2) {
            Some(m) => parse_duration_ms(m.as_str())?,
            None => 0,
        };
        (
            c.get(1).map(|m| m.as_str().to_string()),
            EvalKind::Instant { at },
            c[3].to_string(),
        )
    } else {
        return Err(format!("invalid eval command {header:?}"));
    };
    let mut cmd = EvalCmd {
        line,
        expr,
        kind,
        fail: None,
        warn: Vec::new(),
        info: Vec::new(),
        no_warn: false,
        no_info: false,
        ordered: false,
        expected: Expected::Series(Vec::new()),
    };
    match modifier.as_deref() {
        Some("fail") => cmd.fail = Some(MsgMatch::Any),
        Some("warn") => cmd.warn.push(MsgMatch::Any),
        Some("info") => cmd.info.push(MsgMatch::Any),
        Some("ordered") => cmd.ordered = true,
        _ => {}
    }
    let mut series: Vec<(Labels, Vec<Point>)> = Vec::new();
    let mut range_vector: Option<(i64, i64)> = None;
    let range_vector_re =
        Regex::new(r"^vector\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)$").expect("valid regex");
    for l in body {
        if let Some(rest) = l.strip_prefix("expected_fail_message") {
            cmd.fail = Some(MsgMatch::Exact(rest.trim().to_string()));
            continue;
        }
        if let Some(rest) = l.strip_prefix("expected_fail_regexp") {
            cmd.fail = Some(MsgMatch::Regex(
                Regex::new(rest.trim()).map_err(|e| e.to_string())?,
            ));
            continue;
        }
        if l.split_whitespace().next() == Some("expect") {
            let rest = l["expect".len()..].trim();
            let (kind, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            match kind {
                "fail" => cmd.fail = Some(parse_msg(tail)?),
                "warn" => cmd.warn.push(parse_msg(tail)?),
                "info" => cmd.info.push(parse_msg(tail)?),
                "no_warn" => cmd.no_warn = true,
                "no_info" => cmd.no_info = true,
                "ordered" => cmd.ordered = true,
                "string" => {
                    let s = super::notation::unquote(tail.trim()).map_err(|e| e.0)?;
                    cmd.expected = Expected::Str(s);
                }
                "range" => {
                    let c = range_vector_re
                        .captures(tail.trim())
                        .ok_or_else(|| format!("invalid expect range vector line {l:?}"))?;
                    let from = parse_duration_ms(&c[1])?;
                    let _to = parse_duration_ms(&c[2])?;
                    let step = parse_duration_ms(&c[3])?;
                    range_vector = Some((from, step));
                }
                other => return Err(format!("unknown expect type {other:?}")),
            }
            continue;
        }
        if let Some(v) = parse_scalar_line(l) {
            cmd.expected = Expected::Scalar(v);
            break;
        }
        let (labels, points) = parse_series_line(l).map_err(|e| e.0)?;
        series.push((labels, points));
    }
    if let Some((from, step)) = range_vector {
        cmd.expected = Expected::RangeVector { from, step, series };
    } else if !series.is_empty() || matches!(cmd.expected, Expected::Series(_)) {
        if !matches!(cmd.expected, Expected::Series(_)) && !series.is_empty() {
            return Err("series lines mixed with a scalar or string expectation".into());
        }
        if matches!(cmd.expected, Expected::Series(_)) {
            cmd.expected = Expected::Series(series);
        }
    }
    Ok(cmd)
}

/// A bare-number line: Go's `ParseInt(s, 0, 64)` or `ParseFloat`.
fn parse_scalar_line(l: &str) -> Option<f64> {
    let t = l.trim();
    if t.contains(char::is_whitespace) {
        return None;
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let int = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = body.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = body.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Some(if neg { -(i as f64) } else { i as f64 });
    }
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'))
    {
        return None;
    }
    t.replace('_', "").parse::<f64>().ok()
}

/// The verdict for one eval.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub line: usize,
    pub expr: String,
    pub verdict: Verdict,
}

/// Decides whether to skip an eval: given the line and whether it touches
/// native histograms (by the runner's own heuristic), returns a reason.
pub type SkipFn<'a> = dyn Fn(usize, &EvalCmd, bool) -> Option<String> + 'a;

/// Engine options the test scripts assume (PROMQL_TEST_FORMAT.md §8).
pub fn conformance_options() -> EngineOptions {
    EngineOptions {
        lookback_delta_ms: 5 * 60 * 1000,
        default_subquery_step_ms: 60 * 1000,
        delayed_name_removal: true,
        max_samples: 10_000,
        timeout: None,
    }
}

/// Runs every command of a script; returns one outcome per eval (and per
/// invalid command).
pub fn run_script(text: &str, options: EngineOptions, skip: &SkipFn<'_>) -> Vec<Outcome> {
    let engine = Engine::new(options);
    let db = Tsdb::new(i64::MAX / 4);
    let mut histogram_names: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for cmd in parse_script(text) {
        match cmd {
            Command::Clear => {
                db.clear();
                histogram_names.clear();
            }
            Command::Invalid { line, error } => out.push(Outcome {
                line,
                expr: String::new(),
                verdict: Verdict::Fail(format!("invalid test command: {error}")),
            }),
            Command::Load {
                step, series, nhcb, ..
            } => {
                for (labels, points) in series {
                    if nhcb {
                        // load_with_nhcb also makes a native histogram `X` from `X_bucket` etc.
                        if let Some(n) = labels.metric_name() {
                            for suffix in ["_bucket", "_count", "_sum"] {
                                if let Some(base) = n.strip_suffix(suffix) {
                                    histogram_names.insert(base.to_string());
                                }
                            }
                        }
                    }
                    for (i, p) in points.iter().enumerate() {
                        let t = i as i64 * step;
                        match p {
                            Point::Float(v) => db.insert_unordered(&labels, t, *v),
                            Point::Histogram => {
                                db.insert_unordered(&labels, t, native_histogram_marker());
                                if let Some(n) = labels.metric_name() {
                                    histogram_names.insert(n.to_string());
                                }
                            }
                            Point::Missing => {}
                        }
                    }
                }
            }
            Command::Eval(e) => {
                let touches = touches_native_histograms(&e, &histogram_names);
                if let Some(reason) = skip(e.line, &e, touches) {
                    out.push(Outcome {
                        line: e.line,
                        expr: e.expr.clone(),
                        verdict: Verdict::Skip(reason),
                    });
                    continue;
                }
                let verdict = run_eval(&engine, &db, &e);
                out.push(Outcome {
                    line: e.line,
                    expr: e.expr.clone(),
                    verdict,
                });
            }
        }
    }
    out
}

/// Heuristic: the eval expects histogram values, calls a native-histogram
/// function, or names a series that was loaded with histogram values.
pub fn touches_native_histograms(e: &EvalCmd, histogram_names: &HashSet<String>) -> bool {
    let has_hist = |s: &[(Labels, Vec<Point>)]| {
        s.iter()
            .any(|(_, p)| p.iter().any(|x| matches!(x, Point::Histogram)))
    };
    let expected = match &e.expected {
        Expected::Series(s) => has_hist(s),
        Expected::RangeVector { series, .. } => has_hist(series),
        _ => false,
    };
    if expected {
        return true;
    }
    let nh_funcs = [
        "histogram_count",
        "histogram_sum",
        "histogram_avg",
        "histogram_fraction",
        "histogram_stddev",
        "histogram_stdvar",
    ];
    if nh_funcs.iter().any(|f| e.expr.contains(f)) {
        return true;
    }
    let words: HashSet<&str> = e
        .expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| !w.is_empty())
        .collect();
    if histogram_names.iter().any(|n| words.contains(n.as_str())) {
        return true;
    }
    // Regex selectors on __name__ may reach histogram series too.
    if e.expr.contains("__name__") && !histogram_names.is_empty() {
        if let Ok(parsed) = super::engine::parse(&e.expr) {
            let text = format!("{parsed:?}");
            return histogram_names.iter().any(|n| {
                Regex::new(r#"value: "([^"]*)""#)
                    .ok()
                    .map(|re| {
                        re.captures_iter(&text).any(|c| {
                            Regex::new(&format!("^(?:{})$", &c[1]))
                                .map(|r| r.is_match(n))
                                .unwrap_or(false)
                        })
                    })
                    .unwrap_or(false)
            });
        }
    }
    false
}

/// Runs one eval and checks its result.
pub fn run_eval(engine: &Engine, db: &Tsdb, e: &EvalCmd) -> Verdict {
    let result = match e.kind {
        EvalKind::Instant { at } => engine.instant_query(db, &e.expr, at),
        EvalKind::Range { start, end, step } => engine.range_query(db, &e.expr, start, end, step),
    };
    let res = match (result, &e.fail) {
        (Err(err), Some(m)) => {
            let msg = err_text(&err);
            return if m.matches(&msg) {
                Verdict::Pass
            } else {
                Verdict::Fail(format!("expected error {m:?} got error {msg:?}"))
            };
        }
        (Err(err), None) => return Verdict::Fail(format!("got error {:?}", err_text(&err))),
        (Ok(r), Some(m)) => {
            return Verdict::Fail(format!("expected error {m:?} got {}", describe(&r.value)))
        }
        (Ok(r), None) => r,
    };
    if let Some(v) = check_annotations(e, &res) {
        return v;
    }
    check_value(e, &res.value)
}

fn err_text(e: &QueryError) -> String {
    match e {
        QueryError::Parse(m) => m.clone(),
        other => other.to_string(),
    }
}

fn check_annotations(e: &EvalCmd, r: &QueryResult) -> Option<Verdict> {
    for (kind, expects, got, none) in [
        ("warn", &e.warn, &r.warnings, e.no_warn),
        ("info", &e.info, &r.infos, e.no_info),
    ] {
        if none && !got.is_empty() {
            return Some(Verdict::Fail(format!(
                "expected no {kind} annotations, got {got:?}"
            )));
        }
        if expects.is_empty() {
            continue;
        }
        if got.is_empty() {
            return Some(Verdict::Fail(format!(
                "expected {kind} annotations, got none"
            )));
        }
        for m in expects.iter() {
            if !got.iter().any(|g| m.matches(g)) {
                return Some(Verdict::Fail(format!(
                    "expected {kind} annotation {m:?}, got {got:?}"
                )));
            }
        }
        for g in got.iter() {
            if !expects.iter().any(|m| m.matches(g)) {
                return Some(Verdict::Fail(format!("unexpected {kind} annotation {g:?}")));
            }
        }
    }
    None
}

/// Float comparison of the test format: almost equal; NaN equals NaN, the
/// stale NaN only the stale NaN.
pub fn values_equal(expected: f64, got: f64) -> bool {
    if is_stale_nan(expected) || is_stale_nan(got) {
        return is_stale_nan(expected) && is_stale_nan(got);
    }
    if expected.is_nan() && got.is_nan() {
        return true;
    }
    almost_equal(expected, got, 1e-6)
}

fn describe(v: &Value) -> String {
    let mut s = String::new();
    match v {
        Value::Scalar { v, .. } => {
            let _ = write!(s, "scalar {}", format_value(*v));
        }
        Value::String { v, .. } => {
            let _ = write!(s, "string {v:?}");
        }
        Value::Vector(samples) => {
            s.push_str("vector [");
            for (i, x) in samples.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{} {}", show_labels(&x.metric), format_value(x.value));
            }
            s.push(']');
        }
        Value::Matrix(series) => {
            s.push_str("matrix [");
            for (i, x) in series.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{} [", show_labels(&x.metric));
                for (k, (t, v)) in x.points.iter().enumerate() {
                    if k > 0 {
                        s.push(' ');
                    }
                    let _ = write!(s, "{}@{}", format_value(*v), t);
                }
                s.push(']');
            }
            s.push(']');
        }
    }
    s
}

fn show_labels(l: &Labels) -> String {
    if l.is_empty() {
        "{}".to_string()
    } else {
        l.to_string()
    }
}

fn describe_expected(series: &[(Labels, Vec<Point>)]) -> String {
    let mut s = String::from("[");
    for (i, (l, pts)) in series.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{} ", show_labels(l));
        for (k, p) in pts.iter().enumerate() {
            if k > 0 {
                s.push(' ');
            }
            match p {
                Point::Missing => s.push('_'),
                Point::Float(f) => s.push_str(&format_value(*f)),
                Point::Histogram => s.push_str("{{…}}"),
            }
        }
    }
    s.push(']');
    s
}

fn check_value(e: &EvalCmd, v: &Value) -> Verdict {
    let fail = |exp: String| Verdict::Fail(format!("expected {exp} got {}", describe(v)));
    match (&e.expected, v) {
        (Expected::Scalar(x), Value::Scalar { v: got, .. }) => {
            if values_equal(*x, *got) {
                Verdict::Pass
            } else {
                fail(format!("scalar {}", format_value(*x)))
            }
        }
        (Expected::Scalar(x), _) => fail(format!("scalar {}", format_value(*x))),
        (Expected::Str(x), Value::String { v: got, .. }) if x == got => Verdict::Pass,
        (Expected::Str(x), _) => fail(format!("string {x:?}")),
        (Expected::Series(exp), Value::Vector(got)) => {
            if matches!(e.kind, EvalKind::Range { .. }) {
                return fail(format!("matrix {}", describe_expected(exp)));
            }
            let ok = exp.len() == got.len()
                && exp.iter().enumerate().all(|(i, (l, pts))| {
                    let Some(Point::Float(x)) = pts.first() else {
                        return false;
                    };
                    if pts.len() != 1 {
                        return false;
                    }
                    if e.ordered {
                        got[i].metric == *l && values_equal(*x, got[i].value)
                    } else {
                        got.iter()
                            .any(|g| g.metric == *l && values_equal(*x, g.value))
                    }
                });
            if ok {
                Verdict::Pass
            } else {
                fail(format!("vector {}", describe_expected(exp)))
            }
        }
        (Expected::Series(exp), Value::Matrix(got)) => {
            let (start, step) = match e.kind {
                EvalKind::Range { start, step, .. } => (start, step),
                EvalKind::Instant { .. } => {
                    return fail(format!("vector {}", describe_expected(exp)))
                }
            };
            if e.ordered {
                return Verdict::Fail("expect ordered is not allowed for matrix results".into());
            }
            match_matrix(exp, got, start, step, v)
        }
        (Expected::RangeVector { from, step, series }, Value::Matrix(got)) => {
            match_matrix(series, got, *from, *step, v)
        }
        (Expected::Series(exp), _) => fail(format!("vector {}", describe_expected(exp))),
        (Expected::RangeVector { series, .. }, _) => {
            fail(format!("matrix {}", describe_expected(series)))
        }
    }
}

fn match_matrix(
    exp: &[(Labels, Vec<Point>)],
    got: &[super::value::RangeSeries],
    start: i64,
    step: i64,
    v: &Value,
) -> Verdict {
    let fail = || {
        Verdict::Fail(format!(
            "expected matrix {} got {}",
            describe_expected(exp),
            describe(v)
        ))
    };
    if exp.len() != got.len() {
        return fail();
    }
    for (l, pts) in exp {
        let Some(g) = got.iter().find(|g| g.metric == *l) else {
            return fail();
        };
        let expected_points: Vec<(i64, f64)> = pts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Point::Float(f) => Some((start + i as i64 * step, *f)),
                _ => None,
            })
            .collect();
        if expected_points.len() != g.points.len()
            || !expected_points
                .iter()
                .zip(&g.points)
                .all(|(a, b)| a.0 == b.0 && values_equal(a.1, b.1))
        {
            return fail();
        }
    }
    Verdict::Pass
}
