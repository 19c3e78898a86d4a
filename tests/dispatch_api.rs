//! The admin API over real HTTP: the token, silences in Alertmanager's shapes,
//! bad JSON, status, the dispatch view of alerts, and the CLI against it.

mod dispatch_common;
mod http_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use dispatch_common::discarding_dispatcher;
use http_support::Api;
use rearguard::alert::{Alert, AlertSink};
use rearguard::clock::Clock;
use rearguard::config::Secret;
use rearguard::dispatch::Dispatcher;
use rearguard::labels::Labels;
use rearguard::server::auth::AdminToken;
use rearguard::server::dispatch_api::{router, DispatchApiState};
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN: &str = "t0ken-for-tests";

const CONFIG: &str = r#"
route:
  receiver: team
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
receivers:
  - name: team
    webhook_configs: [{url: "http://127.0.0.1:9/x"}]
  - name: pager
    webhook_configs: [{url: "http://127.0.0.1:9/y"}]
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [service]
"#;

async fn serve() -> (Api, Arc<Dispatcher>) {
    let http = http_support::client();
    let clock = Clock::system();
    let dispatcher = discarding_dispatcher(CONFIG, &clock).await;
    let base = http_support::serve(router(DispatchApiState {
        dispatcher: dispatcher.clone(),
        admin_token: AdminToken(Some(Secret::new(TOKEN))),
        started_at_ms: clock.now_ms(),
    }))
    .await;
    let api = Api {
        base,
        http,
        token: TOKEN.into(),
    };
    (api, dispatcher)
}

fn silence_body(matchers: Value) -> Value {
    let now = chrono::Utc::now();
    json!({
        "matchers": matchers,
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(2)).to_rfc3339(),
        "createdBy": "alice",
        "comment": "deploying",
    })
}

#[tokio::test]
async fn mutating_calls_need_the_token() {
    let (api, _d) = serve().await;
    let body = silence_body(json!([{"name": "service", "value": "backend", "isRegex": false}]));
    let r = api.post_anonymous("/api/v1/silences", &body).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let text = r.text().await.unwrap();
    assert!(text.contains("Authorization: Bearer"), "{text}");
    assert!(!text.contains(TOKEN));
    let wrong = Api {
        token: "wrong".into(),
        ..api.clone()
    };
    let r = wrong.post("/api/v1/silences", &body).await;
    assert_eq!(r.status(), 401);
    let r = api
        .request(Method::DELETE, "/api/v1/silences/whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "DELETE needs the token too");
    // Reads need none.
    let r = api.get("/api/v1/silences").await;
    assert_eq!(r.status(), 200);
    let r = api.get("/api/v1/status").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn silences_in_alertmanager_shapes() {
    let (api, d) = serve().await;
    let post = |body: Value| {
        let api = api.clone();
        async move { api.post("/api/v1/silences", &body).await }
    };
    let r = post(silence_body(
        json!([{"name": "service", "value": "back.*", "isRegex": true}]),
    ))
    .await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 36, "a UUID");

    let list = api.get_json("/api/v1/silences").await;
    let s = &list[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["status"]["state"], "active");
    assert_eq!(
        s["matchers"][0],
        json!({"name": "service", "value": "back.*", "isRegex": true, "isEqual": true})
    );
    assert_eq!(s["createdBy"], "alice");
    let filtered = |q: &'static str| {
        let api = api.clone();
        async move { api.get_json(&format!("/api/v1/silences?{q}")).await }
    };
    assert_eq!(
        filtered("filter=service%3D%22back.*%22")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        filtered("filter=service%3D%22other%22")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(filtered("state=expired").await.as_array().unwrap().len(), 0);
    assert_eq!(s["comment"], "deploying");
    assert!(s["startsAt"].as_str().unwrap().ends_with('Z'));

    // It mutes matching alerts, as the dispatch view shows.
    let labels = Labels::from_pairs([("alertname", "Slow"), ("service", "backend")]);
    d.send_alerts(vec![Alert {
        labels: labels.clone(),
        annotations: BTreeMap::new(),
        active_at_ms: 0,
        starts_at_ms: d.clock().now_ms(),
        ends_at_ms: None,
        value: 3.5,
        generator_url: String::new(),
    }]);
    d.sync().await;
    assert_eq!(d.suppression(&labels).silenced_by, vec![id.clone()]);
    let view = api.get_json("/api/v1/dispatch/alerts").await;
    assert_eq!(view[0]["labels"]["alertname"], "Slow");
    assert_eq!(view[0]["status"]["state"], "suppressed");
    assert_eq!(view[0]["status"]["silencedBy"], json!([id]));
    assert_eq!(view[0]["status"]["receivers"], json!(["team"]));

    // Bad input: 400 with a message.
    for (body, needle) in [
        (json!("not an object"), "invalid silence JSON"),
        (json!({"matchers": []}), "invalid silence JSON"),
        (silence_body(json!([])), "at least one matcher"),
        (
            silence_body(json!([{"name": "a", "value": ".*", "isRegex": true}])),
            "empty string",
        ),
        (
            silence_body(json!([{"name": "a", "value": "(", "isRegex": true}])),
            "regular expression",
        ),
    ] {
        let r = post(body).await;
        assert_eq!(r.status(), 400);
        let msg = r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains(needle), "{msg}");
    }
    let r = api.post_raw("/api/v1/silences", "{\"matchers\": [").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("EOF"));
    let mut past = silence_body(json!([{"name": "a", "value": "b"}]));
    past["endsAt"] = json!("2001-01-01T00:00:00Z");
    past["startsAt"] = json!("2000-01-01T00:00:00Z");
    let r = post(past).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("in the past"));

    // Expire: then it is expired, a second expire conflicts, unknown ids are 404.
    let r = api.delete(&format!("/api/v1/silences/{id}")).await;
    assert_eq!(r.status(), 200);
    let s = api.get_json(&format!("/api/v1/silences/{id}")).await;
    assert_eq!(s["status"]["state"], "expired");
    let r = api.delete(&format!("/api/v1/silence/{id}")).await;
    assert_eq!(r.status(), 409);
    let r = api.delete("/api/v1/silences/nope").await;
    assert_eq!(r.status(), 404);
    assert!(d.suppression(&labels).silenced_by.is_empty());

    let status = api.get_json("/api/v1/status").await;
    assert_eq!(status["silences"]["expired"], 1);
    assert_eq!(status["routes"][1]["receiver"], "pager");
    assert_eq!(status["cluster"]["status"], "disabled");
}

#[tokio::test]
async fn cli_adds_lists_and_expires() {
    use rearguard::cli::silence::{run, ApiArgs, SilenceCommand};
    let (api, d) = serve().await;
    let base = api.base;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let api = ApiArgs {
        url: base.clone(),
        token_file: Some(token_file),
    };
    let code = run(SilenceCommand::Add {
        api: api.clone(),
        matchers: vec![r#"{service="backend", severity=~"warning|info"}"#.into()],
        duration: "2h".into(),
        start: None,
        end: None,
        author: Some("bob".into()),
        comment: "nightly deploy".into(),
    })
    .await
    .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let all = d.silences();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].matchers.len(), 2);
    assert!(all[0].matchers[1].is_regex);
    assert_eq!(all[0].created_by, "bob");
    assert!(run(SilenceCommand::List {
        api: api.clone(),
        expired: true,
        json: true
    })
    .await
    .is_ok());
    let code = run(SilenceCommand::Expire {
        api: api.clone(),
        ids: vec![all[0].id.clone()],
    })
    .await
    .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(d.silence_state(&d.silences()[0]).as_str(), "expired");
    // `rearguard alerts` falls back to the dispatch view when /api/v1/alerts is not served.
    assert_eq!(
        rearguard::cli::alerts::run(api.clone(), false)
            .await
            .unwrap(),
        std::process::ExitCode::SUCCESS
    );
    // Without the token the CLI reports the 401 with a hint.
    let err = run(SilenceCommand::Add {
        api: ApiArgs {
            url: base,
            token_file: None,
        },
        matchers: vec!["a=b".into()],
        duration: "1h".into(),
        start: None,
        end: None,
        author: None,
        comment: "x".into(),
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}
