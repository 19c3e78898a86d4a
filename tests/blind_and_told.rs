//! Never blind and silent: with examples/cloud-run-staging.yaml against the
//! fake Google APIs, every API starts hanging; the sources turn
//! `rearguard_source_up` to 0 (gauge and tsdb), `RearguardSourceDown` from
//! rules/ fires, and dispatch tells the team (the default route) within
//! minutes of simulated time, never the rollback receiver.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard::clock::{Clock, TimestampMs};
use rearguard::config::gcp::{GcpConfig, GcpEndpoints};
use rearguard::dispatch::notification::{BoxFuture, Notification, NotificationSink};
use rearguard::dispatch::{Dispatcher, DispatcherDeps};
use rearguard::gcp::{GcpContext, RetryPolicy, TokenSource, UpstreamMetrics};
use rearguard::promql::{Engine, EngineOptions};
use rearguard::rules::manager::{ManagerOptions, RuleManager, RulesConfig, RulesDeps};
use rearguard::rules::querier::LocalQuerier;
use rearguard::sim::{FakeGcp, FakeOptions, Fault, FaultKind, ServiceSpec};
use rearguard::source::cloud_logging::CloudLoggingManager;
use rearguard::source::cloud_monitoring::{CloudMonitoringManager, GcpSourceDeps};
use rearguard::source::cloud_run::CloudRunManager;
use rearguard::source::health::SourceHealth;
use rearguard::store::Store;
use rearguard::tsdb::{SampleSink, Tsdb};

const T0: TimestampMs = 1_800_000_000_000;
const MIN: i64 = 60_000;

#[derive(Default)]
struct Told {
    got: Mutex<Vec<(TimestampMs, Notification)>>,
    clock: Mutex<Option<Clock>>,
}

impl NotificationSink for Told {
    fn send<'a>(&'a self, n: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let now = self.clock.lock().unwrap().as_ref().unwrap().now_ms();
            self.got.lock().unwrap().push((now, n));
            Ok(())
        })
    }
}

fn gauge(registry: &prometheus::Registry, kind: &str) -> Vec<f64> {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "rearguard_source_up")
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "kind" && l.value() == kind)
        })
        .map(|m| m.get_gauge().get_value())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_google_api_hanging_is_told_to_a_person_within_minutes() {
    let clock = Clock::starting_at(T0);
    let fake = FakeGcp::start_with(clock.clone(), FakeOptions::default())
        .await
        .unwrap();
    fake.set_require_auth(false);
    let project = fake.project();
    let service =
        format!("projects/{project}/locations/us-central1/services/netra-backend-staging");
    fake.create_service(ServiceSpec::new(&service)).unwrap();
    fake.settle().await;

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cloud-run-staging.yaml");
    let raw = std::fs::read_to_string(&path).unwrap();
    let base = fake.base_url();
    let loaded = rearguard::config::load_str(&path, &raw, |n| match n {
        "GCP_PROJECT" => Some(project.clone()),
        "GCP_RUN_ENDPOINT" | "GCP_MONITORING_ENDPOINT" | "GCP_LOGGING_ENDPOINT" => {
            Some(base.clone())
        }
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;

    // Calls that hang are not cut by a per-call timeout here: only the
    // per-poll deadline can notice them.
    let registry = prometheus::Registry::new();
    let metrics = UpstreamMetrics::register(&registry).unwrap();
    let gcp_cfg = GcpConfig {
        project: project.clone(),
        credentials: "adc".into(),
        endpoints: GcpEndpoints {
            run: base.clone(),
            monitoring: base.clone(),
            logging: base.clone(),
        },
    };
    let policy = RetryPolicy {
        timeout: Duration::from_secs(24 * 3600),
        ..RetryPolicy::default()
    };
    let ctx = GcpContext::new(&gcp_cfg, TokenSource::anonymous(), policy, metrics).unwrap();

    let store = Store::open_in_memory().unwrap();
    let tsdb = Arc::new(Tsdb::new(c.retention.as_millis()));
    let sink: Arc<dyn SampleSink> = tsdb.clone();
    let health = SourceHealth::register(&registry, sink.clone(), clock.clone()).unwrap();
    let deps = GcpSourceDeps {
        clock: clock.clone(),
        sink: sink.clone(),
        store: store.clone(),
    };
    let monitoring =
        CloudMonitoringManager::new(ctx.clone(), deps.clone()).with_health(health.clone());
    let logging = CloudLoggingManager::new(ctx.clone(), deps.clone()).with_health(health.clone());
    let run = CloudRunManager::new(ctx.clone(), deps).with_health(health.clone());

    let told = Arc::new(Told::default());
    *told.clock.lock().unwrap() = Some(clock.clone());
    let dispatcher = Dispatcher::start(
        DispatcherDeps {
            clock: clock.clone(),
            store: store.clone(),
            sink: told.clone(),
            registry: registry.clone(),
        },
        &loaded,
    )
    .await
    .unwrap();
    let rules = RuleManager::new(
        RulesDeps {
            clock: clock.clone(),
            local: Arc::new(LocalQuerier::new(
                tsdb.clone(),
                Engine::new(EngineOptions::default()),
            )),
            sink: sink.clone(),
            store: store.clone(),
            registry: registry.clone(),
            alerts: dispatcher.clone(),
        },
        ManagerOptions::default(),
    )
    .unwrap();
    let mut rc = RulesConfig::from_loaded(&loaded).unwrap();
    // The gmp query source needs the daemon's Google context; no group uses it.
    rc.sources.clear();
    assert!(rc
        .files
        .iter()
        .any(|f| f.path.ends_with("rules/rearguard.yaml")));

    monitoring.apply(&c.cloud_monitoring);
    logging.apply(&c.cloud_logging);
    run.apply(&c.cloud_run);
    rules.apply(rc).await.unwrap();

    // Five healthy minutes: every source is up, nobody is told anything.
    clock.sleep_until_ms(T0 + 5 * MIN).await;
    for kind in ["cloud_monitoring", "cloud_logging", "cloud_run"] {
        let g = gauge(&registry, kind);
        assert!(
            !g.is_empty() && g.iter().all(|v| *v == 1.0),
            "{kind}: {g:?}"
        );
    }
    assert!(told.got.lock().unwrap().is_empty());

    // Every Google API hangs from now on.
    let hang_at = clock.now_ms();
    fake.inject(Fault::new(
        "*",
        FaultKind::Delay(Duration::from_secs(7 * 24 * 3600)),
    ));

    let mut told_at = None;
    while clock.now_ms() < hang_at + 15 * MIN {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let got = told.got.lock().unwrap();
        if let Some((at, n)) = got
            .iter()
            .find(|(_, n)| n.alerts.iter().any(|a| a.name() == "RearguardSourceDown"))
        {
            assert_eq!(n.receiver, "team", "{n:?}");
            told_at = Some(*at);
            break;
        }
    }
    let told_at = told_at.expect("nobody was told that rearguard is blind");
    let after = Duration::from_millis((told_at - hang_at) as u64);
    eprintln!("told after {after:?}");
    assert!(after <= Duration::from_secs(8 * 60), "told after {after:?}");

    // Every kind is down, in the gauge.
    for kind in ["cloud_monitoring", "cloud_logging", "cloud_run"] {
        let g = gauge(&registry, kind);
        assert!(
            !g.is_empty() && g.iter().all(|v| *v == 0.0),
            "{kind}: {g:?}"
        );
    }
    // The alert never went to the rollback receiver, and its text has no holes.
    let got = told.got.lock().unwrap();
    assert!(got.iter().all(|(_, n)| n.receiver != "rollback-backend"));
    let (_, n) = got
        .iter()
        .find(|(_, n)| n.alerts.iter().any(|a| a.name() == "RearguardSourceDown"))
        .unwrap();
    for a in &n.alerts {
        let summary = &a.annotations["summary"];
        assert!(
            summary.starts_with("rearguard is blind: its cloud_") && !summary.contains("  "),
            "{summary}"
        );
    }
    drop(got);

    monitoring.shutdown().await;
    logging.shutdown().await;
    run.shutdown().await;
    rules.shutdown().await;
}
