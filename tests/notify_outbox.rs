//! The outbox's scheduling on simulated time, with a scripted transport:
//! exponential backoff, dead-lettering at the maximum age, permanent errors,
//! a hung receiver that does not hold up another, idempotent enqueue.

mod notify_common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_common::*;
use rearguard::clock::Clock;
use rearguard::config::receivers::IntegrationId;
use rearguard::dispatch::notification::BoxFuture;
use rearguard::notify::metrics::NotifyMetrics;
use rearguard::notify::outbox::{DeliveryJob, Transport};
use rearguard::notify::{DeliveryError, Outbox, OutboxOptions};
use rearguard::store::Store;

const T0: i64 = 1_790_000_000_000;

#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    Transient,
    Permanent,
    Hang,
    /// Fails after 5 s.
    Slow,
}

/// Records the time of every attempt per integration and answers as scripted.
#[derive(Clone)]
struct Scripted {
    clock: Clock,
    behaviour: Arc<Mutex<HashMap<String, Behaviour>>>,
    attempts: Arc<Mutex<HashMap<String, Vec<i64>>>>,
    delivered: Arc<Mutex<Vec<(String, String)>>>,
}

impl Scripted {
    fn new(clock: Clock) -> Self {
        Self {
            clock,
            behaviour: Default::default(),
            attempts: Default::default(),
            delivered: Default::default(),
        }
    }
    fn set(&self, receiver: &str, b: Behaviour) {
        self.behaviour
            .lock()
            .unwrap()
            .insert(receiver.to_string(), b);
    }
    fn attempts(&self, receiver: &str) -> Vec<i64> {
        self.attempts
            .lock()
            .unwrap()
            .get(receiver)
            .cloned()
            .unwrap_or_default()
    }
}

impl Transport for Scripted {
    fn deliver<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let id: &IntegrationId = &job.integration;
            self.attempts
                .lock()
                .unwrap()
                .entry(id.receiver.clone())
                .or_default()
                .push(self.clock.now_ms());
            let b = self
                .behaviour
                .lock()
                .unwrap()
                .get(&id.receiver)
                .copied()
                .unwrap_or(Behaviour::Ok);
            match b {
                Behaviour::Ok => {
                    let name = match &job.payload {
                        rearguard::notify::payload::Payload::Alerts(n) => {
                            n.alerts[0].name().to_string()
                        }
                        rearguard::notify::payload::Payload::Report(r) => r.name.clone(),
                    };
                    self.delivered.lock().unwrap().push((id.to_string(), name));
                    Ok(())
                }
                Behaviour::Transient => Err(DeliveryError::transient("connection refused")),
                Behaviour::Permanent => Err(DeliveryError::permanent("550 mailbox unavailable")),
                Behaviour::Hang => std::future::pending().await,
                Behaviour::Slow => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Err(DeliveryError::transient("timed out"))
                }
            }
        })
    }
}

const CONFIG: &str = r#"
receivers:
  - name: fast
    webhook_configs:
      - url: http://fast.invalid/hook
  - name: down
    webhook_configs:
      - url: http://down.invalid/hook
  - name: both
    email_configs:
      - { to: a@example.com, from: r@example.com, smarthost: 'smtp.invalid:25' }
    webhook_configs:
      - url: http://both.invalid/hook
      - url: http://both2.invalid/hook
        send_resolved: false
"#;

async fn setup(options: OutboxOptions) -> (Outbox, Scripted, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = notifier_config(dir.path(), CONFIG);
    let clock = Clock::starting_at(T0);
    let transport = Scripted::new(clock.clone());
    let store = Store::open_in_memory().unwrap();
    let outbox = Outbox::start_with(
        store.clone(),
        clock,
        NotifyMetrics::unregistered().unwrap(),
        cfg,
        Arc::new(transport.clone()),
        options,
    )
    .await
    .unwrap();
    (outbox, transport, store, dir)
}

fn options() -> OutboxOptions {
    OutboxOptions {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
        max_age: Duration::from_secs(3600),
        ..OutboxOptions::default()
    }
}

#[tokio::test(start_paused = true)]
async fn backs_off_exponentially_then_dead_letters_at_max_age() {
    let (outbox, transport, store, _dir) = setup(options()).await;
    transport.set("down", Behaviour::Transient);
    let n = notification("down", vec![alert("A", &[], T0 - 1000, None, 1.0)], T0);
    assert_eq!(outbox.enqueue(&n).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let at = transport.attempts("down");
    assert_eq!(at[0], T0, "first attempt at once");
    // Gaps double (with jitter between half and all of the delay) and stop growing at the cap.
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, g) in gaps.iter().enumerate() {
        let full = (1000i64 << i.min(20)).min(300_000);
        assert!(
            *g >= full / 2 && *g <= full + 50,
            "gap {i} = {g} ms, expected within [{}, {full}]",
            full / 2
        );
    }
    assert!(at.len() >= 12 && at.len() <= 40, "{} attempts", at.len());
    assert!(
        *at.last().unwrap() < T0 + 3_600_000,
        "no attempt after the maximum age"
    );
    let row = &store.outbox_rows(1).await.unwrap()[0];
    assert_eq!(row.state, "dead");
    assert_eq!(row.attempts as usize, at.len());
    assert_eq!(
        row.finished_at_ms,
        Some(T0 + 3_600_000),
        "dead-lettered exactly at the maximum age"
    );
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("connection refused"),
        "{row:?}"
    );
    let m = outbox.metrics();
    assert_eq!(
        m.dead_lettered
            .with_label_values(&["down", "webhook"])
            .get(),
        1
    );
    assert_eq!(
        m.notifications
            .with_label_values(&["down", "webhook", "failure"])
            .get() as usize,
        at.len()
    );
    assert_eq!(m.queue_depth.get(), 0);
    outbox.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn permanent_error_dead_letters_at_once_and_the_queue_moves_on() {
    let (outbox, transport, store, _dir) = setup(options()).await;
    transport.set("down", Behaviour::Permanent);
    outbox
        .enqueue(&notification(
            "down",
            vec![alert("A", &[], T0, None, 1.0)],
            T0,
        ))
        .await
        .unwrap();
    outbox
        .enqueue(&notification(
            "down",
            vec![alert("B", &[], T0, None, 1.0)],
            T0 + 1,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(transport.attempts("down").len(), 2, "one attempt each");
    let rows = store.outbox_rows(10).await.unwrap();
    assert!(
        rows.iter().all(|r| r.state == "dead" && r.attempts == 1),
        "{rows:?}"
    );
    outbox.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_receiver_does_not_block_another() {
    let (outbox, transport, _store, _dir) = setup(options()).await;
    transport.set("down", Behaviour::Hang);
    outbox
        .enqueue(&notification(
            "down",
            vec![alert("Stuck", &[], T0, None, 1.0)],
            T0,
        ))
        .await
        .unwrap();
    for i in 0..3 {
        let n = notification(
            "fast",
            vec![alert(&format!("F{i}"), &[], T0, None, 1.0)],
            T0 + i,
        );
        outbox.enqueue(&n).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = transport.delivered.lock().unwrap().clone();
    assert_eq!(
        delivered,
        [
            ("fast/webhook[0]".to_string(), "F0".to_string()),
            ("fast/webhook[0]".to_string(), "F1".to_string()),
            ("fast/webhook[0]".to_string(), "F2".to_string())
        ],
        "in order, while `down` hangs"
    );
    assert_eq!(transport.attempts("down").len(), 1);
    assert_eq!(outbox.metrics().queue_depth.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn fans_out_per_integration_and_enqueue_is_idempotent() {
    let (outbox, transport, store, _dir) = setup(options()).await;
    let firing = alert("A", &[], T0 - 1000, None, 1.0);
    let n = notification("both", vec![firing.clone()], T0);
    assert_eq!(
        outbox.enqueue(&n).await.unwrap(),
        3,
        "email, webhook and webhook"
    );
    assert_eq!(
        outbox.enqueue(&n).await.unwrap(),
        0,
        "the same notification again writes nothing"
    );
    // Resolved only: email (send_resolved false by default) and the second webhook skip it.
    let resolved = alert("A", &[], T0 - 1000, Some(T0 + 500), 1.0);
    assert_eq!(
        outbox
            .enqueue(&notification("both", vec![resolved], T0 + 1000))
            .await
            .unwrap(),
        1
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut delivered = transport.delivered.lock().unwrap().clone();
    delivered.sort();
    assert_eq!(delivered.len(), 4);
    assert_eq!(
        delivered.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        [
            "both/email[0]",
            "both/webhook[0]",
            "both/webhook[0]",
            "both/webhook[1]"
        ]
    );
    let rows = store.outbox_rows(10).await.unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .all(|r| r.state == "delivered" && r.attempts == 1),
        "{rows:?}"
    );
    assert!(outbox
        .enqueue(&notification("nobody", vec![firing], T0))
        .await
        .unwrap_err()
        .to_string()
        .contains("unknown receiver"));
    outbox.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retries_continue_across_a_reload() {
    let (outbox, transport, store, dir) = setup(options()).await;
    transport.set("down", Behaviour::Transient);
    outbox
        .enqueue(&notification(
            "down",
            vec![alert("A", &[], T0, None, 1.0)],
            T0,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A reload (here one that drops the receiver) hands the workers the new config.
    let cfg = notifier_config(dir.path(), "receivers:\n  - name: other\n");
    transport.set("down", Behaviour::Ok);
    outbox.apply(cfg);
    assert!(outbox.config().receiver("down").is_none());
    tokio::time::sleep(Duration::from_secs(600)).await;
    // The scripted transport does not look at the config; the row got delivered on a retry.
    let rows = store.outbox_rows(1).await.unwrap();
    assert_eq!(rows[0].state, "delivered");
    outbox.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_delivery_in_flight_finish_then_stops() {
    let (outbox, transport, store, _dir) = setup(options()).await;
    transport.set("down", Behaviour::Slow);
    outbox
        .enqueue(&notification(
            "down",
            vec![alert("A", &[], T0, None, 1.0)],
            T0,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = tokio::time::Instant::now();
    outbox.shutdown().await;
    // The attempt in flight ends after 4 more seconds; the worker must then stop
    // rather than retry until the grace period (10 s) runs out.
    assert!(
        before.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}",
        before.elapsed()
    );
    let attempts = transport.attempts("down").len();
    assert_eq!(attempts, 1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        transport.attempts("down").len(),
        attempts,
        "no attempts after shutdown"
    );
    let row = &store.outbox_rows(1).await.unwrap()[0];
    assert_eq!(
        (row.state.as_str(), row.attempts),
        ("pending", 1),
        "left for the next start"
    );
}
