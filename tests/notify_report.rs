//! Digest reports on simulated time: the scheduler gathers the period's data
//! from the store at each cron time and queues the mail through the outbox.

mod notify_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_common::*;
use rearguard::clock::Clock;
use rearguard::dispatch::notification::BoxFuture;
use rearguard::notify::metrics::NotifyMetrics;
use rearguard::notify::outbox::{DeliveryJob, Transport};
use rearguard::notify::payload::{Payload, RenderedReport};
use rearguard::notify::report::{spawn_scheduler, StoreReportData};
use rearguard::notify::{DeliveryError, Outbox, OutboxOptions};
use rearguard::store::{ProbeTransition, Store};

/// 2026-01-01T07:59:00Z
const T0: i64 = 1_767_254_340_000;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, RenderedReport)>>>);

impl Transport for Capture {
    fn deliver<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if let Payload::Report(r) = &job.payload {
                self.0
                    .lock()
                    .unwrap()
                    .push((job.integration.to_string(), r.clone()));
            }
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn daily_report_summarises_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = notifier_config(
        dir.path(),
        r#"
receivers:
  - name: team
    webhook_configs: [ { url: 'http://hooks.invalid/x' } ]
reports:
  - name: daily
    schedule: '0 8 * * *'
    email_configs:
      - { to: boss@example.com, from: r@example.com, smarthost: 'smtp.invalid:25' }
"#,
    );
    let store = Store::open_in_memory().unwrap();
    let day = 86_400_000;
    // Since the period start (yesterday 08:00) the probe was up, then down for an hour.
    for (at, up) in [
        (T0 - 2 * day, true),
        (T0 - 6 * 3_600_000, false),
        (T0 - 5 * 3_600_000, true),
    ] {
        store
            .record_probe_transition(ProbeTransition {
                probe: "backend-health".into(),
                at_ms: at,
                up,
                reason: (!up).then(|| "status".into()),
                status_code: None,
            })
            .await
            .unwrap();
    }
    let clock = Clock::starting_at(T0);
    let capture = Capture::default();
    let outbox = Outbox::start_with(
        store.clone(),
        clock.clone(),
        NotifyMetrics::unregistered().unwrap(),
        cfg,
        Arc::new(capture.clone()),
        OutboxOptions::default(),
    )
    .await
    .unwrap();
    // One notification delivered in the period.
    outbox
        .enqueue(&notification(
            "team",
            vec![alert("A", &[], T0 - 1000, None, 1.0)],
            T0 - 500,
        ))
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let data = Arc::new(StoreReportData {
        store: store.clone(),
        alerts: None,
        rollbacks: None,
    });
    let task = spawn_scheduler(outbox.clone(), clock.clone(), data, stop_rx);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(capture.0.lock().unwrap().is_empty(), "not before 08:00");
    tokio::time::sleep(Duration::from_secs(120)).await;
    {
        let sent = capture.0.lock().unwrap();
        assert_eq!(sent.len(), 1);
        let (to, r) = &sent[0];
        assert_eq!(to, "report:daily/email[0]");
        assert_eq!(
            r.subject,
            "[rearguard report] daily: 0 fired, 0 resolved (2025-12-31 08:00 – 2026-01-01 08:00 UTC)"
        );
        assert!(
            r.text
                .contains("backend-health: availability 95.833%, down 1h0m, 1 outage(s)"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("team webhook: sent 1, failed 0, pending 0"),
            "{}",
            r.text
        );
        assert!(
            r.html.contains("<td>backend-health</td><td>95.833%</td>"),
            "{}",
            r.html
        );
    }
    tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
    assert_eq!(capture.0.lock().unwrap().len(), 1, "once a day");
    tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
    assert_eq!(capture.0.lock().unwrap().len(), 2);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    outbox.shutdown().await;
}
