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

// --- Runs missed while the daemon was down -------------------------------

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// 2026-01-01T08:00:00Z, the first due time after T0.
const DUE0: i64 = T0 + 60_000;

const DAILY: &str = r#"
receivers:
  - name: team
    webhook_configs: [ { url: 'http://hooks.invalid/x' } ]
reports:
  - name: daily
    schedule: '0 8 * * *'
    email_configs:
      - { to: boss@example.com, from: r@example.com, smarthost: 'smtp.invalid:25' }
"#;

/// Log lines written while a test runs (the catch-up says so at info).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || logs.clone())
                .finish(),
        )
    }
    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// One daemon run: the real store in `state_dir`, the outbox and the report
/// scheduler, with a clock that starts at `start_ms`.
struct Daemon {
    store: Store,
    outbox: Outbox,
    sent: Capture,
    stop: tokio::sync::watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Daemon {
    async fn start(state_dir: &std::path::Path, yaml: &str, start_ms: i64) -> Daemon {
        let store = Store::open(&state_dir.join("state")).unwrap();
        let clock = Clock::starting_at(start_ms);
        let sent = Capture::default();
        let outbox = Outbox::start_with(
            store.clone(),
            clock.clone(),
            NotifyMetrics::unregistered().unwrap(),
            notifier_config(state_dir, yaml),
            Arc::new(sent.clone()),
            OutboxOptions::default(),
        )
        .await
        .unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let data = Arc::new(StoreReportData {
            store: store.clone(),
            alerts: None,
            rollbacks: None,
        });
        let scheduler = spawn_scheduler(outbox.clone(), clock, data, stop_rx);
        Daemon {
            store,
            outbox,
            sent,
            stop,
            scheduler,
        }
    }

    fn subjects(&self) -> Vec<String> {
        let sent = self.sent.0.lock().unwrap();
        sent.iter().map(|(_, r)| r.subject.clone()).collect()
    }

    async fn report_rows(&self) -> usize {
        let rows = self.store.outbox_rows(1000).await.unwrap();
        rows.iter().filter(|r| r.receiver == "report:daily").count()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.scheduler.await.unwrap();
        self.outbox.shutdown().await;
    }
}

async fn sleep_ms(ms: i64) {
    tokio::time::sleep(Duration::from_millis(ms as u64)).await;
}

/// The daemon runs from 07:59 past the first 08:00 run (the report is queued
/// and sent), then stops.
async fn first_run(state_dir: &std::path::Path) {
    let d = Daemon::start(state_dir, DAILY, T0).await;
    sleep_ms(3 * 60_000).await;
    assert_eq!(
        d.subjects(),
        ["[rearguard report] daily: 0 fired, 0 resolved (2025-12-31 08:00 – 2026-01-01 08:00 UTC)"]
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn down_across_a_due_time_catches_up_one_report_on_start() {
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;
    let logs = Logs::default();
    let _guard = logs.capture();
    // Down from 08:03 until 10:00 the next day: the 08:00 run passed meanwhile.
    let d = Daemon::start(dir.path(), DAILY, DUE0 + DAY + 2 * HOUR).await;
    sleep_ms(10_000).await;
    {
        let sent = d.sent.0.lock().unwrap();
        assert_eq!(sent.len(), 1, "one late report at start");
        let (to, r) = &sent[0];
        assert_eq!(to, "report:daily/email[0]");
        assert_eq!(
            r.subject,
            "[rearguard report] daily: 0 fired, 0 resolved (2026-01-01 08:00 – 2026-01-02 08:00 UTC) (sent late: rearguard was not running at 08:00 UTC)"
        );
        assert!(
            r.text.contains("This report was due at 2026-01-02T08:00:00Z but rearguard was not running then; it was sent at 2026-01-02T10:00:00Z."),
            "{}",
            r.text
        );
    }
    let said = logs.lines_with("sending it late");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("INFO")
            && said[0].contains("report=\"daily\"")
            && said[0].contains("due=2026-01-02T08:00:00Z")
            && said[0].contains("last_queued=2026-01-01T08:00:00Z"),
        "{}",
        said[0]
    );
    // Not again: the next one comes at its own time, on time.
    sleep_ms(DAY - 2 * HOUR - 20_000).await;
    assert_eq!(d.subjects().len(), 1, "nothing more before 08:00");
    sleep_ms(60_000).await;
    let subjects = d.subjects();
    assert_eq!(subjects.len(), 2);
    assert_eq!(
        subjects[1],
        "[rearguard report] daily: 0 fired, 0 resolved (2026-01-02 08:00 – 2026-01-03 08:00 UTC)"
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn down_across_three_due_times_sends_only_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;
    // Down until 10:00 three days later: the runs of Jan 2, 3 and 4 passed.
    let d = Daemon::start(dir.path(), DAILY, DUE0 + 3 * DAY + 2 * HOUR).await;
    sleep_ms(10 * 60_000).await;
    assert_eq!(
        d.subjects(),
        ["[rearguard report] daily: 0 fired, 0 resolved (2026-01-03 08:00 – 2026-01-04 08:00 UTC) (sent late: rearguard was not running at 08:00 UTC)"]
    );
    // One row for the first run, one for the late one: the older missed runs were never queued.
    assert_eq!(d.report_rows().await, 2);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_report_sends_nothing_until_its_first_due_time() {
    let dir = tempfile::tempdir().unwrap();
    // The store has seen the daemon before (an alert went out), but never this report.
    {
        let d = Daemon::start(dir.path(), DAILY, T0 - DAY).await;
        d.outbox
            .enqueue(&notification(
                "team",
                vec![alert("A", &[], T0 - DAY, None, 1.0)],
                T0 - DAY,
            ))
            .await
            .unwrap();
        sleep_ms(1000).await;
        d.stop().await;
    }
    // Added to the config two hours after its 08:00 run.
    let d = Daemon::start(dir.path(), DAILY, DUE0 + 2 * HOUR).await;
    sleep_ms(10_000).await;
    assert!(d.subjects().is_empty(), "no stale report at start");
    assert_eq!(d.report_rows().await, 0);
    sleep_ms(DAY - 2 * HOUR - 20_000).await;
    assert!(d.subjects().is_empty(), "nothing before its first run");
    sleep_ms(60_000).await;
    assert_eq!(
        d.subjects(),
        ["[rearguard report] daily: 0 fired, 0 resolved (2026-01-01 08:00 – 2026-01-02 08:00 UTC)"]
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_right_after_a_report_was_sent_does_not_resend_it() {
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;
    let logs = Logs::default();
    let _guard = logs.capture();
    // Back a minute later.
    let d = Daemon::start(dir.path(), DAILY, DUE0 + 4 * 60_000).await;
    sleep_ms(10 * 60_000).await;
    assert!(d.subjects().is_empty(), "already sent: {:?}", d.subjects());
    assert_eq!(logs.lines_with("sending it late"), Vec::<String>::new());
    assert_eq!(d.report_rows().await, 1);
    sleep_ms(DAY).await;
    assert_eq!(
        d.subjects(),
        ["[rearguard report] daily: 0 fired, 0 resolved (2026-01-01 08:00 – 2026-01-02 08:00 UTC)"]
    );
    d.stop().await;
}
