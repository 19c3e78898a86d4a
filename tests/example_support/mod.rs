//! examples/cloud-run-staging.yaml and rules/ running against the fake Google
//! APIs on paused time: its probes, sources, rules and dispatch (the
//! daemon's parts, wired as the daemon wires them), with every notification
//! recorded instead of sent.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard::clock::{Clock, TimestampMs};
use rearguard::config::gcp::{GcpConfig, GcpEndpoints};
use rearguard::config::LoadedConfig;
use rearguard::dispatch::notification::{BoxFuture, Notification, NotificationSink};
use rearguard::dispatch::{Dispatcher, DispatcherDeps};
use rearguard::gcp::{GcpContext, RetryPolicy, TokenSource, UpstreamMetrics};
use rearguard::promql::{Engine, EngineOptions};
use rearguard::rules::manager::{ManagerOptions, RuleManager, RulesConfig, RulesDeps};
use rearguard::rules::querier::LocalQuerier;
use rearguard::source::cloud_logging::CloudLoggingManager;
use rearguard::source::cloud_monitoring::{CloudMonitoringManager, GcpSourceDeps};
use rearguard::source::cloud_run::CloudRunManager;
use rearguard::source::health::SourceHealth;
use rearguard::source::probe::{ProbeDeps, ProbeManager};
use rearguard::store::Store;
use rearguard::tsdb::{SampleSink, Tsdb};
use rearguard_sim::{FakeGcp, FakeOptions, ServiceSpec};

pub const T0: TimestampMs = 1_800_000_000_000;
pub const MIN: i64 = 60_000;

#[derive(Default)]
pub struct Told {
    pub got: Mutex<Vec<(TimestampMs, Notification)>>,
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

pub struct Pipeline {
    pub clock: Clock,
    pub fake: FakeGcp,
    /// The example's Cloud Run service in the fake.
    pub service: String,
    pub loaded: LoadedConfig,
    pub registry: prometheus::Registry,
    pub tsdb: Arc<Tsdb>,
    pub told: Arc<Told>,
    pub rules: Arc<RuleManager>,
    monitoring: CloudMonitoringManager,
    logging: CloudLoggingManager,
    run: CloudRunManager,
    probes: Arc<ProbeManager>,
}

impl Pipeline {
    /// The fake with the example's service, and the example config pointed
    /// at it (`backend_url` for the probe). Nothing runs yet.
    pub async fn fake() -> (Clock, FakeGcp, String) {
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
        (clock, fake, service)
    }

    /// Starts the example's probes, sources, rules and dispatch. Calls are
    /// never cut by a per-call timeout shorter than a day: only the per-poll
    /// deadline notices a hang.
    pub async fn start(clock: Clock, fake: FakeGcp, service: String, backend_url: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cloud-run-staging.yaml");
        let raw = std::fs::read_to_string(&path).unwrap();
        let base = fake.base_url();
        let project = fake.project();
        let loaded = rearguard::config::load_str(&path, &raw, |n| match n {
            "GCP_PROJECT" => Some(project.clone()),
            "GCP_RUN_ENDPOINT" | "GCP_MONITORING_ENDPOINT" | "GCP_LOGGING_ENDPOINT" => {
                Some(base.clone())
            }
            "BACKEND_URL" => Some(backend_url.to_string()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let c = loaded.config.clone();

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
        let logging =
            CloudLoggingManager::new(ctx.clone(), deps.clone()).with_health(health.clone());
        let run = CloudRunManager::new(ctx.clone(), deps).with_health(health.clone());
        let probes = Arc::new(ProbeManager::new(ProbeDeps {
            clock: clock.clone(),
            sink: sink.clone(),
            store: store.clone(),
            registry: registry.clone(),
        }));

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
        let rules = Arc::new(
            RuleManager::new(
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
            .unwrap(),
        );
        let mut rc = RulesConfig::from_loaded(&loaded).unwrap();
        // The gmp query source needs the daemon's Google context; no group uses it.
        rc.sources.clear();

        probes.apply(&c.probes);
        monitoring.apply(&c.cloud_monitoring);
        logging.apply(&c.cloud_logging);
        run.apply(&c.cloud_run);
        rules.apply(rc).await.unwrap();
        Pipeline {
            clock,
            fake,
            service,
            loaded,
            registry,
            tsdb,
            told,
            rules,
            monitoring,
            logging,
            run,
            probes,
        }
    }

    /// The `rearguard_source_up` gauge values of `kind`.
    pub fn source_up(&self, kind: &str) -> Vec<f64> {
        self.registry
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

    pub fn notifications(&self) -> Vec<(TimestampMs, Notification)> {
        self.told.got.lock().unwrap().clone()
    }

    pub async fn shutdown(self) {
        self.probes.shutdown().await;
        self.monitoring.shutdown().await;
        self.logging.shutdown().await;
        self.run.shutdown().await;
        self.rules.shutdown().await;
    }
}
