//! An external critical alert (as Prometheus posts it to `/api/v2/alerts`),
//! routed to a receiver with `rollback_configs`, rolls back a simulated Cloud
//! Run service once, although both replicas of an HA pair post it again and
//! again; the runner learns it fires from the external alerts; a resolved
//! external alert resolves the notification.

mod dispatch_common;
mod http_support;

use std::sync::Arc;
use std::time::Duration;

use dispatch_common::Recorder;
use rearguard::action::events::RecordingSink;
use rearguard::action::{ActionDeps, ActionRunner, CloudRunApi, ProbeCheck, Unknown};
use rearguard::adapters::ExternalThenRules;
use rearguard::clock::{to_datetime, Clock};
use rearguard::config::{load_str, Secret};
use rearguard::dispatch::external::ExternalAlerts;
use rearguard::dispatch::notification::BoxFuture;
use rearguard::dispatch::{Dispatcher, DispatcherDeps, DEFAULT_RESOLVE_TIMEOUT};
use rearguard::gcp::{CloudRunClient, GcpClient, RetryPolicy, TokenSource, UpstreamMetrics};
use rearguard::server::alertmanager::{router, AlertmanagerApiState};
use rearguard::server::auth::AdminToken;
use rearguard::store::Store;
use rearguard_sim::{DeploySpec, FakeGcp, RevisionBehaviour, ServiceSpec};
use serde_json::json;

const SVC: &str = "projects/sim-project/locations/us-central1/services/backend";
const T0: i64 = 1_700_000_000_000;
const SENDER: &str = "sender";

/// The health probe fails while the bad revision serves.
struct SimProbe {
    fake: Arc<FakeGcp>,
    bad: String,
}

impl ProbeCheck for SimProbe {
    fn check<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move {
            let bad = self
                .fake
                .serving(SVC)
                .iter()
                .any(|(r, p)| r.ends_with(&format!("/{}", self.bad)) && *p > 0);
            Some(!bad)
        })
    }
}

fn client(fake: &FakeGcp) -> CloudRunClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = UpstreamMetrics::register(&prometheus::Registry::new()).unwrap();
    let policy = RetryPolicy {
        timeout: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    let gcp = GcpClient::new(TokenSource::anonymous(), policy, metrics).unwrap();
    CloudRunClient::new(gcp, &fake.base_url())
}

#[tokio::test(start_paused = true)]
async fn an_external_critical_alert_rolls_back_once_and_its_resolution_is_notified() {
    let clock = Clock::starting_at(T0);
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
    let (good, bad) = (short(&good), short(&bad));
    tokio::time::sleep(Duration::from_secs(60)).await;

    let yaml = format!(
        r#"
probes:
  - name: backend-health
    url: http://127.0.0.1:9/health
route:
  receiver: team
  group_by: [alertname, service]
  group_wait: 5s
  group_interval: 30s
  routes:
    - matchers: ['severity="critical"']
      receiver: rollback-backend
      continue: true
    - receiver: team
receivers:
  - name: team
    webhook_configs: [{{url: "http://127.0.0.1:9/hook"}}]
  - name: rollback-backend
    rollback_configs:
      - action: backend
actions:
  backend:
    cloud_run_traffic:
      service: {SVC}
    verify:
      probes: [backend-health]
"#
    );
    let config = load_str(std::path::Path::new("/tmp/am-rollback.yaml"), &yaml, |_| {
        None
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let events = Arc::new(RecordingSink::default());
    let api: Arc<dyn CloudRunApi> = Arc::new(client(&fake));
    let notifications = Arc::new(Recorder::default());
    *notifications.clock.lock().unwrap() = Some(clock.clone());
    let (intake, queue) = rearguard::adapters::notification_channel();
    let dispatcher = Dispatcher::start(
        DispatcherDeps {
            clock: clock.clone(),
            store: store.clone(),
            sink: Arc::new(intake),
            registry: prometheus::Registry::new(),
        },
        &config,
    )
    .await
    .unwrap();
    let external = ExternalAlerts::start(
        store.clone(),
        clock.clone(),
        dispatcher.clone(),
        DEFAULT_RESOLVE_TIMEOUT,
    )
    .await
    .unwrap();
    let deps = ActionDeps {
        clock: clock.clone(),
        store: store.clone(),
        cloud_run: api,
        events: events.clone(),
        event_receivers: Arc::new(|_| Vec::new()),
        registry: prometheus::Registry::new(),
        state_dir: dir.path().to_path_buf(),
        generator_url: String::new(),
        alert_state: Arc::new(ExternalThenRules {
            external: external.clone(),
            rules: Arc::new(Unknown),
        }),
        probes: Arc::new(SimProbe {
            fake: fake.clone(),
            bad: bad.clone(),
        }),
        time_intervals: Arc::new(Unknown),
        serving_history: Arc::new(Unknown),
        evidence: Arc::new(Unknown),
        requests: Arc::new(Unknown),
    };
    let runner = ActionRunner::new(deps, &config.config).unwrap();
    let _queue = queue.spawn(Arc::new(rearguard::adapters::FanOut {
        outbox: notifications.clone(),
        actions: runner.clone(),
    }));
    let base = http_support::serve(router(AlertmanagerApiState {
        dispatcher: dispatcher.clone(),
        external,
        admin_token: AdminToken(None),
        alert_token: Some(Secret::new(SENDER)),
        started_at_ms: clock.now_ms(),
    }))
    .await;
    let http = http_support::client();
    let url = format!("{base}/api/v2/alerts");
    let post = move |body: serde_json::Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(SENDER)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
    };
    let alert = |starts: i64, ends: i64| {
        json!([{
            "labels": {"alertname": "BackendErrors", "severity": "critical", "service": "backend"},
            "annotations": {"summary": "5xx above 5%"},
            "startsAt": to_datetime(starts).to_rfc3339(),
            "endsAt": to_datetime(ends).to_rfc3339(),
            "generatorURL": "http://prometheus-a:9090/graph?g0.expr=errors"
        }])
    };

    // Both replicas of an HA pair evaluate the rule (errors while the bad
    // revision serves) every 15s and post the alert, endsAt 4m ahead as
    // Prometheus does; once it stops firing they post endsAt = now.
    let started = clock.now_ms() - 30_000;
    let senders = {
        let (post, clock, fake, bad) = (post.clone(), clock.clone(), fake.clone(), bad.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                let now = clock.now_ms();
                let firing = fake
                    .serving(SVC)
                    .iter()
                    .any(|(r, p)| r.ends_with(&format!("/{bad}")) && *p > 0);
                let (e1, e2) = if firing {
                    (now + 240_000, now + 239_000)
                } else {
                    (now, now)
                };
                post(alert(started, e1)).await;
                post(alert(started + 1_000, e2)).await;
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    dispatcher.sync().await;
    runner.idle().await;
    senders.await.unwrap();
    dispatcher.sync().await;
    let patches = fake.calls_to("run.projects.locations.services.patch");
    assert_eq!(patches.len(), 1, "exactly one rollback: {patches:#?}");
    assert_eq!(
        fake.serving(SVC),
        vec![(format!("{SVC}/revisions/{good}"), 100)]
    );
    assert_eq!(events.phases(), ["started", "verified"]);
    let audit = store.audit(None, 10).await.unwrap();
    let start = audit.iter().find(|e| e.decision == "started").unwrap();
    assert!(
        start.reason.contains(&bad) || start.evidence.to_string().contains(&bad),
        "{start:?}"
    );

    // The rule stopped firing: the team heard it fire once and resolve once.
    let got = notifications.got.lock().unwrap();
    let to_team: Vec<_> = got.iter().filter(|(_, n)| n.receiver == "team").collect();
    assert_eq!(to_team.len(), 2, "{to_team:#?}");
    assert_eq!(to_team[0].1.status(), rearguard::alert::AlertStatus::Firing);
    let to_rollback = got
        .iter()
        .filter(|(_, n)| {
            n.receiver == "rollback-backend" && n.status() == rearguard::alert::AlertStatus::Firing
        })
        .count();
    assert_eq!(
        to_rollback, 1,
        "one firing notification to the rollback receiver"
    );
    assert_eq!(
        to_team[1].1.status(),
        rearguard::alert::AlertStatus::Resolved
    );
    assert_eq!(
        to_team[1].1.alerts[0].starts_at_ms, started,
        "earliest startsAt of the pair"
    );
    assert_eq!(
        fake.calls_to("run.projects.locations.services.patch").len(),
        1
    );
}
