//! Runaway API queries against the schedule of rule groups and probes: API
//! evaluation runs on the blocking pool (bounded by `query.max_concurrency`,
//! stopped by the engine's deadline), so the runtime workers that run rule
//! groups and probes stay free. This asserts the property (every evaluation in
//! its slot, probes keep running, the runaways end as Prometheus's timeout);
//! the figures it prints are recorded in `bench/README.md` ("Queries under load").

mod http_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::routing::get;
use rearguard::alert::{Alert, AlertSink};
use rearguard::clock::{Clock, TimestampMs};
use rearguard::labels::{Labels, Sample};
use rearguard::promql::{Engine, EngineOptions};
use rearguard::rules::{
    parse_rule_file, LocalQuerier, ManagerOptions, ParseOptions, Querier, QueryError, RuleManager,
    RulesConfig, RulesDeps,
};
use rearguard::server::rules_api::{router, RulesApiState};
use rearguard::source::probe::{ProbeDeps, ProbeManager};
use rearguard::store::Store;
use rearguard::tsdb::Tsdb;

/// Concurrent runaway queries: more than the 2 runtime workers of the daemon
/// on a 2-core machine, all admitted at once.
const RUNAWAYS: usize = 4;
const PHASE: Duration = Duration::from_secs(4);
/// The engine's timeout for API queries in this test (`query.timeout`).
const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);

struct Discard;
impl AlertSink for Discard {
    fn send_alerts(&self, _: Vec<Alert>) {}
}

/// The local querier, noting how late (wall clock against the group's slot)
/// each rule evaluation starts.
struct Timed {
    inner: LocalQuerier,
    clock: Clock,
    /// (slot, lateness) per query; a group evaluation queries once per rule.
    lateness_ms: Arc<Mutex<Vec<(TimestampMs, i64)>>>,
}

#[async_trait]
impl Querier for Timed {
    async fn query(&self, expr: &str, t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError> {
        self.lateness_ms
            .lock()
            .unwrap()
            .push((t_ms, self.clock.now_ms() - t_ms));
        self.inner.query(expr, t_ms).await
    }
}

const RULES: &str = r#"
groups:
- name: watch
  interval: 1s
  rules:
  - alert: ProbeFlapping
    expr: avg_over_time(probe_success[5m]) < 0.9
  - record: probe:success:max1h
    expr: max_over_time(probe_success[1h])
"#;

/// What one phase saw.
#[derive(Debug)]
struct Phase {
    /// Rule evaluation start minus its slot, ms, sorted.
    lateness_ms: Vec<i64>,
    probe_runs: u64,
    /// Probe round trips to a loopback target, ms, sorted.
    probe_ms: Vec<f64>,
}

impl Phase {
    fn summary(&self) -> String {
        fn pct<T: Copy + std::fmt::Debug>(v: &[T], p: usize) -> String {
            v.get((v.len().saturating_sub(1)) * p / 100)
                .map_or("-".into(), |x| format!("{x:?}"))
        }
        format!(
            "rule evaluations {} (lateness ms median {} p90 {} max {}), probe runs {} (round trip ms median {} max {})",
            self.lateness_ms.len(),
            pct(&self.lateness_ms, 50),
            pct(&self.lateness_ms, 90),
            pct(&self.lateness_ms, 100),
            self.probe_runs,
            pct(&self.probe_ms, 50),
            pct(&self.probe_ms, 100),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_queries_leave_rule_groups_and_probes_on_schedule() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Clock::system();
    let now = clock.now_ms();
    let db = Arc::new(Tsdb::new(6 * 3_600_000));
    // Four hours of a probe's history at 10 s, for the range queries to chew on.
    let history = Labels::from_pairs([("__name__", "probe_success"), ("probe", "old")]);
    for i in (0..1440).rev() {
        db.append_sample(&history, now - i * 10_000, f64::from(i % 7 != 0))
            .unwrap();
    }

    // The rule group, every second.
    let lateness_ms = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new(EngineOptions {
        timeout: Some(QUERY_TIMEOUT),
        ..EngineOptions::default()
    });
    let registry = prometheus::Registry::new();
    let manager = Arc::new(
        RuleManager::new(
            RulesDeps {
                clock: clock.clone(),
                local: Arc::new(Timed {
                    inner: LocalQuerier::new(db.clone(), engine.clone()),
                    clock: clock.clone(),
                    lateness_ms: lateness_ms.clone(),
                }),
                sink: db.clone(),
                store: Store::open_in_memory().unwrap(),
                registry: registry.clone(),
                alerts: Arc::new(Discard),
            },
            ManagerOptions::default(),
        )
        .unwrap(),
    );
    let file = parse_rule_file(
        std::path::Path::new("rules/watch.yaml"),
        RULES,
        ParseOptions::default(),
    )
    .unwrap();
    manager
        .apply(RulesConfig {
            files: vec![file],
            evaluation_interval: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();

    // A probe every 200 ms against a loopback target.
    let target =
        http_support::serve(axum::Router::new().route("/health", get(|| async { "ok" }))).await;
    let probes = ProbeManager::new(ProbeDeps {
        clock: clock.clone(),
        sink: db.clone(),
        store: Store::open_in_memory().unwrap(),
        registry: prometheus::Registry::new(),
    });
    let text = format!("probes:\n- name: web\n  url: {target}/health\n  interval: 200ms\n");
    probes.apply(
        &rearguard::config::load_str(std::path::Path::new("t.yaml"), &text, |_| None)
            .unwrap()
            .config
            .probes,
    );

    let api = http_support::serve(router(RulesApiState {
        dispatcher: None,
        manager: manager.clone(),
        db: db.clone(),
        engine,
        clock: clock.clone(),
        query_slots: Arc::new(tokio::sync::Semaphore::new(RUNAWAYS)),
    }))
    .await;

    // Let the group and the probe settle into their slots.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let quiet = observe(&probes, &lateness_ms, PHASE).await;

    // Now the same again with RUNAWAYS range queries at once, each re-sent as
    // soon as it ends: a one-year subquery at 1 s resolution, over four hours.
    let stop_at = Instant::now() + PHASE;
    let client = http_support::client();
    let runaways: Vec<_> = (0..RUNAWAYS)
        .map(|_| {
            let client = client.clone();
            let url = format!("{api}/api/v1/query_range");
            let (start, end) = ((now - 4 * 3_600_000) / 1000, now / 1000);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while Instant::now() < stop_at {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!(
                            "query=max_over_time(probe_success%5B1y%3A1s%5D)&start={start}&end={end}&step=60"
                        ))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    answers.push((status, r.json::<serde_json::Value>().await.unwrap()));
                }
                answers
            })
        })
        .collect();
    let loaded = observe(&probes, &lateness_ms, PHASE).await;
    let mut answers = Vec::new();
    for r in runaways {
        answers.extend(r.await.unwrap());
    }
    eprintln!("without runaway queries: {}", quiet.summary());
    eprintln!(
        "with {RUNAWAYS} runaway queries ({} answered): {}",
        answers.len(),
        loaded.summary()
    );

    // Every runaway ended at its timeout, as Prometheus answers one.
    assert!(answers.len() >= RUNAWAYS, "{answers:?}");
    for (status, body) in &answers {
        assert_eq!(
            (*status, body["errorType"].as_str()),
            (503, Some("timeout")),
            "{body}"
        );
    }
    // Rule groups kept their schedule: one evaluation per second, none
    // skipped, each starting well within its interval (generous for a shared
    // machine; a blocked worker shows up as whole seconds).
    let expected = PHASE.as_secs();
    for (name, phase) in [("quiet", &quiet), ("loaded", &loaded)] {
        assert!(
            phase.lateness_ms.len() as u64 >= expected - 1,
            "{name}: {}",
            phase.summary()
        );
        assert!(
            phase.lateness_ms.last().is_some_and(|&l| l < 500),
            "{name}: {}",
            phase.summary()
        );
        // Probes kept running: at least half their 5 runs a second.
        assert!(
            phase.probe_runs >= expected * 5 / 2,
            "{name}: {}",
            phase.summary()
        );
    }
    let missed = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("rearguard_rule_group_iterations_missed_total"))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect::<Vec<_>>();
    assert!(missed.iter().all(|v| v == "0"), "missed: {missed:?}");

    probes.shutdown().await;
    manager.shutdown().await;
}

/// Watches rule evaluations and probe runs for `phase` (sampling the probe
/// status every 20 ms).
async fn observe(
    probes: &ProbeManager,
    lateness_ms: &Mutex<Vec<(TimestampMs, i64)>>,
    phase: Duration,
) -> Phase {
    lateness_ms.lock().unwrap().clear();
    let runs_before = probes.status("web").map_or(0, |s| s.runs);
    let mut probe_ms = Vec::new();
    let mut last_run = None;
    let end = Instant::now() + phase;
    while Instant::now() < end {
        if let Some(s) = probes.status("web") {
            if s.last_run_ms != last_run {
                last_run = s.last_run_ms;
                probe_ms.extend(s.duration_seconds.map(|d| d * 1000.0));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut queries = std::mem::take(&mut *lateness_ms.lock().unwrap());
    // Two rules per group evaluation: the first query of a slot is its start.
    queries.dedup_by_key(|(slot, _)| *slot);
    let mut lateness: Vec<i64> = queries.into_iter().map(|(_, l)| l).collect();
    lateness.sort_unstable();
    probe_ms.sort_by(f64::total_cmp);
    Phase {
        lateness_ms: lateness,
        probe_runs: probes.status("web").map_or(0, |s| s.runs) - runs_before,
        probe_ms,
    }
}
