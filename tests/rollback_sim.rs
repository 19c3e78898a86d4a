//! Rollbacks against the HTTP fake of Cloud Run (`src/sim/`) through the typed
//! client of `src/gcp/`: the real request path, etags and operations.

use std::sync::Arc;
use std::time::Duration;

use rearguard::action::events::RecordingSink;
use rearguard::action::{
    ActionDeps, ActionRunner, AlertState, CloudRunApi, Outcome, ProbeCheck, Trigger,
};
use rearguard::alert::Alert;
use rearguard::clock::Clock;
use rearguard::config::load_str;
use rearguard::dispatch::notification::BoxFuture;
use rearguard::gcp::{CloudRunClient, GcpClient, RetryPolicy, TokenSource, UpstreamMetrics};
use rearguard::labels::Labels;
use rearguard::sim::{DeploySpec, FakeGcp, RevisionBehaviour, ServiceSpec};
use rearguard::store::Store;

const SVC: &str = "projects/sim-project/locations/us-central1/services/backend";
const T0: i64 = 1_700_000_000_000;

/// The alert fires and the probe fails while the bad revision serves.
struct SimHealth {
    fake: Arc<FakeGcp>,
    bad: String,
}

impl SimHealth {
    fn bad_serving(&self) -> bool {
        self.fake
            .serving(SVC)
            .iter()
            .any(|(r, p)| r.ends_with(&format!("/{}", self.bad)) && *p > 0)
    }
}

impl AlertState for SimHealth {
    fn is_firing(&self, _: u64) -> Option<bool> {
        Some(self.bad_serving())
    }
}

impl ProbeCheck for SimHealth {
    fn check<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move { Some(!self.bad_serving()) })
    }
}

fn client(fake: &FakeGcp) -> CloudRunClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = prometheus::Registry::new();
    let metrics = UpstreamMetrics::register(&registry).unwrap();
    let policy = RetryPolicy {
        timeout: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    let gcp = GcpClient::new(TokenSource::anonymous(), policy, metrics).unwrap();
    CloudRunClient::new(gcp, &fake.base_url())
}

fn runner(
    fake: &Arc<FakeGcp>,
    bad: &str,
    clock: &Clock,
) -> (ActionRunner, Arc<RecordingSink>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "probes:\n  - name: backend-health\n    url: http://127.0.0.1:9/health\nreceivers:\n  - name: rollback-backend\n    rollback_configs:\n      - action: backend\nactions:\n  backend:\n    cloud_run_traffic:\n      service: {SVC}\n    verify:\n      probes: [backend-health]\n"
    );
    let config = load_str(std::path::Path::new("/tmp/r.yaml"), &text, |_| None)
        .unwrap()
        .config;
    let sink = Arc::new(RecordingSink::default());
    let health = Arc::new(SimHealth {
        fake: fake.clone(),
        bad: bad.to_string(),
    });
    let api: Arc<dyn CloudRunApi> = Arc::new(client(fake));
    let mut deps = ActionDeps::new(
        clock.clone(),
        Store::open(dir.path()).unwrap(),
        api,
        sink.clone(),
        prometheus::Registry::new(),
        dir.path().to_path_buf(),
    );
    deps.alert_state = health.clone();
    deps.probes = health;
    (ActionRunner::new(deps, &config).unwrap(), sink, dir)
}

fn alert(active_at: i64) -> Alert {
    Alert {
        labels: Labels::from_pairs([
            ("alertname", "BackendDown"),
            ("severity", "critical"),
            ("service", "backend"),
        ]),
        annotations: Default::default(),
        active_at_ms: active_at,
        starts_at_ms: active_at + 300_000,
        ends_at_ms: None,
        value: 1.0,
        generator_url: String::new(),
    }
}

async fn bad_deploy(clock: &Clock) -> (Arc<FakeGcp>, String, String) {
    let fake = Arc::new(FakeGcp::start(clock.clone()).await.unwrap());
    fake.set_require_auth(false);
    let good = fake.create_service(ServiceSpec::new(SVC)).unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (bad, _) = fake
        .deploy(
            SVC,
            DeploySpec {
                behaviour: RevisionBehaviour::bad(),
                ..Default::default()
            },
        )
        .unwrap();
    fake.settle().await;
    let short = |s: &str| s.rsplit('/').next().unwrap().to_string();
    (fake, short(&good), short(&bad))
}

#[tokio::test(start_paused = true)]
async fn rolls_back_over_http_exactly_once_and_verifies() {
    let clock = Clock::starting_at(T0);
    let (fake, good, bad) = bad_deploy(&clock).await;
    assert!(fake.serving(SVC)[0].0.ends_with(&bad));
    let (runner, sink, _dir) = runner(&fake, &bad, &clock);
    let a = alert(clock.now_ms() + 30_000);
    clock.sleep_until_ms(a.starts_at_ms).await;

    let out = runner.run("backend", Trigger::alert(a)).await;
    let Outcome::Verified {
        from_revision,
        to_revision,
        ..
    } = &out
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (from_revision.as_deref(), to_revision.as_deref()),
        (Some(bad.as_str()), Some(good.as_str()))
    );
    assert_eq!(
        fake.serving(SVC),
        vec![(format!("{SVC}/revisions/{good}"), 100)]
    );
    let patches = fake.calls_to("run.projects.locations.services.patch");
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].status, 200);
    assert_eq!(sink.phases(), ["started", "verified"]);
}

#[tokio::test(start_paused = true)]
async fn two_rearguards_over_http_roll_back_once() {
    let clock = Clock::starting_at(T0);
    let (fake, good, bad) = bad_deploy(&clock).await;
    let (first, _s1, _d1) = runner(&fake, &bad, &clock);
    let (second, _s2, _d2) = runner(&fake, &bad, &clock);
    let a = alert(clock.now_ms() + 30_000);
    clock.sleep_until_ms(a.starts_at_ms).await;

    let (x, y) = tokio::join!(
        first.run("backend", Trigger::alert(a.clone())),
        second.run("backend", Trigger::alert(a.clone()))
    );
    assert_eq!(
        fake.serving(SVC),
        vec![(format!("{SVC}/revisions/{good}"), 100)]
    );
    let accepted = fake
        .calls_to("run.projects.locations.services.patch")
        .iter()
        .filter(|c| c.status == 200)
        .count();
    assert_eq!(accepted, 1);
    let verified = [&x, &y]
        .iter()
        .filter(|o| matches!(o, Outcome::Verified { .. }))
        .count();
    assert_eq!(verified, 1, "{x:?} {y:?}");
    let other = if matches!(x, Outcome::Verified { .. }) {
        &y
    } else {
        &x
    };
    assert!(
        matches!(other, Outcome::Superseded { .. }) || other.skip_reason() == Some("other_actor"),
        "{other:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn count_api_calls_of_a_rollback() {
    let clock = Clock::starting_at(T0);
    let (fake, _good, bad) = bad_deploy(&clock).await;
    let (runner, _sink, _dir) = runner(&fake, &bad, &clock);
    let a = alert(clock.now_ms() + 30_000);
    clock.sleep_until_ms(a.starts_at_ms).await;
    fake.clear_calls();
    let out = runner.run("backend", Trigger::alert(a)).await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for c in fake.calls() {
        *by.entry(c.method).or_default() += 1;
    }
    eprintln!("API CALLS {by:?} total {}", by.values().sum::<usize>());
}
