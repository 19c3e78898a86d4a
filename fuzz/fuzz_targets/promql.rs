//! PromQL parse and evaluate, instant and range, over a small tsdb.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rearguard::labels::Labels;
use rearguard::promql::{Engine, EngineOptions};
use rearguard::tsdb::Tsdb;

fuzz_target!(|data: &[u8]| {
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
});
