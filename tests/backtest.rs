//! `rearguard backtest` over a simulated history, on tokio's paused clock:
//! five hours of a Cloud Run service told through the simulator's history
//! mode (request counts, deploys and traffic changes with their audit
//! entries), then replayed; the JSON lines must say exactly what a careful
//! engineer expects, and nothing may have been changed.

use std::path::Path;
use std::process::ExitCode;

use rearguard::cli::backtest::{run_with, BacktestArgs, Format};
use rearguard::clock::Clock;
use rearguard::config::gcp::{GcpConfig, GcpEndpoints};
use rearguard::gcp::{GcpContext, RetryPolicy, TokenSource, UpstreamMetrics};
use rearguard::sim::history::HistoryWriter;
use rearguard::sim::{methods, DeploySpec, FakeGcp, ServiceSpec};
use serde_json::Value;

const T0: i64 = 1_790_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

const RULES: &str = r#"groups:
  - name: api
    interval: 1m
    rules:
      - alert: ApiErrorRate
        expr: |
          sum by (service_name, revision_name) (rate(run_googleapis_com:request_count{response_code_class="5xx"}[5m]))
            / sum by (service_name, revision_name) (rate(run_googleapis_com:request_count[5m])) > 0.05
        for: 2m
        labels: { severity: critical }
      - alert: ApiHealthProbeFailing
        expr: probe_success{probe="api-health"} == 0
        for: 1m
        labels: { severity: critical }
"#;

fn config(dir: &Path, url: &str, project: &str) -> String {
    format!(
        r#"state_dir: {state}
evaluation_interval: 1m
gcp:
  project: {project}
  credentials: adc
  endpoints: {{ run: "{url}", monitoring: "{url}", logging: "{url}" }}
cloud_monitoring:
  - name: requests
    metric: run.googleapis.com/request_count
    filter: resource.labels.service_name = "api"
    interval: 60s
rule_files: [rules.yaml]
route:
  receiver: team
  group_by: [alertname, service_name]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      receiver: rollback-api
receivers:
  - name: team
  - name: rollback-api
    rollback_configs:
      - action: api
actions:
  api:
    cloud_run_traffic:
      service: projects/{project}/locations/europe-west1/services/api
    cooldown: 30m
    bake_window: 2h
    min_requests: 100
"#,
        state = dir.join("state").display(),
    )
}

struct World {
    fake: FakeGcp,
    clock: Clock,
    dir: tempfile::TempDir,
    ctx: GcpContext,
}

async fn world() -> World {
    let clock = Clock::starting_at(T0);
    let fake = FakeGcp::start(clock.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    std::fs::write(
        dir.path().join("rearguard.yaml"),
        config(dir.path(), &fake.base_url(), &fake.project()),
    )
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
    let ctx = GcpContext::new(&cfg, tokens, RetryPolicy::default(), metrics).unwrap();
    World {
        fake,
        clock,
        dir,
        ctx,
    }
}

fn short(full: &str) -> String {
    full.rsplit('/').next().unwrap_or(full).to_string()
}

/// Five hours: a bad deploy at +1h rolled back by a person at +1h30, an IAM
/// change, a deploy of api-admin (a service whose name starts like ours), a
/// good deploy at +2h10, and an outage at +4h30 on that revision, which has
/// served longer than the bake window by then. Returns the revisions.
async fn tell_history(w: &World) -> (String, String, String) {
    let p = w.fake.project();
    let api = format!("projects/{p}/locations/europe-west1/services/api");
    let admin = format!("projects/{p}/locations/europe-west1/services/api-admin");
    let h = HistoryWriter::new(&w.fake);
    let r1 = short(&w.fake.create_service(ServiceSpec::new(&api)).unwrap());
    w.fake.create_service(ServiceSpec::new(&admin)).unwrap();
    let at = |t: i64| w.clock.sleep_until_ms(T0 + t);

    at(HOUR).await;
    let r2 = short(
        &h.deploy(&api, DeploySpec::default(), "dev@example.com")
            .await
            .unwrap(),
    );
    at(HOUR + 30 * MIN).await;
    h.route_all_to(&api, &r1, "oncall@example.com")
        .await
        .unwrap();
    at(HOUR + 45 * MIN).await;
    h.set_iam_policy(&api, "admin@example.com", "allUsers")
        .unwrap();
    at(2 * HOUR).await;
    h.deploy(&admin, DeploySpec::default(), "dev@example.com")
        .await
        .unwrap();
    at(2 * HOUR + 10 * MIN).await;
    let r3 = short(
        &h.deploy(&api, DeploySpec::default(), "dev@example.com")
            .await
            .unwrap(),
    );
    at(5 * HOUR + 5 * MIN).await;

    // What each revision served, a minute at a time (100 requests a minute).
    h.requests(&api, &r1, T0, T0 + HOUR, 100, 0).unwrap();
    h.requests(&api, &r2, T0 + HOUR, T0 + HOUR + 30 * MIN, 100, 20)
        .unwrap();
    h.requests(
        &api,
        &r1,
        T0 + HOUR + 30 * MIN,
        T0 + 2 * HOUR + 10 * MIN,
        100,
        0,
    )
    .unwrap();
    h.requests(
        &api,
        &r3,
        T0 + 2 * HOUR + 10 * MIN,
        T0 + 4 * HOUR + 30 * MIN,
        100,
        0,
    )
    .unwrap();
    h.requests(
        &api,
        &r3,
        T0 + 4 * HOUR + 30 * MIN,
        T0 + 4 * HOUR + 50 * MIN,
        100,
        30,
    )
    .unwrap();
    h.requests(&api, &r3, T0 + 4 * HOUR + 50 * MIN, T0 + 5 * HOUR, 100, 0)
        .unwrap();
    (r1, r2, r3)
}

async fn backtest(w: &World, from: &str, to: &str, format: Format) -> (ExitCode, String, String) {
    let loaded = rearguard::daemon::load_config(&w.dir.path().join("rearguard.yaml"))
        .await
        .unwrap();
    let args = BacktestArgs {
        from: from.into(),
        to: to.into(),
        step: None,
        format,
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run_with(&loaded, &w.ctx, &args, w.clock.now_ms(), &mut out, &mut err)
        .await
        .unwrap();
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn rfc(ms: i64) -> String {
    rearguard::gcp::monitoring::rfc3339(rearguard::clock::to_datetime(ms))
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test(start_paused = true)]
async fn a_simulated_history_gives_the_decisions_a_careful_engineer_expects() {
    let w = world().await;
    let (r1, r2, r3) = tell_history(&w).await;
    w.fake.clear_calls();
    let (code, out, err) =
        backtest(&w, &rfc(T0 + 30 * MIN), &rfc(T0 + 5 * HOUR), Format::Json).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();

    // The probe rule has no history in Google: listed once, with why.
    let not: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "not_replayable")
        .collect();
    assert_eq!(not.len(), 1, "{out}");
    assert_eq!(not[0]["rule"], "ApiHealthProbeFailing");
    assert!(
        not[0]["reason"].as_str().unwrap().contains("probe_success"),
        "{}",
        not[0]
    );

    // Line by line: the two action decisions.
    let actions: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "action").collect();
    assert_eq!(actions.len(), 2, "{out}");
    let bad = actions[0];
    assert_eq!(bad["action"], "api");
    assert_eq!(bad["alertname"], "ApiErrorRate");
    assert_eq!(bad["decision"], "would_roll_back", "{bad}");
    assert_eq!(bad["reason"], "cloud_run_traffic");
    assert_eq!(bad["from_revision"], r2.as_str());
    assert_eq!(bad["to_revision"], r1.as_str());
    // 5xx from the first minute of r2; a 2m `for`, 1m ticks, 30s group_wait.
    let t = ms(bad);
    assert!(
        (T0 + HOUR + 3 * MIN..=T0 + HOUR + 6 * MIN).contains(&t),
        "decided at {}",
        bad["time"]
    );
    // The outage on r3, which had served 2h20m: not a deploy regression.
    let old = actions[1];
    assert_eq!(old["action"], "api");
    assert_eq!(old["alertname"], "ApiErrorRate");
    assert_eq!(old["decision"], "skipped", "{old}");
    assert_eq!(old["reason"], "not_deploy_regression");
    assert_eq!(old["from_revision"], r3.as_str());
    assert_eq!(old["to_revision"], Value::Null);
    assert!(
        old["detail"].as_str().unwrap().contains("bake window 2h"),
        "{old}"
    );
    let t = ms(old);
    assert!(
        (T0 + 4 * HOUR + 33 * MIN..=T0 + 4 * HOUR + 36 * MIN).contains(&t),
        "decided at {}",
        old["time"]
    );

    // Alert transitions: r2's alert pending, firing, resolved after the
    // person's rollback; the same for r3's outage; none for r1.
    let alerts: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["kind"] == "alert")
        .map(|l| {
            (
                l["labels"]["revision_name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                l["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        (&r2, "pending"),
        (&r2, "firing"),
        (&r2, "inactive"),
        (&r3, "pending"),
        (&r3, "firing"),
        (&r3, "inactive"),
    ]
    .iter()
    .map(|(r, s)| (r.to_string(), s.to_string()))
    .collect();
    assert_eq!(alerts, expected, "{out}");
    let resolved = lines
        .iter()
        .find(|l| l["kind"] == "alert" && l["state"] == "inactive")
        .unwrap();
    assert!(ms(resolved) > T0 + HOUR + 30 * MIN, "{resolved}");
    assert_eq!(lines.iter().filter(|l| l["kind"] == "alert").count(), 6);

    // The summary: the three changes of api (not the IAM change, not
    // api-admin's deploy), each with what rearguard would have done.
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["decisions"]["would_roll_back"], 1);
    assert_eq!(summary["decisions"]["skipped"], 1);
    let deploys = summary["deploys"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = deploys
        .iter()
        .map(|d| {
            (
                d["revision"].as_str().unwrap(),
                d["method"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (r2.as_str(), "google.cloud.run.v2.Services.UpdateService"),
            (r1.as_str(), "google.cloud.run.v1.Services.ReplaceService"),
            (r3.as_str(), "google.cloud.run.v2.Services.UpdateService"),
        ],
        "{summary}"
    );
    assert!(deploys[0]["would"]
        .as_str()
        .unwrap()
        .starts_with(&format!("would roll back to {r1}")));
    assert_eq!(deploys[1]["actor"], "oncall@example.com");
    assert!(deploys[2]["would"]
        .as_str()
        .unwrap()
        .contains("not_deploy_regression"));

    // Nothing was changed: only reads went to Google.
    let calls = w.fake.calls();
    assert!(!calls.is_empty());
    for c in &calls {
        assert!(
            [
                methods::TIME_SERIES_LIST,
                methods::ENTRIES_LIST,
                methods::REVISIONS_LIST,
                methods::METADATA_TOKEN,
                methods::METADATA_EMAIL,
                methods::METADATA_UNIVERSE,
            ]
            .contains(&c.method.as_str()),
            "unexpected call {} {}",
            c.method,
            c.path
        );
    }
    assert!(!w.dir.path().join("state").join("state.db").exists());
}

#[tokio::test(start_paused = true)]
async fn the_text_report_ends_with_a_summary_of_decisions_and_deploys() {
    let w = world().await;
    let (_, r2, _) = tell_history(&w).await;
    let (code, out, _) = backtest(&w, &rfc(T0 + 30 * MIN), &rfc(T0 + 5 * HOUR), Format::Text).await;
    assert_eq!(code, ExitCode::SUCCESS);
    let summary = out.split("\nsummary\n").nth(1).expect(&out);
    assert!(
        summary.contains("decisions: skipped 1, would_roll_back 1"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "api {r2} (UpdateService by dev@example.com): would roll back"
        )),
        "{summary}"
    );
    assert!(out.contains("not replayable:"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn bad_flags_exit_2_naming_the_flag_and_google_errors_exit_1_without_a_report() {
    let w = world().await;
    w.clock.sleep_until_ms(T0 + HOUR).await;
    let (code, out, err) = backtest(&w, "now-1h", "now-2h", Format::Json).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(out.is_empty());
    assert!(
        err.contains("--from") && err.contains("not before --to"),
        "{err}"
    );
    let (code, _, err) = backtest(&w, "last tuesday", "now", Format::Json).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(
        err.contains("--from: \"last tuesday\" is not a time"),
        "{err}"
    );
    let (code, _, err) = backtest(&w, "now-50d", "now", Format::Json).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("--from") && err.contains("six weeks"), "{err}");

    // Google fails midway (after the first day of metrics): exit 1, no report.
    w.clock.sleep_until_ms(T0 + 3 * 24 * HOUR).await;
    w.fake
        .inject(rearguard::sim::Fault::status(methods::TIME_SERIES_LIST, 403).after(1));
    let (code, out, err) = backtest(&w, "now-2d", "now", Format::Json).await;
    assert_eq!(code, ExitCode::FAILURE, "{err}");
    assert!(out.is_empty(), "a partial report: {out}");
    assert!(
        err.contains("requests") && err.contains("no report"),
        "{err}"
    );
}
