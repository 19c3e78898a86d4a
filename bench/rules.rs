//! Benchmark: 1,000 alerting-rule expressions over 100,000 series holding one
//! hour of 10 s samples. Not a test; run with
//! `cargo bench --bench rules` (release build). Scale with BENCH_SERIES /
//! BENCH_RULES / BENCH_MINUTES / BENCH_ROUNDS.
//!
//! Reports: ingest rate, bytes per sample and per series (RSS growth), and the
//! time of one full evaluation round (every rule evaluated once, as the rule
//! loop does every interval).

use std::time::Instant;

use rearguard::labels::{Labels, Sample};
use rearguard::promql::{parse, Engine, EngineOptions, Value};
use rearguard::tsdb::Tsdb;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    // /proc/self/statm: size resident … in pages.
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let n_series = env("BENCH_SERIES", 100_000);
    let n_rules = env("BENCH_RULES", 1_000);
    let minutes = env("BENCH_MINUTES", 60);
    let metrics = 100; // metric names; each has n_series / metrics series
    let per_metric = n_series / metrics;
    let jobs = 10;
    let step_ms: i64 = 10_000;
    let scrapes = minutes * 6;
    let start_ms: i64 = 1_700_000_000_000;

    // Series: m{k}_total{job, instance} counters and m{k}_bucket-style gauges.
    let mut labels: Vec<Labels> = Vec::with_capacity(n_series);
    for m in 0..metrics {
        for i in 0..per_metric {
            labels.push(Labels::from_pairs([
                ("__name__", format!("metric_{m}_total")),
                ("job", format!("job-{}", i % jobs)),
                ("instance", format!("instance-{i}")),
                ("region", format!("region-{}", i % 3)),
            ]));
        }
    }

    let db = Tsdb::new(6 * 3600 * 1000);
    let rss0 = rss_bytes();
    let ingest_start = Instant::now();
    let mut batch: Vec<Sample> = Vec::with_capacity(labels.len());
    let mut total_samples = 0usize;
    for s in 0..scrapes {
        let t = start_ms + s as i64 * step_ms;
        batch.clear();
        for (i, l) in labels.iter().enumerate() {
            batch.push(Sample {
                labels: l.clone(),
                timestamp_ms: t,
                value: (s * (1 + i % 7)) as f64,
            });
        }
        let rejected = db.append_batch(&batch);
        assert_eq!(rejected, 0);
        total_samples += batch.len();
    }
    let ingest = ingest_start.elapsed();
    drop(batch);
    let rss1 = rss_bytes();
    let stats = db.stats();
    let grown = rss1.saturating_sub(rss0) as f64;

    // Rules: a mix of typical alert expressions, each over one metric.
    let shapes = [
        "rate(metric_{m}_total{job=\"job-{j}\"}[5m]) > 1000",
        "sum by (job) (rate(metric_{m}_total[5m])) > 1e9",
        "sum by (job) (rate(metric_{m}_total{region=\"region-1\"}[5m])) / sum by (job) (rate(metric_{m}_total[5m])) > 0.5",
        "avg_over_time(metric_{m}_total{instance=~\"instance-{j}.*\"}[10m]) < 0",
        "increase(metric_{m}_total{job=\"job-{j}\"}[15m]) == 0",
        "absent(metric_{m}_total{job=\"job-{j}\"})",
        "max by (instance) (deriv(metric_{m}_total{job=\"job-{j}\"}[30m])) > 100",
        "count by (region) (metric_{m}_total) < 10",
        "quantile(0.95, rate(metric_{m}_total{job=\"job-{j}\"}[5m])) > 50",
        "metric_{m}_total{job=\"job-{j}\"} offset 5m > 1e12",
    ];
    let texts: Vec<String> = (0..n_rules)
        .map(|i| {
            shapes[i % shapes.len()]
                .replace("{m}", &((i / shapes.len()) % metrics).to_string())
                .replace("{j}", &(i % jobs).to_string())
        })
        .collect();
    let exprs: Vec<_> = texts
        .iter()
        .map(|t| parse(t).expect("benchmark rule parses"))
        .collect();
    let now = start_ms + (scrapes as i64 - 1) * step_ms;
    let round = |engine: &Engine| -> (std::time::Duration, usize) {
        let t0 = Instant::now();
        let mut out = 0;
        for e in &exprs {
            let r = engine
                .instant_query_expr(&db, e, now)
                .expect("rule evaluates");
            if let Value::Vector(v) = r.value {
                out += v.len();
            }
        }
        (t0.elapsed(), out)
    };
    // Limits on (the defaults: a deadline read every 64 nodes, the sample
    // count checked per node) against off (no deadline, no sample bound), in
    // alternating rounds so the machine's load falls on both alike.
    let limited = Engine::new(EngineOptions::default());
    let unlimited = Engine::new(EngineOptions {
        timeout: None,
        max_samples: usize::MAX,
        ..EngineOptions::default()
    });
    let mut rounds = Vec::new();
    let mut rounds_unlimited = Vec::new();
    let mut out_samples = 0;
    for _ in 0..env("BENCH_ROUNDS", 3) {
        let (d, out) = round(&limited);
        rounds.push(d);
        out_samples = out;
        rounds_unlimited.push(round(&unlimited).0);
    }
    // The pre-parse scan (`limits::check`) alone, against promql-parser's
    // parse (rules parse once and keep the tree; this is the cost per parse).
    let (mut scans, mut parses) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t0 = Instant::now();
        for t in &texts {
            rearguard::promql::limits::check(t).expect("benchmark rule is within limits");
        }
        scans.push(t0.elapsed());
        let t0 = Instant::now();
        for t in &texts {
            promql_parser::parser::parse(t).expect("benchmark rule parses");
        }
        parses.push(t0.elapsed());
    }
    let best = rounds.iter().min().copied().unwrap_or_default();

    println!("series:            {}", stats.series);
    println!("samples stored:    {}", stats.samples);
    println!(
        "ingest:            {total_samples} samples in {:.2?} = {:.0} samples/s",
        ingest,
        total_samples as f64 / ingest.as_secs_f64()
    );
    println!(
        "memory (RSS grow): {:.1} MiB = {:.1} bytes/sample (series overhead included)",
        grown / 1048576.0,
        grown / stats.samples as f64,
    );

    // Per-series overhead: the same series with a single sample each.
    let small = Tsdb::new(6 * 3600 * 1000);
    let rss_before = rss_bytes();
    let one: Vec<Sample> = labels
        .iter()
        .map(|l| Sample {
            labels: l.clone(),
            timestamp_ms: start_ms,
            value: 1.0,
        })
        .collect();
    small.append_batch(&one);
    drop(one);
    let per_series = rss_bytes().saturating_sub(rss_before) as f64 / n_series as f64;
    println!("per-series memory: {per_series:.0} bytes (index, labels, first sample)");
    drop(small);
    println!(
        "evaluation round:  {} rules in {:.2?} (best of {}: {:?}); {out_samples} alert samples",
        n_rules,
        best,
        rounds.len(),
        rounds
    );
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (on, off) = (median(&mut rounds), median(&mut rounds_unlimited));
    println!(
        "limits:            round with deadline and sample checks {on:.2?}, without {off:.2?} (medians of {}): ratio {:.3}",
        rounds.len(),
        on.as_secs_f64() / off.as_secs_f64()
    );
    let (scan, bare) = (median(&mut scans), median(&mut parses));
    println!(
        "parse:             {n_rules} rules: pre-parse scan {scan:.2?}, promql-parser {bare:.2?} (medians of 5): ratio {:.4}",
        (scan + bare).as_secs_f64() / bare.as_secs_f64()
    );
}
