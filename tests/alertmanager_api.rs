//! Alertmanager's API v2 over real HTTP, on tokio's paused clock: who may post
//! alerts, the postable/gettable shapes, filters, groups, silences as amtool
//! uses them, bad input refused whole, HA pairs deduplicated, resolution by
//! `endsAt` and by `resolve_timeout`, and external alerts surviving a restart.

mod dispatch_common;
mod http_support;

use std::sync::Arc;
use std::time::Duration;

use dispatch_common::{Harness, T0};
use rearguard::clock::{to_datetime, Clock};
use rearguard::config::Secret;
use rearguard::dispatch::external::ExternalAlerts;
use rearguard::dispatch::DEFAULT_RESOLVE_TIMEOUT;
use rearguard::server::alertmanager::{router, AlertmanagerApiState};
use rearguard::server::auth::AdminToken;
use rearguard::store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "admin-t0ken";
const SENDER: &str = "sender-t0ken";

const CONFIG: &str = r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 10s
  group_interval: 1m
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
receivers:
  - name: team
    webhook_configs: [{url: "http://127.0.0.1:9/x"}]
  - name: pager
    webhook_configs: [{url: "http://127.0.0.1:9/y"}]
"#;

struct Am {
    h: Harness,
    base: String,
    http: reqwest::Client,
}

async fn start_with(store: Store, clock: Clock, admin: Option<&str>, sender: Option<&str>) -> Am {
    let h = Harness::with_store(CONFIG, store, clock).await;
    let external = ExternalAlerts::start(
        h.store.clone(),
        h.clock.clone(),
        h.dispatcher.clone(),
        DEFAULT_RESOLVE_TIMEOUT,
    )
    .await
    .unwrap();
    let base = http_support::serve(router(AlertmanagerApiState {
        dispatcher: h.dispatcher.clone(),
        external,
        admin_token: AdminToken(admin.map(Secret::new)),
        alert_token: sender.map(Secret::new),
        started_at_ms: h.clock.now_ms(),
    }))
    .await;
    Am {
        h,
        base,
        http: http_support::client(),
    }
}

async fn start() -> Am {
    start_with(
        Store::open_in_memory().unwrap(),
        Clock::starting_at(T0),
        Some(ADMIN),
        Some(SENDER),
    )
    .await
}

impl Am {
    async fn post_alerts(
        &self,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .post(format!("{}/api/v2/alerts", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn send(&self, alerts: Value) {
        let (s, body) = self.post_alerts(Some(SENDER), alerts.to_string()).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        self.h.dispatcher.sync().await;
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.json().await.unwrap()
    }

    fn ts(&self, offset_ms: i64) -> String {
        to_datetime(self.h.now() + offset_ms).to_rfc3339()
    }
}

fn alert(name: &str, severity: &str) -> Value {
    json!({
        "labels": {"alertname": name, "severity": severity, "instance": "a:9"},
        "annotations": {"summary": "down"},
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0"
    })
}

#[tokio::test(start_paused = true)]
async fn who_may_post_alerts() {
    let am = start().await;
    let body = json!([alert("A", "warning")]).to_string();
    assert_eq!(
        am.post_alerts(None, body.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        am.post_alerts(Some("nope"), body.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        am.post_alerts(Some(SENDER), body.clone()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        am.post_alerts(Some(ADMIN), body.clone()).await.0,
        StatusCode::OK
    );
    // The sender token may not change silences.
    let silence = json!({"matchers": [{"name": "alertname", "value": "A", "isRegex": false}],
        "startsAt": am.ts(0), "endsAt": am.ts(3_600_000), "createdBy": "x", "comment": "y"});
    let r = am
        .http
        .post(format!("{}/api/v2/silences", am.base))
        .bearer_auth(SENDER)
        .json(&silence)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let off = start_with(
        Store::open_in_memory().unwrap(),
        Clock::starting_at(T0),
        None,
        None,
    )
    .await;
    assert_eq!(
        off.post_alerts(Some(SENDER), body).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(start_paused = true)]
async fn posted_alerts_are_listed_grouped_filtered_and_silenced() {
    let am = start().await;
    am.send(json!([alert("A", "critical"), alert("B", "warning")]))
        .await;

    let list = am.get("/api/v2/alerts").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let a = &list[0];
    assert_eq!(a["labels"]["alertname"], "A");
    assert_eq!(a["annotations"]["summary"], "down");
    assert_eq!(a["receivers"], json!([{"name": "pager"}]));
    assert_eq!(
        a["status"],
        json!({"state": "active", "silencedBy": [], "inhibitedBy": [], "mutedBy": []})
    );
    assert_eq!(
        a["generatorURL"],
        "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0"
    );
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    // No endsAt sent: now + resolve_timeout, as Alertmanager.
    let ends = chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str().unwrap()).unwrap();
    assert_eq!(ends.timestamp_millis(), am.h.now() + 300_000);
    for field in ["startsAt", "updatedAt"] {
        assert!(chrono::DateTime::parse_from_rfc3339(a[field].as_str().unwrap()).is_ok());
    }

    let only_b = am.get("/api/v2/alerts?filter=alertname%3D%22B%22").await;
    assert_eq!(only_b.as_array().unwrap().len(), 1);
    let pager = am.get("/api/v2/alerts?receiver=pag.*").await;
    assert_eq!(pager[0]["labels"]["alertname"], "A");
    assert_eq!(am.get("/api/v2/alerts?receiver=pag").await, json!([]));

    let groups = am.get("/api/v2/alerts/groups").await;
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let pager_group = groups
        .iter()
        .find(|g| g["receiver"]["name"] == "pager")
        .unwrap();
    assert_eq!(pager_group["labels"], json!({"alertname": "A"}));
    assert_eq!(pager_group["alerts"][0]["labels"]["alertname"], "A");

    // Silence A as amtool does, then query with amtool's default filters.
    let r = am
        .http
        .post(format!("{}/api/v2/silences", am.base))
        .bearer_auth(ADMIN)
        .json(&json!({"matchers": [{"name": "alertname", "value": "A", "isRegex": false, "isEqual": true}],
            "startsAt": am.ts(0), "endsAt": am.ts(3_600_000), "createdBy": "amtool", "comment": "maint"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.json::<Value>().await.unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_string();
    let unsilenced = am
        .get("/api/v2/alerts?active=true&silenced=false&inhibited=false")
        .await;
    assert_eq!(unsilenced.as_array().unwrap().len(), 1);
    assert_eq!(unsilenced[0]["labels"]["alertname"], "B");
    let silenced = am.get("/api/v2/alerts?active=false&silenced=true").await;
    assert_eq!(silenced.as_array().unwrap().len(), 1);
    assert_eq!(silenced[0]["status"]["state"], "suppressed");
    assert_eq!(silenced[0]["status"]["silencedBy"], json!([id]));

    let s = am.get(&format!("/api/v2/silence/{id}")).await;
    assert_eq!(s["status"]["state"], "active");
    assert_eq!(
        s["matchers"][0],
        json!({"name": "alertname", "value": "A", "isRegex": false, "isEqual": true})
    );
    let del = am
        .http
        .delete(format!("{}/api/v2/silence/{id}", am.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    let all = am.get("/api/v2/silences").await;
    assert_eq!(all[0]["status"]["state"], "expired");

    let status = am.get("/api/v2/status").await;
    assert_eq!(status["cluster"]["status"], "disabled");
    for f in [
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    ] {
        assert!(status["versionInfo"][f].is_string(), "{f}");
    }
    let original: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(status["config"]["original"].as_str().unwrap()).unwrap();
    assert_eq!(original["route"]["receiver"], "team");
    assert_eq!(original["route"]["routes"][0]["receiver"], "pager");
    assert_eq!(
        am.get("/api/v2/receivers").await,
        json!([{"name": "pager"}, {"name": "team"}])
    );
}

#[tokio::test(start_paused = true)]
async fn bad_input_gets_alertmanagers_answers_and_nothing_is_stored() {
    let am = start().await;
    let start = am.ts(0);
    let earlier = am.ts(-60_000);
    let cases: Vec<(String, Value)> = vec![
        ("not json".into(), Value::Null),
        (r#"{"labels": {"a": "b"}}"#.into(), Value::Null),
        (
            json!([alert("Ok", "x"), {"labels": {}}]).to_string(),
            json!("at least one label pair required"),
        ),
        (
            json!([{"annotations": {"a": "b"}}]).to_string(),
            Value::Null,
        ),
        (
            json!([alert("Ok", "x"), {"labels": {"a": "b"}, "startsAt": start, "endsAt": earlier}])
                .to_string(),
            json!("start time must be before end time"),
        ),
        (
            json!([{"labels": {"bad-name": "b"}}]).to_string(),
            json!("invalid label set: invalid name \"bad-name\""),
        ),
    ];
    for (body, want) in cases {
        let (status, got) = am.post_alerts(Some(SENDER), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        if want.is_null() {
            assert_eq!(got["code"], 400, "{body}: {got}");
            assert!(got["message"].is_string(), "{body}: {got}");
        } else {
            assert_eq!(got, want, "{body}");
        }
    }
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"labels": {"n": i.to_string()}}))
        .collect();
    let (status, got) = am.post_alerts(Some(SENDER), json!(many).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(got.as_str().unwrap().contains("too many alerts"), "{got}");
    // Larger than the body limit: refused before it is read.
    let huge = format!("[{}]", vec![r#"{"labels":{"a":"b"}}"#; 60_000].join(","));
    let (status, _) = am.post_alerts(Some(SENDER), huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    am.h.dispatcher.sync().await;
    assert_eq!(am.get("/api/v2/alerts").await, json!([]));
    assert!(am.h.store.load_external_alerts().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_ha_pair_makes_one_notification_and_endsat_resolves_it() {
    let am = start().await;
    // Two Prometheus replicas: same labels, slightly different startsAt/endsAt.
    let mut a1 = alert("A", "warning");
    a1["startsAt"] = json!(am.ts(-20_000));
    a1["endsAt"] = json!(am.ts(240_000));
    let mut a2 = alert("A", "warning");
    a2["startsAt"] = json!(am.ts(-15_000));
    a2["endsAt"] = json!(am.ts(235_000));
    am.send(json!([a1])).await;
    am.send(json!([a2])).await;
    assert_eq!(am.get("/api/v2/alerts").await.as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(11)).await;
    am.h.dispatcher.sync().await;
    {
        let got = am.h.sink.got.lock().unwrap();
        assert_eq!(got.len(), 1, "one notification for the pair");
        assert_eq!(got[0].1.alerts.len(), 1);
        assert_eq!(
            got[0].1.alerts[0].starts_at_ms,
            T0 - 20_000,
            "earliest startsAt kept"
        );
        assert_eq!(got[0].1.alerts[0].active_at_ms, T0 - 20_000);
    }
    // Both replicas keep sending; no new notification.
    am.send(json!([a1, a2])).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    am.h.dispatcher.sync().await;
    assert_eq!(am.h.sink.got.lock().unwrap().len(), 1);

    // The rule stops firing: Prometheus sends endsAt = now.
    let mut done = alert("A", "warning");
    done["startsAt"] = json!(am.ts(-91_000));
    done["endsAt"] = json!(am.ts(0));
    am.send(json!([done])).await;
    assert_eq!(am.get("/api/v2/alerts").await, json!([]));
    tokio::time::sleep(Duration::from_secs(60)).await;
    am.h.dispatcher.sync().await;
    let got = am.h.sink.got.lock().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].1.alerts[0].is_resolved());
}

#[tokio::test(start_paused = true)]
async fn a_silent_sender_resolves_by_timeout_and_alerts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(T0);
    let am = start_with(
        Store::open(dir.path()).unwrap(),
        clock.clone(),
        Some(ADMIN),
        Some(SENDER),
    )
    .await;
    am.send(json!([alert("Kept", "warning")])).await;
    let before = am.get("/api/v2/alerts").await;
    am.h.dispatcher.shutdown().await;
    drop(am);

    let am = start_with(
        Store::open(dir.path()).unwrap(),
        clock.clone(),
        Some(ADMIN),
        Some(SENDER),
    )
    .await;
    am.h.dispatcher.sync().await;
    let after = am.get("/api/v2/alerts").await;
    assert_eq!(after[0]["labels"], before[0]["labels"]);
    assert_eq!(after[0]["startsAt"], before[0]["startsAt"]);
    assert_eq!(after[0]["endsAt"], before[0]["endsAt"]);

    // Nobody re-sends it: resolved once resolve_timeout (5m) passes.
    tokio::time::sleep(Duration::from_secs(299)).await;
    assert_eq!(am.get("/api/v2/alerts").await.as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(am.get("/api/v2/alerts").await, json!([]));
    let _ = Arc::clone(&am.h.dispatcher);
}
