//! Email delivery through the outbox to a real SMTP server (mailin-embedded):
//! headers, both bodies, grouped alerts, evidence; custom templates; an SMTP
//! server refusing connections, then accepting; a restart with a queued email.

mod http_support;
mod notify_common;

use std::sync::Arc;
use std::time::Duration;

use notify_common::*;
use rearguard::clock::Clock;
use rearguard::dispatch::NotificationSink;
use rearguard::notify::evidence::{EvidenceSource, LogEvidence, ProbeEvidence};
use rearguard::notify::{NoEvidence, Outbox, OutboxOptions};
use rearguard::store::Store;

/// 2026-09-21T14:13:20Z: the tests' clocks start here.
const T0: i64 = 1_790_000_000_000;

fn fast() -> OutboxOptions {
    OutboxOptions {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..OutboxOptions::default()
    }
}

struct FakeEvidence;

impl EvidenceSource for FakeEvidence {
    fn log_entries(&self, query: &str, limit: usize) -> Vec<LogEvidence> {
        assert_eq!(query, "backend-errors");
        (0..limit.min(2))
            .map(|i| LogEvidence {
                timestamp_ms: T0 - 10_000 + i as i64 * 1000,
                severity: "ERROR".into(),
                message: format!("db connection refused <{i}>"),
            })
            .collect()
    }
    fn probe_status(&self, probe: &str) -> Option<ProbeEvidence> {
        (probe == "backend-health").then(|| ProbeEvidence {
            up: false,
            reason: Some("status".into()),
            status_code: Some(503),
            since_ms: Some(T0 - 120_000),
        })
    }
}

fn smtp_config(port: u16, extra: &str) -> String {
    format!(
        r#"
external_url: http://rearguard.test:9464
receivers:
  - name: team
    email_configs:
      - to: oncall@example.com, lead@example.com
        from: Rearguard <rearguard@example.com>
        smarthost: 127.0.0.1:{port}
        hello: rearguard.test
        require_tls: false
{extra}
"#
    )
}

fn start_smtp(port: u16) -> SmtpSink {
    let sink = SmtpSink::default();
    sink.serve(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    sink
}

#[tokio::test]
async fn grouped_alerts_with_evidence_in_one_mail() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let smtp = start_smtp(port);
    let cfg = notifier_config(
        dir.path(),
        &smtp_config(
            port,
            "        send_resolved: true\n        headers: { X-Env: staging }",
        ),
    );
    let outbox = Outbox::start(
        Store::open_in_memory().unwrap(),
        Clock::starting_at(T0),
        &prometheus::Registry::new(),
        cfg,
        Arc::new(FakeEvidence),
        fast(),
    )
    .await
    .unwrap();
    let errors = alert(
        "HighErrorRate",
        &[("severity", "critical"), ("query", "backend-errors")],
        T0 - 600_000,
        None,
        0.071,
    );
    let down = alert(
        "BackendDown",
        &[("severity", "critical"), ("probe", "backend-health")],
        T0 - 120_000,
        None,
        0.0,
    );
    let latency = alert(
        "HighLatency",
        &[("severity", "warning")],
        T0 - 3_600_000,
        Some(T0 - 30_000),
        2.5,
    );
    outbox
        .send(notification(
            "team",
            vec![errors.clone(), down, latency],
            T0,
        ))
        .await
        .unwrap();
    assert!(
        eventually(10, || smtp.count() >= 1).await,
        "no mail arrived"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(smtp.count(), 1, "the grouped alerts go into one mail");
    let got = smtp.messages.lock().unwrap()[0].clone();
    assert_eq!(got.from, "rearguard@example.com");
    assert_eq!(
        got.to,
        vec![
            "oncall@example.com".to_string(),
            "lead@example.com".to_string()
        ]
    );
    let mail = parse_mail(&got.raw);
    assert_eq!(
        decode_subject(mail.header("Subject").unwrap()),
        "[FIRING:2] netra-backend-staging"
    );
    assert_eq!(
        mail.header("From").unwrap(),
        "Rearguard <rearguard@example.com>"
    );
    assert!(mail.header("To").unwrap().contains("oncall@example.com"));
    assert!(mail.header("To").unwrap().contains("lead@example.com"));
    assert_eq!(mail.header("X-Env"), Some("staging"));
    assert!(mail.header("Date").is_some());

    let t = &mail.text;
    for needle in [
        "2 firing, 1 resolved",
        "== FIRING HighErrorRate ==",
        "== FIRING BackendDown ==",
        "== RESOLVED HighLatency ==",
        "Severity:    critical",
        "Service:     netra-backend-staging",
        "Value:       0.071",
        "Since:       2026-09-21T14:03:20Z (firing for 10m0s)",
        "Summary:     HighErrorRate summary",
        "Description: HighErrorRate description, value 0.071",
        "Value at resolution: 2.5",
        "Last log entries of backend-errors:",
        "2026-09-21T14:13:10Z ERROR db connection refused <0>",
        "2026-09-21T14:13:11Z ERROR db connection refused <1>",
        "Evidence:    probe backend-health: DOWN, HTTP 503, reason: status, since 2026-09-21T14:11:20Z",
        "Rule:        http://rearguard.test/rules#HighErrorRate",
    ] {
        assert!(t.contains(needle), "text body lacks {needle:?}:\n{t}");
    }
    let link = format!(
        "http://rearguard.test:9464/api/v1/alerts?fingerprint={}",
        errors.labels.fingerprint_hex()
    );
    assert!(t.contains(&format!("Alert:       {link}")), "{t}");
    // Firing alerts come before resolved ones.
    assert!(t.find("HighErrorRate ==").unwrap() < t.find("HighLatency ==").unwrap());

    let h = &mail.html;
    assert!(h.starts_with("<!DOCTYPE html>"), "{h}");
    assert!(h.contains("FIRING HighErrorRate</h3>"), "{h}");
    assert!(h.contains("RESOLVED HighLatency</h3>"), "{h}");
    assert!(h.contains(&format!("<a href=\"{link}\">")), "{h}");
    assert!(
        h.contains("db connection refused &lt;1&gt;"),
        "log lines are escaped in HTML:\n{h}"
    );
    assert!(h.contains("HighErrorRate description, value 0.071"), "{h}");
    outbox.shutdown().await;
}

#[tokio::test]
async fn custom_templates_and_send_resolved_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let smtp = start_smtp(port);
    let extra = r#"        headers:
          Subject: '{{ .Status | toUpper }} {{ .CommonLabels.alertname }}'
        text: '{{ range .Alerts }}{{ .Labels.alertname }}={{ .Value }} at {{ .StartsAt }};{{ end }}'
        html: '<p>{{ .CommonAnnotations.summary }}</p>'"#;
    let cfg = notifier_config(dir.path(), &smtp_config(port, extra));
    let outbox = Outbox::start(
        Store::open_in_memory().unwrap(),
        Clock::starting_at(T0),
        &prometheus::Registry::new(),
        cfg,
        Arc::new(NoEvidence),
        fast(),
    )
    .await
    .unwrap();
    // Resolved only: email's send_resolved defaults to false, so nothing is queued.
    let resolved = alert("Gone", &[], T0 - 1000, Some(T0 - 10), 1.0);
    assert_eq!(
        outbox
            .enqueue(&notification("team", vec![resolved.clone()], T0))
            .await
            .unwrap(),
        0
    );
    // Mixed: the resolved alert is left out.
    let firing = alert("Gone", &[("x", "<b>")], T0 - 60_000, None, 3.0);
    assert_eq!(
        outbox
            .enqueue(&notification("team", vec![firing, resolved], T0 + 1))
            .await
            .unwrap(),
        1
    );
    assert!(eventually(10, || smtp.count() >= 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(smtp.count(), 1);
    let mail = parse_mail(&smtp.messages.lock().unwrap()[0].raw);
    assert_eq!(mail.header("Subject"), Some("FIRING Gone"));
    assert_eq!(mail.text, "Gone=3 at 2026-09-21T14:12:20Z;");
    assert_eq!(mail.html, "<p>Gone summary</p>");
    outbox.shutdown().await;
}

#[tokio::test]
async fn smtp_refusing_then_accepting_delivers_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port(); // nothing listens: connections are refused
    let cfg = notifier_config(dir.path(), &smtp_config(port, ""));
    let store = Store::open_in_memory().unwrap();
    let outbox = Outbox::start(
        store.clone(),
        Clock::starting_at(T0),
        &prometheus::Registry::new(),
        cfg,
        Arc::new(NoEvidence),
        fast(),
    )
    .await
    .unwrap();
    for i in 0..3 {
        let a = alert(&format!("Alert{i}"), &[], T0 - 1000, None, i as f64);
        outbox
            .send(notification("team", vec![a], T0 + i))
            .await
            .unwrap();
    }
    // Wait for several refused attempts on the queue head.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.outbox_rows(10).await.unwrap();
        if rows.iter().any(|r| r.attempts >= 3) {
            assert!(rows.iter().all(|r| r.state == "pending"));
            assert!(
                rows.iter()
                    .any(|r| r.last_error.as_deref().unwrap_or("").contains("SMTP")),
                "{rows:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retries seen: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let smtp = start_smtp(port);
    assert!(
        eventually(10, || smtp.count() >= 3).await,
        "got {}",
        smtp.count()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut subjects: Vec<String> = smtp
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            parse_mail(&m.raw)
                .text
                .lines()
                .find(|l| l.starts_with("== "))
                .unwrap_or("")
                .to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "== FIRING Alert0 ==",
            "== FIRING Alert1 ==",
            "== FIRING Alert2 =="
        ]
    );
    let rows = store.outbox_rows(10).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "delivered"), "{rows:?}");
    assert_eq!(store.outbox_queue_depth().await.unwrap(), 0);
    // Each Message-ID comes from its outbox row, so a resend would repeat it.
    let mut ids: Vec<String> = smtp
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            parse_mail(&m.raw)
                .header("Message-ID")
                .unwrap_or("")
                .to_string()
        })
        .collect();
    ids.sort();
    let mut want: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "<{}.{}@example.com>",
                r.notification_id, r.integration_index
            )
        })
        .collect();
    want.sort();
    assert_eq!(ids, want);
    outbox.shutdown().await;
}

#[tokio::test]
async fn queued_mail_is_delivered_after_a_restart_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = http_support::free_port();
    let cfg = notifier_config(dir.path(), &smtp_config(port, ""));
    {
        let store = Store::open(&state).unwrap();
        let outbox = Outbox::start(
            store.clone(),
            Clock::starting_at(T0),
            &prometheus::Registry::new(),
            cfg.clone(),
            Arc::new(NoEvidence),
            fast(),
        )
        .await
        .unwrap();
        outbox
            .send(notification(
                "team",
                vec![alert("Queued", &[], T0 - 1000, None, 1.0)],
                T0,
            ))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.outbox_rows(1).await.unwrap()[0].attempts == 0 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        outbox.shutdown().await;
    }
    let smtp = start_smtp(port);
    for restart in 0..2 {
        let store = Store::open(&state).unwrap();
        let outbox = Outbox::start(
            store.clone(),
            Clock::starting_at(T0 + 1000),
            &prometheus::Registry::new(),
            cfg.clone(),
            Arc::new(NoEvidence),
            fast(),
        )
        .await
        .unwrap();
        assert!(
            eventually(10, || smtp.count() >= 1).await,
            "not delivered after restart {restart}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.outbox_queue_depth().await.unwrap() != 0 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            smtp.count(),
            1,
            "delivered exactly once (restart {restart})"
        );
        outbox.shutdown().await;
    }
}

/// STARTTLS against a server whose certificate is issued by a test CA
/// (tests/fixtures/tls, made with openssl for these tests): verified with
/// `tls_config.ca_file` and `server_name`; without the CA the mail is not sent.
#[tokio::test]
async fn starttls_verifies_the_server_with_ca_file_and_server_name() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let port = http_support::free_port();
    let sink = SmtpSink::default();
    let mut server = mailin_embedded::Server::new(sink.clone());
    server
        .with_name("smtp.test")
        .with_num_threads(2)
        .with_ssl(mailin_embedded::SslConfig::SelfSigned {
            cert_path: fixtures.join("smtp.pem").to_string_lossy().into_owned(),
            key_path: fixtures.join("smtp.key").to_string_lossy().into_owned(),
        })
        .unwrap()
        .with_tcp_listener(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures.join("ca.pem"), dir.path().join("ca.pem")).unwrap();
    let yaml = format!(
        r#"
receivers:
  - name: verified
    email_configs:
      - to: oncall@example.com
        from: rearguard@example.com
        smarthost: 127.0.0.1:{port}
        tls_config: {{ ca_file: ca.pem, server_name: smtp.test }}
  - name: unverified
    email_configs:
      - to: oncall@example.com
        from: rearguard@example.com
        smarthost: 127.0.0.1:{port}
"#
    );
    let cfg = notifier_config(dir.path(), &yaml);
    let store = Store::open_in_memory().unwrap();
    let outbox = Outbox::start(
        store.clone(),
        Clock::starting_at(T0),
        &prometheus::Registry::new(),
        cfg,
        Arc::new(NoEvidence),
        fast(),
    )
    .await
    .unwrap();
    let a = alert("Tls", &[], T0 - 1000, None, 1.0);
    outbox
        .send(notification("verified", vec![a.clone()], T0))
        .await
        .unwrap();
    outbox
        .send(notification("unverified", vec![a], T0))
        .await
        .unwrap();
    assert!(
        eventually(10, || sink.count() >= 1).await,
        "no mail over STARTTLS"
    );
    // The unverified receiver (platform roots only, host 127.0.0.1) keeps failing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.outbox_rows(10).await.unwrap();
        let unverified = rows.iter().find(|r| r.receiver == "unverified").unwrap();
        if unverified.attempts >= 2 {
            assert_eq!(unverified.state, "pending");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sink.count(), 1);
    let mail = parse_mail(&sink.messages.lock().unwrap()[0].raw);
    assert!(mail.text.contains("== FIRING Tls =="), "{}", mail.text);
    outbox.shutdown().await;
}
