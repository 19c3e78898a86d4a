//! Numbers as Google gives them (issue 12, items 6-10), through the fake in
//! its Google-faithful modes, on paused time: timeSeries.list pages by points,
//! NaN and infinities arrive as strings, incomplete answers are not taken,
//! aligned DELTA periods count once and whole, Logging is read newest first
//! and a slow search resumes, and a 429 with only RetryInfo is waited out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard::clock::{Clock, TimestampMs};
use rearguard::config::gcp::{
    AggregationConfig, CloudLoggingConfig, CloudMonitoringConfig, GcpConfig, GcpEndpoints,
};
use rearguard::config::Dur;
use rearguard::gcp::{GcpContext, RetryPolicy, TokenSource, UpstreamMetrics};
use rearguard::labels::{Labels, Sample};
use rearguard::source::cloud_logging::{CloudLoggingSource, LogEvidenceStore};
use rearguard::source::cloud_monitoring::{CloudMonitoringSource, GcpSourceDeps};
use rearguard::store::Store;
use rearguard::tsdb::SampleSink;
use rearguard_sim::{
    methods, FakeGcp, FakeOptions, Fault, LogEntrySpec, MetricKind, PointValue, SeriesSpec,
};

const T0: TimestampMs = 1_800_000_000_000;
const MINUTE: i64 = 60_000;
const REQ: &str = "run_googleapis_com:request_count";

#[derive(Default)]
struct VecSink {
    samples: Mutex<Vec<Sample>>,
}

impl SampleSink for VecSink {
    fn append(&self, samples: &[Sample]) {
        self.samples.lock().unwrap().extend_from_slice(samples);
    }
    fn mark_stale(&self, _: &[Labels], _: TimestampMs) {}
}

impl VecSink {
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<Sample> {
        let mut v: Vec<Sample> = self
            .samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s.labels.metric_name() == Some(name)
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .cloned()
            .collect();
        v.sort_by_key(|s| s.timestamp_ms);
        v
    }

    /// The newest value of the series with this name and these labels.
    fn last(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).last().map(|s| s.value)
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

    fn partial_results(&self, name: &str) -> u64 {
        self.metrics
            .partial_results
            .with_label_values(&["cloud_monitoring", name])
            .get()
    }
}

async fn env() -> Env {
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
    let metrics = UpstreamMetrics::register(&prometheus::Registry::new()).unwrap();
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
        store: Store::open_in_memory().unwrap(),
    }
}

fn monitoring_cfg(name: &str, metric: &str, overlap_secs: u64) -> CloudMonitoringConfig {
    CloudMonitoringConfig {
        name: name.into(),
        metric: metric.into(),
        filter: Some("resource.labels.service_name = \"backend\"".into()),
        interval: Dur::secs(60),
        overlap: Dur::secs(overlap_secs),
        ingestion_lag: Dur::secs(180),
        aggregation: None,
    }
}

fn series(metric: &str, kind: MetricKind, location: &str, class: &str) -> SeriesSpec {
    SeriesSpec::cloud_run(
        metric,
        kind,
        "sim-project",
        location,
        "backend",
        "backend-00001",
    )
    .metric_label("response_code_class", class)
}

fn requests(class: &str) -> SeriesSpec {
    series(
        "run.googleapis.com/request_count",
        MetricKind::Delta,
        "us-central1",
        class,
    )
}

#[tokio::test(start_paused = true)]
async fn point_paged_history_is_stitched_and_the_5xx_ratio_over_an_hour_is_exact() {
    let e = env().await;
    // An hour of one-minute points for 2xx and 5xx; pages of at most 7 points,
    // so every series comes in parts over several pages.
    e.fake.set_monitoring_page_points(Some(7));
    let (mut ok, mut errors) = (0i64, 0i64);
    for m in 0..60 {
        let start = T0 - (60 - m) * MINUTE;
        let (o, x) = (100 + m, m % 7);
        ok += o;
        errors += x;
        e.fake
            .add_point(
                &requests("2xx"),
                start,
                start + MINUTE,
                PointValue::Int64(o),
            )
            .unwrap();
        e.fake
            .add_point(
                &requests("5xx"),
                start,
                start + MINUTE,
                PointValue::Int64(x),
            )
            .unwrap();
    }
    let cfg = monitoring_cfg("requests", "run.googleapis.com/request_count", 3600);
    let mut src = CloudMonitoringSource::load(cfg, e.ctx.clone(), e.deps()).await;
    src.poll_once().await.unwrap();
    let calls = e.fake.calls_to(methods::TIME_SERIES_LIST);
    assert_eq!(
        calls.len(),
        120usize.div_ceil(7),
        "one call per page of 7 points"
    );
    assert!(calls.iter().all(|c| c.param("view") == Some("FULL")));
    let got_ok = e.sink.last(REQ, &[("response_code_class", "2xx")]).unwrap();
    let got_errors = e.sink.last(REQ, &[("response_code_class", "5xx")]).unwrap();
    assert_eq!((got_ok, got_errors), (ok as f64, errors as f64));
    let ratio = got_errors / (got_ok + got_errors);
    assert_eq!(ratio, errors as f64 / (ok + errors) as f64);
    // Read again a minute later (the same hour, paged the same way): nothing counts twice.
    tokio::time::sleep(Duration::from_secs(60)).await;
    src.poll_once().await.unwrap();
    assert_eq!(
        e.sink.last(REQ, &[("response_code_class", "5xx")]),
        Some(errors as f64)
    );
}

#[tokio::test(start_paused = true)]
async fn nan_and_infinite_points_do_not_fail_the_poll() {
    let e = env().await;
    let util = series(
        "run.googleapis.com/container/cpu/utilizations",
        MetricKind::Gauge,
        "us-central1",
        "-",
    );
    for (i, v) in [0.5, f64::NAN, f64::INFINITY, 0.7].into_iter().enumerate() {
        let end = T0 - (4 - i as i64) * MINUTE;
        e.fake
            .add_point(&util, end, end, PointValue::Double(v))
            .unwrap();
    }
    let delta = series(
        "custom.googleapis.com/work_done",
        MetricKind::Delta,
        "us-central1",
        "-",
    );
    for (i, v) in [1.0, f64::NAN, f64::NEG_INFINITY, 2.0]
        .into_iter()
        .enumerate()
    {
        let end = T0 - (4 - i as i64) * MINUTE;
        e.fake
            .add_point(&delta, end - MINUTE, end, PointValue::Double(v))
            .unwrap();
    }
    let mut gauge = CloudMonitoringSource::load(
        monitoring_cfg("cpu", "run.googleapis.com/container/cpu/utilizations", 600),
        e.ctx.clone(),
        e.deps(),
    )
    .await;
    assert_eq!(gauge.poll_once().await.unwrap(), 4);
    let values: Vec<f64> = e
        .sink
        .matching("run_googleapis_com:container_cpu_utilizations", &[])
        .iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(values.len(), 4);
    assert!(values[1].is_nan() && values[2] == f64::INFINITY);
    assert_eq!((values[0], values[3]), (0.5, 0.7));
    let mut counter = CloudMonitoringSource::load(
        monitoring_cfg("work", "custom.googleapis.com/work_done", 600),
        e.ctx.clone(),
        e.deps(),
    )
    .await;
    counter.poll_once().await.unwrap();
    // The non-finite deltas are left out of the running total, which stays usable.
    assert_eq!(
        e.sink.last("custom_googleapis_com:work_done", &[]),
        Some(3.0)
    );
}

#[tokio::test(start_paused = true)]
async fn incomplete_answers_take_nothing_and_are_counted() {
    let e = env().await;
    for m in 0..10 {
        let start = T0 - (10 - m) * MINUTE;
        e.fake
            .add_point(
                &requests("5xx"),
                start,
                start + MINUTE,
                PointValue::Int64(3),
            )
            .unwrap();
    }
    let cfg = monitoring_cfg("requests", "run.googleapis.com/request_count", 900);
    let mut src = CloudMonitoringSource::load(cfg, e.ctx.clone(), e.deps()).await;
    // A backend fails: the answer lacks the newest point and says so.
    e.fake
        .set_monitoring_execution_error(Some("a backend did not answer"));
    assert_eq!(src.poll_once().await.unwrap(), 0);
    assert_eq!(
        e.sink.last(REQ, &[]),
        None,
        "nothing of the answer is taken"
    );
    assert_eq!(e.partial_results("requests"), 1);
    e.fake.set_monitoring_execution_error(None);
    tokio::time::sleep(Duration::from_secs(60)).await;
    src.poll_once().await.unwrap();
    assert_eq!(e.sink.last(REQ, &[]), Some(30.0), "every point, once");

    // A region is unreachable: its series are missing and the answer lists it.
    let europe = series(
        "run.googleapis.com/request_count",
        MetricKind::Delta,
        "europe-west1",
        "5xx",
    );
    let now = e.clock.now_ms();
    e.fake
        .add_point(
            &europe,
            now - 2 * MINUTE,
            now - MINUTE,
            PointValue::Int64(4),
        )
        .unwrap();
    e.fake
        .add_point(&requests("5xx"), now - MINUTE, now, PointValue::Int64(1))
        .unwrap();
    e.fake.set_monitoring_unreachable(&["europe-west1"]);
    assert_eq!(src.poll_once().await.unwrap(), 0);
    assert_eq!(e.partial_results("requests"), 2);
    assert_eq!(e.sink.last(REQ, &[("location", "us-central1")]), Some(30.0));
    e.fake.set_monitoring_unreachable(&[]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    src.poll_once().await.unwrap();
    assert_eq!(e.sink.last(REQ, &[("location", "us-central1")]), Some(31.0));
    assert_eq!(e.sink.last(REQ, &[("location", "europe-west1")]), Some(4.0));
    assert_eq!(e.partial_results("requests"), 2);
}

#[tokio::test(start_paused = true)]
async fn aligned_delta_periods_count_once_and_whole() {
    let e = env().await;
    // Points are visible 3 minutes after their end, as Cloud Run's are.
    e.fake.set_monitoring_delay(Duration::from_secs(180));
    let mut cfg = monitoring_cfg("requests", "run.googleapis.com/request_count", 1800);
    cfg.aggregation = Some(AggregationConfig {
        alignment_period: Some(Dur::secs(300)),
        per_series_aligner: Some("ALIGN_DELTA".into()),
        cross_series_reducer: Some("REDUCE_SUM".into()),
        group_by_fields: vec!["resource.labels.service_name".into()],
    });
    let mut src = CloudMonitoringSource::load(cfg, e.ctx.clone(), e.deps()).await;
    src.poll_once().await.unwrap();
    // One request a minute for 40 minutes, polled every minute.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let now = e.clock.now_ms();
        e.fake
            .add_point(&requests("5xx"), now - MINUTE, now, PointValue::Int64(1))
            .unwrap();
        src.poll_once().await.unwrap();
    }
    // At T0+40m the newest period older than the 3m lag ends at T0+35m: 35 requests.
    let samples = e.sink.matching(REQ, &[("service_name", "backend")]);
    assert_eq!(samples.last().map(|s| s.value), Some(35.0));
    let mut last = 0.0;
    for s in &samples {
        assert!(s.value >= last, "the counter never goes down");
        last = s.value;
        assert_eq!(
            s.timestamp_ms % (5 * MINUTE),
            0,
            "every period on a boundary"
        );
    }
    // Each period was taken once, whole: 5 requests a step.
    let steps: Vec<f64> = samples
        .windows(2)
        .map(|w| w[1].value - w[0].value)
        .filter(|d| *d > 0.0)
        .collect();
    assert!(steps.iter().all(|d| *d == 5.0), "{steps:?}");
    let calls = e.fake.calls_to(methods::TIME_SERIES_LIST);
    for c in calls.iter().filter(|c| c.param("view") == Some("FULL")) {
        let end = chrono::DateTime::parse_from_rfc3339(c.param("interval.endTime").unwrap())
            .unwrap()
            .timestamp_millis();
        assert_eq!(end % (5 * MINUTE), 0);
    }
}

fn logging_cfg(name: &str) -> CloudLoggingConfig {
    CloudLoggingConfig {
        name: name.into(),
        filter: "resource.type=\"cloud_run_revision\" AND severity>=ERROR".into(),
        interval: Dur::secs(30),
        overlap: Dur::secs(120),
        max_catch_up: Dur::secs(15 * 60),
    }
}

fn error_entry(e: &Env, i: usize) -> LogEntrySpec {
    LogEntrySpec::cloud_run(
        "sim-project",
        "us-central1",
        "backend",
        "backend-00001",
        e.clock.now_ms() - i as i64 * 1000,
        "ERROR",
        &format!("boom {i}"),
    )
}

#[tokio::test(start_paused = true)]
async fn logging_reads_newest_first_and_resumes_a_slow_search() {
    let e = env().await;
    let mut src = CloudLoggingSource::load(
        logging_cfg("errors"),
        e.ctx.clone(),
        e.deps(),
        LogEvidenceStore::default(),
    )
    .await;
    src.poll_once().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    for i in 0..5 {
        e.fake.add_log_entry(error_entry(&e, i)).unwrap();
    }
    // The search answers 25 empty pages first: more than one poll reads (20).
    e.fake.set_logging_empty_pages(25);
    let before = e.fake.calls_to(methods::ENTRIES_LIST).len();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(src.poll_once().await.unwrap(), 0);
    let first = e.fake.calls_to(methods::ENTRIES_LIST)[before..].to_vec();
    assert_eq!(first.len(), 20);
    assert!(src.state().resume.is_some());
    // The saved search survives a restart, but not a change of the filter.
    let restarted = CloudLoggingSource::load(
        logging_cfg("errors"),
        e.ctx.clone(),
        e.deps(),
        LogEvidenceStore::default(),
    )
    .await;
    assert_eq!(restarted.state().resume, src.state().resume);
    let changed = CloudLoggingSource::load(
        CloudLoggingConfig {
            filter: "severity>=WARNING".into(),
            ..logging_cfg("errors")
        },
        e.ctx.clone(),
        e.deps(),
        LogEvidenceStore::default(),
    )
    .await;
    assert_eq!(changed.state().resume, None);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(src.poll_once().await.unwrap(), 5);
    let calls = e.fake.calls_to(methods::ENTRIES_LIST);
    let second = &calls[before + 20];
    let body = second.body.as_ref().unwrap();
    // The next poll goes on with the page token and the same filter.
    assert!(body["pageToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["filter"], first[0].body.as_ref().unwrap()["filter"]);
    for c in &calls {
        assert_eq!(
            c.body.as_ref().unwrap()["orderBy"],
            "timestamp desc",
            "recent entries are read newest first"
        );
    }
    assert_eq!(
        e.sink.last("log_entries_total", &[("severity", "ERROR")]),
        Some(5.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_with_only_retry_info_is_waited_out() {
    let e = env().await;
    let mut src = CloudLoggingSource::load(
        logging_cfg("errors"),
        e.ctx.clone(),
        e.deps(),
        LogEvidenceStore::default(),
    )
    .await;
    e.fake.inject(
        Fault::rate_limited_retry_info(methods::ENTRIES_LIST, Duration::from_secs(25)).times(1),
    );
    let t0 = tokio::time::Instant::now();
    src.poll_once().await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(25),
        "{:?}",
        t0.elapsed()
    );
    let calls = e.fake.calls_to(methods::ENTRIES_LIST);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].status, 429);
    assert!(calls[1].at_ms - calls[0].at_ms >= 25_000);
    // The fake's own quota (here one call a minute, charged to the caller's
    // project) answers the same way, and is waited out the same way.
    e.fake.set_logging_quota(Some(1));
    tokio::time::sleep(Duration::from_secs(60)).await;
    e.fake.add_log_entry(error_entry(&e, 0)).unwrap();
    src.poll_once().await.unwrap();
    let t1 = tokio::time::Instant::now();
    e.fake.add_log_entry(error_entry(&e, 1)).unwrap();
    src.poll_once().await.unwrap();
    assert!(
        t1.elapsed() >= Duration::from_secs(59),
        "{:?}",
        t1.elapsed()
    );
    assert_eq!(
        e.sink.last("log_entries_total", &[("severity", "ERROR")]),
        Some(2.0)
    );
    assert_eq!(e.metrics.count("logging", "entries.list", "429"), 2);
}
