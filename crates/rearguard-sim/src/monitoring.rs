//! Cloud Monitoring v3 `projects.timeSeries.list`, shaped as `monitoring-v3.json`.
//!
//! Series hold points (interval + typed value). A point becomes visible only
//! `ingest_delay` after its end time (Monitoring's data arrives minutes late).
//! Lists filter by metric type and metric/resource labels, select points whose
//! end time lies in `(startTime, endTime]`, align and reduce like Monitoring
//! (`ALIGN_DELTA`, `ALIGN_RATE`, `ALIGN_MEAN`, `ALIGN_SUM`, `ALIGN_MIN`,
//! `ALIGN_MAX`, `ALIGN_COUNT`, `ALIGN_NEXT_OLDER`, `ALIGN_PERCENTILE_*`;
//! `REDUCE_SUM`, `REDUCE_MEAN`, `REDUCE_MIN`, `REDUCE_MAX`, `REDUCE_COUNT`,
//! `REDUCE_PERCENTILE_*`), list points newest first, and page by points in
//! view FULL (a series may be split over pages) and by series in view HEADERS.
//! NaN and infinities are written as proto3 JSON strings; answers can be
//! marked incomplete (`executionErrors`, `unreachable`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::util::{
    page_token, parse_duration_ms, parse_page_size, parse_page_token, parse_timestamp, query_get,
    timestamp, ApiError,
};
use rearguard_clock::TimestampMs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    Delta,
    Cumulative,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "GAUGE",
            MetricKind::Delta => "DELTA",
            MetricKind::Cumulative => "CUMULATIVE",
        }
    }
}

/// Bucket layout of a distribution (`BucketOptions`).
#[derive(Clone, Debug, PartialEq)]
pub enum BucketOptions {
    Linear {
        num_finite_buckets: i64,
        width: f64,
        offset: f64,
    },
    Exponential {
        num_finite_buckets: i64,
        growth_factor: f64,
        scale: f64,
    },
    Explicit {
        bounds: Vec<f64>,
    },
}

impl BucketOptions {
    /// The finite bucket boundaries (N+1 of them for N finite buckets); bucket 0
    /// is the underflow `(-inf, b0)`, bucket i is `[b(i-1), b(i))`, the last is
    /// the overflow `[bN, +inf)`.
    pub fn bounds(&self) -> Vec<f64> {
        match self {
            BucketOptions::Linear {
                num_finite_buckets,
                width,
                offset,
            } => (0..=*num_finite_buckets)
                .map(|i| offset + width * i as f64)
                .collect(),
            BucketOptions::Exponential {
                num_finite_buckets,
                growth_factor,
                scale,
            } => (0..=*num_finite_buckets)
                .map(|i| scale * growth_factor.powi(i as i32))
                .collect(),
            BucketOptions::Explicit { bounds } => bounds.clone(),
        }
    }

    fn bucket_count(&self) -> usize {
        self.bounds().len() + 1
    }

    fn index(&self, v: f64) -> usize {
        self.bounds().iter().take_while(|b| v >= **b).count()
    }

    fn json(&self) -> Value {
        match self {
            BucketOptions::Linear {
                num_finite_buckets,
                width,
                offset,
            } => {
                json!({"linearBuckets": {"numFiniteBuckets": num_finite_buckets, "width": width, "offset": offset}})
            }
            BucketOptions::Exponential {
                num_finite_buckets,
                growth_factor,
                scale,
            } => {
                json!({"exponentialBuckets": {"numFiniteBuckets": num_finite_buckets, "growthFactor": growth_factor, "scale": scale}})
            }
            BucketOptions::Explicit { bounds } => json!({"explicitBuckets": {"bounds": bounds}}),
        }
    }
}

/// A distribution value.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    pub count: i64,
    pub mean: f64,
    pub sum_of_squared_deviation: f64,
    pub options: BucketOptions,
    /// One count per bucket (underflow, finite buckets, overflow).
    pub bucket_counts: Vec<i64>,
}

impl Distribution {
    pub fn empty(options: BucketOptions) -> Self {
        let n = options.bucket_count();
        Self {
            count: 0,
            mean: 0.0,
            sum_of_squared_deviation: 0.0,
            options,
            bucket_counts: vec![0; n],
        }
    }

    pub fn from_values(options: BucketOptions, values: &[f64]) -> Self {
        let mut d = Self::empty(options);
        for v in values {
            d.add(*v);
        }
        d
    }

    /// Adds one sample (Welford's update for mean and squared deviation).
    pub fn add(&mut self, v: f64) {
        self.count += 1;
        let delta = v - self.mean;
        self.mean += delta / self.count as f64;
        self.sum_of_squared_deviation += delta * (v - self.mean);
        let i = self.options.index(v);
        if let Some(c) = self.bucket_counts.get_mut(i) {
            *c += 1;
        }
    }

    pub fn merge(&mut self, o: &Distribution) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = o.clone();
            return;
        }
        let n = (self.count + o.count) as f64;
        let delta = o.mean - self.mean;
        let mean = self.mean + delta * o.count as f64 / n;
        self.sum_of_squared_deviation +=
            o.sum_of_squared_deviation + delta * delta * self.count as f64 * o.count as f64 / n;
        self.mean = mean;
        self.count += o.count;
        for (i, c) in o.bucket_counts.iter().enumerate() {
            if let Some(s) = self.bucket_counts.get_mut(i) {
                *s += c;
            }
        }
    }

    /// The p-th percentile (0..=100), interpolated linearly inside its bucket.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let bounds = self.options.bounds();
        let rank = p / 100.0 * self.count as f64;
        let mut seen = 0.0;
        for (i, c) in self.bucket_counts.iter().enumerate() {
            let c = *c as f64;
            if c > 0.0 && seen + c >= rank {
                let lower = if i == 0 {
                    None
                } else {
                    bounds.get(i - 1).copied()
                };
                let upper = bounds.get(i).copied();
                return match (lower, upper) {
                    (Some(l), Some(u)) => l + (u - l) * ((rank - seen) / c).clamp(0.0, 1.0),
                    (None, Some(u)) => u,
                    (Some(l), None) => l,
                    (None, None) => self.mean,
                };
            }
            seen += c;
        }
        self.mean
    }

    fn json(&self) -> Value {
        let mut counts = self.bucket_counts.clone();
        while counts.last() == Some(&0) {
            counts.pop();
        }
        let mut v = json!({
            "count": self.count.to_string(),
            "bucketOptions": self.options.json(),
        });
        if self.count > 0 {
            v["mean"] = proto_double(self.mean);
            v["sumOfSquaredDeviation"] = proto_double(self.sum_of_squared_deviation);
        }
        if !counts.is_empty() {
            v["bucketCounts"] = json!(counts.iter().map(i64::to_string).collect::<Vec<_>>());
        }
        v
    }
}

/// A typed point value.
#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    Int64(i64),
    Double(f64),
    Bool(bool),
    Distribution(Distribution),
}

impl PointValue {
    fn value_type(&self) -> &'static str {
        match self {
            PointValue::Int64(_) => "INT64",
            PointValue::Double(_) => "DOUBLE",
            PointValue::Bool(_) => "BOOL",
            PointValue::Distribution(_) => "DISTRIBUTION",
        }
    }

    fn as_f64(&self) -> f64 {
        match self {
            PointValue::Int64(i) => *i as f64,
            PointValue::Double(d) => *d,
            PointValue::Bool(b) => f64::from(u8::from(*b)),
            PointValue::Distribution(d) => d.mean,
        }
    }

    fn json(&self) -> Value {
        match self {
            PointValue::Int64(i) => json!({"int64Value": i.to_string()}),
            PointValue::Double(d) => json!({"doubleValue": proto_double(*d)}),
            PointValue::Bool(b) => json!({"boolValue": b}),
            PointValue::Distribution(d) => json!({"distributionValue": d.json()}),
        }
    }
}

/// A double as proto3 JSON writes it: a number, or `"NaN"`, `"Infinity"`,
/// `"-Infinity"` (https://protobuf.dev/programming-guides/json/).
fn proto_double(d: f64) -> Value {
    if d.is_nan() {
        json!("NaN")
    } else if d == f64::INFINITY {
        json!("Infinity")
    } else if d == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(d)
    }
}

/// Identity and kind of a series to write points into.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSpec {
    pub metric_type: String,
    pub metric_labels: BTreeMap<String, String>,
    pub resource_type: String,
    pub resource_labels: BTreeMap<String, String>,
    pub kind: MetricKind,
    pub unit: Option<String>,
}

impl SeriesSpec {
    pub fn new(metric_type: &str, kind: MetricKind, resource_type: &str) -> Self {
        Self {
            metric_type: metric_type.into(),
            metric_labels: BTreeMap::new(),
            resource_type: resource_type.into(),
            resource_labels: BTreeMap::new(),
            kind,
            unit: None,
        }
    }
    pub fn metric_label(mut self, k: &str, v: &str) -> Self {
        self.metric_labels.insert(k.into(), v.into());
        self
    }
    pub fn resource_label(mut self, k: &str, v: &str) -> Self {
        self.resource_labels.insert(k.into(), v.into());
        self
    }
    pub fn unit(mut self, u: &str) -> Self {
        self.unit = Some(u.into());
        self
    }

    /// A Cloud Run revision resource (`cloud_run_revision`).
    pub fn cloud_run(
        metric_type: &str,
        kind: MetricKind,
        project: &str,
        location: &str,
        service: &str,
        revision: &str,
    ) -> Self {
        Self::new(metric_type, kind, "cloud_run_revision")
            .resource_label("project_id", project)
            .resource_label("location", location)
            .resource_label("service_name", service)
            .resource_label("revision_name", revision)
            .resource_label("configuration_name", service)
    }

    fn field(&self, field: &str) -> Option<&str> {
        match field {
            "metric.type" => Some(&self.metric_type),
            "resource.type" => Some(&self.resource_type),
            "project" => self.resource_labels.get("project_id").map(String::as_str),
            _ => {
                if let Some(k) = field
                    .strip_prefix("metric.labels.")
                    .or_else(|| field.strip_prefix("metric.label."))
                {
                    self.metric_labels.get(k).map(String::as_str)
                } else if let Some(k) = field
                    .strip_prefix("resource.labels.")
                    .or_else(|| field.strip_prefix("resource.label."))
                {
                    self.resource_labels.get(k).map(String::as_str)
                } else {
                    None
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoredPoint {
    pub start_ms: TimestampMs,
    pub end_ms: TimestampMs,
    pub value: PointValue,
}

struct Series {
    spec: SeriesSpec,
    value_type: &'static str,
    points: Vec<StoredPoint>,
}

#[derive(Default)]
pub(crate) struct MonitoringState {
    series: Vec<Series>,
    pub ingest_delay_ms: i64,
    /// While set, every answer carries this execution error (code 14,
    /// UNAVAILABLE) and lacks the newest point of each series: the data a
    /// failing backend did not deliver.
    pub execution_error: Option<String>,
    /// Locations (`resource.labels.location`) unreachable: their series are
    /// left out and the answer lists them in `unreachable`.
    pub unreachable_locations: Vec<String>,
    /// The most points a FULL page holds whatever `pageSize` asks: `pageSize`
    /// is "the maximum number of Points returned" (monitoring-v3.json) and
    /// "the API may return fewer results than the page size" (AIP-158).
    pub max_points_per_page: Option<usize>,
}

// ---- the filter ----------------------------------------------------------------

#[derive(Debug)]
enum Matcher {
    Eq(String),
    Ne(String),
    StartsWith(String),
    EndsWith(String),
    HasSubstring(String),
    OneOf(Vec<String>),
    Regex(regex::Regex),
}

impl Matcher {
    fn matches(&self, v: Option<&str>) -> bool {
        match self {
            Matcher::Ne(x) => v != Some(x.as_str()),
            _ => {
                let Some(v) = v else { return false };
                match self {
                    Matcher::Eq(x) => v == x,
                    Matcher::StartsWith(x) => v.starts_with(x.as_str()),
                    Matcher::EndsWith(x) => v.ends_with(x.as_str()),
                    Matcher::HasSubstring(x) => v.contains(x.as_str()),
                    Matcher::OneOf(xs) => xs.iter().any(|x| x == v),
                    Matcher::Regex(r) => r.is_match(v),
                    Matcher::Ne(_) => unreachable_ne(),
                }
            }
        }
    }
}

fn unreachable_ne() -> bool {
    false
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn ws(&mut self) {
        while self.s[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.s[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.pos..].starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    /// The word `kw` (`AND`, `OR`, `NOT`), not the start of a longer name.
    fn keyword(&mut self, kw: &str) -> bool {
        self.ws();
        let rest = &self.s[self.pos..];
        let whole_word = rest.strip_prefix(kw).is_some_and(|after| {
            !after.starts_with(|c: char| c.is_ascii_alphanumeric() || "_./".contains(c))
        });
        if whole_word {
            self.pos += kw.len();
        }
        whole_word
    }
    fn ident(&mut self) -> Option<String> {
        self.ws();
        let rest = &self.s[self.pos..];
        let n = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '/'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        self.pos += n;
        Some(rest[..n].to_string())
    }
    fn string(&mut self) -> Option<String> {
        self.ws();
        let rest = &self.s[self.pos..];
        let mut chars = rest.char_indices();
        let (_, q) = chars.next()?;
        if q != '"' && q != '\'' {
            return None;
        }
        let mut out = String::new();
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                self.pos += i + 1;
                return Some(out);
            } else {
                out.push(c);
            }
        }
        None
    }
    fn done(&mut self) -> bool {
        self.ws();
        self.pos >= self.s.len()
    }
}

/// A parsed filter: terms joined by `AND`, `OR` and `NOT`/`-`, grouped by parentheses.
#[derive(Debug)]
enum Filter {
    Term(String, Matcher),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

impl Filter {
    fn matches(&self, s: &SeriesSpec) -> bool {
        match self {
            Filter::Term(field, m) => m.matches(s.field(field)),
            Filter::And(v) => v.iter().all(|f| f.matches(s)),
            Filter::Or(v) => v.iter().any(|f| f.matches(s)),
            Filter::Not(f) => !f.matches(s),
        }
    }

    /// The `metric.type = "..."` that every matching series must have: a term
    /// of the top-level conjunction (one inside `OR` or `NOT` does not select a type).
    fn metric_type(&self) -> Option<&str> {
        match self {
            Filter::Term(field, Matcher::Eq(t)) if field == "metric.type" => Some(t.as_str()),
            Filter::And(v) => v.iter().find_map(Filter::metric_type),
            _ => None,
        }
    }
}

/// Parentheses and `NOT`s nested deeper than this are refused (no stack overflow).
const MAX_FILTER_DEPTH: usize = 32;

/// Parses Monitoring's filter syntax: terms `FIELD = "v"` / `!=` /
/// `= starts_with("v")` / `ends_with` / `has_substring` / `one_of("a","b")` /
/// `monitoring.regex.full_match("re")`, joined by `AND` and `OR` (`AND` binds
/// tighter), negated by `NOT` or `-`, grouped by parentheses. Anything else is
/// a 400 `INVALID_ARGUMENT` that says where the filter stopped making sense.
fn parse_filter(filter: &str) -> Result<Filter, ApiError> {
    let mut p = FilterParser {
        lx: Lexer { s: filter, pos: 0 },
    };
    let parsed = p.or(0).and_then(|f| {
        if p.lx.done() {
            Ok(f)
        } else {
            Err(p.error("expected AND, OR or the end of the filter"))
        }
    });
    parsed.map_err(|why| {
        ApiError::invalid_argument(format!(
            "Field filter had an invalid value of \"{filter}\": {why}"
        ))
    })
}

struct FilterParser<'a> {
    lx: Lexer<'a>,
}

impl FilterParser<'_> {
    /// `why`, with where the parser stopped (a character offset from 0).
    fn error(&mut self, why: &str) -> String {
        self.lx.ws();
        let at = self.lx.s[..self.lx.pos].chars().count();
        match self.lx.s[self.lx.pos..].chars().next() {
            Some(c) => format!("{why} at position {at} (at {c:?})"),
            None => format!("{why} at the end"),
        }
    }

    /// `OR` of `AND`s.
    fn or(&mut self, depth: usize) -> Result<Filter, String> {
        let mut v = vec![self.and(depth)?];
        while self.lx.keyword("OR") {
            v.push(self.and(depth)?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Filter::Or(v)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Filter, String> {
        let mut v = vec![self.unary(depth)?];
        while self.lx.keyword("AND") || self.lx.keyword("and") {
            v.push(self.unary(depth)?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Filter::And(v)
        })
    }

    /// `NOT x`, `-x`, `( ... )` or a term.
    fn unary(&mut self, depth: usize) -> Result<Filter, String> {
        if depth >= MAX_FILTER_DEPTH {
            return Err(self.error(&format!(
                "parentheses and NOTs nested more than {MAX_FILTER_DEPTH} deep"
            )));
        }
        if self.lx.keyword("NOT") || self.lx.eat("-") {
            return Ok(Filter::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.lx.eat("(") {
            let inner = self.or(depth + 1)?;
            if !self.lx.eat(")") {
                return Err(self.error("expected ) to close the ("));
            }
            return Ok(inner);
        }
        self.term()
    }

    fn term(&mut self) -> Result<Filter, String> {
        let bad = |p: &mut Self, why: &str| Err(p.error(why));
        let Some(field) = self.lx.ident() else {
            return bad(self, "expected a field name, NOT, - or (");
        };
        if ["AND", "OR", "NOT"].contains(&field.as_str()) {
            return Err(format!("expected a field name, found {field}"));
        }
        let negate = if self.lx.eat("!=") {
            true
        } else if self.lx.eat("=") {
            false
        } else {
            return bad(self, &format!("expected = or != after {field}"));
        };
        if let Some(v) = self.lx.string() {
            let m = if negate {
                Matcher::Ne(v)
            } else {
                Matcher::Eq(v)
            };
            return Ok(Filter::Term(field, m));
        }
        let Some(func) = self.lx.ident() else {
            return bad(self, "expected a quoted string or a function");
        };
        if !self.lx.eat("(") {
            return bad(self, &format!("expected ( after {func}"));
        }
        let mut args = Vec::new();
        loop {
            match self.lx.string() {
                Some(a) => args.push(a),
                None => return bad(self, "expected a quoted string argument"),
            }
            if !self.lx.eat(",") {
                break;
            }
        }
        if !self.lx.eat(")") {
            return bad(self, &format!("expected ) to close {func}("));
        }
        if negate {
            return Err(format!(
                "!= with {func}() is not supported by the fake; write NOT {field} = {func}(...)"
            ));
        }
        let one = |args: &[String]| -> Result<String, String> {
            match args {
                [a] => Ok(a.clone()),
                _ => Err(format!("{func}() takes one argument, got {}", args.len())),
            }
        };
        let m = match func.as_str() {
            "starts_with" => Matcher::StartsWith(one(&args)?),
            "ends_with" => Matcher::EndsWith(one(&args)?),
            "has_substring" => Matcher::HasSubstring(one(&args)?),
            "one_of" => Matcher::OneOf(args),
            "monitoring.regex.full_match" => Matcher::Regex(
                regex::Regex::new(&format!("^(?:{})$", one(&args)?))
                    .map_err(|e| format!("invalid regular expression: {e}"))?,
            ),
            f => return Err(format!("unknown function {f}")),
        };
        Ok(Filter::Term(field, m))
    }
}

// ---- aligners and reducers ------------------------------------------------------------

fn combine_sum(values: &[&PointValue]) -> Option<PointValue> {
    let first = values.first()?;
    Some(match first {
        PointValue::Int64(_) => PointValue::Int64(values.iter().map(|v| v.as_f64() as i64).sum()),
        PointValue::Distribution(d) => {
            let mut acc = Distribution::empty(d.options.clone());
            for v in values {
                if let PointValue::Distribution(x) = v {
                    acc.merge(x);
                }
            }
            PointValue::Distribution(acc)
        }
        _ => PointValue::Double(values.iter().map(|v| v.as_f64()).sum()),
    })
}

fn percentile_of(values: &[&PointValue], p: f64) -> Option<f64> {
    if let Some(PointValue::Distribution(_)) = values.first() {
        if let Some(PointValue::Distribution(d)) = combine_sum(values) {
            return Some(d.percentile(p));
        }
    }
    let mut xs: Vec<f64> = values.iter().map(|v| v.as_f64()).collect();
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let idx = ((p / 100.0) * (xs.len() - 1) as f64).round() as usize;
    xs.get(idx).copied()
}

fn mean_of(values: &[&PointValue]) -> Option<f64> {
    if let Some(PointValue::Distribution(_)) = values.first() {
        if let Some(PointValue::Distribution(d)) = combine_sum(values) {
            return Some(d.mean);
        }
    }
    if values.is_empty() {
        return None;
    }
    Some(values.iter().map(|v| v.as_f64()).sum::<f64>() / values.len() as f64)
}

fn percent_suffix(name: &str, prefix: &str) -> Option<f64> {
    let p: f64 = name.strip_prefix(prefix)?.parse().ok()?;
    Some(if p == 5.0 { 5.0 } else { p })
}

/// An aligned or raw output series.
struct OutSeries {
    metric_type: String,
    metric_labels: BTreeMap<String, String>,
    resource_type: String,
    resource_labels: BTreeMap<String, String>,
    kind: MetricKind,
    value_type: &'static str,
    unit: Option<String>,
    /// (start, end, value), oldest first.
    points: Vec<(TimestampMs, TimestampMs, PointValue)>,
}

impl OutSeries {
    fn json(&self) -> Value {
        let mut metric = json!({"type": self.metric_type});
        if !self.metric_labels.is_empty() {
            metric["labels"] = json!(self.metric_labels);
        }
        let mut resource = json!({"type": self.resource_type});
        if !self.resource_labels.is_empty() {
            resource["labels"] = json!(self.resource_labels);
        }
        let points: Vec<Value> = self
            .points
            .iter()
            .rev()
            .map(|(s, e, v)| {
                json!({"interval": {"startTime": timestamp(*s), "endTime": timestamp(*e)}, "value": v.json()})
            })
            .collect();
        let mut out = json!({
            "metric": metric,
            "resource": resource,
            "metricKind": self.kind.as_str(),
            "valueType": self.value_type,
            "points": points,
        });
        if let Some(u) = &self.unit {
            out["unit"] = json!(u);
        }
        out
    }
}

impl MonitoringState {
    /// Adds a point to the series `spec` (created on first use). Points keep
    /// end-time order; a point with the same end time replaces the old one.
    pub fn add_point(
        &mut self,
        spec: &SeriesSpec,
        start_ms: TimestampMs,
        end_ms: TimestampMs,
        value: PointValue,
    ) -> Result<(), ApiError> {
        let vt = value.value_type();
        let series = match self.series.iter_mut().position(|s| {
            s.spec.metric_type == spec.metric_type
                && s.spec.metric_labels == spec.metric_labels
                && s.spec.resource_type == spec.resource_type
                && s.spec.resource_labels == spec.resource_labels
        }) {
            Some(i) => &mut self.series[i],
            None => {
                self.series.push(Series {
                    spec: spec.clone(),
                    value_type: vt,
                    points: Vec::new(),
                });
                let last = self.series.len() - 1;
                &mut self.series[last]
            }
        };
        if series.value_type != vt {
            return Err(ApiError::invalid_argument(format!(
                "Value type for metric {} must be {}, but is {vt}.",
                spec.metric_type, series.value_type
            )));
        }
        let start_ms = if spec.kind == MetricKind::Gauge {
            end_ms
        } else {
            start_ms
        };
        let p = StoredPoint {
            start_ms,
            end_ms,
            value,
        };
        match series.points.binary_search_by_key(&end_ms, |p| p.end_ms) {
            Ok(i) => series.points[i] = p,
            Err(i) => series.points.insert(i, p),
        }
        Ok(())
    }

    /// `projects.timeSeries.list`.
    pub fn list(
        &self,
        now: TimestampMs,
        name: &str,
        query: &[(String, String)],
    ) -> Result<Value, ApiError> {
        let project = name
            .strip_prefix("projects/")
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .ok_or_else(|| {
                ApiError::invalid_argument(format!(
                    "Invalid resource name {name:?}: expected projects/PROJECT"
                ))
            })?;
        let filter = query_get(query, "filter")
            .filter(|f| !f.trim().is_empty())
            .ok_or_else(|| ApiError::invalid_argument("Field filter had an invalid value of \"\": a metric type must be given (metric.type = \"...\")."))?;
        let parsed = parse_filter(filter)?;
        if parsed.metric_type().is_none() {
            return Err(ApiError::invalid_argument(format!(
                "Field filter had an invalid value of \"{filter}\": must specify metric.type = \"...\""
            )));
        }
        let end = query_get(query, "interval.endTime").ok_or_else(|| {
            ApiError::invalid_argument(
                "Field interval.endTime had an invalid value of \"\": the end time is required.",
            )
        })?;
        let end_ms = parse_timestamp(end).ok_or_else(|| {
            ApiError::invalid_argument(format!("Invalid value at 'interval.end_time' (type.googleapis.com/google.protobuf.Timestamp), Field 'endTime', Invalid time format: {end}"))
        })?;
        let start_ms = match query_get(query, "interval.startTime") {
            Some(s) => parse_timestamp(s).ok_or_else(|| {
                ApiError::invalid_argument(format!("Invalid value at 'interval.start_time' (type.googleapis.com/google.protobuf.Timestamp), Field 'startTime', Invalid time format: {s}"))
            })?,
            None => end_ms,
        };
        if start_ms > end_ms {
            return Err(ApiError::invalid_argument("Field interval.startTime had an invalid value: the start time must not be later than the end time."));
        }
        let aligner = query_get(query, "aggregation.perSeriesAligner").unwrap_or("ALIGN_NONE");
        let reducer = query_get(query, "aggregation.crossSeriesReducer").unwrap_or("REDUCE_NONE");
        let group_by: Vec<&str> = query
            .iter()
            .filter(|(k, _)| k == "aggregation.groupByFields")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let period_ms = match query_get(query, "aggregation.alignmentPeriod") {
            Some(p) => Some(parse_duration_ms(p).ok_or_else(|| {
                ApiError::invalid_argument(format!("Invalid value at 'aggregation.alignment_period' (type.googleapis.com/google.protobuf.Duration), {p:?}"))
            })?),
            None => None,
        };
        if aligner != "ALIGN_NONE" {
            match period_ms {
                None => {
                    return Err(ApiError::invalid_argument(
                        "The alignment period must be specified when an aligner is given.",
                    ))
                }
                Some(p) if p < 60_000 => {
                    return Err(ApiError::invalid_argument(
                        "The alignment period must be at least 60 seconds.",
                    ))
                }
                _ => {}
            }
        }
        if reducer != "REDUCE_NONE" && aligner == "ALIGN_NONE" {
            return Err(ApiError::invalid_argument(
                "A cross-series reducer requires a per-series aligner other than ALIGN_NONE.",
            ));
        }
        let visible_until = now - self.ingest_delay_ms;

        let mut out = Vec::new();
        for s in &self.series {
            if s.spec
                .resource_labels
                .get("project_id")
                .is_some_and(|p| p != project)
            {
                continue;
            }
            if !parsed.matches(&s.spec) {
                continue;
            }
            if s.spec
                .resource_labels
                .get("location")
                .is_some_and(|l| self.unreachable_locations.contains(l))
            {
                continue;
            }
            // A failing backend: the newest visible point of the series is missing.
            let newest_visible = s
                .points
                .iter()
                .rev()
                .find(|p| p.end_ms <= now - self.ingest_delay_ms)
                .map(|p| p.end_ms);
            let visible_until = match (&self.execution_error, newest_visible) {
                (Some(_), Some(newest)) => newest - 1,
                _ => visible_until,
            };
            let pts: Vec<&StoredPoint> = s
                .points
                .iter()
                .filter(|p| p.end_ms <= visible_until)
                .filter(|p| {
                    if start_ms == end_ms {
                        p.start_ms <= end_ms && p.end_ms >= end_ms
                    } else {
                        p.end_ms > start_ms && p.end_ms <= end_ms
                    }
                })
                .collect();
            let series = if aligner == "ALIGN_NONE" {
                OutSeries {
                    metric_type: s.spec.metric_type.clone(),
                    metric_labels: s.spec.metric_labels.clone(),
                    resource_type: s.spec.resource_type.clone(),
                    resource_labels: s.spec.resource_labels.clone(),
                    kind: s.spec.kind,
                    value_type: s.value_type,
                    unit: s.spec.unit.clone(),
                    points: pts
                        .iter()
                        .map(|p| (p.start_ms, p.end_ms, p.value.clone()))
                        .collect(),
                }
            } else {
                let period = period_ms.unwrap_or(60_000);
                align(
                    s,
                    &s.points
                        .iter()
                        .filter(|p| p.end_ms <= visible_until)
                        .collect::<Vec<_>>(),
                    aligner,
                    period,
                    start_ms,
                    end_ms,
                )?
            };
            if !series.points.is_empty() {
                out.push(series);
            }
        }
        if reducer != "REDUCE_NONE" {
            out = reduce(out, reducer, &group_by)?;
        }
        let key = format!(
            "{name}|{filter}|{:?}",
            query
                .iter()
                .filter(|(k, _)| k != "pageToken" && k != "pageSize")
                .collect::<Vec<_>>()
        );
        let page_size = parse_page_size(query_get(query, "pageSize"), 100_000, 100_000)?;
        let offset = parse_page_token(query_get(query, "pageToken").unwrap_or(""), &key)?;
        let view = query_get(query, "view").unwrap_or("FULL");
        let page_size = match self.max_points_per_page {
            Some(cap) if view == "FULL" => page_size.min(cap.max(1)),
            _ => page_size,
        };
        // monitoring-v3.json, `pageSize`: "If view is set to FULL, this is the
        // maximum number of Points returned. If view is set to HEADERS, this is
        // the maximum number of TimeSeries returned." So in FULL one series may
        // be split over pages, each page repeating its metric and resource.
        let (page, total): (Vec<Value>, usize) = match view {
            "HEADERS" => (
                out.iter()
                    .skip(offset)
                    .take(page_size)
                    .map(|s| {
                        let mut v = s.json();
                        if let Some(o) = v.as_object_mut() {
                            o.remove("points");
                        }
                        v
                    })
                    .collect(),
                out.len(),
            ),
            "FULL" => {
                let total = out.iter().map(|s| s.points.len()).sum();
                (points_page(&out, offset, page_size), total)
            }
            v => {
                return Err(ApiError::invalid_argument(format!(
                    "Invalid value at 'view' (type.googleapis.com/google.monitoring.v3.ListTimeSeriesRequest.TimeSeriesView), \"{v}\""
                )))
            }
        };
        let mut resp = Map::new();
        if !page.is_empty() {
            resp.insert("timeSeries".into(), json!(page));
        }
        if offset + page_size < total {
            resp.insert(
                "nextPageToken".into(),
                json!(page_token(offset + page_size, &key)),
            );
        }
        // monitoring-v3.json, `ListTimeSeriesResponse.executionErrors`: "Query
        // execution errors that may have caused the time series data returned to
        // be incomplete"; `unreachable`: "Cloud regions that were unreachable
        // which may have caused incomplete data to be returned".
        if let Some(message) = &self.execution_error {
            resp.insert(
                "executionErrors".into(),
                json!([{"code": 14, "message": message}]),
            );
        }
        if !self.unreachable_locations.is_empty() {
            resp.insert("unreachable".into(), json!(self.unreachable_locations));
        }
        Ok(Value::Object(resp))
    }
}

/// The points `[offset, offset + size)` of `series` (each series' points newest
/// first, as the API lists them), grouped back into their series.
fn points_page(series: &[OutSeries], offset: usize, size: usize) -> Vec<Value> {
    let mut page = Vec::new();
    let mut skip = offset;
    let mut left = size;
    for s in series {
        if left == 0 {
            break;
        }
        let n = s.points.len();
        if skip >= n {
            skip -= n;
            continue;
        }
        let take = (n - skip).min(left);
        let mut v = s.json();
        if let Some(points) = v.get_mut("points").and_then(Value::as_array_mut) {
            *points = points[skip..skip + take].to_vec();
        }
        page.push(v);
        left -= take;
        skip = 0;
    }
    page
}

fn align(
    s: &Series,
    pts: &[&StoredPoint],
    aligner: &str,
    period: i64,
    start_ms: TimestampMs,
    end_ms: TimestampMs,
) -> Result<OutSeries, ApiError> {
    let kind = s.spec.kind;
    let vt = s.value_type;
    let cannot = || {
        ApiError::invalid_argument(format!(
            "The aligner {aligner} cannot be applied to metrics with kind {} and value type {vt}.",
            kind.as_str()
        ))
    };
    let numeric = vt == "INT64" || vt == "DOUBLE";
    let (out_kind, out_vt): (MetricKind, &'static str) = match aligner {
        "ALIGN_DELTA" if kind != MetricKind::Gauge && vt != "BOOL" => (MetricKind::Delta, vt),
        "ALIGN_RATE" if kind != MetricKind::Gauge && numeric => (MetricKind::Gauge, "DOUBLE"),
        "ALIGN_MEAN" if numeric || vt == "DISTRIBUTION" => (MetricKind::Gauge, "DOUBLE"),
        "ALIGN_SUM" if numeric || vt == "DISTRIBUTION" => (
            if kind == MetricKind::Gauge {
                MetricKind::Gauge
            } else {
                MetricKind::Delta
            },
            vt,
        ),
        "ALIGN_MIN" | "ALIGN_MAX" if numeric => (MetricKind::Gauge, vt),
        "ALIGN_COUNT" => (MetricKind::Gauge, "INT64"),
        "ALIGN_NEXT_OLDER" | "ALIGN_INTERPOLATE" => (
            MetricKind::Gauge,
            if vt == "INT64" && aligner == "ALIGN_INTERPOLATE" {
                "DOUBLE"
            } else {
                vt
            },
        ),
        a if a.starts_with("ALIGN_PERCENTILE_") && vt == "DISTRIBUTION" => {
            (MetricKind::Gauge, "DOUBLE")
        }
        a if a.starts_with("ALIGN_PERCENTILE_")
            || [
                "ALIGN_DELTA",
                "ALIGN_RATE",
                "ALIGN_MEAN",
                "ALIGN_SUM",
                "ALIGN_MIN",
                "ALIGN_MAX",
            ]
            .contains(&a) =>
        {
            return Err(cannot())
        }
        a => {
            return Err(ApiError::invalid_argument(format!(
                "The aligner {a} is not supported by the fake."
            )))
        }
    };
    let mut points = Vec::new();
    let mut t = end_ms;
    while t > start_ms {
        let window: Vec<&PointValue> = pts
            .iter()
            .filter(|p| p.end_ms > t - period && p.end_ms <= t)
            .map(|p| &p.value)
            .collect();
        let value = if aligner == "ALIGN_NEXT_OLDER" || aligner == "ALIGN_INTERPOLATE" {
            pts.iter()
                .rev()
                .find(|p| p.end_ms <= t && p.end_ms > t - period)
                .map(|p| match (&p.value, out_vt) {
                    (v, "DOUBLE") => PointValue::Double(v.as_f64()),
                    (v, _) => v.clone(),
                })
        } else if window.is_empty() {
            None
        } else {
            match aligner {
                "ALIGN_DELTA" | "ALIGN_SUM" if kind == MetricKind::Cumulative => {
                    let before = pts
                        .iter()
                        .rev()
                        .find(|p| p.end_ms <= t - period)
                        .map(|p| p.value.as_f64());
                    let last = window.last().map(|v| v.as_f64()).unwrap_or(0.0);
                    let d = match before {
                        Some(b) if last >= b => last - b,
                        _ => last,
                    };
                    Some(if vt == "INT64" {
                        PointValue::Int64(d as i64)
                    } else {
                        PointValue::Double(d)
                    })
                }
                "ALIGN_DELTA" | "ALIGN_SUM" => combine_sum(&window),
                "ALIGN_RATE" => {
                    let total = if kind == MetricKind::Cumulative {
                        let before = pts
                            .iter()
                            .rev()
                            .find(|p| p.end_ms <= t - period)
                            .map(|p| p.value.as_f64());
                        let last = window.last().map(|v| v.as_f64()).unwrap_or(0.0);
                        match before {
                            Some(b) if last >= b => last - b,
                            _ => last,
                        }
                    } else {
                        window.iter().map(|v| v.as_f64()).sum()
                    };
                    Some(PointValue::Double(total / (period as f64 / 1000.0)))
                }
                "ALIGN_MEAN" => mean_of(&window).map(PointValue::Double),
                "ALIGN_MIN" | "ALIGN_MAX" => {
                    let it = window.iter().map(|v| v.as_f64());
                    let x = if aligner == "ALIGN_MIN" {
                        it.fold(f64::INFINITY, f64::min)
                    } else {
                        it.fold(f64::NEG_INFINITY, f64::max)
                    };
                    Some(if vt == "INT64" {
                        PointValue::Int64(x as i64)
                    } else {
                        PointValue::Double(x)
                    })
                }
                "ALIGN_COUNT" => Some(PointValue::Int64(window.len() as i64)),
                a => percent_suffix(a, "ALIGN_PERCENTILE_")
                    .and_then(|p| percentile_of(&window, p))
                    .map(PointValue::Double),
            }
        };
        if let Some(v) = value {
            let start = if out_kind == MetricKind::Gauge {
                t
            } else {
                t - period
            };
            points.push((start, t, v));
        }
        t -= period;
    }
    points.reverse();
    Ok(OutSeries {
        metric_type: s.spec.metric_type.clone(),
        metric_labels: s.spec.metric_labels.clone(),
        resource_type: s.spec.resource_type.clone(),
        resource_labels: s.spec.resource_labels.clone(),
        kind: out_kind,
        value_type: out_vt,
        unit: if aligner == "ALIGN_RATE" {
            s.spec
                .unit
                .as_ref()
                .map(|u| format!("{u}/s"))
                .or(Some("1/s".into()))
        } else {
            s.spec.unit.clone()
        },
        points,
    })
}

/// (metric labels, resource labels) kept by `groupByFields`.
type GroupKey = (BTreeMap<String, String>, BTreeMap<String, String>);

fn reduce(
    series: Vec<OutSeries>,
    reducer: &str,
    group_by: &[&str],
) -> Result<Vec<OutSeries>, ApiError> {
    let mut groups: BTreeMap<GroupKey, Vec<OutSeries>> = BTreeMap::new();
    for s in series {
        let mut ml = BTreeMap::new();
        let mut rl = BTreeMap::new();
        for f in group_by {
            if let Some(k) = f
                .strip_prefix("metric.labels.")
                .or_else(|| f.strip_prefix("metric.label."))
            {
                if let Some(v) = s.metric_labels.get(k) {
                    ml.insert(k.to_string(), v.clone());
                }
            } else if let Some(k) = f
                .strip_prefix("resource.labels.")
                .or_else(|| f.strip_prefix("resource.label."))
            {
                if let Some(v) = s.resource_labels.get(k) {
                    rl.insert(k.to_string(), v.clone());
                }
            } else if *f != "resource.type" && *f != "metric.type" {
                return Err(ApiError::invalid_argument(format!(
                    "Field aggregation.groupByFields had an invalid value of \"{f}\"."
                )));
            }
        }
        groups.entry((ml, rl)).or_default().push(s);
    }
    let mut out = Vec::new();
    for ((ml, rl), members) in groups {
        let first = &members[0];
        let mut by_time: BTreeMap<(TimestampMs, TimestampMs), Vec<&PointValue>> = BTreeMap::new();
        for m in &members {
            for (s, e, v) in &m.points {
                by_time.entry((*s, *e)).or_default().push(v);
            }
        }
        let in_vt = first.value_type;
        let (kind, vt) = match reducer {
            "REDUCE_SUM" => (first.kind, in_vt),
            "REDUCE_MIN" | "REDUCE_MAX" => (MetricKind::Gauge, in_vt),
            "REDUCE_COUNT" => (MetricKind::Gauge, "INT64"),
            "REDUCE_MEAN" => (MetricKind::Gauge, "DOUBLE"),
            r if r.starts_with("REDUCE_PERCENTILE_") => (MetricKind::Gauge, "DOUBLE"),
            r => {
                return Err(ApiError::invalid_argument(format!(
                    "The reducer {r} is not supported by the fake."
                )))
            }
        };
        let mut points = Vec::new();
        for ((s, e), vals) in by_time {
            let v = match reducer {
                "REDUCE_SUM" => combine_sum(&vals),
                "REDUCE_MIN" | "REDUCE_MAX" => {
                    let it = vals.iter().map(|v| v.as_f64());
                    let x = if reducer == "REDUCE_MIN" {
                        it.fold(f64::INFINITY, f64::min)
                    } else {
                        it.fold(f64::NEG_INFINITY, f64::max)
                    };
                    Some(if in_vt == "INT64" {
                        PointValue::Int64(x as i64)
                    } else {
                        PointValue::Double(x)
                    })
                }
                "REDUCE_COUNT" => Some(PointValue::Int64(vals.len() as i64)),
                "REDUCE_MEAN" => mean_of(&vals).map(PointValue::Double),
                r => percent_suffix(r, "REDUCE_PERCENTILE_")
                    .and_then(|p| percentile_of(&vals, p))
                    .map(PointValue::Double),
            };
            if let Some(v) = v {
                let s = if kind == MetricKind::Gauge { e } else { s };
                points.push((s, e, v));
            }
        }
        out.push(OutSeries {
            metric_type: first.metric_type.clone(),
            metric_labels: ml,
            resource_type: first.resource_type.clone(),
            resource_labels: rl,
            kind,
            value_type: vt,
            unit: first.unit.clone(),
            points,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_040_000;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn count_spec(rev: &str, class: &str) -> SeriesSpec {
        SeriesSpec::cloud_run(
            "run.googleapis.com/request_count",
            MetricKind::Delta,
            "p",
            "us-central1",
            "backend",
            rev,
        )
        .metric_label("response_code_class", class)
    }

    fn state() -> MonitoringState {
        let mut m = MonitoringState::default();
        for i in 0..5 {
            let end = T0 + i * 60_000;
            m.add_point(
                &count_spec("r1", "2xx"),
                end - 60_000,
                end,
                PointValue::Int64(10),
            )
            .unwrap();
            m.add_point(
                &count_spec("r1", "5xx"),
                end - 60_000,
                end,
                PointValue::Int64(i),
            )
            .unwrap();
            m.add_point(
                &count_spec("r2", "2xx"),
                end - 60_000,
                end,
                PointValue::Int64(1),
            )
            .unwrap();
        }
        m
    }

    #[test]
    fn raw_points_newest_first_with_int64_strings() {
        let m = state();
        let v = m
            .list(T0 + 10 * 60_000, "projects/p", &q(&[
                ("filter", r#"metric.type = "run.googleapis.com/request_count" AND resource.labels.revision_name = "r1" AND metric.labels.response_code_class = "5xx""#),
                ("interval.startTime", &timestamp(T0 - 1)),
                ("interval.endTime", &timestamp(T0 + 10 * 60_000)),
            ]))
            .unwrap();
        let ts = v["timeSeries"].as_array().unwrap();
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0]["metricKind"], "DELTA");
        assert_eq!(ts[0]["valueType"], "INT64");
        assert_eq!(ts[0]["points"][0]["value"]["int64Value"], "4");
        assert_eq!(ts[0]["points"][4]["value"]["int64Value"], "0");
    }

    #[test]
    fn ingest_delay_hides_recent_points() {
        let mut m = state();
        m.ingest_delay_ms = 180_000;
        let now = T0 + 4 * 60_000; // the last point ends now
        let v = m
            .list(now, "projects/p", &q(&[
                ("filter", r#"metric.type = "run.googleapis.com/request_count" AND resource.labels.revision_name = "r2""#),
                ("interval.startTime", &timestamp(T0 - 60_000)),
                ("interval.endTime", &timestamp(now)),
            ]))
            .unwrap();
        assert_eq!(v["timeSeries"][0]["points"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn delta_aligned_and_summed_by_class() {
        let m = state();
        let end = T0 + 4 * 60_000;
        let v = m
            .list(
                end,
                "projects/p",
                &q(&[
                    (
                        "filter",
                        r#"metric.type = "run.googleapis.com/request_count""#,
                    ),
                    ("interval.startTime", &timestamp(end - 120_000)),
                    ("interval.endTime", &timestamp(end)),
                    ("aggregation.alignmentPeriod", "120s"),
                    ("aggregation.perSeriesAligner", "ALIGN_DELTA"),
                    ("aggregation.crossSeriesReducer", "REDUCE_SUM"),
                    (
                        "aggregation.groupByFields",
                        "metric.labels.response_code_class",
                    ),
                ]),
            )
            .unwrap();
        let ts = v["timeSeries"].as_array().unwrap();
        assert_eq!(ts.len(), 2);
        let two = ts
            .iter()
            .find(|s| s["metric"]["labels"]["response_code_class"] == "2xx")
            .unwrap();
        assert_eq!(two["points"][0]["value"]["int64Value"], "22");
        assert!(two["resource"].get("labels").is_none());
        let five = ts
            .iter()
            .find(|s| s["metric"]["labels"]["response_code_class"] == "5xx")
            .unwrap();
        assert_eq!(five["points"][0]["value"]["int64Value"], "7");
        // A reducer without an aligner is refused like Monitoring does.
        let e = m
            .list(
                end,
                "projects/p",
                &q(&[
                    (
                        "filter",
                        r#"metric.type = "run.googleapis.com/request_count""#,
                    ),
                    ("interval.endTime", &timestamp(end)),
                    ("aggregation.crossSeriesReducer", "REDUCE_SUM"),
                ]),
            )
            .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn distribution_percentile_and_paging() {
        let mut m = MonitoringState::default();
        let opts = BucketOptions::Exponential {
            num_finite_buckets: 20,
            growth_factor: 2.0,
            scale: 1.0,
        };
        let spec = SeriesSpec::cloud_run(
            "run.googleapis.com/request_latencies",
            MetricKind::Delta,
            "p",
            "l",
            "backend",
            "r1",
        );
        let values: Vec<f64> = (0..100)
            .map(|i| if i < 90 { 10.0 } else { 1000.0 })
            .collect();
        m.add_point(
            &spec,
            T0 - 60_000,
            T0,
            PointValue::Distribution(Distribution::from_values(opts, &values)),
        )
        .unwrap();
        let base = [
            (
                "filter",
                r#"metric.type = "run.googleapis.com/request_latencies""#.to_string(),
            ),
            ("interval.startTime", timestamp(T0 - 60_000)),
            ("interval.endTime", timestamp(T0)),
        ];
        let mut query: Vec<(String, String)> = base
            .iter()
            .map(|(a, b)| (a.to_string(), b.clone()))
            .collect();
        let raw = m.list(T0, "projects/p", &query).unwrap();
        let d = &raw["timeSeries"][0]["points"][0]["value"]["distributionValue"];
        assert_eq!(d["count"], "100");
        assert_eq!(
            d["bucketOptions"]["exponentialBuckets"]["growthFactor"],
            2.0
        );
        assert_eq!(d["bucketCounts"].as_array().unwrap().len(), 11);
        query.extend(q(&[
            ("aggregation.alignmentPeriod", "60s"),
            ("aggregation.perSeriesAligner", "ALIGN_PERCENTILE_99"),
        ]));
        let p99 = m.list(T0, "projects/p", &query).unwrap();
        let x = p99["timeSeries"][0]["points"][0]["value"]["doubleValue"]
            .as_f64()
            .unwrap();
        assert!((512.0..=1024.0).contains(&x), "{x}");

        let many = state();
        let (mut ids, mut points, mut pages) = (Vec::new(), 0, 0);
        let mut token = String::new();
        loop {
            let v = many
                .list(
                    T0 + 600_000,
                    "projects/p",
                    &q(&[
                        (
                            "filter",
                            r#"metric.type = "run.googleapis.com/request_count""#,
                        ),
                        ("interval.startTime", &timestamp(T0 - 60_000)),
                        ("interval.endTime", &timestamp(T0 + 600_000)),
                        ("pageSize", "2"),
                        ("pageToken", &token),
                    ]),
                )
                .unwrap();
            // Pages hold 2 points each: series come in parts, joined by identity.
            for t in v["timeSeries"].as_array().unwrap() {
                let id = (t["metric"].to_string(), t["resource"].to_string());
                points += t["points"].as_array().unwrap().len();
                if !ids.contains(&id) {
                    ids.push(id);
                }
                assert!(t["points"].as_array().unwrap().len() <= 2);
            }
            pages += 1;
            match v["nextPageToken"].as_str() {
                Some(t) => token = t.into(),
                None => break,
            }
        }
        let seen = ids.len();
        assert_eq!(seen, 3);
        assert_eq!((points, pages), (15, 8));
    }

    /// The (revision, class) pairs of the series a filter selects from `state()`.
    fn selected(filter: &str) -> Result<Vec<(String, String)>, ApiError> {
        let v = state().list(
            T0 + 10 * 60_000,
            "projects/p",
            &q(&[
                ("filter", filter),
                ("interval.startTime", &timestamp(T0 - 1)),
                ("interval.endTime", &timestamp(T0 + 10 * 60_000)),
            ]),
        )?;
        let mut out: Vec<(String, String)> = v["timeSeries"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        (
                            t["resource"]["labels"]["revision_name"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                            t["metric"]["labels"]["response_code_class"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const RC: &str = r#"metric.type = "run.googleapis.com/request_count""#;

    #[test]
    fn or_parentheses_and_not_select_series() {
        let all = pairs(&[("r1", "2xx"), ("r1", "5xx"), ("r2", "2xx")]);
        assert_eq!(selected(RC).unwrap(), all);
        // OR inside parentheses.
        let f = format!(
            r#"{RC} AND (metric.labels.response_code_class = "5xx" OR resource.labels.revision_name = "r2")"#
        );
        assert_eq!(
            selected(&f).unwrap(),
            pairs(&[("r1", "5xx"), ("r2", "2xx")])
        );
        // NOT and - negate a term or a group.
        let f = format!(r#"{RC} AND NOT resource.labels.revision_name = "r1""#);
        assert_eq!(selected(&f).unwrap(), pairs(&[("r2", "2xx")]));
        let f = format!(
            r#"{RC} AND -(resource.labels.revision_name = "r2" OR metric.labels.response_code_class = "5xx")"#
        );
        assert_eq!(selected(&f).unwrap(), pairs(&[("r1", "2xx")]));
        let f = format!(r#"{RC} AND -metric.labels.response_code_class = "2xx""#);
        assert_eq!(selected(&f).unwrap(), pairs(&[("r1", "5xx")]));
        // Nested groups (the metric type in one); one_of and has_substring.
        let f = format!(
            r#"({RC} AND resource.labels.service_name = "backend") AND ((resource.labels.revision_name = one_of("r1", "r9") AND NOT (metric.labels.response_code_class = has_substring("2"))) OR resource.labels.revision_name = "r2")"#
        );
        assert_eq!(
            selected(&f).unwrap(),
            pairs(&[("r1", "5xx"), ("r2", "2xx")])
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // a AND b OR c  ==  (a AND b) OR c; read as a AND (b OR c) it would select r1/5xx only.
        let f = format!(
            r#"{RC} AND (resource.labels.revision_name = "r1" AND metric.labels.response_code_class = "5xx" OR resource.labels.revision_name = "r2")"#
        );
        assert_eq!(
            selected(&f).unwrap(),
            pairs(&[("r1", "5xx"), ("r2", "2xx")])
        );
        // c OR a AND b  ==  c OR (a AND b); read as (c OR a) AND b it would select r1/5xx only.
        let f = format!(
            r#"{RC} AND (metric.labels.response_code_class = "2xx" OR resource.labels.revision_name = "r1" AND metric.labels.response_code_class = "5xx")"#
        );
        assert_eq!(
            selected(&f).unwrap(),
            pairs(&[("r1", "2xx"), ("r1", "5xx"), ("r2", "2xx")])
        );
        // Keywords are whole words: a label named ORIGIN is a field, not OR.
        let f = format!(r#"{RC} AND NOT metric.labels.ORIGIN = "x""#);
        assert_eq!(selected(&f).unwrap().len(), 3);
    }

    #[test]
    fn unparseable_filters_are_invalid_argument_with_where() {
        for (filter, needle) in [
            (
                format!(r#"{RC} AND (resource.labels.revision_name = "r1""#),
                "expected ) to close the ( at the end",
            ),
            (
                format!(r#"{RC} AND resource.labels.revision_name = "r1")"#),
                "expected AND, OR or the end of the filter at position",
            ),
            (
                format!(r#"{RC} OR OR x = "1""#),
                "expected a field name, found OR",
            ),
            (
                format!(r#"{RC} AND x = "1" y = "2""#),
                "expected AND, OR or the end of the filter",
            ),
            (
                format!(r#"{RC} AND NOT"#),
                "expected a field name, NOT, - or ( at the end",
            ),
            (
                format!(r#"{RC} AND x = starts_with("a", "b")"#),
                "starts_with() takes one argument, got 2",
            ),
            (
                format!(r#"{RC} AND x = nope("a")"#),
                "unknown function nope",
            ),
            (
                format!(r#"{RC} AND x < "1""#),
                "expected = or != after x at position",
            ),
            (
                format!("{RC} AND {}x = \"1\"{}", "(".repeat(100), ")".repeat(100)),
                "nested more than 32 deep",
            ),
        ] {
            let err = selected(&filter).unwrap_err();
            assert_eq!(
                (err.code, err.status),
                (400, "INVALID_ARGUMENT"),
                "{filter}"
            );
            assert!(err.message.contains(needle), "{filter}: {}", err.message);
            assert!(
                err.message
                    .starts_with("Field filter had an invalid value of"),
                "{}",
                err.message
            );
            let body = err.body();
            assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
            assert_eq!(body["error"]["code"], 400);
        }
        // A metric type only inside OR or NOT does not select one.
        for filter in [
            format!(r#"{RC} OR resource.labels.revision_name = "r1""#),
            format!(r#"NOT {RC}"#),
        ] {
            let err = selected(&filter).unwrap_err();
            assert!(
                err.message.contains("must specify metric.type"),
                "{filter}: {}",
                err.message
            );
        }
    }

    #[test]
    fn non_finite_doubles_are_proto3_strings_and_headers_page_by_series() {
        let mut m = state();
        let gauge = SeriesSpec::cloud_run(
            "run.googleapis.com/container/cpu/utilizations",
            MetricKind::Gauge,
            "p",
            "us-central1",
            "backend",
            "r1",
        );
        for (i, v) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
            .into_iter()
            .enumerate()
        {
            let end = T0 + i as i64 * 60_000;
            m.add_point(&gauge, end, end, PointValue::Double(v))
                .unwrap();
        }
        let v = m
            .list(
                T0 + 600_000,
                "projects/p",
                &q(&[
                    (
                        "filter",
                        r#"metric.type = "run.googleapis.com/container/cpu/utilizations""#,
                    ),
                    ("interval.startTime", &timestamp(T0 - 1)),
                    ("interval.endTime", &timestamp(T0 + 600_000)),
                ]),
            )
            .unwrap();
        let values: Vec<&Value> = v["timeSeries"][0]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["value"]["doubleValue"])
            .collect();
        assert_eq!(
            values,
            vec![&json!("-Infinity"), &json!("Infinity"), &json!("NaN")]
        );
        // HEADERS: pageSize counts series, and no points are sent.
        let h = state()
            .list(
                T0 + 600_000,
                "projects/p",
                &q(&[
                    ("filter", RC),
                    ("interval.startTime", &timestamp(T0 - 1)),
                    ("interval.endTime", &timestamp(T0 + 600_000)),
                    ("view", "HEADERS"),
                    ("pageSize", "2"),
                ]),
            )
            .unwrap();
        let ts = h["timeSeries"].as_array().unwrap();
        assert_eq!(ts.len(), 2);
        assert!(ts.iter().all(|t| t.get("points").is_none()));
        assert!(h["nextPageToken"].is_string());
    }
}
