//! Shared harness for the rollback scenario tests: an in-memory Cloud Run, an
//! alert state and probes that follow what the service serves, a recording
//! alert sink, and an ActionRunner over a real store in a temp dir.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::MetricType;
use rearguard::action::events::RecordingSink;
use rearguard::action::{
    ActionDeps, ActionRunner, AlertState, CloudRunApi, ProbeCheck, RequestCount, RequestCounts,
    Unknown,
};
use rearguard::alert::Alert;
use rearguard::clock::{Clock, TimestampMs};
use rearguard::config::{load_str, Config};
use rearguard::dispatch::notification::{BoxFuture, Notification};
use rearguard::labels::Labels;
use rearguard::store::Store;
use rearguard_testkit::cloud_run::FakeCloudRun;

pub const SVC: &str = "projects/netra-staging/locations/us-central1/services/backend";
pub const T0: TimestampMs = 1_700_000_000_000;
pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;

/// "Bad" revisions: while one of them serves, the alert fires and probes fail.
#[derive(Default)]
pub struct World {
    pub bad: Mutex<Vec<String>>,
    /// When set, the alert fires whatever serves (a fix that does not help).
    pub always_firing: Mutex<bool>,
    /// When set, the alert fires until this file exists (a command's fix).
    pub fixed_by_file: Mutex<Option<std::path::PathBuf>>,
    /// When set, the alert is held firing by the restore grace after a
    /// restart (restored, not evaluated since): firing, but not by fresh evidence.
    pub held_by_restore: Mutex<bool>,
    /// The lookback of the alert's rule (unknown when unset).
    pub lookback_ms: Mutex<Option<i64>>,
    /// The alert's rule reads request counts, and these were counted (the
    /// `min_requests` guard applies when set).
    pub requests: Mutex<Option<RequestCount>>,
    /// The alert's rule failed at its last evaluation with this error.
    pub rule_error: Mutex<Option<String>>,
}

pub struct FollowsService {
    pub fake: FakeCloudRun,
    pub world: Arc<World>,
}

impl FollowsService {
    fn bad_serving(&self) -> bool {
        let serving = self.fake.service(SVC).and_then(|s| s.serving_revision());
        let bad = self.world.bad.lock().unwrap();
        let unfixed = self
            .world
            .fixed_by_file
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|f| !f.exists());
        *self.world.always_firing.lock().unwrap()
            || unfixed
            || serving.is_some_and(|s| bad.contains(&s))
    }
}

impl AlertState for FollowsService {
    fn is_firing(&self, _fingerprint: u64) -> Option<bool> {
        Some(self.bad_serving() || *self.world.held_by_restore.lock().unwrap())
    }

    fn is_firing_fresh(&self, _fingerprint: u64) -> Option<bool> {
        if *self.world.held_by_restore.lock().unwrap() {
            return None;
        }
        Some(self.bad_serving())
    }

    fn lookback_ms(&self, _fingerprint: u64) -> Option<i64> {
        *self.world.lookback_ms.lock().unwrap()
    }

    fn evidence_metrics(&self, _fingerprint: u64) -> Option<BTreeSet<String>> {
        self.world
            .requests
            .lock()
            .unwrap()
            .map(|_| BTreeSet::from(["run_googleapis_com:request_count".to_string()]))
    }

    fn rule_error(&self, _fingerprint: u64) -> Option<String> {
        self.world.rule_error.lock().unwrap().clone()
    }
}

impl RequestCounts for FollowsService {
    fn requests<'a>(
        &'a self,
        _service: &'a str,
        _revision: &'a str,
        _from_ms: TimestampMs,
        _to_ms: TimestampMs,
    ) -> BoxFuture<'a, Option<RequestCount>> {
        Box::pin(async move { *self.world.requests.lock().unwrap() })
    }
}

impl ProbeCheck for FollowsService {
    fn check<'a>(&'a self, probe: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move { (probe == "backend-health").then(|| !self.bad_serving()) })
    }
}

pub struct Harness {
    pub clock: Clock,
    pub fake: FakeCloudRun,
    pub world: Arc<World>,
    pub store: Store,
    pub sink: Arc<RecordingSink>,
    pub runner: ActionRunner,
    pub registry: prometheus::Registry,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

pub fn config(actions_yaml: &str) -> Config {
    config_with("", actions_yaml)
}

/// `top_yaml` goes before `receivers:` (e.g. `time_intervals:`).
pub fn config_with(top_yaml: &str, actions_yaml: &str) -> Config {
    let text = format!(
        "{top_yaml}probes:\n  - name: backend-health\n    url: http://127.0.0.1:9/health\nreceivers:\n  - name: team\n  - name: rollback-backend\n    rollback_configs:\n      - action: backend\nactions:\n{actions_yaml}"
    );
    match load_str(
        Path::new("/tmp/rollback-test/rearguard.yaml"),
        &text,
        |_| None,
    ) {
        Ok(c) => c.config,
        Err(e) => panic!("test config does not load:\n{e}\n{text}"),
    }
}

pub fn traffic_action(extra: &str) -> String {
    format!("  backend:\n    cloud_run_traffic:\n      service: {SVC}\n    verify:\n      probes: [backend-health]\n{extra}")
}

impl Harness {
    /// A service serving `backend-00001` since a day ago; `actions_yaml` under `actions:`.
    pub fn new(actions_yaml: &str) -> Harness {
        Self::new_with("", actions_yaml)
    }

    pub fn new_with(top_yaml: &str, actions_yaml: &str) -> Harness {
        let clock = Clock::starting_at(T0);
        let fake = FakeCloudRun::new(clock.clone(), Duration::from_secs(20));
        fake.add_service(SVC, "backend-00001", T0 - 24 * HOUR);
        let dir = tempfile::tempdir().unwrap();
        Self::with_config(
            clock,
            fake,
            dir,
            config_with(top_yaml, actions_yaml),
            Arc::new(World::default()),
        )
    }

    /// Another runner over the same fake and world (a second daemon, or a restart
    /// when `dir` is the first one's).
    pub fn with(
        clock: Clock,
        fake: FakeCloudRun,
        dir: tempfile::TempDir,
        actions_yaml: &str,
        world: Arc<World>,
    ) -> Harness {
        Self::with_config(clock, fake, dir, config(actions_yaml), world)
    }

    pub fn with_config(
        clock: Clock,
        fake: FakeCloudRun,
        dir: tempfile::TempDir,
        config: Config,
        world: Arc<World>,
    ) -> Harness {
        let store = Store::open(dir.path()).unwrap();
        let sink = Arc::new(RecordingSink::default());
        let registry = prometheus::Registry::new();
        let follows = Arc::new(FollowsService {
            fake: fake.clone(),
            world: world.clone(),
        });
        let cloud_run: Arc<dyn CloudRunApi> = Arc::new(fake.clone());
        let deps = ActionDeps {
            clock: clock.clone(),
            store: store.clone(),
            cloud_run,
            events: sink.clone(),
            event_receivers: Arc::new(|_| Vec::new()),
            registry: registry.clone(),
            state_dir: dir.path().to_path_buf(),
            generator_url: String::new(),
            alert_state: follows.clone(),
            probes: follows.clone(),
            time_intervals: Arc::new(Unknown),
            serving_history: Arc::new(Unknown),
            evidence: Arc::new(Unknown),
            requests: follows,
        };
        let runner = ActionRunner::new(deps, &config).unwrap();
        Harness {
            clock,
            fake,
            world,
            store,
            sink,
            runner,
            registry,
            dir,
            config,
        }
    }

    /// Deploys `revision` now; when `bad`, it breaks the service.
    pub fn deploy(&self, revision: &str, bad: bool) {
        self.fake.deploy(SVC, revision, true);
        if bad {
            self.world.bad.lock().unwrap().push(revision.to_string());
        }
    }

    /// A restart: drops this runner and starts another over the same fake,
    /// world and state dir, with `actions_yaml`.
    pub fn restart(self, actions_yaml: &str) -> Harness {
        let Harness {
            clock,
            fake,
            dir,
            world,
            ..
        } = self;
        Harness::with(clock, fake, dir, actions_yaml, world)
    }

    pub fn serving(&self) -> String {
        self.fake.service(SVC).unwrap().serving_revision().unwrap()
    }

    pub fn notification(&self, alert: &Alert) -> Notification {
        Notification {
            receiver: "rollback-backend".into(),
            group_key: "{}/{severity=\"critical\"}:{alertname=\"BackendDown\"}".into(),
            group_labels: Labels::from_pairs([("alertname", "BackendDown")]),
            alerts: vec![alert.clone()],
            created_at_ms: self.clock.now_ms(),
        }
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        for f in self.registry.gather() {
            if f.name() != name {
                continue;
            }
            for m in f.get_metric() {
                let have: HashMap<&str, &str> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
                    return match f.get_field_type() {
                        MetricType::COUNTER => m.get_counter().get_value(),
                        MetricType::GAUGE => m.get_gauge().get_value(),
                        _ => m.get_histogram().get_sample_count() as f64,
                    };
                }
            }
        }
        0.0
    }

    pub async fn audit_decisions(&self) -> Vec<(String, String)> {
        self.store
            .audit(None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.decision.to_string(), e.reason))
            .collect()
    }
}

/// A critical alert that became active at `active_at` and fired 5 minutes later.
pub fn alert(active_at: TimestampMs) -> Alert {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), "backend is down".to_string());
    Alert {
        labels: Labels::from_pairs([
            ("alertname", "BackendDown"),
            ("service", "backend"),
            ("severity", "critical"),
        ]),
        annotations,
        active_at_ms: active_at,
        starts_at_ms: active_at + 5 * MIN,
        ends_at_ms: None,
        value: 0.42,
        generator_url: "http://rearguard/graph".into(),
    }
}

/// `actions_yaml` over a service where a bad `backend-00002` was just
/// deployed; returns its alert, active 30 s later, once it fires.
pub async fn bad_deploy(actions_yaml: &str) -> (Harness, Alert) {
    let h = Harness::new(actions_yaml);
    h.deploy("backend-00002", true);
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    (h, a)
}

/// Polls `done` every 10 ms of (paused) tokio time until it holds.
pub async fn wait_until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Advances simulated time to `at`.
pub async fn sleep_until(clock: &Clock, at: TimestampMs) {
    clock.sleep_until_ms(at).await;
}
