//! Aggregation operators (`sum`, `avg`, `topk`, … with `by`/`without`).

use std::collections::HashMap;

use promql_parser::parser::token::*;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::{
    err, histogram_error, keep_labels, remove_labels, set_label, Evaluator, QueryError, VSample,
    Val,
};
use super::functions::{kahan_sum_inc, quantile};
use super::value::format_value;
use crate::labels::Labels;
use crate::tsdb::is_native_histogram_marker;

struct Group {
    labels: Labels,
    value: f64,
    kahan: f64,
    mean: f64,
    count: f64,
    incremental: bool,
    values: Vec<f64>,
    members: Vec<usize>,
    /// Some member's `__name__` awaits removal (delayed name removal): the
    /// group's output drops it at the end, even when `by (__name__)` kept it,
    /// as Prometheus's `groupedAggregation.dropName` does.
    drop_name: bool,
}

impl Group {
    fn new(labels: Labels) -> Self {
        Self {
            labels,
            value: 0.0,
            kahan: 0.0,
            mean: 0.0,
            count: 0.0,
            incremental: false,
            values: Vec::new(),
            members: Vec::new(),
            drop_name: false,
        }
    }
}

fn grouping_key(l: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::empty(),
        Some(LabelModifier::Include(names)) => keep_labels(l, &names.labels),
        Some(LabelModifier::Exclude(names)) => remove_labels(l, &names.labels, true),
    }
}

/// Go's `sort` on `vectorByValueHeap`: NaN sorts first, then ascending.
fn less_nan_first(a: f64, b: f64) -> bool {
    a.is_nan() && !b.is_nan() || a < b
}

impl Evaluator<'_> {
    pub(crate) fn aggregate(&mut self, a: &AggregateExpr, t: i64) -> Result<Val, QueryError> {
        let op = a.op.id();
        match op {
            T_SUM | T_AVG | T_MIN | T_MAX | T_COUNT | T_GROUP | T_STDDEV | T_STDVAR
            | T_QUANTILE | T_TOPK | T_BOTTOMK | T_COUNT_VALUES | T_LIMITK | T_LIMIT_RATIO => {}
            _ => return err(format!("unsupported aggregation {}", a.op)),
        }
        let param = match &a.param {
            Some(p) => Some(self.eval(p, t)?),
            None => None,
        };
        let mut input = self.eval_vector_raw(&a.expr, t)?;
        if input.iter().any(|s| is_native_histogram_marker(s.f)) {
            match op {
                T_MAX | T_MIN | T_STDDEV | T_STDVAR | T_QUANTILE | T_TOPK | T_BOTTOMK => {
                    // At the inner expression's position; topk/bottomk
                    // name the whole aggregation (engine.go, e.PosRange).
                    let pos = if matches!(op, T_TOPK | T_BOTTOMK) {
                        self.pos(&promql_parser::parser::Expr::Aggregate(a.clone()))
                    } else {
                        self.pos(&a.expr)
                    };
                    self.info(format!("ignored histogram in {} aggregation{pos}", a.op));
                    input.retain(|s| !is_native_histogram_marker(s.f));
                }
                T_COUNT | T_GROUP | T_LIMITK | T_LIMIT_RATIO => {}
                _ => return Err(histogram_error()),
            }
        }
        match op {
            T_TOPK | T_BOTTOMK | T_LIMITK => return self.aggregate_k(a, op, param, input),
            T_LIMIT_RATIO => return self.limit_ratio(a, param, input),
            T_COUNT_VALUES => return self.count_values(a, param, input),
            _ => {}
        }
        let q = match (op, &param) {
            (T_QUANTILE, Some(Val::Scalar(q))) => {
                if q.is_nan() || *q < 0.0 || *q > 1.0 {
                    let pos = a.param.as_deref().map(|p| self.pos(p)).unwrap_or_default();
                    self.warn(format!(
                        "quantile value should be between 0 and 1, got {}{pos}",
                        format_value(*q)
                    ));
                }
                *q
            }
            (T_QUANTILE, _) => return err("quantile requires a scalar parameter"),
            _ => 0.0,
        };
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for s in &input {
            let key = grouping_key(&s.metric, &a.modifier);
            let f = s.f;
            let gi = match index.get(&key) {
                Some(&i) => i,
                None => {
                    let mut g = Group::new(key.clone());
                    g.drop_name = s.drop_name;
                    g.count = 1.0;
                    g.value = f;
                    g.mean = f;
                    match op {
                        T_STDDEV | T_STDVAR => {
                            g.value = if f.is_nan() || f.is_infinite() {
                                f64::NAN
                            } else {
                                0.0
                            };
                        }
                        T_QUANTILE => g.values.push(f),
                        T_GROUP => g.value = 1.0,
                        _ => {}
                    }
                    groups.push(g);
                    index.insert(key, groups.len() - 1);
                    continue;
                }
            };
            let g = &mut groups[gi];
            g.drop_name |= s.drop_name;
            match op {
                T_SUM => {
                    let (v, c) = kahan_sum_inc(f, g.value, g.kahan);
                    g.value = v;
                    g.kahan = c;
                }
                T_AVG => {
                    g.count += 1.0;
                    if !g.incremental {
                        let (v, c) = kahan_sum_inc(f, g.value, g.kahan);
                        if !v.is_infinite() {
                            g.value = v;
                            g.kahan = c;
                            continue;
                        }
                        g.incremental = true;
                        g.mean = g.value / (g.count - 1.0);
                        g.kahan /= g.count - 1.0;
                    }
                    let q = (g.count - 1.0) / g.count;
                    let (m, c) = kahan_sum_inc(f / g.count, q * g.mean, q * g.kahan);
                    g.mean = m;
                    g.kahan = c;
                }
                T_GROUP => {}
                T_MAX if g.value < f || g.value.is_nan() => g.value = f,
                T_MIN if g.value > f || g.value.is_nan() => g.value = f,
                T_COUNT => g.count += 1.0,
                T_STDDEV | T_STDVAR => {
                    g.count += 1.0;
                    let delta = f - g.mean;
                    g.mean += delta / g.count;
                    g.value += delta * (f - g.mean);
                }
                T_QUANTILE => g.values.push(f),
                _ => {}
            }
        }
        let out = groups
            .into_iter()
            .map(|g| {
                let f = match op {
                    T_AVG => {
                        if g.incremental {
                            g.mean + g.kahan
                        } else {
                            g.value / g.count + g.kahan / g.count
                        }
                    }
                    T_COUNT => g.count,
                    T_STDVAR => g.value / g.count,
                    T_STDDEV => (g.value / g.count).sqrt(),
                    T_QUANTILE => quantile(q, g.values),
                    T_SUM => g.value + g.kahan,
                    _ => g.value,
                };
                VSample {
                    metric: g.labels,
                    t,
                    f,
                    drop_name: g.drop_name,
                }
            })
            .collect();
        Ok(Val::Vector(out))
    }

    fn k_param(&mut self, param: Option<Val>, name: &str) -> Result<f64, QueryError> {
        match param {
            Some(Val::Scalar(k)) => Ok(k),
            _ => err(format!("{name} requires a scalar parameter")),
        }
    }

    fn aggregate_k(
        &mut self,
        a: &AggregateExpr,
        op: TokenId,
        param: Option<Val>,
        input: Vec<VSample>,
    ) -> Result<Val, QueryError> {
        let kf = self.k_param(param, "topk")?;
        if kf.is_nan() {
            return err("Parameter value is NaN");
        }
        if !(-9.223372036854776e18..9.223372036854776e18).contains(&kf) {
            return err(format!("Scalar value {} overflows int64", format_value(kf)));
        }
        let k = kf as i64;
        if k < 1 {
            return Ok(Val::Vector(Vec::new()));
        }
        let k = k as usize;
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for (i, s) in input.iter().enumerate() {
            let key = grouping_key(&s.metric, &a.modifier);
            let gi = *index.entry(key.clone()).or_insert_with(|| {
                groups.push(Group::new(key));
                groups.len() - 1
            });
            groups[gi].members.push(i);
        }
        let mut out = Vec::new();
        for g in groups {
            let mut members = g.members;
            match op {
                T_TOPK => members.sort_by(|&x, &y| {
                    let (a, b) = (input[x].f, input[y].f);
                    // Descending, NaN last.
                    if less_nan_first(b, a) {
                        std::cmp::Ordering::Less
                    } else if less_nan_first(a, b) {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                }),
                T_BOTTOMK => members.sort_by(|&x, &y| {
                    let (a, b) = (input[x].f, input[y].f);
                    // Ascending, NaN last.
                    match (a.is_nan(), b.is_nan()) {
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
                    }
                }),
                _ => {}
            }
            members.truncate(k);
            for i in members {
                out.push(input[i].clone());
            }
        }
        Ok(Val::Vector(out))
    }

    fn limit_ratio(
        &mut self,
        _a: &AggregateExpr,
        param: Option<Val>,
        input: Vec<VSample>,
    ) -> Result<Val, QueryError> {
        let r = self.k_param(param, "limit_ratio")?;
        if r.is_nan() {
            return err("Ratio value is NaN");
        }
        let r = r.clamp(-1.0, 1.0);
        let out = input
            .into_iter()
            .filter(|s| {
                let h = s.metric.fingerprint() as f64 / u64::MAX as f64;
                if r >= 0.0 {
                    h < r
                } else {
                    h >= 1.0 + r
                }
            })
            .collect();
        Ok(Val::Vector(out))
    }

    fn count_values(
        &mut self,
        a: &AggregateExpr,
        param: Option<Val>,
        input: Vec<VSample>,
    ) -> Result<Val, QueryError> {
        let label = match param {
            Some(Val::Str(s)) => s,
            _ => return err("count_values requires a string parameter"),
        };
        if !self.valid_label_name(&label) {
            return err(format!(
                "invalid label name {}",
                super::engine::go_quote(&label)
            ));
        }
        let t = input.first().map_or(0, |s| s.t);
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, f64)> = Vec::new();
        for s in &input {
            let base = match &a.modifier {
                Some(LabelModifier::Include(names)) => keep_labels(&s.metric, &names.labels),
                Some(LabelModifier::Exclude(names)) => {
                    remove_labels(&s.metric, &names.labels, true)
                }
                None => Labels::empty(),
            };
            let key = set_label(&base, &label, &format_value(s.f));
            match index.get(&key) {
                Some(&i) => groups[i].1 += 1.0,
                None => {
                    groups.push((key.clone(), 1.0));
                    index.insert(key, groups.len() - 1);
                }
            }
        }
        Ok(Val::Vector(
            groups
                .into_iter()
                // Prometheus's aggregationCountValues keeps no DropName:
                // `count_values by (__name__)` keeps the name.
                .map(|(metric, f)| VSample {
                    metric,
                    t,
                    f,
                    drop_name: false,
                })
                .collect(),
        ))
    }
}
