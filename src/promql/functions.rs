//! PromQL functions (float semantics of Prometheus 3.x).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike};
use promql_parser::parser::{Call, Expr};

use super::engine::{
    err, reject_histogram_points, set_label, Evaluator, MSeries, QueryError, VSample, Val,
};
use super::value::format_value;
use crate::labels::{Labels, METRIC_NAME};
use crate::tsdb::is_native_histogram_marker;

/// Kahan–Neumaier summation step, as Prometheus's `kahanSumInc`.
pub(crate) fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus's `quantile`: NaN for no values, ±Inf outside [0, 1], linear
/// interpolation between the closest ranks otherwise.
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `math.Max`.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

/// Prometheus's least-squares fit with Kahan sums; x is seconds from `intercept_t`.
fn linear_regression(points: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = points[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in points.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1e3;
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn avg_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut it = values;
    let Some(first) = it.next() else {
        return f64::NAN;
    };
    let (mut sum, mut count) = (first, 1.0);
    let (mut mean, mut c) = (0.0, 0.0);
    let mut incremental = false;
    for f in it {
        count += 1.0;
        if !incremental {
            let (ns, nc) = kahan_sum_inc(f, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_sum_inc(f / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

fn variance_of(points: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(_, f) in points {
        count += 1.0;
        let delta = f - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (f - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Builds the labels `absent()` reports from the selector's equality matchers.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut b: Vec<(String, Option<String>)> = Vec::new();
    let mut has: HashMap<String, bool> = HashMap::new();
    for m in vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten())
    {
        if m.name == METRIC_NAME {
            continue;
        }
        let is_eq = matches!(m.op, promql_parser::label::MatchOp::Equal);
        if is_eq && !has.get(&m.name).copied().unwrap_or(false) {
            b.retain(|(n, _)| n != &m.name);
            b.push((m.name.clone(), Some(m.value.clone())));
            has.insert(m.name.clone(), true);
        } else {
            b.retain(|(n, _)| n != &m.name);
        }
    }
    Labels::from_pairs(b.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))))
}

fn counter_suffix_ok(name: &str) -> bool {
    ["_total", "_sum", "_count", "_bucket"]
        .iter()
        .any(|s| name.ends_with(s))
}

fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if t != s || t.is_empty() {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Native-histogram-only functions: a clear error instead of an empty answer.
const NATIVE_HISTOGRAM_FUNCTIONS: &[&str] = &[
    "histogram_count",
    "histogram_sum",
    "histogram_avg",
    "histogram_fraction",
    "histogram_stddev",
    "histogram_stdvar",
];

impl Evaluator<'_> {
    pub(crate) fn call(&mut self, c: &Call, t: i64) -> Result<Val, QueryError> {
        let name = c.func.name;
        let args: Vec<&Expr> = c.args.args.iter().map(|b| b.as_ref()).collect();
        if NATIVE_HISTOGRAM_FUNCTIONS.contains(&name) {
            return Err(QueryError::NativeHistogram(format!(
                "{name}() works only on native histograms"
            )));
        }
        if matches!(
            name,
            "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc"
        ) && self.over_range()
        {
            // Prometheus's NewSortInRangeQueryWarning, at the call's position.
            let pos = self.pos_of_call(c);
            self.warn(format!(
                "sort is ineffective for range queries since results are always ordered by labels{pos}"
            ));
        }
        match name {
            "time" => return Ok(Val::Scalar(t as f64 / 1000.0)),
            "pi" => return Ok(Val::Scalar(std::f64::consts::PI)),
            "start" => return Ok(Val::Scalar(self.query_start() as f64 / 1000.0)),
            "end" => return Ok(Val::Scalar(self.query_end() as f64 / 1000.0)),
            "range" => {
                return Ok(Val::Scalar(
                    (self.query_end() - self.query_start()) as f64 / 1000.0,
                ))
            }
            "step" => return Ok(Val::Scalar(self.query_step() as f64 / 1000.0)),
            "min_of" | "max_of" => {
                let a = self.eval_scalar(args[0], t)?;
                let b = self.eval_scalar(args[1], t)?;
                return Ok(Val::Scalar(if name == "min_of" {
                    go_min(a, b)
                } else {
                    go_max(a, b)
                }));
            }
            "scalar" => {
                // Like Prometheus, only float samples count.
                let mut v = self.eval_vector_raw(args[0], t)?;
                v.retain(|s| !is_native_histogram_marker(s.f));
                return Ok(Val::Scalar(if v.len() == 1 { v[0].f } else { f64::NAN }));
            }
            "vector" => {
                let v = self.eval_scalar(args[0], t)?;
                return Ok(Val::Vector(vec![VSample {
                    metric: Labels::empty(),
                    t,
                    f: v,
                    drop_name: false,
                }]));
            }
            _ => {}
        }
        if let Some(f) = simple_math(name) {
            // Like Prometheus, math functions skip native histograms.
            let mut v = self.eval_vector_raw(args[0], t)?;
            v.retain(|s| !is_native_histogram_marker(s.f));
            for s in &mut v {
                s.f = f(s.f);
                self.drop_name(s);
            }
            return Ok(Val::Vector(v));
        }
        match name {
            "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "changes"
            | "resets"
            | "avg_over_time"
            | "min_over_time"
            | "max_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "last_over_time"
            | "first_over_time"
            | "present_over_time"
            | "mad_over_time"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time"
            | "ts_of_last_over_time"
            | "ts_of_first_over_time" => self.range_function(name, args[0], t),
            "quantile_over_time" => {
                let q = self.eval_scalar(args[0], t)?;
                if q.is_nan() || !(0.0..=1.0).contains(&q) {
                    let pos = self.pos(args[0]);
                    self.warn(format!(
                        "quantile value should be between 0 and 1, got {}{pos}",
                        format_value(q)
                    ));
                }
                let (m, _, _) = self.matrix_arg(args[1], t)?;
                let mut out = Vec::new();
                for mut s in m {
                    reject_histogram_points(&s.points)?;
                    let f = quantile(q, s.points.iter().map(|p| p.1).collect());
                    self.drop_name_series(&mut s);
                    out.push(to_sample(s, t, f));
                }
                Ok(Val::Vector(out))
            }
            "predict_linear" => {
                let d = self.eval_scalar(args[1], t)?;
                let (m, _, _) = self.matrix_arg(args[0], t)?;
                let mut out = Vec::new();
                for mut s in m {
                    reject_histogram_points(&s.points)?;
                    if s.points.len() < 2 {
                        continue;
                    }
                    // Prometheus predicts from the evaluation time, even with `@`.
                    let (slope, intercept) = linear_regression(&s.points, t);
                    self.drop_name_series(&mut s);
                    out.push(to_sample(s, t, slope * d + intercept));
                }
                Ok(Val::Vector(out))
            }
            "double_exponential_smoothing" | "holt_winters" => {
                let sf = self.eval_scalar(args[1], t)?;
                let tf = self.eval_scalar(args[2], t)?;
                if !(sf > 0.0 && sf < 1.0) {
                    return err(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        format_value(sf)
                    ));
                }
                if !(tf > 0.0 && tf < 1.0) {
                    return err(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        format_value(tf)
                    ));
                }
                let (m, _, _) = self.matrix_arg(args[0], t)?;
                let mut out = Vec::new();
                for mut s in m {
                    reject_histogram_points(&s.points)?;
                    if s.points.len() < 2 {
                        continue;
                    }
                    let f = double_exponential_smoothing(&s.points, sf, tf);
                    self.drop_name_series(&mut s);
                    out.push(to_sample(s, t, f));
                }
                Ok(Val::Vector(out))
            }
            "absent_over_time" => {
                let (m, _, _) = self.matrix_arg(args[0], t)?;
                if !m.is_empty() {
                    return Ok(Val::Vector(Vec::new()));
                }
                Ok(Val::Vector(vec![VSample {
                    metric: absent_labels(args[0]),
                    t,
                    f: 1.0,
                    drop_name: false,
                }]))
            }
            "absent" => {
                let v = self.eval_vector(args[0], t)?;
                if !v.is_empty() {
                    return Ok(Val::Vector(Vec::new()));
                }
                Ok(Val::Vector(vec![VSample {
                    metric: absent_labels(args[0]),
                    t,
                    f: 1.0,
                    drop_name: false,
                }]))
            }
            "timestamp" => {
                let mut inner = args[0];
                while let Expr::Paren(p) = inner {
                    inner = &p.expr;
                }
                let own_time = matches!(inner, Expr::VectorSelector(_));
                let mut v = self.eval_vector(args[0], t)?;
                for s in &mut v {
                    let ts = if own_time { s.t } else { t };
                    s.f = ts as f64 / 1000.0;
                    self.drop_name(s);
                }
                Ok(Val::Vector(v))
            }
            "clamp" | "clamp_min" | "clamp_max" => {
                let mut v = self.eval_vector(args[0], t)?;
                let (lo, hi) = match name {
                    "clamp" => (self.eval_scalar(args[1], t)?, self.eval_scalar(args[2], t)?),
                    "clamp_min" => (self.eval_scalar(args[1], t)?, f64::NAN),
                    _ => (f64::NAN, self.eval_scalar(args[1], t)?),
                };
                if name == "clamp" && hi < lo {
                    return Ok(Val::Vector(Vec::new()));
                }
                for s in &mut v {
                    s.f = match name {
                        "clamp" => go_max(lo, go_min(hi, s.f)),
                        "clamp_min" => go_max(lo, s.f),
                        _ => go_min(hi, s.f),
                    };
                    self.drop_name(s);
                }
                Ok(Val::Vector(v))
            }
            "round" => {
                let to_nearest = match args.get(1) {
                    Some(a) => self.eval_scalar(a, t)?,
                    None => 1.0,
                };
                let inv = 1.0 / to_nearest;
                let mut v = self.eval_vector(args[0], t)?;
                for s in &mut v {
                    s.f = (s.f * inv + 0.5).floor() / inv;
                    self.drop_name(s);
                }
                Ok(Val::Vector(v))
            }
            "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour"
            | "minute" | "month" | "year" => {
                let mut v = match args.first() {
                    Some(a) => self.eval_vector(a, t)?,
                    None => vec![VSample {
                        metric: Labels::empty(),
                        t,
                        f: t as f64 / 1000.0,
                        drop_name: false,
                    }],
                };
                for s in &mut v {
                    s.f = time_part(name, s.f);
                    self.drop_name(s);
                }
                Ok(Val::Vector(v))
            }
            "sort" | "sort_desc" => {
                let mut v = self.eval_vector(args[0], t)?;
                let desc = name == "sort_desc";
                v.sort_by(|a, b| match (a.f.is_nan(), b.f.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ => {
                        let o = a.f.partial_cmp(&b.f).unwrap_or(std::cmp::Ordering::Equal);
                        if desc {
                            o.reverse()
                        } else {
                            o
                        }
                    }
                });
                Ok(Val::Vector(v))
            }
            "sort_by_label" | "sort_by_label_desc" => {
                let mut v = self.eval_vector(args[0], t)?;
                let mut names = Vec::new();
                for a in &args[1..] {
                    match self.eval(a, t)? {
                        Val::Str(s) => names.push(s),
                        other => return err(format!("expected string, got {}", other.type_name())),
                    }
                }
                let desc = name == "sort_by_label_desc";
                v.sort_by(|a, b| {
                    for n in &names {
                        let (x, y) = (a.metric.get(n).unwrap_or(""), b.metric.get(n).unwrap_or(""));
                        if x != y {
                            let o = natural_cmp(x, y);
                            return if desc { o.reverse() } else { o };
                        }
                    }
                    let o = a.metric.cmp(&b.metric);
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                });
                Ok(Val::Vector(v))
            }
            "label_replace" => self.label_replace(&args, t),
            "label_join" => self.label_join(&args, t),
            "histogram_quantile" => self.histogram_quantile(&args, t),
            "histogram_quantiles" => self.histogram_quantiles(&args, t),
            "info" => Err(QueryError::Unsupported(
                "info() is not supported by rearguard's PromQL engine".into(),
            )),
            other => Err(QueryError::Unsupported(format!(
                "function {other}() is not supported by rearguard's PromQL engine"
            ))),
        }
    }

    fn range_function(&mut self, name: &str, arg: &Expr, t: i64) -> Result<Val, QueryError> {
        let (m, te, range) = self.matrix_arg(arg, t)?;
        let mut out = Vec::with_capacity(m.len());
        for mut s in m {
            if !matches!(name, "count_over_time" | "present_over_time") {
                reject_histogram_points(&s.points)?;
            }
            let p = &s.points;
            let f = match name {
                "rate" | "increase" | "delta" => {
                    if p.len() < 2 {
                        continue;
                    }
                    let counter = name != "delta";
                    if counter {
                        if let Some(n) = s.metric.metric_name() {
                            if !counter_suffix_ok(n) {
                                let pos = self.pos(arg);
                                self.info(format!(
                                    "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {}{pos}",
                                    super::engine::go_quote(n)
                                ));
                            }
                        }
                    }
                    extrapolated_rate(p, te - range, te, range, counter, name == "rate")
                }
                "irate" | "idelta" => {
                    if p.len() < 2 {
                        continue;
                    }
                    let (t1, v1) = p[p.len() - 2];
                    let (t2, v2) = p[p.len() - 1];
                    if name == "irate" {
                        let d = if v2 < v1 { v2 } else { v2 - v1 };
                        let dt = t2 - t1;
                        if dt == 0 {
                            continue;
                        }
                        d / (dt as f64 / 1000.0)
                    } else {
                        v2 - v1
                    }
                }
                "deriv" => {
                    if p.len() < 2 {
                        continue;
                    }
                    linear_regression(p, p[0].0).0
                }
                "changes" => {
                    let mut n = 0.0;
                    for w in p.windows(2) {
                        let (a, b) = (w[0].1, w[1].1);
                        if b != a && !(a.is_nan() && b.is_nan()) {
                            n += 1.0;
                        }
                    }
                    n
                }
                "resets" => p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64,
                "avg_over_time" => avg_of(p.iter().map(|x| x.1)),
                "sum_over_time" => {
                    let (mut sum, mut c) = (0.0, 0.0);
                    for &(_, v) in p {
                        (sum, c) = kahan_sum_inc(v, sum, c);
                    }
                    if sum.is_infinite() {
                        sum
                    } else {
                        sum + c
                    }
                }
                "min_over_time" | "max_over_time" => {
                    let mut r = p[0].1;
                    for &(_, v) in &p[1..] {
                        let better = if name == "max_over_time" {
                            v > r
                        } else {
                            v < r
                        };
                        if better || r.is_nan() {
                            r = v;
                        }
                    }
                    r
                }
                "ts_of_min_over_time" | "ts_of_max_over_time" => {
                    let (mut rt, mut r) = p[0];
                    for &(pt, v) in &p[1..] {
                        let better = if name == "ts_of_max_over_time" {
                            v >= r
                        } else {
                            v <= r
                        };
                        if better || r.is_nan() {
                            r = v;
                            rt = pt;
                        }
                    }
                    rt as f64 / 1000.0
                }
                "ts_of_last_over_time" => p[p.len() - 1].0 as f64 / 1000.0,
                "ts_of_first_over_time" => p[0].0 as f64 / 1000.0,
                "count_over_time" => p.len() as f64,
                "stddev_over_time" => variance_of(p).sqrt(),
                "stdvar_over_time" => variance_of(p),
                "mad_over_time" => {
                    let values: Vec<f64> = p.iter().map(|x| x.1).collect();
                    if values.iter().any(|v| v.is_nan()) {
                        self.drop_name_series(&mut s);
                        out.push(to_sample(s, t, f64::NAN));
                        continue;
                    }
                    let median = quantile(0.5, values.clone());
                    quantile(0.5, values.iter().map(|v| (v - median).abs()).collect())
                }
                "last_over_time" => {
                    let f = p[p.len() - 1].1;
                    out.push(to_sample(s, t, f));
                    continue;
                }
                "first_over_time" => {
                    let f = p[0].1;
                    out.push(to_sample(s, t, f));
                    continue;
                }
                "present_over_time" => 1.0,
                _ => return err(format!("unknown function {name}")),
            };
            self.drop_name_series(&mut s);
            out.push(to_sample(s, t, f));
        }
        Ok(Val::Vector(out))
    }

    fn string_arg(&mut self, e: &Expr, t: i64) -> Result<String, QueryError> {
        match self.eval(e, t)? {
            Val::Str(s) => Ok(s),
            other => err(format!("expected string, got {}", other.type_name())),
        }
    }

    fn label_replace(&mut self, args: &[&Expr], t: i64) -> Result<Val, QueryError> {
        let dst = self.string_arg(args[1], t)?;
        let repl = self.string_arg(args[2], t)?;
        let src = self.string_arg(args[3], t)?;
        let re_src = self.string_arg(args[4], t)?;
        let re = regex::Regex::new(&format!("^(?s:{re_src})$")).map_err(|_| {
            QueryError::Eval(format!(
                "invalid regular expression in label_replace(): {re_src}"
            ))
        })?;
        if !self.valid_label_name(&dst) {
            return err(format!(
                "invalid destination label name in label_replace(): {dst}"
            ));
        }
        let mut v = self.eval_vector(args[0], t)?;
        for s in &mut v {
            let value = s.metric.get(&src).unwrap_or("").to_string();
            if let Some(caps) = re.captures(&value) {
                let mut res = String::new();
                caps.expand(&repl, &mut res);
                s.metric = set_label(&s.metric, &dst, &res);
                if dst == METRIC_NAME && !res.is_empty() {
                    s.drop_name = false;
                }
            }
        }
        Ok(Val::Vector(v))
    }

    fn label_join(&mut self, args: &[&Expr], t: i64) -> Result<Val, QueryError> {
        let dst = self.string_arg(args[1], t)?;
        let sep = self.string_arg(args[2], t)?;
        let mut srcs = Vec::new();
        for a in &args[3..] {
            srcs.push(self.string_arg(a, t)?);
        }
        if !self.valid_label_name(&dst) {
            return err(format!(
                "invalid destination label name in label_join(): {dst}"
            ));
        }
        for s in &srcs {
            if !self.valid_label_name(s) {
                return err(format!("invalid source label name in label_join(): {s}"));
            }
        }
        let mut v = self.eval_vector(args[0], t)?;
        for s in &mut v {
            let joined = srcs
                .iter()
                .map(|n| s.metric.get(n).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(&sep);
            s.metric = set_label(&s.metric, &dst, &joined);
            if dst == METRIC_NAME && !joined.is_empty() {
                s.drop_name = false;
            }
        }
        Ok(Val::Vector(v))
    }

    fn histogram_quantile(&mut self, args: &[&Expr], t: i64) -> Result<Val, QueryError> {
        let q = self.quantile_arg(args[0], t)?;
        let v = self.eval_vector(args[1], t)?;
        Ok(Val::Vector(self.classic_quantile(q, &v, args[1], t)))
    }

    /// `histogram_quantiles(v, "label", q1, q2, …)`: one series per group and
    /// quantile, the quantile in `label` as OpenMetrics writes it (`0.5`,
    /// `1.0`), as Prometheus 3's funcHistogramQuantiles.
    fn histogram_quantiles(&mut self, args: &[&Expr], t: i64) -> Result<Val, QueryError> {
        if args.len() < 3 {
            return err(
                "histogram_quantiles() needs a vector, a label name and at least one quantile",
            );
        }
        let label = match self.eval(args[1], t)? {
            Val::Str(s) => s,
            other => return err(format!("expected string, got {}", other.type_name())),
        };
        if !self.valid_label_name(&label) {
            return err(format!(
                "invalid label name {}",
                super::engine::go_quote(&label)
            ));
        }
        let mut qs = Vec::with_capacity(args.len() - 2);
        for a in &args[2..] {
            qs.push(self.quantile_arg(a, t)?);
        }
        let v = self.eval_vector(args[0], t)?;
        let mut out = Vec::new();
        for q in qs {
            let value = openmetrics_float(q);
            for mut s in self.classic_quantile(q, &v, args[0], t) {
                s.metric = set_label(&s.metric, &label, &value);
                out.push(s);
            }
        }
        Ok(Val::Vector(out))
    }

    /// A quantile argument, warning (at its position) when outside [0, 1].
    fn quantile_arg(&mut self, e: &Expr, t: i64) -> Result<f64, QueryError> {
        let q = self.eval_scalar(e, t)?;
        if q.is_nan() || !(0.0..=1.0).contains(&q) {
            let pos = self.pos(e);
            self.warn(format!(
                "quantile value should be between 0 and 1, got {}{pos}",
                format_value(q)
            ));
        }
        Ok(q)
    }

    /// The `q` quantile of each classic histogram (series by `le`) in `v`;
    /// annotations point at `arg`, the expression `v` came from.
    fn classic_quantile(&mut self, q: f64, v: &[VSample], arg: &Expr, t: i64) -> Vec<VSample> {
        // Prometheus names the metric in these annotations only when names are
        // removed late (engine.go and funcHistogramQuantile pass "" otherwise).
        let delayed = self.opts.delayed_name_removal;
        let for_name = |l: &Labels| {
            l.metric_name()
                .filter(|_| delayed)
                .map(|n| format!(" for metric name {}", super::engine::go_quote(n)))
                .unwrap_or_default()
        };
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
        for s in v {
            let le = s.metric.get("le").unwrap_or("");
            let Some(upper) = parse_go_float(le) else {
                let pos = self.pos(arg);
                self.warn(format!(
                    "bucket label \"le\" is missing or has a malformed value of {}{}{pos}",
                    super::engine::go_quote(le),
                    for_name(&s.metric),
                ));
                continue;
            };
            let key = super::engine::remove_labels(&s.metric, &["le".to_string()], false);
            let i = *index.entry(key.clone()).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push((upper, s.f));
        }
        let mut out = Vec::new();
        for (metric, buckets) in groups {
            let (f, forced, _fixed) = bucket_quantile(q, buckets);
            if forced {
                let pos = self.pos(arg);
                self.info(format!(
                    "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile){}{pos}",
                    for_name(&metric)
                ));
            }
            let mut s = VSample {
                metric,
                t,
                f,
                drop_name: false,
            };
            self.drop_name(&mut s);
            out.push(s);
        }
        out
    }
}

/// Prometheus's `labels.FormatOpenMetricsFloat`: Go's shortest `%g`, with
/// `.0` added to a whole number (`1.0`, `0.0`).
fn openmetrics_float(v: f64) -> String {
    let s = crate::template::gofmt::format_g(v, None, false);
    if v.is_finite() && !s.contains(['.', 'e']) {
        format!("{s}.0")
    } else {
        s
    }
}

fn to_sample(s: MSeries, t: i64, f: f64) -> VSample {
    VSample {
        metric: s.metric,
        t,
        f,
        drop_name: s.drop_name,
    }
}

/// Prometheus's `extrapolatedRate` for float samples.
fn extrapolated_rate(
    p: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> f64 {
    let n = p.len();
    let (first_t, first_v) = p[0];
    let (last_t, last_v) = p[n - 1];
    let mut result = last_v - first_v;
    if is_counter {
        let mut last = 0.0;
        for &(_, v) in p {
            if v < last {
                result += last;
            }
            last = v;
        }
    }
    let mut duration_to_start = (first_t - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled_interval = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled_interval / (n - 1) as f64;
    let threshold = avg_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    if duration_to_start >= threshold {
        duration_to_start = avg_between / 2.0;
    }
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let duration_to_zero = sampled_interval * (first_v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    extrapolate_to += duration_to_start;
    if duration_to_end >= threshold {
        duration_to_end = avg_between / 2.0;
    }
    extrapolate_to += duration_to_end;
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    result * factor
}

fn double_exponential_smoothing(p: &[(i64, f64)], sf: f64, tf: f64) -> f64 {
    let mut s0 = 0.0;
    let mut s1 = p[0].1;
    let mut b = p[1].1 - p[0].1;
    for (i, &(_, v)) in p.iter().enumerate().skip(1) {
        let x = sf * v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    s1
}

/// Prometheus's `BucketQuantile` for classic buckets: (value, forced monotonic, fixed precision).
pub(crate) fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> (f64, bool, bool) {
    if q.is_nan() {
        return (f64::NAN, false, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false, false);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return (f64::NAN, false, false);
    }
    // Coalesce buckets with the same upper bound.
    let mut co: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match co.last_mut() {
            Some(last) if last.0 == b.0 => last.1 += b.1,
            _ => co.push(b),
        }
    }
    let mut buckets = co;
    // Ensure monotonic counts, ignoring tiny deltas.
    let (mut forced, mut fixed) = (false, false);
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) {
            b.1 = prev;
            fixed = true;
            continue;
        }
        if curr < prev {
            b.1 = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return (f64::NAN, forced, fixed);
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return (f64::NAN, forced, fixed);
    }
    let mut rank = q * observations;
    let n = buckets.len() - 1;
    let b = buckets[..n].partition_point(|x| x.1 < rank);
    if b == n {
        return (buckets[n - 1].0, forced, fixed);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return (buckets[0].0, forced, fixed);
    }
    let mut start = 0.0;
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced, fixed)
}

/// Prometheus's `almost.Equal`.
pub(crate) fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

fn simple_math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

fn time_part(name: &str, v: f64) -> f64 {
    if v.is_nan() || v.is_infinite() {
        return v;
    }
    let secs = v.trunc() as i64;
    let Some(dt) = DateTime::from_timestamp(secs, 0) else {
        return f64::NAN;
    };
    (match name {
        "day_of_month" => dt.day(),
        "day_of_week" => dt.weekday().num_days_from_sunday(),
        "day_of_year" => dt.ordinal(),
        "days_in_month" => {
            let (y, m) = (dt.year(), dt.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let first_next = chrono::NaiveDate::from_ymd_opt(ny, nm, 1);
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
            match (first, first_next) {
                (Some(a), Some(b)) => (b - a).num_days() as u32,
                _ => return f64::NAN,
            }
        }
        "hour" => dt.hour(),
        "minute" => dt.minute(),
        "month" => dt.month(),
        _ => return dt.year() as f64,
    }) as f64
}

/// Natural ordering for `sort_by_label` (digit runs compare numerically).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}
