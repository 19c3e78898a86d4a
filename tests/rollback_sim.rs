//! Rollbacks against the HTTP fake of Cloud Run (`src/sim/`) through the typed
//! client of `src/gcp/`: the real request path, etags and operations.

use std::sync::Arc;
use std::time::Duration;

use rearguard::action::events::RecordingSink;
use rearguard::action::{
    ActionDeps, ActionRunner, AlertState, CloudRunApi, Outcome, ProbeCheck, Trigger, Unknown,
};
use rearguard::alert::Alert;
use rearguard::clock::Clock;
use rearguard::config::load_str;
use rearguard::dispatch::notification::BoxFuture;
use rearguard::gcp::{CloudRunClient, GcpClient, RetryPolicy, TokenSource, UpstreamMetrics};
use rearguard::labels::Labels;
use rearguard::store::Store;
use rearguard_sim::{DeploySpec, FakeGcp, Fault, FaultKind, RevisionBehaviour, ServiceSpec};
use serde_json::json;

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
    runner_with(
        fake,
        bad,
        clock,
        &format!("cloud_run_traffic:\n      service: {SVC}"),
    )
}

/// `effect`: the action's effect, indented for its place under the action.
fn runner_with(
    fake: &Arc<FakeGcp>,
    bad: &str,
    clock: &Clock,
    effect: &str,
) -> (ActionRunner, Arc<RecordingSink>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "probes:\n  - name: backend-health\n    url: http://127.0.0.1:9/health\nreceivers:\n  - name: rollback-backend\n    rollback_configs:\n      - action: backend\nactions:\n  backend:\n    {effect}\n    verify:\n      probes: [backend-health]\n"
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
    let deps = ActionDeps {
        clock: clock.clone(),
        store: Store::open(dir.path()).unwrap(),
        cloud_run: api,
        events: sink.clone(),
        event_receivers: Arc::new(|_| Vec::new()),
        registry: prometheus::Registry::new(),
        state_dir: dir.path().to_path_buf(),
        generator_url: String::new(),
        alert_state: health.clone(),
        probes: health,
        time_intervals: Arc::new(Unknown),
        serving_history: Arc::new(Unknown),
        evidence: Arc::new(Unknown),
        requests: Arc::new(Unknown),
    };
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

const PATCH: &str = "run.projects.locations.services.patch";
const GET: &str = "run.projects.locations.services.get";

/// A bad deploy "by gcloud" (template.revision pinned), the runner, and the
/// alert's start reached.
async fn ready_to_roll_back() -> (
    Clock,
    Arc<FakeGcp>,
    String,
    String,
    ActionRunner,
    Arc<RecordingSink>,
    tempfile::TempDir,
    Alert,
) {
    let clock = Clock::starting_at(T0);
    let (fake, good, bad) = bad_deploy(&clock).await;
    let (runner, sink, dir) = runner(&fake, &bad, &clock);
    let a = alert(clock.now_ms() + 30_000);
    clock.sleep_until_ms(a.starts_at_ms).await;
    (clock, fake, good, bad, runner, sink, dir, a)
}

fn generation(fake: &FakeGcp) -> i64 {
    fake.service(SVC).unwrap()["generation"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_pinned_service_with_a_lost_patch_answer_is_rolled_back_once_and_verified() {
    let (_clock, fake, good, bad, runner, sink, _dir, a) = ready_to_roll_back().await;
    // Deployed as gcloud does: the bad revision is pinned in the template,
    // and echoing it back would be refused with 409 ALREADY_EXISTS.
    assert_eq!(
        fake.service(SVC).unwrap()["template"]["revision"],
        bad.as_str()
    );
    let before = generation(&fake);
    // Cloud Run makes the change, and the answer is lost on the way back.
    fake.inject(Fault::answer_lost(PATCH, 503).times(1));

    let out = runner.run("backend", Trigger::alert(a)).await;
    let Outcome::Verified { to_revision, .. } = &out else {
        panic!("{out:?}")
    };
    assert_eq!(to_revision.as_deref(), Some(good.as_str()));
    assert_eq!(
        fake.serving(SVC),
        vec![(format!("{SVC}/revisions/{good}"), 100)]
    );
    // Exactly one change: one patch, the one whose answer was lost, never
    // re-sent; one generation more.
    let patches = fake.calls_to(PATCH);
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].status, 503);
    assert_eq!(generation(&fake), before + 1);
    // Only what changes, with the matching mask: never the template.
    let body = patches[0].body.as_ref().unwrap();
    assert!(body.get("template").is_none(), "{body}");
    assert_eq!(patches[0].param("updateMask"), Some("traffic,annotations"));
    let svc = fake.service(SVC).unwrap();
    assert_eq!(
        svc["annotations"]["rearguard.dev/rolled-back-from"],
        bad.as_str()
    );
    assert_eq!(
        svc["annotations"]["rearguard.dev/rolled-back-to"],
        good.as_str()
    );
    assert!(svc["annotations"]["rearguard.dev/rolled-back-by"].is_string());
    assert_eq!(sink.phases(), ["started", "verified"]);
}

#[tokio::test(start_paused = true)]
async fn a_change_by_someone_else_while_our_answer_is_lost_supersedes_ours() {
    let (_clock, fake, _good, _bad, runner, _sink, _dir, a) = ready_to_roll_back().await;
    fake.inject(Fault::answer_lost(PATCH, 502).times(1));
    // A human deploys while rearguard waits to re-read.
    let human = async {
        while fake.calls_to(PATCH).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (rev, _) = fake.deploy(SVC, DeploySpec::default()).unwrap();
        rev
    };
    let (out, human_rev) = tokio::join!(runner.run("backend", Trigger::alert(a)), human);
    let Outcome::Superseded { detail } = &out else {
        panic!("{out:?}")
    };
    assert!(
        detail.contains("while rearguard's change was unanswered"),
        "{detail}"
    );
    // Not re-sent over the human's change.
    assert_eq!(fake.calls_to(PATCH).len(), 1);
    fake.settle().await;
    assert_eq!(fake.serving(SVC), vec![(human_rev, 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_patch_refused_before_it_was_made_is_sent_again_with_a_fresh_etag() {
    let (_clock, fake, good, _bad, runner, _sink, _dir, a) = ready_to_roll_back().await;
    // 503 without acting: the re-read shows nothing changed.
    fake.inject(Fault::status(PATCH, 503).times(1));
    let out = runner.run("backend", Trigger::alert(a)).await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
    let patches = fake.calls_to(PATCH);
    assert_eq!(
        patches.iter().map(|c| c.status).collect::<Vec<_>>(),
        [503, 200]
    );
    assert_eq!(
        fake.serving(SVC),
        vec![(format!("{SVC}/revisions/{good}"), 100)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_change_between_plan_and_patch_is_refused_even_when_the_etag_is_not_enforced() {
    let (_clock, fake, _good, _bad, runner, _sink, _dir, a) = ready_to_roll_back().await;
    fake.set_run_etag_enforced(false);
    // The plan's revisions.list (the second one of the run) is slow; a
    // human deploys meanwhile.
    fake.inject(
        Fault::new(
            "run.projects.locations.services.revisions.list",
            FaultKind::Delay(Duration::from_secs(10)),
        )
        .after(1)
        .times(1),
    );
    let human = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (rev, _) = fake.deploy(SVC, DeploySpec::default()).unwrap();
        fake.settle().await;
        rev
    };
    let (out, human_rev) = tokio::join!(runner.run("backend", Trigger::alert(a)), human);
    let Outcome::Failed { detail } = &out else {
        panic!("{out:?}")
    };
    assert!(
        detail.contains("changed while rearguard planned"),
        "{detail}"
    );
    assert!(detail.contains("generation"), "{detail}");
    assert!(fake.calls_to(PATCH).is_empty());
    assert_eq!(fake.serving(SVC), vec![(human_rev, 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_change_after_ours_is_reported_and_never_overwritten() {
    let (_clock, fake, _good, _bad, runner, _sink, _dir, a) = ready_to_roll_back().await;
    fake.set_run_etag_enforced(false);
    let human = async {
        while fake.calls_to(PATCH).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (rev, _) = fake.deploy(SVC, DeploySpec::default()).unwrap();
        rev
    };
    let (out, human_rev) = tokio::join!(runner.run("backend", Trigger::alert(a)), human);
    let Outcome::Superseded { detail } = &out else {
        panic!("{out:?}")
    };
    assert!(detail.contains("changed by someone else after"), "{detail}");
    assert_eq!(fake.calls_to(PATCH).len(), 1);
    fake.settle().await;
    assert_eq!(fake.serving(SVC), vec![(human_rev, 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_keeps_the_tags_of_other_revisions() {
    let (_clock, fake, good, bad, runner, _sink, _dir, a) = ready_to_roll_back().await;
    // `gcloud run services update-traffic --set-tags candidate=<bad>`.
    let http = reqwest::Client::new();
    let url = format!("{}/v2/{SVC}?updateMask=traffic", fake.base_url());
    let svc = fake.service(SVC).unwrap();
    let tagged = json!([
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100},
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": bad, "percent": 0, "tag": "candidate"}
    ]);
    let r = http
        .patch(&url)
        .json(&json!({"etag": svc["etag"], "traffic": tagged}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    fake.settle().await;

    let out = runner.run("backend", Trigger::alert(a)).await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
    assert_eq!(
        fake.service(SVC).unwrap()["traffic"],
        json!([
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": good, "percent": 100},
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": bad, "percent": 0, "tag": "candidate"}
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn an_env_revert_clears_the_pinned_revision_and_writes_the_annotations() {
    let clock = Clock::starting_at(T0);
    let fake = Arc::new(FakeGcp::start(clock.clone()).await.unwrap());
    fake.set_require_auth(false);
    fake.create_service(ServiceSpec::new(SVC).env("FLAG", "off"))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    // The flag is turned on by a gcloud deploy; the revision is bad.
    fake.behaviour_for_env(SVC, "FLAG", "on", RevisionBehaviour::bad())
        .unwrap();
    let (bad, _) = fake
        .deploy(
            SVC,
            DeploySpec {
                env: vec![("FLAG".into(), "on".into())],
                behaviour: RevisionBehaviour::bad(),
                ..Default::default()
            },
        )
        .unwrap();
    fake.settle().await;
    let bad = bad.rsplit('/').next().unwrap().to_string();
    assert_eq!(
        fake.service(SVC).unwrap()["template"]["revision"],
        bad.as_str()
    );
    let (runner, _sink, _dir) = runner_with(
        &fake,
        &bad,
        &clock,
        &format!("cloud_run_env:\n      service: {SVC}\n      env:\n        FLAG: \"off\""),
    );
    let a = alert(clock.now_ms() + 30_000);
    clock.sleep_until_ms(a.starts_at_ms).await;

    let out = runner.run("backend", Trigger::alert(a)).await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
    let patches = fake.calls_to(PATCH);
    assert_eq!(patches.len(), 1, "{patches:?}");
    let body = patches[0].body.as_ref().unwrap();
    assert!(body["template"].get("revision").is_none(), "{body}");
    assert_eq!(
        patches[0].param("updateMask"),
        Some("template,traffic,annotations")
    );
    let svc = fake.service(SVC).unwrap();
    assert_eq!(svc["template"]["containers"][0]["env"][0]["value"], "off");
    assert_eq!(
        svc["annotations"]["rearguard.dev/rolled-back-from"],
        bad.as_str()
    );
    assert_eq!(svc["annotations"]["rearguard.dev/rolled-back-to"], "LATEST");
    assert!(svc["annotations"]["rearguard.dev/rolled-back-at"].is_string());
}

#[tokio::test(start_paused = true)]
async fn a_403_on_the_rollback_names_the_missing_role() {
    let (_clock, fake, _good, _bad, runner, _sink, _dir, a) = ready_to_roll_back().await;
    fake.set_run_deny_act_as(true);
    let out = runner.run("backend", Trigger::alert(a)).await;
    let Outcome::Failed { detail } = &out else {
        panic!("{out:?}")
    };
    assert!(detail.contains("roles/iam.serviceAccountUser"), "{detail}");
    assert!(
        detail.contains("rearguard-demo@sim-project.iam.gserviceaccount.com"),
        "{detail}"
    );
    assert!(!detail.contains("roles/run.developer"), "{detail}");
    assert_eq!(fake.calls_to(PATCH).len(), 1);
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
    // Before issue 12: 10 calls (5 services.get, 2 revisions.list, 1 patch,
    // 2 operations.get). Sending only what changes and checking the plan add
    // none in the common case.
    assert_eq!(by.values().sum::<usize>(), 10, "{by:?}");
    assert_eq!(by.get(GET), Some(&5));
    assert_eq!(by.get(PATCH), Some(&1));
}
