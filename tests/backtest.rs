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
use rearguard_sim::history::HistoryWriter;
use rearguard_sim::{methods, DeploySpec, FakeGcp, ServiceSpec};
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

fn config(dir: &Path, url: &str, project: &str, credentials: &str, dry_run: bool) -> String {
    format!(
        r#"state_dir: {state}
evaluation_interval: 1m
gcp:
  project: {project}
  credentials: {credentials}
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
    dry_run: {dry_run}
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
    world_with(false).await
}

/// The fake, the config (its action `dry_run` as asked; credentials an
/// authorized_user key whose token endpoint is the fake's, as the demo's),
/// and a context for the backtest.
async fn world_with(dry_run: bool) -> World {
    let clock = Clock::starting_at(T0);
    let fake = FakeGcp::start(clock.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let key = serde_json::json!({
        "type": "authorized_user",
        "client_id": "rearguard-test",
        "client_secret": "not-a-secret",
        "refresh_token": "test-refresh-token",
        "token_uri": fake.token_uri(),
    });
    let key_path = dir.path().join("key.json");
    std::fs::write(&key_path, key.to_string()).unwrap();
    std::fs::write(
        dir.path().join("rearguard.yaml"),
        config(
            dir.path(),
            &fake.base_url(),
            &fake.project(),
            &key_path.display().to_string(),
            dry_run,
        ),
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
    tell_history_paced(w, false).await
}

/// Which revision serves a minute, and its 5xx per 100 requests.
fn traffic_at(t: i64, r1: &str, r2: &str, r3: &str) -> (String, i64) {
    let o = t - T0;
    let (rev, errors) = if o <= HOUR {
        (r1, 0)
    } else if o <= HOUR + 30 * MIN {
        (r2, 20)
    } else if o <= 2 * HOUR + 10 * MIN {
        (r1, 0)
    } else if o > 4 * HOUR + 30 * MIN && o <= 4 * HOUR + 50 * MIN {
        (r3, 30)
    } else {
        (r3, 0)
    };
    (rev.to_string(), errors)
}

/// The history; `live`: each minute's request counts are written as the
/// minute ends (a running daemon reads them as they come), else all at the
/// end.
async fn tell_history_paced(w: &World, live: bool) -> (String, String, String) {
    let p = w.fake.project();
    let api = format!("projects/{p}/locations/europe-west1/services/api");
    let admin = format!("projects/{p}/locations/europe-west1/services/api-admin");
    let h = HistoryWriter::new(&w.fake);
    let r1 = short(&w.fake.create_service(ServiceSpec::new(&api)).unwrap());
    w.fake.create_service(ServiceSpec::new(&admin)).unwrap();
    // Revision names are known once deployed; the minutes before are r1's.
    let names: std::sync::Mutex<(String, String)> = Default::default();
    let written = std::sync::Mutex::new(T0);
    let write_until = |t: i64| {
        let (r2, r3) = names.lock().unwrap().clone();
        let mut from = written.lock().unwrap();
        let mut m = *from + MIN;
        while m <= t {
            let (rev, errors) = traffic_at(m, &r1, &r2, &r3);
            h.requests(&api, &rev, m - MIN, m, 100, errors).unwrap();
            m += MIN;
        }
        *from = m - MIN;
    };
    let at = |t: i64| {
        let clock = w.clock.clone();
        let write_until = &write_until;
        async move {
            if live {
                let mut m = clock.now_ms() - clock.now_ms().rem_euclid(MIN) + MIN;
                while m <= T0 + t {
                    clock.sleep_until_ms(m).await;
                    write_until(m);
                    m += MIN;
                }
            }
            clock.sleep_until_ms(T0 + t).await;
        }
    };

    at(HOUR).await;
    let r2 = short(
        &h.deploy(&api, DeploySpec::default(), "dev@example.com")
            .await
            .unwrap(),
    );
    names.lock().unwrap().0 = r2.clone();
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
    names.lock().unwrap().1 = r3.clone();
    at(5 * HOUR + 5 * MIN).await;
    if !live {
        write_until(T0 + 5 * HOUR + 5 * MIN);
    }
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
        (&r2, "resolved"),
        (&r3, "pending"),
        (&r3, "firing"),
        (&r3, "resolved"),
    ]
    .iter()
    .map(|(r, s)| (r.to_string(), s.to_string()))
    .collect();
    assert_eq!(alerts, expected, "{out}");
    let resolved = lines
        .iter()
        .find(|l| l["kind"] == "alert" && l["state"] == "resolved")
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
        .inject(rearguard_sim::Fault::status(methods::TIME_SERIES_LIST, 403).after(1));
    let (code, out, err) = backtest(&w, "now-2d", "now", Format::Json).await;
    assert_eq!(code, ExitCode::FAILURE, "{err}");
    assert!(out.is_empty(), "a partial report: {out}");
    assert!(
        err.contains("requests") && err.contains("no report"),
        "{err}"
    );
}

/// The same history lived by the daemon (its action a dry run, so it changes
/// nothing) and replayed afterwards: the same decisions, each within one
/// evaluation interval of the daemon's.
#[tokio::test(start_paused = true)]
async fn the_replay_decides_as_the_live_daemon_did() {
    let w = world_with(true).await;
    let loaded = rearguard::daemon::load_config(&w.dir.path().join("rearguard.yaml"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = rearguard::daemon::Daemon::start(loaded, w.clock.clone(), Some(listener))
        .await
        .unwrap();
    let (_, r2, r3) = tell_history_paced(&w, true).await;
    let live: Vec<(String, String, i64)> = daemon
        .store()
        .audit(Some("api".into()), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.decision == "dry_run" || e.decision == "skipped")
        .map(|e| {
            let reason = if e.decision == "skipped" {
                e.reason.clone()
            } else {
                String::new()
            };
            (e.decision.as_str().to_string(), reason, e.at_ms)
        })
        .collect();
    daemon.shutdown().await;
    let mut live = live;
    live.sort_by_key(|e| e.2);

    let (code, out, err) =
        backtest(&w, &rfc(T0 + 30 * MIN), &rfc(T0 + 5 * HOUR), Format::Json).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let replayed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["kind"] == "action")
        .collect();
    assert_eq!(
        replayed.len(),
        live.len(),
        "live: {live:?}\nreplayed:\n{out}"
    );
    assert_eq!(live.len(), 2, "{live:?}");
    for (l, r) in live.iter().zip(&replayed) {
        let kind = r["decision"].as_str().unwrap();
        assert_eq!(l.0, kind, "live {l:?} replayed {r}");
        if kind == "skipped" {
            assert_eq!(
                l.1,
                r["reason"].as_str().unwrap(),
                "live {l:?} replayed {r}"
            );
        }
        let dt = (ms(r) - l.2).abs();
        assert!(
            dt <= MIN,
            "live at {} replayed at {}: {dt} ms apart",
            rfc(l.2),
            r["time"]
        );
    }
    assert_eq!(replayed[0]["from_revision"], r2.as_str());
    assert_eq!(replayed[1]["from_revision"], r3.as_str());
}
