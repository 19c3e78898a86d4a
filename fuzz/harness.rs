//! What each fuzz target does with its input, shared by the targets in
//! `fuzz_targets/` and by `tests/fuzz_regressions.rs`, which replays every
//! input the fuzzers once crashed on (`tests/fixtures/fuzz/<target>/`).
#![allow(dead_code)] // each fuzz target uses one function

use rearguard::gcp::{logging, monitoring, run};
use rearguard::labels::Labels;
use rearguard::promql::{Engine, EngineOptions};
use rearguard::template::{Funcs, Template, Value};
use rearguard::tsdb::Tsdb;

/// PromQL parse and evaluate, instant and range, over a small tsdb.
pub fn promql(data: &[u8]) {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    let db = Tsdb::new(i64::MAX / 4);
    for (i, job) in ["a", "b"].iter().enumerate() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", job)]);
        for t in 0..10 {
            let _ = db.append_sample(&labels, t * 15_000, (t as f64) * (i as f64 + 0.5));
        }
    }
    let engine = Engine::new(EngineOptions {
        max_samples: 100_000,
        timeout: Some(std::time::Duration::from_secs(1)),
        ..EngineOptions::default()
    });
    let _ = engine.instant_query(&db, expr, 120_000);
    let _ = engine.range_query(&db, expr, 0, 150_000, 15_000);
}

/// Config loading, with one environment variable set.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rearguard::config::load_str(
        std::path::Path::new("/nonexistent/fuzz.yaml"),
        text,
        |name| (name == "SET").then(|| "value".to_string()),
    );
}

/// Rule file parsing and validation.
pub fn rule_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rearguard::rules::file::parse_rule_file(
        std::path::Path::new("fuzz.yaml"),
        text,
        Default::default(),
    );
}

/// The Go-template engine: parse, then execute as text and as HTML.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Template::parse("fuzz", text, &["$labels", "$value"]) else {
        return;
    };
    let json: serde_json::Value =
        serde_json::from_str(r#"{"job":"api","severity":"critical"}"#).unwrap_or_default();
    let labels = Value::from(&json);
    let vars = vec![
        ("$labels".to_string(), labels.clone()),
        ("$value".to_string(), Value::Float(0.25)),
    ];
    let _ = t.execute(labels.clone(), vars.clone(), &Funcs::default());
    let _ = t.execute_html(labels, vars, &Funcs::default());
}

/// The bodies and query strings anyone may send to the API: alerts
/// (`POST /api/v2/alerts`), silences (`POST /api/v2/silences`) and the
/// `filter` matchers of the Alertmanager API, decoded and validated as the
/// server does, then matched against a label set.
pub fn api_bodies(data: &[u8]) {
    let labels = Labels::from_pairs([("alertname", "Down"), ("job", "api")]);
    if let Ok(batch) =
        serde_json::from_slice::<Vec<rearguard::dispatch::external::PostableAlert>>(data)
    {
        let _ = rearguard::dispatch::external::accept_batch(batch, 1_700_000_000_000, 300_000);
    }
    if let Ok(s) = serde_json::from_slice::<rearguard::server::dispatch_api::PostableSilence>(data)
    {
        if let Ok(ms) = rearguard::dispatch::silence::compile_matchers(&s.matchers) {
            let _ = ms.matches(&labels);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ms) = rearguard::matchers::parse_matchers(text) {
            let _ = ms.matches(&labels);
        }
        let _ = rearguard::server::alertmanager::AlertFilter::parse(Some(text));
    }
}

/// Cloud Monitoring, Logging and Run answers: decoding and what is read from them.
pub fn google_json(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<monitoring::ListTimeSeriesResponse>(data) {
        for ts in &r.time_series {
            for p in &ts.points {
                let _ = p.value.as_f64();
                if let Some(d) = &p.value.distribution_value {
                    if let Some(b) = &d.bucket_options {
                        let _ = b.upper_bounds();
                    }
                }
            }
        }
    }
    if let Ok(r) = serde_json::from_slice::<logging::ListLogEntriesResponse>(data) {
        for e in &r.entries {
            let _ = (e.severity(), e.revision_name(), e.message());
        }
    }
    if let Ok(s) = serde_json::from_slice::<run::Service>(data) {
        let _ = (s.is_ready(), s.serving_revisions());
    }
}
