//! The real daemon: `admin.alert_token_file` is read from the config, posted
//! alerts reach `/api/v2/alerts` through the daemon's wiring, and they are
//! there again after a restart on the same state directory.

mod http_support;

use rearguard::clock::Clock;
use rearguard::daemon::Daemon;
use serde_json::{json, Value};

async fn start(dir: &std::path::Path) -> (Daemon, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(dir.join("admin-token"), "admin-secret\n").unwrap();
    std::fs::write(dir.join("alert-token"), "sender-secret\n").unwrap();
    let text = format!(
        "listen: 127.0.0.1:{port}\nstate_dir: {state}\nadmin:\n  token_file: admin-token\n  alert_token_file: alert-token\nroute:\n  receiver: team\nreceivers:\n  - name: team\n",
        state = dir.join("state").display()
    );
    let path = dir.join("rearguard.yaml");
    std::fs::write(&path, text).unwrap();
    let loaded = rearguard::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.alert_token.is_some());
    let daemon = Daemon::start(loaded, Clock::system(), Some(listener))
        .await
        .unwrap_or_else(|e| panic!("daemon did not start: {e}"));
    (daemon, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn posted_alerts_survive_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = http_support::client();
    let (daemon, base) = start(dir.path()).await;
    let alert = json!([{
        "labels": {"alertname": "FromPrometheus", "job": "api"},
        "annotations": {"summary": "up == 0"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2099-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph"
    }]);
    let r = http
        .post(format!("{base}/api/v2/alerts"))
        .bearer_auth("wrong")
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/api/v2/alerts"))
        .bearer_auth("sender-secret")
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    daemon.dispatcher().sync().await;
    let before: Value = http
        .get(format!("{base}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(before[0]["labels"]["alertname"], "FromPrometheus");
    assert_eq!(before[0]["startsAt"], "2026-01-01T00:00:00.000Z");
    assert_eq!(before[0]["receivers"], json!([{"name": "team"}]));
    daemon.shutdown().await;
    drop(daemon);

    let (daemon, base) = start(dir.path()).await;
    daemon.dispatcher().sync().await;
    let after: Value = http
        .get(format!("{base}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after[0]["labels"], before[0]["labels"]);
    assert_eq!(after[0]["startsAt"], before[0]["startsAt"]);
    assert_eq!(after[0]["endsAt"], "2099-01-01T00:00:00.000Z");
    daemon.shutdown().await;
}
