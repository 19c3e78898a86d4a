//! Benchmark of the tsdb's storage: memory per sample under a probe-like
//! load, and restart-to-ready (replay of `state_dir/tsdb`). Not a test; run
//! with `cargo bench --bench tsdb` (release), or `cargo test --release
//! --bench tsdb` / a debug `cargo test --bench tsdb` for a quick look.
//!
//! Environment: BENCH_PROBES (1000; 4 series each), BENCH_MINUTES (10) of
//! 1 s samples for memory; BENCH_REPLAY_HOURS (6) and BENCH_REPLAY_STEP_S
//! (15) for the replay.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rearguard::labels::{Labels, Sample};
use rearguard::tsdb::{DurableOptions, Queryable, Tsdb};

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

/// The four series a probe writes, with values like a healthy HTTP probe's:
/// success 1, a duration in seconds with microsecond noise, status 200, a
/// fixed body size. Timestamps have a few ms of scheduling jitter.
fn probe_series(probes: usize) -> Vec<Labels> {
    let mut out = Vec::with_capacity(probes * 4);
    for p in 0..probes {
        for name in [
            "probe_success",
            "probe_duration_seconds",
            "probe_http_status_code",
            "probe_http_content_length",
        ] {
            out.push(Labels::from_pairs([
                ("__name__", name.to_string()),
                ("probe", format!("t{p}")),
                ("instance", format!("http://127.0.0.1:{}/health", 20000 + p)),
            ]));
        }
    }
    out
}

fn round(series: &[Labels], t: i64, rng: &mut impl Rng) -> Vec<Sample> {
    series
        .chunks(4)
        .flat_map(|s| {
            let t = t + rng.gen_range(0..5);
            let duration = (rng.gen_range(800..3000) as f64) / 1e6;
            [
                (s[0].clone(), 1.0),
                (s[1].clone(), duration),
                (s[2].clone(), 200.0),
                (s[3].clone(), 17.0),
            ]
            .into_iter()
            .map(move |(labels, value)| Sample {
                labels,
                timestamp_ms: t,
                value,
            })
        })
        .collect()
}

fn main() {
    let probes = env("BENCH_PROBES", 1000);
    let minutes = env("BENCH_MINUTES", 10) as i64;
    let start_ms: i64 = 1_700_000_000_000;
    let series = probe_series(probes);
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);

    // Memory: one round first (series, index, first chunks), then the
    // steady state, so the growth measured is per sample.
    let db = Tsdb::new(6 * 3600 * 1000);
    db.append_batch(&round(&series, start_ms, &mut rng));
    let rss0 = rss_bytes();
    let bytes0 = db.encoded_sample_bytes();
    let samples0 = db.stats().samples;
    let ingest = Instant::now();
    for s in 1..minutes * 60 {
        db.append_batch(&round(&series, start_ms + s * 1000, &mut rng));
    }
    let ingest_s = ingest.elapsed().as_secs_f64();
    let samples = (db.stats().samples - samples0) as f64;
    let rss_grown = rss_bytes().saturating_sub(rss0) as f64;
    let encoded = (db.encoded_sample_bytes() - bytes0) as f64;
    println!(
        "{} series, {minutes} min at 1 s: {samples} samples in {ingest_s:.2} s ({:.0} samples/s)",
        series.len(),
        samples / ingest_s
    );
    println!(
        "memory: RSS growth {:.2} bytes/sample, chunk payload {:.2} bytes/sample",
        rss_grown / samples,
        encoded / samples
    );
    for (i, name) in [
        "probe_success",
        "probe_duration_seconds",
        "probe_http_status_code",
        "probe_http_content_length",
    ]
    .iter()
    .enumerate()
    {
        let m = promql_parser::label::Matcher::new(
            promql_parser::label::MatchOp::Equal,
            "__name__",
            name,
        );
        let one = Tsdb::new(6 * 3600 * 1000);
        for s in db.select(&[m], i64::MIN, i64::MAX) {
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                let _ = one.append_sample(&s.labels, *t, *v);
            }
        }
        let n = one.stats().samples as f64;
        println!(
            "  {name}: chunk payload {:.2} bytes/sample",
            one.encoded_sample_bytes() as f64 / n
        );
        let _ = i;
    }
    // The engine's access pattern: every series, the last 5 minutes.
    let m = promql_parser::label::Matcher::new(
        promql_parser::label::MatchOp::Equal,
        "__name__",
        "probe_success",
    );
    let end = start_ms + (minutes * 60 - 1) * 1000;
    let reads = Instant::now();
    let mut n = 0;
    for _ in 0..10 {
        n += db
            .select(std::slice::from_ref(&m), end - 300_000, end)
            .iter()
            .map(|s| s.timestamps.len())
            .sum::<usize>();
    }
    let read_s = reads.elapsed().as_secs_f64();
    println!(
        "range reads: {:.1} M samples/s (select of {probes} series × 5 min)",
        n as f64 / read_s / 1e6
    );
    drop(db);

    // Restart-to-ready: write HOURS of data through a durable tsdb (a
    // checkpoint, then a WAL tail as after a crash), then time the replay.
    let hours = env("BENCH_REPLAY_HOURS", 6) as i64;
    let step_s = env("BENCH_REPLAY_STEP_S", 15) as i64;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = DurableOptions {
        flush_every: Duration::from_secs(1),
        checkpoint_every: Duration::from_secs(24 * 3600),
    };
    let steps = hours * 3600 / step_s;
    let end = start_ms + steps * step_s * 1000;
    let (db, _) =
        Tsdb::open_durable(dir.path(), hours * 3600 * 1000, start_ms, opts).expect("open");
    let write = Instant::now();
    for s in 0..steps {
        db.append_batch(&round(&series, start_ms + s * step_s * 1000, &mut rng));
        if s % 60 == 0 {
            db.flush_wal().expect("flush");
        }
        if s == steps - 20 {
            db.checkpoint_now().expect("checkpoint");
        }
    }
    db.flush_wal().expect("flush");
    let stored = db.stats().samples;
    println!(
        "wrote {stored} samples ({hours} h × {} series at {step_s} s) in {:.1} s",
        series.len(),
        write.elapsed().as_secs_f64()
    );
    drop(db);
    let disk: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    let replay = Instant::now();
    let (db, report) =
        Tsdb::open_durable(dir.path(), hours * 3600 * 1000, end, opts).expect("reopen");
    println!(
        "restart-to-ready: {:.2} s for {} samples of {} series ({:.1} bytes/sample on disk)",
        replay.elapsed().as_secs_f64(),
        report.samples,
        report.series,
        disk as f64 / stored as f64
    );
    assert_eq!(db.stats().samples, stored);

    // A checkpoint of all of it while a writer appends: the writer waits
    // only while the checkpoint holds the tsdb lock.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (checkpoint_s, longest_wait) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let labels = Labels::from_pairs([("__name__", "bench_writer")]);
            let mut longest = Duration::ZERO;
            let mut t = end;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                t += 1;
                let started = Instant::now();
                let _ = db.append_sample(&labels, t, 1.0);
                longest = longest.max(started.elapsed());
            }
            longest
        });
        let started = Instant::now();
        db.checkpoint_now().expect("checkpoint");
        let took = started.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (took, writer.join().expect("writer"))
    });
    println!(
        "checkpoint of {stored} samples: {checkpoint_s:.2} s; longest append wait during it {:.1} ms",
        longest_wait.as_secs_f64() * 1000.0
    );
}
