//! The query, rules and alerts API over a real tsdb, engine and rule manager.

mod dispatch_common;
mod http_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatch_common::discarding_dispatcher;
use http_support::Api;
use rearguard::alert::{Alert, AlertSink};
use rearguard::clock::Clock;
use rearguard::dispatch::SilenceInput;
use rearguard::labels::Labels;
use rearguard::promql::Engine;
use rearguard::rules::{
    parse_rule_file, LocalQuerier, ManagerOptions, ParseOptions, RuleFile, RuleManager,
    RulesConfig, RulesDeps,
};
use rearguard::server::rules_api::{router, RulesApiState};
use rearguard::store::silences::SilenceMatcher;
use rearguard::store::Store;
use rearguard::tsdb::Tsdb;

#[derive(Default)]
struct Sent(Mutex<Vec<Alert>>);
impl AlertSink for Sent {
    fn send_alerts(&self, alerts: Vec<Alert>) {
        self.0.lock().unwrap().extend(alerts);
    }
}

const RULES: &str = r#"
groups:
- name: api
  interval: 1s
  rules:
  - record: job:up:sum
    expr: sum by (job) (up)
  - alert: Down
    expr: job:up:sum == 0
    labels: {severity: critical}
    annotations: {summary: "{{ $labels.job }} is down ({{ $value }})"}
"#;

const DISPATCH: &str = r#"
route:
  receiver: team
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - receiver: team
receivers:
  - name: team
  - name: pager
"#;

/// A rule manager evaluating over `db` (and writing to it), sending alerts to `alerts`.
fn manager(clock: &Clock, db: &Arc<Tsdb>, engine: Engine, alerts: Arc<Sent>) -> RuleManager {
    RuleManager::new(
        RulesDeps {
            clock: clock.clone(),
            local: Arc::new(LocalQuerier::new(db.clone(), engine)),
            sink: db.clone(),
            store: Store::open_in_memory().unwrap(),
            registry: prometheus::Registry::new(),
            alerts,
        },
        ManagerOptions::default(),
    )
    .unwrap()
}

fn rule_file(path: &str, text: &str) -> RuleFile {
    parse_rule_file(std::path::Path::new(path), text, ParseOptions::default()).unwrap()
}

/// Waits (real time, up to 4 s) for the first group evaluation to send alerts.
async fn wait_for_alerts(sent: &Sent) -> Vec<Alert> {
    for _ in 0..40 {
        if !sent.0.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent.0.lock().unwrap().clone()
}

#[tokio::test]
async fn query_rules_and_alerts_endpoints() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Clock::system();
    let now = clock.now_ms();
    let db = Arc::new(Tsdb::new(6 * 3600 * 1000));
    for (i, v) in [1.0, 0.0].iter().enumerate() {
        db.append_sample(
            &Labels::from_pairs([("__name__", "up"), ("job", "web")]),
            now - 20_000 + i as i64 * 10_000,
            *v,
        )
        .unwrap();
    }
    let engine = Engine::default();
    let sent = Arc::new(Sent::default());
    let manager = Arc::new(manager(&clock, &db, engine.clone(), sent.clone()));
    let file = rule_file("rules/api.yaml", RULES);
    manager
        .apply(RulesConfig {
            files: vec![file],
            evaluation_interval: Duration::from_secs(15),
            external_url: "http://rg.example".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let dispatch = discarding_dispatcher(DISPATCH, &clock).await;
    let base = http_support::serve(router(RulesApiState {
        dispatcher: Some(dispatch.clone()),
        manager: manager.clone(),
        db: db.clone(),
        engine,
        clock: clock.clone(),
        query_slots: Arc::new(tokio::sync::Semaphore::new(20)),
    }))
    .await;
    // Wait for one group evaluation (1s interval).
    let alerts = wait_for_alerts(&sent).await;
    assert_eq!(alerts.len(), 1, "the Down alert fired and was sent");
    assert_eq!(alerts[0].annotations["summary"], "web is down (0)");
    assert!(alerts[0]
        .generator_url
        .starts_with("http://rg.example/graph?g0.expr="));

    let api = Api::new(&base, "");
    let (st, body) = api
        .get_status_json(&format!(
            "/api/v1/query?query=up&time={}",
            now as f64 / 1000.0
        ))
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "vector");
    assert_eq!(body["data"]["result"][0]["metric"]["job"], "web");
    assert_eq!(body["data"]["result"][0]["value"][1], "0");

    let (st, body) = api.get_status_json("/api/v1/query?query=sum(").await;
    assert_eq!(st, 400);
    assert_eq!(body["errorType"], "bad_data");

    let (st, body) = api
        .get_status_json(&format!(
            "/api/v1/query_range?query=up&start={}&end={}&step=10s",
            (now - 20_000) as f64 / 1000.0,
            now as f64 / 1000.0
        ))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "matrix");
    assert_eq!(
        body["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let (_, body) = api.get_status_json("/api/v1/rules").await;
    let g = &body["data"]["groups"][0];
    assert_eq!(g["name"], "api");
    assert_eq!(g["file"], "rules/api.yaml");
    assert_eq!(g["rules"][0]["type"], "recording");
    assert_eq!(g["rules"][0]["health"], "ok");
    assert_eq!(g["rules"][1]["type"], "alerting");
    assert_eq!(g["rules"][1]["state"], "firing");
    assert_eq!(g["rules"][1]["alerts"][0]["labels"]["severity"], "critical");
    let (_, body) = api.get_status_json("/api/v1/rules?type=record").await;
    assert_eq!(
        body["data"]["groups"][0]["rules"].as_array().unwrap().len(),
        1
    );

    let (_, body) = api.get_status_json("/api/v1/alerts").await;
    let a = &body["data"]["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "Down");
    assert_eq!(a["state"], "firing");
    assert_eq!(a["value"], "0e+00");
    // The dispatch side: who hears it, and nothing suppresses it yet.
    let fingerprint = a["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fingerprint.len(), 16, "{a}");
    assert_eq!(a["receivers"], serde_json::json!(["pager", "team"]), "{a}");
    assert_eq!(a["silencedBy"], serde_json::json!([]), "{a}");
    assert_eq!(a["inhibitedBy"], serde_json::json!([]), "{a}");
    // A silence shows up on the alert; ?fingerprint= selects it, and only it.
    let silence = dispatch
        .set_silence(SilenceInput {
            id: None,
            matchers: vec![SilenceMatcher {
                name: "job".into(),
                value: "web".into(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at_ms: clock.now_ms() - 1_000,
            ends_at_ms: clock.now_ms() + 3_600_000,
            created_by: "test".into(),
            comment: "maintenance".into(),
        })
        .await
        .unwrap();
    let (_, body) = api
        .get_status_json(&format!("/api/v1/alerts?fingerprint={fingerprint}"))
        .await;
    let alerts = body["data"]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{body}");
    assert_eq!(
        alerts[0]["silencedBy"],
        serde_json::json!([silence]),
        "{body}"
    );
    assert_eq!(
        alerts[0]["state"], "firing",
        "the rule state is kept: {body}"
    );
    let (_, body) = api
        .get_status_json("/api/v1/alerts?fingerprint=0000000000000000")
        .await;
    assert_eq!(body["data"]["alerts"], serde_json::json!([]), "{body}");

    // The recording rule's output is in the tsdb.
    let (_, body) = api.get_status_json("/api/v1/query?query=job:up:sum").await;
    assert_eq!(
        body["data"]["result"][0]["metric"]["__name__"],
        "job:up:sum"
    );

    // `rearguard query` against it.
    let code = rearguard::cli::query::run("up", None, &base, false)
        .await
        .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let code = rearguard::cli::query::run("sum(", None, &base, false)
        .await
        .unwrap();
    assert_eq!(code, std::process::ExitCode::FAILURE);
    manager.shutdown().await;
}

/// A group mapped to a remote Prometheus-compatible API (here: another
/// rearguard's query API) drives the same alert states; ALERTS go to the local tsdb.
#[tokio::test]
async fn remote_query_source_drives_alerts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Clock::system();
    let now = clock.now_ms();
    // The remote side: a tsdb with a failing `up`, served by the query API.
    let remote_db = Arc::new(Tsdb::new(3_600_000));
    remote_db
        .append_sample(
            &Labels::from_pairs([("__name__", "up"), ("job", "far")]),
            now - 5_000,
            0.0,
        )
        .unwrap();
    let remote_manager = Arc::new(manager(
        &clock,
        &remote_db,
        Engine::default(),
        Arc::new(Sent::default()),
    ));
    let base = http_support::serve(router(RulesApiState {
        dispatcher: None,
        manager: remote_manager,
        db: remote_db.clone(),
        engine: Engine::default(),
        clock: clock.clone(),
        query_slots: Arc::new(tokio::sync::Semaphore::new(20)),
    }))
    .await;

    // The local side: an empty tsdb; the group is evaluated remotely.
    let local_db = Arc::new(Tsdb::new(3_600_000));
    let sent = Arc::new(Sent::default());
    let manager = manager(&clock, &local_db, Engine::default(), sent.clone());
    let text = "groups:\n- name: remote\n  interval: 1s\n  rules:\n  - alert: FarDown\n    expr: up == 0\n    labels: {severity: critical}\n";
    let file = rule_file("r.yaml", text);
    let remote: Arc<dyn rearguard::rules::Querier> =
        Arc::new(rearguard::rules::RemoteQuerier::new(&base, None).unwrap());
    manager
        .apply(RulesConfig {
            files: vec![file],
            evaluation_interval: Duration::from_secs(15),
            sources: [("far".to_string(), remote)].into_iter().collect(),
            group_sources: [("remote".to_string(), "far".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let alerts = wait_for_alerts(&sent).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].labels.get("job"), Some("far"));
    assert_eq!(alerts[0].labels.get("alertname"), Some("FarDown"));
    let local = LocalQuerier::new(local_db.clone(), Engine::default());
    use rearguard::rules::Querier;
    let got = local
        .query("ALERTS{alertname=\"FarDown\"}", clock.now_ms())
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "ALERTS written to the local tsdb");
    manager.shutdown().await;

    // A group naming an unknown source is reported.
    let file = rule_file("r.yaml", text);
    let err = manager
        .apply(RulesConfig {
            files: vec![file],
            evaluation_interval: Duration::from_secs(15),
            group_sources: [("remote".to_string(), "nope".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err[0].contains("nope"), "{err:?}");
    manager.shutdown().await;
}

/// Hostile queries get Prometheus's error shapes and leave the server answering.
#[tokio::test]
async fn deep_long_and_slow_queries_are_refused_and_the_server_keeps_answering() {
    let clock = Clock::system();
    let now = clock.now_ms();
    let db = Arc::new(Tsdb::new(3_600_000));
    db.append_sample(&Labels::from_pairs([("__name__", "up")]), now - 1_000, 1.0)
        .unwrap();
    let slots = Arc::new(tokio::sync::Semaphore::new(1));
    let base = http_support::serve(router(RulesApiState {
        dispatcher: None,
        manager: Arc::new(manager(&clock, &db, Engine::default(), Arc::default())),
        db: db.clone(),
        engine: Engine::default(),
        clock: clock.clone(),
        query_slots: slots.clone(),
    }))
    .await;
    let client = http_support::client();
    let query = |q: String, extra: &'static str| {
        let client = client.clone();
        let url = format!("{base}/api/v1/query");
        async move {
            let r = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "query={}{extra}",
                    url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
                ))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };

    // Once aborted the daemon: a 5,000-term sum and 100,000 nested parentheses.
    let (st, body) = query(vec!["1"; 5000].join("+"), "").await;
    assert_eq!(
        (st, body["errorType"].as_str()),
        (400, Some("bad_data")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("nests too deeply"),
        "{body}"
    );
    let parens = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let (st, body) = query(parens, "").await;
    assert_eq!(
        (st, body["errorType"].as_str()),
        (400, Some("bad_data")),
        "{body}"
    );

    // A runaway subquery stops at its timeout with Prometheus's 503 "timeout".
    let (st, body) = query("max_over_time(up[1y:1s])".into(), "&timeout=200ms").await;
    assert_eq!(
        (st, body["errorType"].as_str()),
        (503, Some("timeout")),
        "{body}"
    );
    assert_eq!(body["error"], "query timed out in expression evaluation");

    // With every slot taken, a query waits within its timeout, then gives up.
    let held = slots.clone().acquire_owned().await.unwrap();
    let (st, body) = query("up".into(), "&timeout=100ms").await;
    assert_eq!(
        (st, body["error"].as_str()),
        (503, Some("query timed out in query queue"))
    );
    drop(held);

    // And the server still answers an ordinary query.
    let (st, body) = query("up".into(), "").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"]["result"][0]["value"][1], "1");
}
