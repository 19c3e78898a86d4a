//! Webhook delivery through the outbox to a real axum receiver: Alertmanager's
//! v4 payload field by field, the HMAC signature, custom headers, max_alerts.

mod notify_common;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use notify_common::*;
use rearguard::clock::Clock;
use rearguard::dispatch::NotificationSink;
use rearguard::notify::{NoEvidence, Outbox, OutboxOptions};
use rearguard::store::Store;
use serde_json::{json, Value};
use sha2::Sha256;

/// 2026-09-21T14:13:20Z: the tests' clocks start here.
const T0: i64 = 1_790_000_000_000;

fn fast() -> OutboxOptions {
    OutboxOptions {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..OutboxOptions::default()
    }
}

#[tokio::test]
async fn v4_payload_signature_headers_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let hook = WebhookReceiver::default();
    let url = hook.start().await;
    std::fs::write(dir.path().join("hook-secret"), "s3cret\n").unwrap();
    let cfg = notifier_config(
        dir.path(),
        &format!(
            r#"
external_url: http://rearguard.test:9464
receivers:
  - name: team
    webhook_configs:
      - url: {url}
        hmac_secret_file: hook-secret
        max_alerts: 2
        timeout: 5s
        headers: {{ X-Team: backend }}
"#
        ),
    );
    let store = Store::open_in_memory().unwrap();
    let registry = prometheus::Registry::new();
    let outbox = Outbox::start(
        store.clone(),
        Clock::starting_at(T0),
        &registry,
        cfg,
        Arc::new(NoEvidence),
        fast(),
    )
    .await
    .unwrap();
    let t0 = T0;
    let firing = alert(
        "HighErrorRate",
        &[("severity", "critical")],
        t0 - 300_000,
        None,
        0.071,
    );
    let resolved = alert(
        "HighErrorRate",
        &[("severity", "warning")],
        t0 - 900_000,
        Some(t0 - 60_000),
        0.012,
    );
    let third = alert(
        "HighErrorRate",
        &[("severity", "info")],
        t0 - 100_000,
        None,
        0.5,
    );
    let n = notification("team", vec![firing.clone(), resolved.clone(), third], t0);
    outbox.send(n).await.unwrap();
    assert!(
        eventually(10, || hook.count() >= 1).await,
        "webhook never received"
    );

    let (headers, body) = hook.requests.lock().unwrap()[0].clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-team"], "backend");
    // The signature is the HMAC-SHA256 of "<timestamp>.<exact body>" with the
    // file's secret (newline trimmed); the timestamp is the clock's, in seconds.
    let timestamp = headers["x-rearguard-timestamp"].to_str().unwrap();
    assert_eq!(timestamp, (T0 / 1000).to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-rearguard-signature"].to_str().unwrap(), expected);
    // The delivery id is the outbox row's deterministic notification id.
    let delivery = headers["x-rearguard-delivery"]
        .to_str()
        .unwrap()
        .to_string();
    let rows = store.outbox_rows(10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(delivery, rows[0].notification_id);

    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], "4");
    assert_eq!(v["groupKey"], "{}:{service=\"netra-backend-staging\"}");
    assert_eq!(v["truncatedAlerts"], 1);
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "team");
    assert_eq!(
        v["groupLabels"],
        json!({"service": "netra-backend-staging"})
    );
    assert_eq!(
        v["commonLabels"],
        json!({"alertname": "HighErrorRate", "service": "netra-backend-staging"})
    );
    assert_eq!(
        v["commonAnnotations"],
        json!({"summary": "HighErrorRate summary"})
    );
    assert_eq!(v["externalURL"], "http://rearguard.test:9464");
    let alerts = v["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    let a0 = &alerts[0];
    assert_eq!(a0["status"], "firing");
    assert_eq!(
        a0["labels"],
        json!({"alertname": "HighErrorRate", "service": "netra-backend-staging", "severity": "critical"})
    );
    assert_eq!(
        a0["annotations"]["description"],
        "HighErrorRate description, value 0.071"
    );
    assert_eq!(a0["startsAt"], "2026-09-21T14:08:20Z");
    assert_eq!(a0["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        a0["generatorURL"],
        "http://rearguard.test/rules#HighErrorRate"
    );
    assert_eq!(a0["fingerprint"], firing.labels.fingerprint_hex());
    assert_eq!(a0["value"], "0.071");
    let a1 = &alerts[1];
    assert_eq!(a1["status"], "resolved");
    assert_eq!(a1["endsAt"], "2026-09-21T14:12:20Z");
    // The value at resolution, not the last firing value.
    assert_eq!(a1["value"], "0.012");
    assert_eq!(a1["fingerprint"], resolved.labels.fingerprint_hex());
    let keys: Vec<&String> = a0.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "annotations",
            "endsAt",
            "fingerprint",
            "generatorURL",
            "labels",
            "startsAt",
            "status",
            "value"
        ]
    );

    // Metrics: one success, nothing queued once the row is marked delivered.
    assert!(eventually(5, || outbox.metrics().queue_depth.get() == 0).await);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"rearguard_notifications_total{integration="webhook",receiver="team",result="success"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("rearguard_notification_queue_depth 0"),
        "{text}"
    );
    assert!(
        text.contains("rearguard_notification_latency_seconds_count{integration=\"webhook\"} 1"),
        "{text}"
    );
    outbox.shutdown().await;
}

#[tokio::test]
async fn retries_5xx_dead_letters_4xx_and_resolved_only_goes_out_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let hook = WebhookReceiver::default();
    *hook.answers.lock().unwrap() = vec![503, 500, 200, 400];
    let url = hook.start().await;
    let cfg = notifier_config(
        dir.path(),
        &format!("receivers:\n  - name: team\n    webhook_configs:\n      - url: {url}\n"),
    );
    let store = Store::open_in_memory().unwrap();
    let registry = prometheus::Registry::new();
    let outbox = Outbox::start(
        store.clone(),
        Clock::starting_at(T0),
        &registry,
        cfg,
        Arc::new(NoEvidence),
        fast(),
    )
    .await
    .unwrap();
    let t0 = T0;
    // Resolved only: webhooks send resolved notifications by default.
    let n = notification(
        "team",
        vec![alert("A", &[], t0 - 1000, Some(t0 - 10), 1.0)],
        t0,
    );
    outbox.send(n).await.unwrap();
    assert!(eventually(10, || hook.count() >= 3).await);
    let v: Value = serde_json::from_slice(&hook.requests.lock().unwrap()[2].1).unwrap();
    assert_eq!(v["status"], "resolved");
    // The next one is answered 400: permanent, dead-lettered without retries.
    let n = notification("team", vec![alert("B", &[], t0, None, 1.0)], t0 + 1);
    outbox.send(n).await.unwrap();
    let dead = || async {
        store
            .outbox_rows(10)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.state == "dead")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dead().await == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dead().await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.count(), 4, "a 400 is not retried");
    let rows = store.outbox_rows(10).await.unwrap();
    let dead_row = rows.iter().find(|r| r.state == "dead").unwrap();
    assert!(
        dead_row.last_error.as_deref().unwrap().contains("400"),
        "{dead_row:?}"
    );
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(text.contains(r#"rearguard_notifications_dead_lettered_total{integration="webhook",receiver="team"} 1"#), "{text}");
    assert!(text.contains(r#"rearguard_notifications_total{integration="webhook",receiver="team",result="failure"} 3"#), "{text}");
    outbox.shutdown().await;
}
