//! The Google sources against the fake APIs (src/sim), on paused time: no
//! panics under faults, no double counting across overlaps and restarts,
//! retries visible in metrics, Logging's quota respected, every request valid
//! against the discovery documents.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard::clock::{Clock, TimestampMs};
use rearguard::config::gcp::{
    CloudLoggingConfig, CloudMonitoringConfig, CloudRunConfig, GcpConfig, GcpEndpoints,
};
use rearguard::config::Dur;
use rearguard::gcp::run::short_name;
use rearguard::gcp::{GcpContext, RetryPolicy, TokenSource, UpstreamMetrics};
use rearguard::labels::{Labels, Sample};
use rearguard::source::cloud_logging::{CloudLoggingManager, CloudLoggingSource, LogEvidenceStore};
use rearguard::source::cloud_monitoring::{CloudMonitoringSource, GcpSourceDeps};
use rearguard::source::cloud_run::{CloudRunSource, CloudRunViews};
use rearguard::store::Store;
use rearguard::tsdb::SampleSink;
use rearguard_sim::discovery::DiscoverySet;
use rearguard_sim::monitoring::{BucketOptions, Distribution};
use rearguard_sim::{
    methods, DeploySpec, FakeGcp, FakeOptions, Fault, FaultKind, LogEntrySpec, MetricKind,
    PointValue, RevisionBehaviour, SeriesSpec, ServiceSpec,
};

const T0: TimestampMs = 1_800_000_000_000;
const SVC: &str = "projects/sim-project/locations/us-central1/services/backend";

#[derive(Default)]
struct VecSink {
    samples: Mutex<Vec<Sample>>,
    stale: Mutex<Vec<Labels>>,
}

impl SampleSink for VecSink {
    fn append(&self, samples: &[Sample]) {
        self.samples.lock().unwrap().extend_from_slice(samples);
    }
    fn mark_stale(&self, series: &[Labels], _: TimestampMs) {
        self.stale.lock().unwrap().extend_from_slice(series);
    }
}

impl VecSink {
    /// The newest value of the series with this name and these labels.
    fn last(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s.labels.metric_name() == Some(name)
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .max_by_key(|s| s.timestamp_ms)
            .map(|s| s.value)
    }
}

struct Env {
    fake: FakeGcp,
    clock: Clock,
    ctx: GcpContext,
    metrics: UpstreamMetrics,
    sink: Arc<VecSink>,
    store: Store,
}

impl Env {
    fn deps(&self) -> GcpSourceDeps {
        GcpSourceDeps {
            clock: self.clock.clone(),
            sink: self.sink.clone(),
            store: self.store.clone(),
        }
    }
}

async fn env_with(store: Store) -> Env {
    let clock = Clock::starting_at(T0);
    let fake = FakeGcp::start_with(clock.clone(), FakeOptions::default())
        .await
        .unwrap();
    let cfg = GcpConfig {
        project: fake.project(),
        credentials: "adc".into(),
        endpoints: GcpEndpoints {
            run: fake.base_url(),
            monitoring: fake.base_url(),
            logging: fake.base_url(),
        },
    };
    let tokens = TokenSource::metadata_server(&fake.base_url()).unwrap();
    let registry = prometheus::Registry::new();
    let metrics = UpstreamMetrics::register(&registry).unwrap();
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
        ..RetryPolicy::default()
    };
    let ctx = GcpContext::new(&cfg, tokens, policy, metrics.clone()).unwrap();
    Env {
        fake,
        clock,
        ctx,
        metrics,
        sink: Arc::new(VecSink::default()),
        store,
    }
}

async fn env() -> Env {
    env_with(Store::open_in_memory().unwrap()).await
}

fn discovery() -> DiscoverySet {
    DiscoverySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/gcp-discovery"))
        .unwrap()
}

/// Every request rearguard sent is valid against the discovery documents.
fn assert_requests_valid(fake: &FakeGcp) {
    let d = discovery();
    let mut checked = 0;
    for call in fake.calls() {
        if !call.method.starts_with("run.")
            && !call.method.starts_with("monitoring.")
            && !call.method.starts_with("logging.")
        {
            continue;
        }
        let issues = d.validate_params(&call.method, &call.query).unwrap();
        assert!(issues.is_empty(), "{} params: {issues:?}", call.method);
        if let Some(body) = &call.body {
            let issues = d.validate_request(&call.method, body).unwrap();
            assert!(issues.is_empty(), "{} body: {issues:?}", call.method);
        }
        checked += 1;
    }
    assert!(checked > 0);
}

fn monitoring_cfg(name: &str, metric: &str) -> CloudMonitoringConfig {
    CloudMonitoringConfig {
        name: name.into(),
        metric: metric.into(),
        filter: Some("resource.labels.service_name = \"backend\"".into()),
        interval: Dur::secs(60),
        overlap: Dur::secs(600),
        ingestion_lag: Dur::secs(180),
        aggregation: None,
    }
}

fn requests_series(revision: &str) -> SeriesSpec {
    SeriesSpec::cloud_run(
        "run.googleapis.com/request_count",
        MetricKind::Delta,
        "sim-project",
        "us-central1",
        "backend",
        revision,
    )
    .metric_label("response_code_class", "5xx")
}

const REQ: &str = "run_googleapis_com:request_count";

#[tokio::test(start_paused = true)]
async fn monitoring_delta_counts_once_across_overlaps_restarts_and_faults() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = env_with(store.clone()).await;
    e.fake.set_monitoring_delay(Duration::from_secs(180));
    let spec = requests_series("backend-00001");
    // One point a minute, 3 requests each, for the last 10 minutes.
    for m in 0..10 {
        let start = T0 - (10 - m) * 60_000;
        e.fake
            .add_point(&spec, start, start + 60_000, PointValue::Int64(3))
            .unwrap();
    }
    let cfg = monitoring_cfg("requests", "run.googleapis.com/request_count");
    let mut src = CloudMonitoringSource::load(cfg.clone(), e.ctx.clone(), e.deps()).await;
    src.poll_once().await.unwrap();
    // Points of the last 3 minutes are not visible yet (ingestion delay).
    assert_eq!(
        e.sink.last(REQ, &[("response_code_class", "5xx")]),
        Some(21.0)
    );
    // Minutes pass; the late points arrive and are read in the overlap, once.
    for m in 0..3 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = T0 + m * 60_000;
        e.fake
            .add_point(&spec, start, start + 60_000, PointValue::Int64(1))
            .unwrap();
        src.poll_once().await.unwrap();
    }
    // 10 × 3 by now; the new 1s arrive 3 minutes late: at most one is visible.
    let v = e
        .sink
        .last(REQ, &[("revision_name", "backend-00001")])
        .unwrap();
    assert_eq!(v, 30.0);
    // Faults: a 503 and a 429 are retried (visible in metrics), malformed JSON is an error.
    e.fake
        .inject(Fault::status(methods::TIME_SERIES_LIST, 503).times(1));
    e.fake
        .inject(Fault::rate_limited(methods::TIME_SERIES_LIST, 2).times(1));
    tokio::time::sleep(Duration::from_secs(60)).await;
    src.poll_once().await.unwrap();
    assert_eq!(e.metrics.count("monitoring", "timeSeries.list", "503"), 1);
    assert_eq!(e.metrics.count("monitoring", "timeSeries.list", "429"), 1);
    e.fake
        .inject(Fault::new(methods::TIME_SERIES_LIST, FaultKind::TruncatedJson).times(1));
    assert!(src.poll_once().await.is_err());
    e.fake
        .inject(Fault::new(methods::TIME_SERIES_LIST, FaultKind::MalformedJson).times(1));
    assert!(src.poll_once().await.is_err());
    let before = e
        .sink
        .last(REQ, &[("revision_name", "backend-00001")])
        .unwrap();
    assert_eq!(before, 31.0);
    drop(src);
    // A restart re-reads the whole overlap and counts nothing twice.
    let mut again = CloudMonitoringSource::load(cfg, e.ctx.clone(), e.deps()).await;
    again.poll_once().await.unwrap();
    assert_eq!(
        e.sink.last(REQ, &[("revision_name", "backend-00001")]),
        Some(31.0)
    );
    tokio::time::sleep(Duration::from_secs(240)).await;
    again.poll_once().await.unwrap();
    assert_eq!(
        e.sink.last(REQ, &[("revision_name", "backend-00001")]),
        Some(33.0)
    );
    // The counter never went down.
    let samples = e.sink.samples.lock().unwrap().clone();
    let mut vals: Vec<(i64, f64)> = samples
        .iter()
        .filter(|s| s.labels.metric_name() == Some(REQ))
        .map(|s| (s.timestamp_ms, s.value))
        .collect();
    vals.sort_by_key(|v| v.0);
    let mut last = (i64::MIN, 0.0);
    for (t, v) in vals {
        if t > last.0 {
            assert!(v >= last.1, "counter went down at {t}: {v} < {}", last.1);
            last = (t, v);
        }
    }
    assert_requests_valid(&e.fake);
}

#[tokio::test(start_paused = true)]
async fn monitoring_distribution_gauge_and_aggregation() {
    let e = env().await;
    let lat = SeriesSpec::cloud_run(
        "run.googleapis.com/request_latencies",
        MetricKind::Delta,
        "sim-project",
        "us-central1",
        "backend",
        "backend-00001",
    );
    let opts = BucketOptions::Exponential {
        num_finite_buckets: 10,
        growth_factor: 2.0,
        scale: 0.01,
    };
    e.fake
        .add_point(
            &lat,
            T0 - 120_000,
            T0 - 60_000,
            PointValue::Distribution(Distribution::from_values(opts.clone(), &[0.05, 0.3, 2.0])),
        )
        .unwrap();
    let mem = SeriesSpec::cloud_run(
        "run.googleapis.com/container/memory/utilizations",
        MetricKind::Gauge,
        "sim-project",
        "us-central1",
        "backend",
        "backend-00001",
    );
    e.fake
        .add_point(&mem, T0 - 60_000, T0 - 60_000, PointValue::Double(0.7))
        .unwrap();

    let mut lsrc = CloudMonitoringSource::load(
        monitoring_cfg("latency", "run.googleapis.com/request_latencies"),
        e.ctx.clone(),
        e.deps(),
    )
    .await;
    lsrc.poll_once().await.unwrap();
    let name = "run_googleapis_com:request_latencies";
    assert_eq!(e.sink.last(&format!("{name}_count"), &[]), Some(3.0));
    assert_eq!(
        e.sink.last(&format!("{name}_bucket"), &[("le", "+Inf")]),
        Some(3.0)
    );
    assert_eq!(
        e.sink.last(&format!("{name}_bucket"), &[("le", "0.08")]),
        Some(1.0)
    );
    assert!((e.sink.last(&format!("{name}_sum"), &[]).unwrap() - 2.35).abs() < 1e-9);

    let mut cfg = monitoring_cfg("memory", "run.googleapis.com/container/memory/utilizations");
    cfg.aggregation = Some(rearguard::config::gcp::AggregationConfig {
        alignment_period: Some(Dur::secs(60)),
        per_series_aligner: None,
        cross_series_reducer: Some("REDUCE_MAX".into()),
        group_by_fields: vec!["resource.labels.service_name".into()],
    });
    let mut msrc = CloudMonitoringSource::load(cfg, e.ctx.clone(), e.deps()).await;
    msrc.poll_once().await.unwrap();
    let calls = e.fake.calls_to(methods::TIME_SERIES_LIST);
    let last = calls.last().unwrap();
    assert_eq!(
        last.param("aggregation.perSeriesAligner"),
        Some("ALIGN_MEAN"),
        "GAUGE default aligner"
    );
    assert_eq!(last.param("aggregation.alignmentPeriod"), Some("60s"));
    assert!(e
        .sink
        .last("run_googleapis_com:container_memory_utilizations", &[])
        .is_some());
    assert_requests_valid(&e.fake);
}

fn logging_cfg(name: &str, filter: &str) -> CloudLoggingConfig {
    CloudLoggingConfig {
        name: name.into(),
        filter: filter.into(),
        interval: Dur::secs(30),
        overlap: Dur::secs(120),
        max_catch_up: Dur::secs(15 * 60),
    }
}

const ERRORS: &str = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"backend\" AND severity>=ERROR";

#[tokio::test(start_paused = true)]
async fn logging_counts_once_pages_through_empty_pages_and_keeps_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = env_with(store).await;
    e.fake.set_logging_delay(Duration::from_secs(20));
    e.fake.set_logging_empty_pages(2);
    let evidence = LogEvidenceStore::default();
    let cfg = logging_cfg("backend-errors", ERRORS);
    let mut src =
        CloudLoggingSource::load(cfg.clone(), e.ctx.clone(), e.deps(), evidence.clone()).await;
    src.poll_once().await.unwrap();
    for i in 0..25 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sev = if i % 5 == 0 { "CRITICAL" } else { "ERROR" };
        let entry = LogEntrySpec::cloud_run(
            "sim-project",
            "us-central1",
            "backend",
            "backend-00002",
            e.clock.now_ms(),
            sev,
            &format!("boom {i}"),
        );
        e.fake
            .add_log_entry(if i == 24 {
                entry.with_json(serde_json::json!({"message": "json boom", "code": 7}))
            } else {
                entry
            })
            .unwrap();
        // Noise that the filter must not count.
        e.fake
            .add_log_entry(LogEntrySpec::cloud_run(
                "sim-project",
                "us-central1",
                "backend",
                "backend-00002",
                e.clock.now_ms(),
                "INFO",
                "fine",
            ))
            .unwrap();
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        src.poll_once().await.unwrap();
    }
    let labels = [
        ("query", "backend-errors"),
        ("revision_name", "backend-00002"),
    ];
    assert_eq!(
        e.sink.last(
            "log_entries_total",
            &[labels[0], labels[1], ("severity", "ERROR")]
        ),
        Some(20.0)
    );
    assert_eq!(
        e.sink.last(
            "log_entries_total",
            &[labels[0], labels[1], ("severity", "CRITICAL")]
        ),
        Some(5.0)
    );
    assert_eq!(
        e.sink.last("log_entries_total", &[("severity", "INFO")]),
        None
    );
    let ev = evidence.entries("backend-errors").unwrap();
    assert_eq!(ev.len(), 20);
    assert_eq!(ev.last().unwrap().message, "json boom");
    assert_eq!(
        ev.last().unwrap().revision.as_deref(),
        Some("backend-00002")
    );
    assert_eq!(ev[0].message, "boom 5");
    // A restart reads the overlap again and counts nothing twice; evidence survives.
    drop(src);
    let evidence2 = LogEvidenceStore::default();
    let mut again = CloudLoggingSource::load(cfg, e.ctx.clone(), e.deps(), evidence2.clone()).await;
    assert_eq!(evidence2.entries("backend-errors").unwrap().len(), 20);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(again.poll_once().await.unwrap(), 0);
    assert_eq!(
        e.sink
            .last("log_entries_total", &[labels[0], ("severity", "ERROR")]),
        Some(20.0)
    );
    // Faults do not panic and are retried.
    e.fake
        .inject(Fault::status(methods::ENTRIES_LIST, 500).times(1));
    e.fake
        .inject(Fault::new(methods::ENTRIES_LIST, FaultKind::TruncatedJson).times(1));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(again.poll_once().await.is_err());
    assert_eq!(e.metrics.count("logging", "entries.list", "500"), 1);
    again.poll_once().await.unwrap();
    assert_requests_valid(&e.fake);
}

#[tokio::test(start_paused = true)]
async fn many_log_queries_stay_under_the_quota() {
    let e = env().await;
    let manager = CloudLoggingManager::new(e.ctx.clone(), e.deps());
    let entries: Vec<CloudLoggingConfig> = (0..12)
        .map(|i| CloudLoggingConfig {
            interval: Dur::secs(5),
            ..logging_cfg(
                &format!("q{i}"),
                &format!("severity>=ERROR AND textPayload:\"job-{i}-end\""),
            )
        })
        .collect();
    manager.apply(&entries);
    for i in 0..60 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        e.fake
            .add_log_entry(LogEntrySpec::cloud_run(
                "sim-project",
                "us-central1",
                "backend",
                "r1",
                e.clock.now_ms(),
                "ERROR",
                &format!("job-{}-end failed", i % 12),
            ))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    manager.shutdown().await;
    let calls = e.fake.calls_to(methods::ENTRIES_LIST);
    assert!(calls.len() > 100, "the queries ran: {}", calls.len());
    assert!(
        calls.iter().all(|c| c.status != 429),
        "no call was refused for quota"
    );
    let times: Vec<i64> = calls.iter().map(|c| c.at_ms).collect();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 60_000).count();
        assert!(in_window <= 60, "{in_window} calls in the minute from {t}");
    }
    // Every query got its entries, exactly once.
    let total: f64 = (0..12)
        .filter_map(|i| {
            e.sink
                .last("log_entries_total", &[("query", &format!("q{i}"))])
        })
        .sum();
    assert_eq!(total, 60.0);
}

#[tokio::test(start_paused = true)]
async fn cloud_run_series_and_views_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = env_with(store).await;
    let first = short_name(&e.fake.create_service(ServiceSpec::new(SVC)).unwrap()).to_string();
    e.fake.settle().await;
    let views = CloudRunViews::default();
    let cfg = CloudRunConfig {
        service: SVC.into(),
        interval: Dur::secs(30),
    };
    let mut src = CloudRunSource::load(cfg.clone(), e.ctx.clone(), e.deps(), views.clone()).await;
    let v1 = src.poll_once().await.unwrap();
    assert!(v1.ready);
    assert_eq!(v1.serving.len(), 1);
    assert_eq!(v1.serving[0].revision, first);
    assert_eq!(
        e.sink
            .last("cloud_run_service_ready", &[("service", "backend")]),
        Some(1.0)
    );
    assert_eq!(
        e.sink
            .last("cloud_run_traffic_percent", &[("revision", first.as_str())]),
        Some(100.0)
    );

    // A deploy whose revision never becomes ready.
    let (broken, _) = e
        .fake
        .deploy(
            SVC,
            DeploySpec {
                behaviour: RevisionBehaviour::never_ready(),
                ..Default::default()
            },
        )
        .unwrap();
    let broken = short_name(&broken).to_string();
    e.fake.settle().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let v2 = src.poll_once().await.unwrap();
    assert_eq!(v2.latest_created_revision.as_deref(), Some(broken.as_str()));
    assert_eq!(
        e.sink.last(
            "cloud_run_latest_created_revision_ready",
            &[("service", "backend")]
        ),
        Some(0.0)
    );
    assert_eq!(
        e.sink
            .last("cloud_run_revision_ready", &[("revision", broken.as_str())]),
        Some(0.0)
    );
    assert!(
        e.sink
            .last(
                "cloud_run_revision_created_timestamp_seconds",
                &[("revision", first.as_str())]
            )
            .unwrap()
            > 1.0e9
    );

    // A good deploy moves traffic; the history shows both splits.
    let (second, _) = e.fake.deploy(SVC, DeploySpec::default()).unwrap();
    let second = short_name(&second).to_string();
    e.fake.settle().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let v3 = src.poll_once().await.unwrap();
    assert_eq!(v3.serving[0].revision, second);
    assert_eq!(v3.previous_traffic().unwrap().traffic[0].revision, first);
    assert!(e
        .sink
        .stale
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.metric_name() == Some("cloud_run_traffic_percent")
            && l.get("revision") == Some(first.as_str())));
    assert_eq!(views.get(SVC).unwrap().etag, v3.etag);

    // After a restart the stored view says what served before.
    drop(src);
    let views2 = CloudRunViews::default();
    let mut again = CloudRunSource::load(cfg, e.ctx.clone(), e.deps(), views2.clone()).await;
    let restored = views2.get(SVC).unwrap();
    assert_eq!(restored.serving[0].revision, second);
    assert_eq!(restored.traffic_history.len(), 2);
    e.fake
        .inject(Fault::status(methods::SERVICES_GET, 503).times(2));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let v4 = again.poll_once().await.unwrap();
    assert_eq!(
        v4.traffic_history.len(),
        2,
        "an unchanged split adds no history"
    );
    assert_eq!(e.metrics.count("run", "services.get", "503"), 2);
    assert_requests_valid(&e.fake);
}

#[tokio::test(start_paused = true)]
async fn timeouts_retry_after_and_size_limit() {
    let clock = Clock::starting_at(T0);
    let fake = FakeGcp::start_with(
        clock.clone(),
        FakeOptions {
            require_auth: false,
            ..FakeOptions::default()
        },
    )
    .await
    .unwrap();
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    fake.settle().await;
    let cfg = GcpConfig {
        project: fake.project(),
        credentials: "adc".into(),
        endpoints: GcpEndpoints {
            run: fake.base_url(),
            monitoring: fake.base_url(),
            logging: fake.base_url(),
        },
    };
    let registry = prometheus::Registry::new();
    let metrics = UpstreamMetrics::register(&registry).unwrap();
    let policy = RetryPolicy {
        timeout: Duration::from_secs(5),
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    let ctx = GcpContext::new(&cfg, TokenSource::anonymous(), policy, metrics.clone()).unwrap();
    // A slow answer times out and is retried.
    fake.inject(
        Fault::new(
            methods::SERVICES_GET,
            FaultKind::Delay(Duration::from_secs(60)),
        )
        .times(1),
    );
    ctx.run.get_service(SVC).await.unwrap();
    assert_eq!(metrics.count("run", "services.get", "timeout"), 1);
    assert_eq!(metrics.count("run", "services.get", "200"), 1);
    // Retry-After is honoured.
    fake.inject(Fault::rate_limited(methods::SERVICES_GET, 7).times(1));
    let before = tokio::time::Instant::now();
    ctx.run.get_service(SVC).await.unwrap();
    assert!(
        before.elapsed() >= Duration::from_secs(7),
        "{:?}",
        before.elapsed()
    );
    // Persistent failure gives up after max_attempts, with Google's error.
    fake.inject(Fault::status(methods::SERVICES_GET, 503));
    let err = ctx.run.get_service(SVC).await.unwrap_err();
    assert_eq!(err.google_status(), Some("UNAVAILABLE"), "{err}");
    assert_eq!(metrics.count("run", "services.get", "503"), 3);
    fake.clear_faults();
    // Answers larger than the limit are refused.
    let small = GcpContext::new(
        &cfg,
        TokenSource::anonymous(),
        RetryPolicy {
            max_response_bytes: 200,
            ..RetryPolicy::default()
        },
        UpstreamMetrics::register(&prometheus::Registry::new()).unwrap(),
    )
    .unwrap();
    let err = small.run.get_service(SVC).await.unwrap_err();
    assert!(
        matches!(err, rearguard::gcp::GcpError::TooLarge { .. }),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn managers_apply_and_shut_down() {
    let e = env().await;
    e.fake.create_service(ServiceSpec::new(SVC)).unwrap();
    e.fake.settle().await;
    let manager = rearguard::source::cloud_run::CloudRunManager::new(e.ctx.clone(), e.deps());
    let views = manager.views();
    let cfg = CloudRunConfig {
        service: SVC.into(),
        interval: Dur::secs(30),
    };
    manager.apply(std::slice::from_ref(&cfg));
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert!(views.get(SVC).is_some());
    let gets = e.fake.calls_to(methods::SERVICES_GET).len();
    assert!((3..=4).contains(&gets), "polled every 30s: {gets}");
    // Re-applying the same config keeps the schedule; removing stops the task.
    manager.apply(std::slice::from_ref(&cfg));
    assert_eq!(manager.names(), vec![SVC.to_string()]);
    manager.apply(&[]);
    assert!(views.get(SVC).is_none());
    tokio::time::sleep(Duration::from_secs(120)).await;
    let after = e.fake.calls_to(methods::SERVICES_GET).len();
    assert!(after <= gets + 1, "stopped polling: {gets} → {after}");
    manager.shutdown().await;
    let mon =
        rearguard::source::cloud_monitoring::CloudMonitoringManager::new(e.ctx.clone(), e.deps());
    mon.apply(&[monitoring_cfg(
        "requests",
        "run.googleapis.com/request_count",
    )]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    mon.shutdown().await;
    assert!(mon.names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn rollback_style_patch_through_the_fake() {
    use rearguard::gcp::run::{PatchOptions, ServiceUpdate, TrafficTarget};
    let e = env().await;
    let first = short_name(&e.fake.create_service(ServiceSpec::new(SVC)).unwrap()).to_string();
    let (bad, _) = e
        .fake
        .deploy(
            SVC,
            DeploySpec {
                behaviour: RevisionBehaviour::bad(),
                ..Default::default()
            },
        )
        .unwrap();
    e.fake.settle().await;
    let mut svc = e.ctx.run.get_service(SVC).await.unwrap();
    assert_eq!(
        svc.serving_revisions(),
        vec![(short_name(&bad).to_string(), 100)]
    );
    // Updated: this test used to send the whole service back. The deploy
    // pins template.revision as gcloud does, and Cloud Run refuses a body
    // naming an existing revision (google-cloud-python issues 11870, 14259),
    // so a rollback sends only traffic (and annotations).
    svc.traffic = vec![TrafficTarget::to_revision(first.clone(), 100)];
    let err = e
        .ctx
        .run
        .patch_service(&svc, &PatchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.google_status(), Some("ALREADY_EXISTS"), "{err}");
    let update = ServiceUpdate {
        name: SVC.to_string(),
        etag: svc.etag.clone().unwrap(),
        traffic: Some(svc.traffic.clone()),
        ..Default::default()
    };
    let stale = update.clone();
    let op = e.ctx.run.update_service(&update, false).await.unwrap();
    let done = e
        .ctx
        .run
        .wait_until_done(&op.name, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(done.done && done.error.is_none(), "{done:?}");
    let now = e.ctx.run.get_service(SVC).await.unwrap();
    assert_eq!(now.serving_revisions(), vec![(first, 100)]);
    // The etag read before the change is stale now.
    let err = e.ctx.run.update_service(&stale, false).await.unwrap_err();
    assert!(err.is_stale_etag(), "{err}");
    let op = e.ctx.run.get_operation(&op.name).await.unwrap();
    assert!(op.done);
    assert_requests_valid(&e.fake);
}

#[tokio::test(start_paused = true)]
async fn a_logging_429_is_waited_out() {
    let e = env().await;
    let evidence = LogEvidenceStore::default();
    let mut a = CloudLoggingSource::load(
        logging_cfg("a", ERRORS),
        e.ctx.clone(),
        e.deps(),
        evidence.clone(),
    )
    .await;
    let mut b = CloudLoggingSource::load(
        logging_cfg("b", ERRORS),
        e.ctx.clone(),
        e.deps(),
        evidence.clone(),
    )
    .await;
    e.fake
        .inject(Fault::rate_limited(methods::ENTRIES_LIST, 20).times(1));
    let t0 = tokio::time::Instant::now();
    a.poll_once().await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(20),
        "a waited out Retry-After"
    );
    // b goes through the same quota and is not refused.
    b.poll_once().await.unwrap();
    let calls = e.fake.calls_to(methods::ENTRIES_LIST);
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].status, 429);
    assert!(calls[1].at_ms - calls[0].at_ms >= 20_000);
    assert_eq!(e.metrics.count("logging", "entries.list", "429"), 1);
}

#[tokio::test(start_paused = true)]
async fn logging_after_a_long_outage_does_not_count_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = env_with(store).await;
    let cfg = logging_cfg("errors", ERRORS);
    poll_then_stop(&e, &cfg).await;
    // rearguard is down for 3 hours; errors happen all along.
    errors_while_down(&e, 180, 1).await;
    let mut src =
        CloudLoggingSource::load(cfg, e.ctx.clone(), e.deps(), LogEvidenceStore::default()).await;
    let counted = src.poll_once().await.unwrap();
    assert_eq!(
        counted, 17,
        "only the last overlap (2m) + max_catch_up (15m) counts"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_are_counted_once_per_retry_made_by_reason() {
    let e = env().await;
    e.fake.create_service(ServiceSpec::new(SVC)).unwrap();
    e.fake.settle().await;
    // Three failures, then success: three retries, four attempts.
    e.fake
        .inject(Fault::status(methods::SERVICES_GET, 503).times(3));
    e.ctx.run.get_service(SVC).await.unwrap();
    assert_eq!(e.metrics.retry_count("run", "services.get", "503"), 3);
    assert_eq!(e.metrics.count("run", "services.get", "503"), 3);
    assert_eq!(e.metrics.count("run", "services.get", "200"), 1);
    // Mixed reasons are told apart; a success right away adds no retry.
    e.fake
        .inject(Fault::rate_limited(methods::SERVICES_GET, 2).times(1));
    e.fake.inject(
        Fault::new(
            methods::SERVICES_GET,
            FaultKind::Delay(Duration::from_secs(60)),
        )
        .after(1)
        .times(1),
    );
    e.ctx.run.get_service(SVC).await.unwrap();
    e.ctx.run.get_service(SVC).await.unwrap();
    assert_eq!(e.metrics.retry_count("run", "services.get", "429"), 1);
    assert_eq!(e.metrics.retry_count("run", "services.get", "timeout"), 1);
    assert_eq!(e.metrics.retry_count("run", "services.get", "503"), 3);
    // A call that fails on every attempt is retried max_attempts - 1 times;
    // the last failure is not a retry.
    e.fake.inject(Fault::status(methods::SERVICES_GET, 500));
    e.ctx.run.get_service(SVC).await.unwrap_err();
    e.fake.clear_faults();
    let max = RetryPolicy::default().max_attempts as u64;
    assert_eq!(e.metrics.count("run", "services.get", "500"), max);
    assert_eq!(e.metrics.retry_count("run", "services.get", "500"), max - 1);
    // Logging's calls (through the shared quota) are counted the same way.
    let mut src = CloudLoggingSource::load(
        logging_cfg("errors", ERRORS),
        e.ctx.clone(),
        e.deps(),
        LogEvidenceStore::default(),
    )
    .await;
    e.fake
        .inject(Fault::status(methods::ENTRIES_LIST, 502).times(2));
    src.poll_once().await.unwrap();
    assert_eq!(e.metrics.retry_count("logging", "entries.list", "502"), 2);
    // Non-retryable errors are not retried.
    e.fake
        .inject(Fault::status(methods::ENTRIES_LIST, 403).times(1));
    tokio::time::sleep(Duration::from_secs(30)).await;
    src.poll_once().await.unwrap_err();
    assert_eq!(e.metrics.retry_count("logging", "entries.list", "403"), 0);
    assert_eq!(e.metrics.count("logging", "entries.list", "403"), 1);
}

/// Loads the query `cfg`, polls once, and drops it (rearguard goes down).
async fn poll_then_stop(e: &Env, cfg: &CloudLoggingConfig) {
    let mut src = CloudLoggingSource::load(
        cfg.clone(),
        e.ctx.clone(),
        e.deps(),
        LogEvidenceStore::default(),
    )
    .await;
    src.poll_once().await.unwrap();
}

/// One ERROR entry `per_minute` times a minute for `minutes` minutes, on paused time.
async fn errors_while_down(e: &Env, minutes: u64, per_minute: u64) {
    for m in 0..minutes {
        tokio::time::sleep(Duration::from_secs(60)).await;
        for i in 0..per_minute {
            e.fake
                .add_log_entry(LogEntrySpec::cloud_run(
                    "sim-project",
                    "us-central1",
                    "backend",
                    "r1",
                    // Spread over the minute, none on a minute boundary.
                    e.clock.now_ms() - (i as i64 * 60_000 + 30_000) / per_minute as i64,
                    "ERROR",
                    &format!("while down {m}.{i}"),
                ))
                .unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn logging_catch_up_after_a_gap_is_capped_by_max_catch_up() {
    let e = env().await;
    let default_cap = logging_cfg("default-cap", ERRORS);
    let hour_cap = CloudLoggingConfig {
        max_catch_up: Dur::secs(3600),
        ..logging_cfg("hour-cap", ERRORS)
    };
    poll_then_stop(&e, &default_cap).await;
    poll_then_stop(&e, &hour_cap).await;
    // Down for an hour; one error a minute, half a minute before each minute ends.
    errors_while_down(&e, 60, 1).await;
    let poll = |cfg: CloudLoggingConfig| async {
        let mut src =
            CloudLoggingSource::load(cfg, e.ctx.clone(), e.deps(), LogEvidenceStore::default())
                .await;
        src.poll_once().await.unwrap()
    };
    // The default reads back the overlap (2m) and 15m beyond it: 17 minutes.
    assert_eq!(poll(default_cap).await, 17);
    assert_eq!(
        e.sink
            .last("log_entries_total", &[("query", "default-cap")]),
        Some(17.0)
    );
    // max_catch_up: 1h covers the whole hour.
    assert_eq!(poll(hour_cap.clone()).await, 60);
    assert_eq!(
        e.sink.last("log_entries_total", &[("query", "hour-cap")]),
        Some(60.0)
    );
    // A gap longer than the cap still counts only overlap + max_catch_up.
    errors_while_down(&e, 180, 1).await;
    assert_eq!(poll(hour_cap).await, 62);
}

#[tokio::test(start_paused = true)]
async fn a_long_catch_up_pages_within_the_quota() {
    let e = env().await;
    let cfgs: Vec<CloudLoggingConfig> = (0..5)
        .map(|i| CloudLoggingConfig {
            max_catch_up: Dur::secs(3 * 3600),
            interval: Dur::secs(120),
            ..logging_cfg(&format!("q{i}"), ERRORS)
        })
        .collect();
    for c in &cfgs {
        poll_then_stop(&e, c).await;
    }
    let before = e.fake.calls_to(methods::ENTRIES_LIST).len();
    // Down for 3 hours, 20 errors a minute: 3600 entries, four pages of 1000.
    errors_while_down(&e, 180, 20).await;
    // Every search starts with 12 empty pages: each catch-up needs 16 calls,
    // 80 for the five queries, more than the quota allows in a minute.
    e.fake.set_logging_empty_pages(12);
    let manager = CloudLoggingManager::new(e.ctx.clone(), e.deps());
    manager.apply(&cfgs);
    tokio::time::sleep(Duration::from_secs(200)).await;
    manager.shutdown().await;
    let calls = e.fake.calls_to(methods::ENTRIES_LIST);
    assert!(
        calls.len() - before >= 5 * 16,
        "every query paged through its catch-up: {} calls",
        calls.len() - before
    );
    assert!(
        calls.iter().all(|c| c.status != 429),
        "no call was refused for quota"
    );
    let times: Vec<i64> = calls.iter().map(|c| c.at_ms).collect();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 60_000).count();
        assert!(in_window <= 60, "{in_window} calls in the minute from {t}");
    }
    for i in 0..5 {
        assert_eq!(
            e.sink
                .last("log_entries_total", &[("query", &format!("q{i}"))]),
            Some(3600.0),
            "q{i} counted the whole gap once"
        );
    }
}
