//! The evaluator: Prometheus 3.x float semantics over a [`Queryable`].
//!
//! Every node is evaluated at one instant; range queries and subqueries step
//! through their instants. Before evaluating, one pass over the tree works out
//! the time range each selector needs and fetches its series once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::token::*;
use promql_parser::parser::{
    AtModifier, BinaryExpr, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector,
};

pub(crate) use super::label_ops::{
    keep_labels, remove_labels, set_label, signature, strip_metadata,
};
use super::quoting::invalid_utf8_literals;
pub(crate) use super::quoting::{format_labels_braced, go_quote};
use super::value::{InstantSample, QueryResult, RangeSeries, Value};
use crate::labels::{Labels, METRIC_NAME};
use crate::tsdb::{is_native_histogram_marker, is_stale_nan, Queryable, SeriesData};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta_ms: i64,
    /// The step of a subquery written without one (`[5m:]`); Prometheus uses
    /// the global evaluation interval (1m by default).
    pub default_subquery_step_ms: i64,
    /// Prometheus's `promql-delayed-name-removal` feature: `__name__` is removed
    /// at the end of evaluation instead of by each operation.
    pub delayed_name_removal: bool,
    /// The most samples a query may hold at once in one node's result.
    pub max_samples: usize,
    /// How long one evaluation may run (Prometheus's `--query.timeout`, 2m).
    pub timeout: Option<std::time::Duration>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_delta_ms: 5 * 60 * 1000,
            default_subquery_step_ms: 60 * 1000,
            delayed_name_removal: false,
            max_samples: 50_000_000,
            timeout: Some(std::time::Duration::from_secs(120)),
        }
    }
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("parse error: {0}")]
    Parse(String),
    #[error("{0}")]
    Eval(String),
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    #[error("native histograms are not supported by rearguard's PromQL engine: {0}")]
    NativeHistogram(String),
    #[error("{0}")]
    Unsupported(String),
    /// Prometheus's wording for `context.DeadlineExceeded` during evaluation.
    #[error("query timed out in {0}")]
    Timeout(&'static str),
}

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError::Eval(msg.into()))
}

/// An instant-vector element during evaluation.
#[derive(Clone, Debug)]
pub(crate) struct VSample {
    pub metric: Labels,
    /// The sample's own timestamp for selector output (used by `timestamp()`).
    pub t: i64,
    pub f: f64,
    /// `__name__` must be removed at the end (delayed name removal).
    pub drop_name: bool,
}

/// A range-vector element during evaluation.
#[derive(Clone, Debug)]
pub(crate) struct MSeries {
    pub metric: Labels,
    pub points: Vec<(i64, f64)>,
    pub drop_name: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<VSample>),
    Matrix(Vec<MSeries>),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

/// The PromQL engine. Cheap to clone; holds only options.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub options: EngineOptions,
}

/// Parses a PromQL expression with promql-parser, after [`super::limits`]
/// made sure the recursive parser and evaluator cannot overflow the stack.
pub fn parse(expr: &str) -> Result<Expr, QueryError> {
    super::limits::check(expr).map_err(|e| QueryError::Parse(e.to_string()))?;
    promql_parser::parser::parse(expr).map_err(QueryError::Parse)
}

impl Engine {
    pub fn new(options: EngineOptions) -> Self {
        Self { options }
    }

    /// Evaluates `expr` at `t_ms`.
    pub fn instant_query(
        &self,
        db: &dyn Queryable,
        expr: &str,
        t_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let e = parse(expr)?;
        self.instant(db, &e, t_ms, Some(expr))
    }

    /// Evaluates a parsed expression at `t_ms` (rules parse once, evaluate often).
    pub fn instant_query_expr(
        &self,
        db: &dyn Queryable,
        e: &Expr,
        t_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.instant(db, e, t_ms, None)
    }

    fn instant(
        &self,
        db: &dyn Queryable,
        e: &Expr,
        t_ms: i64,
        source: Option<&str>,
    ) -> Result<QueryResult, QueryError> {
        let mut ev = Evaluator::new(db, &self.options, t_ms, t_ms, 0);
        ev.set_source(source);
        ev.prepare(e, t_ms, t_ms);
        let v = ev.eval(e, t_ms)?;
        let value = match v {
            Val::Scalar(v) => Value::Scalar { t: t_ms, v },
            Val::Str(v) => Value::String { t: t_ms, v },
            Val::Vector(samples) => {
                let samples = ev.finish_vector(samples)?;
                Value::Vector(
                    samples
                        .into_iter()
                        .map(|s| InstantSample {
                            metric: s.metric,
                            t: t_ms,
                            value: s.f,
                        })
                        .collect(),
                )
            }
            Val::Matrix(series) => {
                for s in &series {
                    reject_histogram_points(&s.points)?;
                }
                let mut out: Vec<RangeSeries> = series
                    .into_iter()
                    .map(|s| RangeSeries {
                        metric: if s.drop_name {
                            strip_metadata(&s.metric)
                        } else {
                            s.metric
                        },
                        points: s.points,
                    })
                    .collect();
                let mut seen = HashSet::new();
                for s in &out {
                    if !seen.insert(s.metric.clone()) {
                        return err("vector cannot contain metrics with the same labelset");
                    }
                }
                out.sort_by(|a, b| a.metric.cmp(&b.metric));
                Value::Matrix(out)
            }
        };
        Ok(ev.result(value))
    }

    /// Evaluates `expr` at `start, start+step, …, ≤ end`; the result is a matrix.
    pub fn range_query(
        &self,
        db: &dyn Queryable,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let e = parse(expr)?;
        self.range(db, &e, start_ms, end_ms, step_ms, Some(expr))
    }

    pub fn range_query_expr(
        &self,
        db: &dyn Queryable,
        e: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.range(db, e, start_ms, end_ms, step_ms, None)
    }

    fn range(
        &self,
        db: &dyn Queryable,
        e: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        source: Option<&str>,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return err(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            );
        }
        if end_ms < start_ms {
            return err("end timestamp must not be before start time");
        }
        if (end_ms - start_ms) / step_ms >= 11_000 {
            return err("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
        }
        match e.value_type() {
            promql_parser::parser::value::ValueType::Vector
            | promql_parser::parser::value::ValueType::Scalar => {}
            other => {
                let name = match other {
                    promql_parser::parser::value::ValueType::Matrix => "range vector",
                    promql_parser::parser::value::ValueType::String => "string",
                    _ => "unknown",
                };
                return err(format!(
                    "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
                ));
            }
        }
        let mut ev = Evaluator::new(db, &self.options, start_ms, end_ms, step_ms);
        ev.set_source(source);
        ev.prepare(e, start_ms, end_ms);
        let mut series: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<RangeSeries> = Vec::new();
        let mut t = start_ms;
        let mut total = 0usize;
        while t <= end_ms {
            let samples = match ev.eval(e, t)? {
                Val::Scalar(v) => vec![VSample {
                    metric: Labels::empty(),
                    t,
                    f: v,
                    drop_name: false,
                }],
                Val::Vector(v) => ev.finish_vector(v)?,
                other => {
                    return err(format!(
                        "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                        other.type_name()
                    ))
                }
            };
            total += samples.len();
            if total > self.options.max_samples {
                return Err(QueryError::TooManySamples);
            }
            for s in samples {
                let idx = *series.entry(s.metric.clone()).or_insert_with(|| {
                    out.push(RangeSeries {
                        metric: s.metric.clone(),
                        points: Vec::new(),
                    });
                    out.len() - 1
                });
                out[idx].points.push((t, s.f));
            }
            t += step_ms;
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(ev.result(Value::Matrix(out)))
    }
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

pub(crate) fn dur_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

pub(crate) struct Evaluator<'a> {
    db: &'a dyn Queryable,
    pub(crate) opts: &'a EngineOptions,
    start: i64,
    end: i64,
    step: i64,
    /// Series fetched per selector (keyed by the selector's address).
    cache: HashMap<usize, Vec<SeriesData>>,
    /// Time ranges selectors need, collected by `prepare`.
    ranges: HashMap<usize, (i64, i64)>,
    warnings: Vec<String>,
    infos: Vec<String>,
    /// The query text, for annotation positions.
    source: Option<String>,
    /// String literals of the query that are not valid UTF-8 in Go (as
    /// promql-parser decoded them): invalid as label names.
    invalid_strings: HashSet<String>,
    /// When evaluation must give up (`EngineOptions::timeout`).
    deadline: Option<std::time::Instant>,
    /// Nodes evaluated, so the clock is read only every so often.
    nodes_evaluated: u32,
    /// Evaluating over more than one instant (a range query, or a subquery
    /// of several steps, as Prometheus's evaluator of that subquery is):
    /// sorting there has no effect on the result.
    over_range: bool,
}

impl<'a> Evaluator<'a> {
    fn new(
        db: &'a dyn Queryable,
        opts: &'a EngineOptions,
        start: i64,
        end: i64,
        step: i64,
    ) -> Self {
        Self {
            db,
            opts,
            start,
            end,
            step,
            cache: HashMap::new(),
            ranges: HashMap::new(),
            warnings: Vec::new(),
            infos: Vec::new(),
            source: None,
            invalid_strings: HashSet::new(),
            deadline: opts.timeout.map(|d| std::time::Instant::now() + d),
            nodes_evaluated: 0,
            over_range: start != end,
        }
    }

    /// Whether the current evaluation spans several instants (see `over_range`).
    pub(crate) fn over_range(&self) -> bool {
        self.over_range
    }

    /// Fails once the deadline passed; reads the clock every 64 nodes, which
    /// keeps the check off the rule benchmark's profile.
    fn check_deadline(&mut self) -> Result<(), QueryError> {
        self.nodes_evaluated = self.nodes_evaluated.wrapping_add(1);
        if self.nodes_evaluated % 64 == 0 {
            if let Some(deadline) = self.deadline {
                if std::time::Instant::now() >= deadline {
                    return Err(QueryError::Timeout("expression evaluation"));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn query_start(&self) -> i64 {
        self.start
    }

    pub(crate) fn query_end(&self) -> i64 {
        self.end
    }

    /// The range query's step; 0 for an instant query.
    pub(crate) fn query_step(&self) -> i64 {
        self.step
    }

    fn set_source(&mut self, source: Option<&str>) {
        if let Some(src) = source {
            self.invalid_strings = invalid_utf8_literals(src);
        }
        self.source = source.map(str::to_string);
    }

    /// Prometheus 3 label names: any non-empty valid UTF-8.
    pub(crate) fn valid_label_name(&self, name: &str) -> bool {
        !name.is_empty() && !self.invalid_strings.contains(name)
    }

    /// Where `e` starts in the query text, as Prometheus appends it to
    /// annotations: ` (line:column)`; empty when it cannot be found.
    pub(crate) fn pos(&self, e: &Expr) -> String {
        let needle = e.to_string();
        let Some(src) = self.source.as_deref() else {
            return String::new();
        };
        let Some(off) = src.find(&needle) else {
            return String::new();
        };
        let before = &src[..off];
        let line = before.matches('\n').count() + 1;
        let col = off - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" ({line}:{col})")
    }

    /// [`Evaluator::pos`] of a function call.
    pub(crate) fn pos_of_call(&self, c: &promql_parser::parser::Call) -> String {
        self.pos(&Expr::Call(c.clone()))
    }

    fn result(self, value: Value) -> QueryResult {
        QueryResult {
            value,
            warnings: self.warnings,
            infos: self.infos,
        }
    }

    pub(crate) fn warn(&mut self, msg: String) {
        let msg = format!("PromQL warning: {msg}");
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }

    pub(crate) fn info(&mut self, msg: String) {
        let msg = format!("PromQL info: {msg}");
        if !self.infos.contains(&msg) {
            self.infos.push(msg);
        }
    }

    /// Removes names marked for removal and rejects duplicate label sets.
    fn finish_vector(&self, mut v: Vec<VSample>) -> Result<Vec<VSample>, QueryError> {
        reject_histograms(&v)?;
        for s in &mut v {
            if s.drop_name {
                s.metric = strip_metadata(&s.metric);
                s.drop_name = false;
            }
        }
        if v.len() > 1 {
            let mut seen = HashSet::with_capacity(v.len());
            for s in &v {
                if !seen.insert(&s.metric) {
                    return err("vector cannot contain metrics with the same labelset");
                }
            }
        }
        Ok(v)
    }

    pub(crate) fn at_ms(&self, at: &AtModifier) -> i64 {
        match at {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(st) => match st.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_millis() as i64,
                Err(e) => -(e.duration().as_millis() as i64),
            },
        }
    }

    /// The instant a node with these modifiers looks at, evaluated at `t`.
    fn effective_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: i64) -> i64 {
        let base = at.as_ref().map_or(t, |a| self.at_ms(a));
        base - offset_ms(offset)
    }

    // ---- preparation: which time range each selector needs ----

    fn prepare(&mut self, e: &Expr, start: i64, end: i64) {
        match e {
            Expr::VectorSelector(vs) => {
                let (s, en) = self.adjust(&vs.at, &vs.offset, start, end);
                self.need(vs, s - self.opts.lookback_delta_ms, en);
            }
            Expr::MatrixSelector(ms) => {
                let (s, en) = self.adjust(&ms.vs.at, &ms.vs.offset, start, end);
                self.need(&ms.vs, s - dur_ms(&ms.range), en);
            }
            Expr::Subquery(sq) => {
                let (s, en) = self.adjust(&sq.at, &sq.offset, start, end);
                self.prepare(&sq.expr, s - dur_ms(&sq.range), en);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.prepare(p, start, end);
                }
                self.prepare(&a.expr, start, end);
            }
            Expr::Unary(u) => self.prepare(&u.expr, start, end),
            Expr::Binary(b) => {
                self.prepare(&b.lhs, start, end);
                self.prepare(&b.rhs, start, end);
            }
            Expr::Paren(p) => self.prepare(&p.expr, start, end),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.prepare(a, start, end);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    fn adjust(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        start: i64,
        end: i64,
    ) -> (i64, i64) {
        let o = offset_ms(offset);
        match at {
            Some(a) => {
                let t = self.at_ms(a);
                (t - o, t - o)
            }
            None => (start - o, end - o),
        }
    }

    fn need(&mut self, vs: &VectorSelector, mint: i64, maxt: i64) {
        let key = vs as *const VectorSelector as usize;
        let r = self.ranges.entry(key).or_insert((mint, maxt));
        r.0 = r.0.min(mint);
        r.1 = r.1.max(maxt);
    }

    fn series_for(&mut self, vs: &VectorSelector) -> Result<&Vec<SeriesData>, QueryError> {
        let key = vs as *const VectorSelector as usize;
        if !self.cache.contains_key(&key) {
            let (mint, maxt) = self
                .ranges
                .get(&key)
                .copied()
                .unwrap_or((i64::MIN, i64::MAX));
            let data = self.fetch(vs, mint, maxt)?;
            self.cache.insert(key, data);
        }
        Ok(&self.cache[&key])
    }

    fn fetch(
        &self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesData>, QueryError> {
        let mut base: Vec<Matcher> = Vec::new();
        if let Some(n) = &vs.name {
            base.push(Matcher::new(MatchOp::Equal, METRIC_NAME, n));
        }
        let mut out = if vs.matchers.or_matchers.is_empty() {
            base.extend(vs.matchers.matchers.iter().cloned());
            self.db.select(&base, mint, maxt)
        } else {
            let mut all: Vec<SeriesData> = Vec::new();
            let mut seen = HashSet::new();
            for group in &vs.matchers.or_matchers {
                let mut m = base.clone();
                m.extend(group.iter().cloned());
                for s in self.db.select(&m, mint, maxt) {
                    if seen.insert(s.labels.clone()) {
                        all.push(s);
                    }
                }
            }
            all
        };
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        let total: usize = out.iter().map(|s| s.timestamps.len()).sum();
        if total > self.opts.max_samples {
            return Err(QueryError::TooManySamples);
        }
        Ok(out)
    }

    // ---- evaluation ----

    pub(crate) fn eval(&mut self, e: &Expr, t: i64) -> Result<Val, QueryError> {
        self.check_deadline()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(mut v) => {
                    reject_histograms(&v)?;
                    for s in &mut v {
                        s.f = -s.f;
                        self.drop_name(s);
                    }
                    Ok(Val::Vector(v))
                }
                other => err(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                )),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.select_instant(vs, t)?)),
            Expr::MatrixSelector(ms) => Ok(Val::Matrix(self.select_range(ms, t)?)),
            Expr::Subquery(sq) => Ok(Val::Matrix(self.subquery(sq, t)?)),
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Binary(b) => self.binary(b, t),
            Expr::Call(c) => self.call(c, t),
            Expr::Extension(_) => Err(QueryError::Unsupported(
                "extension expressions are not supported".into(),
            )),
        }
    }

    pub(crate) fn drop_name(&self, s: &mut VSample) {
        s.drop_name = true;
        if !self.opts.delayed_name_removal {
            s.metric = strip_metadata(&s.metric);
        }
    }

    pub(crate) fn drop_name_series(&self, s: &mut MSeries) {
        s.drop_name = true;
        if !self.opts.delayed_name_removal {
            s.metric = strip_metadata(&s.metric);
        }
    }

    pub(crate) fn eval_scalar(&mut self, e: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(e, t)? {
            Val::Scalar(v) => Ok(v),
            other => err(format!("expected scalar, got {}", other.type_name())),
        }
    }

    /// An instant vector of floats only (a native histogram is an error).
    pub(crate) fn eval_vector(&mut self, e: &Expr, t: i64) -> Result<Vec<VSample>, QueryError> {
        let v = self.eval_vector_raw(e, t)?;
        reject_histograms(&v)?;
        Ok(v)
    }

    /// An instant vector that may hold native-histogram placeholders.
    pub(crate) fn eval_vector_raw(&mut self, e: &Expr, t: i64) -> Result<Vec<VSample>, QueryError> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            other => err(format!(
                "expected instant vector, got {}",
                other.type_name()
            )),
        }
    }

    pub(crate) fn select_instant(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<VSample>, QueryError> {
        let te = self.effective_time(&vs.at, &vs.offset, t);
        let lookback = self.opts.lookback_delta_ms;
        let series = self.series_for(vs)?;
        let mut out = Vec::new();
        for s in series {
            let idx = s.timestamps.partition_point(|&x| x <= te);
            if idx == 0 {
                continue;
            }
            let st = s.timestamps[idx - 1];
            if st <= te - lookback {
                continue;
            }
            let v = s.values[idx - 1];
            if is_stale_nan(v) {
                continue;
            }
            out.push(VSample {
                metric: s.labels.clone(),
                t: st,
                f: v,
                drop_name: false,
            });
        }
        Ok(out)
    }

    pub(crate) fn select_range(
        &mut self,
        ms: &MatrixSelector,
        t: i64,
    ) -> Result<Vec<MSeries>, QueryError> {
        let te = self.effective_time(&ms.vs.at, &ms.vs.offset, t);
        let mint = te - dur_ms(&ms.range);
        let series = self.series_for(&ms.vs)?;
        let mut out = Vec::new();
        for s in series {
            let lo = s.timestamps.partition_point(|&x| x <= mint);
            let hi = s.timestamps.partition_point(|&x| x <= te);
            if lo >= hi {
                continue;
            }
            let points: Vec<(i64, f64)> = (lo..hi)
                .filter(|&i| !is_stale_nan(s.values[i]))
                .map(|i| (s.timestamps[i], s.values[i]))
                .collect();
            if points.is_empty() {
                continue;
            }
            out.push(MSeries {
                metric: s.labels.clone(),
                points,
                drop_name: false,
            });
        }
        Ok(out)
    }

    pub(crate) fn subquery(
        &mut self,
        sq: &SubqueryExpr,
        t: i64,
    ) -> Result<Vec<MSeries>, QueryError> {
        let te = self.effective_time(&sq.at, &sq.offset, t);
        let step = sq
            .step
            .as_ref()
            .map(dur_ms)
            .filter(|&s| s > 0)
            .unwrap_or(self.opts.default_subquery_step_ms)
            .max(1);
        let range = dur_ms(&sq.range);
        let lower = te - range;
        // The first step-aligned instant after the (left-open) range start.
        let mut ts = lower.div_euclid(step) * step;
        if ts <= lower {
            ts += step;
        }
        if (te - ts) / step >= self.opts.max_samples as i64 {
            return Err(QueryError::TooManySamples);
        }
        let outer_over_range = self.over_range;
        self.over_range = outer_over_range || ts < te;
        let out = self.subquery_steps(sq, ts, te, step);
        self.over_range = outer_over_range;
        out
    }

    fn subquery_steps(
        &mut self,
        sq: &SubqueryExpr,
        mut ts: i64,
        te: i64,
        step: i64,
    ) -> Result<Vec<MSeries>, QueryError> {
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<MSeries> = Vec::new();
        let mut total = 0usize;
        while ts <= te {
            let samples = match self.eval(&sq.expr, ts)? {
                Val::Scalar(v) => vec![VSample {
                    metric: Labels::empty(),
                    t: ts,
                    f: v,
                    drop_name: false,
                }],
                Val::Vector(v) => v,
                other => {
                    return err(format!(
                        "subquery is only allowed on instant vector, got {}",
                        other.type_name()
                    ))
                }
            };
            total += samples.len();
            if total > self.opts.max_samples {
                return Err(QueryError::TooManySamples);
            }
            for s in samples {
                let i = *index.entry(s.metric.clone()).or_insert_with(|| {
                    out.push(MSeries {
                        metric: s.metric.clone(),
                        points: Vec::new(),
                        drop_name: s.drop_name,
                    });
                    out.len() - 1
                });
                out[i].points.push((ts, s.f));
            }
            ts += step;
        }
        Ok(out)
    }

    /// The range-vector argument of a function, with the end of its window and
    /// its length (for extrapolation).
    pub(crate) fn matrix_arg(
        &mut self,
        e: &Expr,
        t: i64,
    ) -> Result<(Vec<MSeries>, i64, i64), QueryError> {
        match e {
            Expr::Paren(p) => self.matrix_arg(&p.expr, t),
            Expr::MatrixSelector(ms) => {
                let te = self.effective_time(&ms.vs.at, &ms.vs.offset, t);
                Ok((self.select_range(ms, t)?, te, dur_ms(&ms.range)))
            }
            Expr::Subquery(sq) => {
                let te = self.effective_time(&sq.at, &sq.offset, t);
                Ok((self.subquery(sq, t)?, te, dur_ms(&sq.range)))
            }
            other => match self.eval(other, t)? {
                Val::Matrix(m) => Ok((m, t, 0)),
                v => err(format!("expected range vector, got {}", v.type_name())),
            },
        }
    }

    // ---- binary operators ----

    fn binary(&mut self, b: &BinaryExpr, t: i64) -> Result<Val, QueryError> {
        let op = b.op.id();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let (v, keep) = scalar_binop(op, l, r)?;
                if is_comparison(op) {
                    if return_bool {
                        return Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }));
                    }
                    return err("comparisons between scalars must use BOOL modifier");
                }
                Ok(Val::Scalar(v))
            }
            (Val::Vector(l), Val::Scalar(r)) => {
                self.vector_scalar(op, l, r, false, return_bool).map(Val::Vector)
            }
            (Val::Scalar(l), Val::Vector(r)) => {
                self.vector_scalar(op, r, l, true, return_bool).map(Val::Vector)
            }
            (Val::Vector(l), Val::Vector(r)) => self.vector_vector(b, op, l, r, return_bool, t),
            (l, r) => err(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.type_name(),
                r.type_name()
            )),
        }
    }

    fn vector_scalar(
        &mut self,
        op: TokenId,
        v: Vec<VSample>,
        s: f64,
        swap: bool,
        return_bool: bool,
    ) -> Result<Vec<VSample>, QueryError> {
        if matches!(op, T_LAND | T_LOR | T_LUNLESS) {
            return err("set operator not allowed in binary scalar expression");
        }
        let mut out = Vec::with_capacity(v.len());
        for mut sample in v {
            if is_native_histogram_marker(sample.f) {
                if is_comparison(op) && !return_bool {
                    self.info("ignored histogram in comparison with a float".to_string());
                    continue;
                }
                return Err(histogram_error());
            }
            let (l, r) = if swap { (s, sample.f) } else { (sample.f, s) };
            let (mut value, mut keep) = scalar_binop(op, l, r)?;
            if is_comparison(op) && swap {
                value = r;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            if keep {
                sample.f = value;
                if drops_name(op) || return_bool {
                    self.drop_name(&mut sample);
                }
                out.push(sample);
            }
        }
        Ok(out)
    }

    fn vector_vector(
        &mut self,
        b: &BinaryExpr,
        op: TokenId,
        lhs: Vec<VSample>,
        rhs: Vec<VSample>,
        return_bool: bool,
        t: i64,
    ) -> Result<Val, QueryError> {
        use promql_parser::label::Labels as PLabels;
        use promql_parser::parser::{LabelModifier, VectorMatchCardinality};
        let (on, names): (bool, Vec<String>) =
            match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                None => (false, Vec::new()),
            };
        let card = b
            .modifier
            .as_ref()
            .map(|m| m.card.clone())
            .unwrap_or(VectorMatchCardinality::OneToOne);
        let sig = |s: &VSample| signature(&s.metric, on, &names);
        match op {
            T_LAND => {
                if lhs.is_empty() || rhs.is_empty() {
                    return Ok(Val::Vector(Vec::new()));
                }
                let right: HashSet<Vec<u8>> = rhs.iter().map(sig).collect();
                Ok(Val::Vector(
                    lhs.into_iter()
                        .filter(|s| right.contains(&sig(s)))
                        .collect(),
                ))
            }
            T_LOR => {
                let left: HashSet<Vec<u8>> = lhs.iter().map(sig).collect();
                let mut out = lhs;
                out.extend(rhs.into_iter().filter(|s| !left.contains(&sig(s))));
                Ok(Val::Vector(out))
            }
            T_LUNLESS => {
                let right: HashSet<Vec<u8>> = rhs.iter().map(sig).collect();
                Ok(Val::Vector(
                    lhs.into_iter()
                        .filter(|s| !right.contains(&sig(s)))
                        .collect(),
                ))
            }
            _ => {
                // Prometheus 3's `fill(v)`, `fill_left(v)`, `fill_right(v)`:
                // a side without a match takes v instead of dropping the pair.
                let fill = b
                    .modifier
                    .as_ref()
                    .map(|m| m.fill_values.clone())
                    .unwrap_or_default();
                if (lhs.is_empty() && rhs.is_empty())
                    || ((lhs.is_empty() || rhs.is_empty())
                        && fill.lhs.is_none()
                        && fill.rhs.is_none())
                {
                    return Ok(Val::Vector(Vec::new()));
                }
                reject_histograms(&lhs)?;
                reject_histograms(&rhs)?;
                let (include, one_to_many, one_to_one) = match &card {
                    VectorMatchCardinality::ManyToOne(l) => (l.labels.clone(), false, false),
                    VectorMatchCardinality::OneToMany(l) => (l.labels.clone(), true, false),
                    _ => (PLabels::new(vec![]).labels, false, true),
                };
                let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
                // The fill for a missing "one" side and for a missing "many"
                // side, exactly as engine.go's VectorBinop uses RHS and LHS
                // after its group_right swap. So with group_right the two
                // trade places: `fill_left` keeps an unmatched *left* series
                // (upstream's fill-modifier.test expects this, though its
                // comment says otherwise).
                let (fill_one, fill_many) = (fill.rhs, fill.lhs);
                let match_labels = |l: &Labels| {
                    if on {
                        keep_labels(l, &names)
                    } else {
                        remove_labels(l, &names, true)
                    }
                };
                let mut right: HashMap<Vec<u8>, usize> = HashMap::with_capacity(one.len());
                for (i, rs) in one.iter().enumerate() {
                    let k = sig(rs);
                    if let Some(&j) = right.get(&k) {
                        let side = if one_to_many { "left" } else { "right" };
                        let group = match_labels(&rs.metric);
                        let mut pair = [
                            format_labels_braced(&rs.metric),
                            format_labels_braced(&one[j].metric),
                        ];
                        pair.sort();
                        return err(format!(
                            "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                            format_labels_braced(&group),
                            pair[0],
                            pair[1],
                        ));
                    }
                    right.insert(k, i);
                }
                let delayed = self.opts.delayed_name_removal;
                let mut matched: HashMap<Vec<u8>, HashSet<Labels>> = HashMap::new();
                let mut out = Vec::new();
                // One pair: `ls` from the many side, `rs` from the one side
                // (either may be a fill: the other's match labels and the value).
                let mut pair = |matched: &mut HashMap<Vec<u8>, HashSet<Labels>>,
                                ls: (&Labels, f64),
                                rs: (&Labels, f64),
                                k: Vec<u8>|
                 -> Result<(), QueryError> {
                    let (fl, fr) = if one_to_many {
                        (rs.1, ls.1)
                    } else {
                        (ls.1, rs.1)
                    };
                    let (mut value, keep) = scalar_binop(op, fl, fr)?;
                    let mut metric = ls.0.clone();
                    if drops_name(op) {
                        metric = strip_metadata(&metric);
                    }
                    if one_to_one {
                        metric = if on {
                            keep_labels(&metric, &names)
                        } else {
                            remove_labels(&metric, &names, false)
                        };
                    }
                    for ln in &include {
                        metric = set_label(&metric, ln, rs.0.get(ln).unwrap_or(""));
                    }
                    if return_bool && !delayed {
                        metric = strip_metadata(&metric);
                    }
                    // Matching errors count even for pairs a comparison filters out.
                    let entry = matched.entry(k);
                    if one_to_one {
                        if let std::collections::hash_map::Entry::Occupied(_) = entry {
                            return err("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
                        }
                        entry.or_default();
                    } else {
                        let set = entry.or_default();
                        if !set.insert(metric.clone()) {
                            return err("multiple matches for labels: grouping labels must ensure unique matches");
                        }
                    }
                    if return_bool {
                        value = if keep { 1.0 } else { 0.0 };
                    } else if !keep {
                        return Ok(());
                    }
                    out.push(VSample {
                        metric,
                        t,
                        f: value,
                        drop_name: return_bool,
                    });
                    Ok(())
                };
                for ls in &many {
                    let k = sig(ls);
                    match right.get(&k) {
                        Some(&ri) => {
                            let rs = &one[ri];
                            pair(&mut matched, (&ls.metric, ls.f), (&rs.metric, rs.f), k)?;
                        }
                        None => {
                            let Some(f) = fill_one else { continue };
                            let filled = match_labels(&ls.metric);
                            pair(&mut matched, (&ls.metric, ls.f), (&filled, f), k)?;
                        }
                    }
                }
                if let Some(f) = fill_many {
                    for rs in &one {
                        let k = sig(rs);
                        if matched.contains_key(&k) {
                            continue;
                        }
                        let filled = match_labels(&rs.metric);
                        pair(&mut matched, (&filled, f), (&rs.metric, rs.f), k)?;
                    }
                }
                Ok(Val::Vector(out))
            }
        }
    }
}

pub(crate) fn histogram_error() -> QueryError {
    QueryError::NativeHistogram("the query reads a native histogram sample".into())
}

/// Fails when a vector holds a native histogram (placeholder).
pub(crate) fn reject_histograms(v: &[VSample]) -> Result<(), QueryError> {
    if v.iter().any(|s| is_native_histogram_marker(s.f)) {
        return Err(histogram_error());
    }
    Ok(())
}

/// Fails when range points hold a native histogram (placeholder).
pub(crate) fn reject_histogram_points(p: &[(i64, f64)]) -> Result<(), QueryError> {
    if p.iter().any(|x| is_native_histogram_marker(x.1)) {
        return Err(histogram_error());
    }
    Ok(())
}

pub(crate) fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

pub(crate) fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD | T_ATAN2)
}

/// Applies a float operator; comparisons return the left value and whether
/// the comparison holds.
pub(crate) fn scalar_binop(op: TokenId, l: f64, r: f64) -> Result<(f64, bool), QueryError> {
    Ok(match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        other => {
            return err(format!(
                "operator \"{}\" not allowed for scalar operations",
                promql_parser::parser::token::TokenType::new(other)
            ))
        }
    })
}
