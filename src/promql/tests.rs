//! Engine tests over the real tsdb (the conformance runner is the main test).

use super::*;
use crate::labels::Labels;
use crate::tsdb::{stale_nan, SampleSink, Tsdb};

fn l(s: &str) -> Labels {
    notation::parse_metric(s).unwrap()
}

fn db_with(series: &[(&str, &str)], step_ms: i64) -> Tsdb {
    let db = Tsdb::default();
    for (m, values) in series {
        let labels = l(m);
        for (i, p) in notation::parse_values(values)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            if let notation::Point::Float(v) = p {
                db.append_sample(&labels, i as i64 * step_ms, v).unwrap();
            }
        }
    }
    db
}

fn vector(r: &QueryResult) -> Vec<(String, f64)> {
    let Value::Vector(v) = &r.value else {
        panic!("not a vector: {:?}", r.value);
    };
    let mut out: Vec<(String, f64)> = v.iter().map(|s| (s.metric.to_string(), s.value)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

const MIN: i64 = 60_000;

#[test]
fn lookback_is_left_open_and_stale_markers_end_series() {
    let db = db_with(&[("up{job=\"a\"}", "1 _ _ _ _ _ _ _")], MIN);
    let e = Engine::default();
    assert_eq!(
        vector(&e.instant_query(&db, "up", 4 * MIN).unwrap()).len(),
        1
    );
    // Exactly 5m after the sample: outside (t-5m, t].
    assert!(vector(&e.instant_query(&db, "up", 5 * MIN).unwrap()).is_empty());
    db.mark_stale(&[l("up{job=\"a\"}")], 2 * MIN);
    assert_eq!(vector(&e.instant_query(&db, "up", MIN).unwrap()).len(), 1);
    assert!(vector(&e.instant_query(&db, "up", 3 * MIN).unwrap()).is_empty());
    assert!(crate::tsdb::is_stale_nan(stale_nan()));
}

#[test]
fn rate_handles_counter_resets_and_extrapolates() {
    let db = db_with(&[("req_total", "0 10 20 5 15")], MIN);
    let e = Engine::default();
    // (0, 4m] holds 10 20 5 15: 25 with the reset, extrapolated by one
    // interval (60 s) towards the range start: 25 * 240 / 180.
    let r = e
        .instant_query(&db, "increase(req_total[4m])", 4 * MIN)
        .unwrap();
    let v = vector(&r);
    assert_eq!(v[0].0, "{}");
    assert!((v[0].1 - 25.0 * 240.0 / 180.0).abs() < 1e-9, "{}", v[0].1);
    // (-1m, 4m] holds all: 35; the counter's zero point is its first sample,
    // so no extrapolation: 35 / 300 s.
    let r = e
        .instant_query(&db, "rate(req_total[5m])", 4 * MIN)
        .unwrap();
    let got = vector(&r)[0].1;
    assert!((got - 35.0 / 300.0).abs() < 1e-12, "{got}");
    let r = e
        .instant_query(&db, "irate(req_total[5m])", 4 * MIN)
        .unwrap();
    assert!((vector(&r)[0].1 - 10.0 / 60.0).abs() < 1e-12);
}

#[test]
fn binary_matching_with_group_left() {
    let db = db_with(
        &[
            ("errors{job=\"a\", code=\"500\"}", "5"),
            ("errors{job=\"a\", code=\"502\"}", "1"),
            ("requests{job=\"a\"}", "100"),
        ],
        MIN,
    );
    let e = Engine::default();
    let r = e
        .instant_query(&db, "errors / on(job) group_left requests", 0)
        .unwrap();
    assert_eq!(
        vector(&r),
        vec![
            (r#"{code="500", job="a"}"#.to_string(), 0.05),
            (r#"{code="502", job="a"}"#.to_string(), 0.01)
        ]
    );
    let err = e
        .instant_query(&db, "errors / on(job) requests", 0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("many-to-one matching must be explicit"),
        "{err}"
    );
    let r = e.instant_query(&db, "errors > bool 2", 0).unwrap();
    assert_eq!(vector(&r).iter().map(|x| x.1).sum::<f64>(), 1.0);
    let r = e
        .instant_query(&db, "errors unless errors{code=\"500\"}", 0)
        .unwrap();
    assert_eq!(vector(&r).len(), 1);
}

#[test]
fn aggregations_and_functions() {
    let db = db_with(
        &[
            ("m{g=\"x\", i=\"1\"}", "1"),
            ("m{g=\"x\", i=\"2\"}", "3"),
            ("m{g=\"y\", i=\"3\"}", "10"),
        ],
        MIN,
    );
    let e = Engine::default();
    let q = |s: &str| vector(&e.instant_query(&db, s, 0).unwrap());
    assert_eq!(
        q("sum by (g) (m)"),
        vec![(r#"{g="x"}"#.into(), 4.0), (r#"{g="y"}"#.into(), 10.0)]
    );
    assert_eq!(q("avg without (i) (m)")[0].1, 2.0);
    assert_eq!(q("count(m)")[0].1, 3.0);
    assert_eq!(q("quantile(0.5, m)")[0].1, 3.0);
    assert_eq!(q("topk(1, m)"), vec![(r#"m{g="y", i="3"}"#.into(), 10.0)]);
    assert_eq!(q("clamp_max(m, 2)").iter().map(|x| x.1).sum::<f64>(), 5.0);
    assert_eq!(
        q("absent(nope{job=\"j\"})"),
        vec![(r#"{job="j"}"#.into(), 1.0)]
    );
    assert_eq!(
        q(r#"label_replace(m{i="1"}, "dst", "v-$1", "g", "(.*)")"#)[0].0,
        r#"m{dst="v-x", g="x", i="1"}"#
    );
    let r = e.instant_query(&db, "scalar(sum(m))", 0).unwrap();
    assert_eq!(r.value, Value::Scalar { t: 0, v: 14.0 });
}

#[test]
fn range_queries_subqueries_offset_and_at() {
    let db = db_with(&[("c_total", "0+60x20")], MIN);
    let e = Engine::default();
    let r = e
        .range_query(&db, "rate(c_total[2m])", 5 * MIN, 7 * MIN, MIN)
        .unwrap();
    let Value::Matrix(m) = &r.value else { panic!() };
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].points.len(), 3);
    assert!(m[0].points.iter().all(|p| (p.1 - 1.0).abs() < 1e-9));
    let q = |s: &str, t| vector(&e.instant_query(&db, s, t).unwrap());
    assert_eq!(q("c_total offset 2m", 10 * MIN)[0].1, 480.0);
    assert_eq!(q("c_total offset -2m", 10 * MIN)[0].1, 720.0);
    assert_eq!(q("c_total @ 60", 10 * MIN)[0].1, 60.0);
    assert_eq!(q("max_over_time(c_total[5m:1m])", 10 * MIN)[0].1, 600.0);
    assert_eq!(q("count_over_time(c_total[5m:1m])", 10 * MIN)[0].1, 5.0);
}

#[test]
fn delayed_name_removal_is_an_option() {
    let db = db_with(&[("x_total", "0 1 2")], MIN);
    let expr = r#"label_replace(rate(x_total[5m]), "n", "$1", "__name__", "(.*)")"#;
    let on = Engine::new(EngineOptions {
        delayed_name_removal: true,
        ..Default::default()
    });
    assert_eq!(
        vector(&on.instant_query(&db, expr, 2 * MIN).unwrap())[0].0,
        r#"{n="x_total"}"#
    );
    let off = Engine::default();
    assert_eq!(
        vector(&off.instant_query(&db, expr, 2 * MIN).unwrap())[0].0,
        "{}"
    );
}

#[test]
fn errors_are_clear() {
    let db = Tsdb::default();
    db.append(&[]);
    let e = Engine::default();
    assert!(matches!(
        e.instant_query(&db, "sum(", 0),
        Err(QueryError::Parse(_))
    ));
    assert!(matches!(
        e.instant_query(&db, "histogram_count(x)", 0),
        Err(QueryError::NativeHistogram(_))
    ));
    assert!(e.range_query(&db, "x[5m]", 0, 10, 1).is_err());
    let small = Engine::new(EngineOptions {
        max_samples: 2,
        ..Default::default()
    });
    let db = db_with(&[("m", "1 2 3 4")], MIN);
    assert!(matches!(
        small.range_query(&db, "m", 0, 3 * MIN, MIN),
        Err(QueryError::TooManySamples)
    ));
}

#[test]
fn warnings_carry_positions() {
    let db = db_with(&[("m", "1")], MIN);
    let r = Engine::default()
        .instant_query(&db, "quantile(2, m)", 0)
        .unwrap();
    assert_eq!(
        r.warnings,
        vec!["PromQL warning: quantile value should be between 0 and 1, got 2 (1:10)".to_string()]
    );
    assert_eq!(r.to_api_response()["warnings"][0], r.warnings[0].as_str());
}

#[test]
fn a_query_that_runs_past_its_timeout_stops_with_prometheus_wording() {
    let db = db_with(&[("m", "1 2 3 4")], MIN);
    let quick = Engine::new(EngineOptions {
        timeout: Some(std::time::Duration::ZERO),
        ..Default::default()
    });
    // A subquery over a year at one-second steps: hours of work without a deadline.
    let e = quick.instant_query(&db, "max_over_time(m[1y:1s])", 3 * MIN);
    assert_eq!(e.unwrap_err(), QueryError::Timeout("expression evaluation"));
    assert_eq!(
        QueryError::Timeout("expression evaluation").to_string(),
        "query timed out in expression evaluation"
    );
    // The default (2m) leaves ordinary queries alone.
    assert!(Engine::default().instant_query(&db, "m", 3 * MIN).is_ok());
}

/// Found by `fuzz/` (promql target): a backslash before a multi-byte character
/// in a string literal panicked in promql-parser's unquoting, which the engine
/// used to find invalid UTF-8 literals (the fuzzer's input is kept in
/// `tests/fixtures/fuzz/promql/`, run by `tests/fuzz_regressions.rs`).
#[test]
fn a_backslash_before_a_multibyte_character_is_an_error_not_a_panic() {
    let db = db_with(&[("up", "1 2 3")], MIN);
    let engine = Engine::default();
    for expr in [
        "up{job=\"\\劊\"}",
        "up # '\\劊'",
        "label_replace(up, 'a', '\\劊', 'b', '')",
    ] {
        let _ = engine.instant_query(&db, expr, 2 * MIN);
        let _ = engine.range_query(&db, expr, 0, 2 * MIN, MIN);
    }
    assert!(engine
        .instant_query(&db, "up{job=\"\\劊\"}", 2 * MIN)
        .is_err());
    assert!(notation::unquote("'\\劊'").is_err());
    assert!(notation::unquote("\"\\x劊\"").is_err());
    // Escapes that are fine keep working, a multi-byte character after `\\` too.
    assert_eq!(notation::unquote("\"\\\\劊\\n\"").unwrap(), "\\劊\n");
    assert_eq!(notation::unquote("`\\劊`").unwrap(), "\\劊");
}

fn delayed() -> Engine {
    Engine::new(EngineOptions {
        delayed_name_removal: true,
        ..Default::default()
    })
}

#[test]
fn a_group_keeps_a_name_marked_for_removal_only_until_the_end() {
    let db = db_with(
        &[
            ("req_total{code=\"200\"}", "0 6 12"),
            ("req_total{code=\"500\"}", "0 3 6"),
            ("err_total{code=\"500\"}", "0 3 6"),
            ("up{job=\"a\"}", "1 1 1"),
        ],
        MIN,
    );
    let q = |s: &str| delayed().instant_query(&db, s, 2 * MIN);
    let labels = |r: QueryResult| vector(&r).into_iter().map(|(l, _)| l).collect::<Vec<_>>();
    // `by (__name__)` groups by the name, but rate() marked it for removal,
    // so the group's output loses it at the end.
    assert_eq!(
        labels(q("sum by (__name__) (rate(req_total[5m]))").unwrap()),
        vec!["{}"]
    );
    // Two names, two groups: both end as {}, which is one label set twice.
    assert_eq!(
        q("sum by (__name__) (rate({code=\"500\"}[5m]))")
            .unwrap_err()
            .to_string(),
        "vector cannot contain metrics with the same labelset"
    );
    // One member marked is enough for its group.
    assert_eq!(
        labels(q("sum by (__name__) (up or rate(req_total{code=\"200\"}[5m]))").unwrap()),
        vec!["up", "{}"]
    );
    // topk keeps its members, marks and all.
    assert_eq!(
        labels(q("topk(1, sum by (__name__, code) (rate(req_total[5m])))").unwrap()),
        vec!["{code=\"200\"}"]
    );
    // Nothing marked: the name stays.
    assert_eq!(labels(q("max by (__name__) (up)").unwrap()), vec!["up"]);
}

#[test]
fn sorting_a_range_query_warns_at_the_call() {
    let db = db_with(&[("m{a=\"1\"}", "1 2 3"), ("m{a=\"2\"}", "3 2 1")], MIN);
    let e = Engine::default();
    let warning = |pos: &str| {
        format!(
            "PromQL warning: sort is ineffective for range queries since results are always ordered by labels ({pos})"
        )
    };
    for (expr, pos) in [
        ("sort(m)", "1:1"),
        ("sort_desc(m)", "1:1"),
        ("sort_by_label(m, \"a\")", "1:1"),
        ("sort_by_label_desc(m, \"a\")", "1:1"),
        ("max(sort(m))", "1:5"),
    ] {
        let r = e.range_query(&db, expr, 0, 2 * MIN, MIN).unwrap();
        assert_eq!(r.warnings, vec![warning(pos)], "{expr}");
        // An instant query sorts for real: no warning.
        let r = e.instant_query(&db, expr, 2 * MIN).unwrap();
        assert!(r.warnings.is_empty(), "{expr}: {:?}", r.warnings);
    }
    // A subquery of several steps is evaluated over a range too.
    let r = e
        .instant_query(&db, "max_over_time(sort(m)[2m:1m])", 2 * MIN)
        .unwrap();
    assert_eq!(r.warnings, vec![warning("1:15")]);
}

#[test]
fn bucket_and_histogram_annotations_end_with_their_position() {
    let db = db_with(
        &[
            ("lat_bucket{le=\"0.1\"}", "5"),
            ("lat_bucket{le=\"1\"}", "3"),
            ("lat_bucket{le=\"+Inf\"}", "10"),
            ("lat_bucket{le=\"soon\"}", "1"),
        ],
        MIN,
    );
    let r = delayed()
        .instant_query(&db, "histogram_quantile(0.5,\n  lat_bucket)", 0)
        .unwrap();
    assert_eq!(
        r.warnings,
        vec![
            "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"soon\" for metric name \"lat_bucket\" (2:3)"
                .to_string()
        ]
    );
    assert_eq!(r.infos.len(), 1, "{:?}", r.infos);
    assert!(
        r.infos[0].starts_with(
            "PromQL info: input to histogram_quantile needed to be fixed for monotonicity"
        ) && r.infos[0].ends_with("for metric name \"lat_bucket\" (2:3)"),
        "{:?}",
        r.infos
    );
    // Without delayed name removal Prometheus leaves the name out.
    let r = Engine::default()
        .instant_query(&db, "histogram_quantile(0.5, lat_bucket)", 0)
        .unwrap();
    assert_eq!(
        r.warnings,
        vec!["PromQL warning: bucket label \"le\" is missing or has a malformed value of \"soon\" (1:25)".to_string()]
    );
}

#[test]
fn histogram_quantiles_labels_each_quantile_as_openmetrics_writes_it() {
    let db = db_with(
        &[
            ("lat_bucket{le=\"1\"}", "2"),
            ("lat_bucket{le=\"2\"}", "4"),
            ("lat_bucket{le=\"+Inf\"}", "4"),
        ],
        MIN,
    );
    let r = Engine::default()
        .instant_query(
            &db,
            "histogram_quantiles(lat_bucket, \"q\", 0, 0.5, 1, 2)",
            0,
        )
        .unwrap();
    assert_eq!(
        vector(&r),
        vec![
            ("{q=\"0.0\"}".to_string(), 0.0),
            ("{q=\"0.5\"}".to_string(), 1.0),
            ("{q=\"1.0\"}".to_string(), 2.0),
            ("{q=\"2.0\"}".to_string(), f64::INFINITY),
        ]
    );
    assert_eq!(
        r.warnings,
        vec!["PromQL warning: quantile value should be between 0 and 1, got 2 (1:49)".to_string()]
    );
    // The quantile label may not overwrite a label that told groups apart.
    let db = db_with(
        &[
            ("h_bucket{le=\"1\", x=\"a\"}", "1"),
            ("h_bucket{le=\"1\", x=\"b\"}", "1"),
        ],
        MIN,
    );
    assert!(Engine::default()
        .instant_query(&db, "histogram_quantiles(h_bucket, \"x\", 0.5)", 0)
        .is_err());
}

#[test]
fn fill_modifiers_stand_in_for_a_missing_side() {
    let db = db_with(
        &[
            ("l{k=\"both\"}", "1"),
            ("l{k=\"left\"}", "2"),
            ("r{k=\"both\"}", "10"),
            ("r{k=\"right\"}", "20"),
        ],
        MIN,
    );
    let q = |s: &str| vector(&Engine::default().instant_query(&db, s, 0).unwrap());
    let row = |k: &str, v: f64| (format!("{{k=\"{k}\"}}"), v);
    assert_eq!(q("l + r"), vec![row("both", 11.0)]);
    assert_eq!(
        q("l + fill(100) r"),
        vec![row("both", 11.0), row("left", 102.0), row("right", 120.0)]
    );
    assert_eq!(
        q("l + fill_right(100) r"),
        vec![row("both", 11.0), row("left", 102.0)]
    );
    assert_eq!(
        q("l + fill_left(100) r"),
        vec![row("both", 11.0), row("right", 120.0)]
    );
    // A filled side still goes through the comparison.
    // A filled side still goes through the comparison; a filled left side
    // has only the match labels (no name).
    assert_eq!(
        q("l < fill(5) r"),
        vec![
            ("l{k=\"both\"}".to_string(), 1.0),
            ("l{k=\"left\"}".to_string(), 2.0),
            row("right", 5.0)
        ]
    );
    // An empty side with a fill still produces the other side.
    assert_eq!(
        q("l + fill(0) nothing"),
        vec![row("both", 1.0), row("left", 2.0)]
    );
    assert!(q("l + nothing").is_empty());
}
