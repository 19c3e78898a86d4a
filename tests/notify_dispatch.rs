//! Dispatch → outbox: the dispatcher's notifications land in the outbox
//! (through `NotificationSink`) and are delivered per integration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard::alert::{Alert, AlertSink};
use rearguard::clock::Clock;
use rearguard::dispatch::notification::BoxFuture;
use rearguard::dispatch::{Dispatcher, DispatcherDeps};
use rearguard::labels::Labels;
use rearguard::notify::metrics::NotifyMetrics;
use rearguard::notify::outbox::{DeliveryJob, Transport};
use rearguard::notify::payload::Payload;
use rearguard::notify::{DeliveryError, NotifierConfig, Outbox, OutboxOptions};
use rearguard::store::Store;

const T0: i64 = 1_795_392_000_000;

/// (integration, delivery time, `name:status` of each alert)
type Delivery = (String, i64, Vec<String>);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Delivery>>>);

impl Transport for Capture {
    fn deliver<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if let Payload::Alerts(n) = &job.payload {
                let statuses = n
                    .alerts
                    .iter()
                    .map(|a| format!("{}:{:?}", a.name(), a.status_at(n.created_at_ms)))
                    .collect();
                self.0
                    .lock()
                    .unwrap()
                    .push((job.integration.to_string(), job.now_ms, statuses));
            }
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn dispatcher_notifications_reach_each_integration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rearguard.yaml");
    std::fs::write(
        &path,
        r#"
route:
  receiver: team
  group_by: [alertname]
receivers:
  - name: team
    email_configs:
      - { to: a@example.com, from: r@example.com, smarthost: 'smtp.invalid:25' }
    webhook_configs:
      - url: http://hooks.invalid/x
"#,
    )
    .unwrap();
    let loaded = rearguard::config::load(&path).unwrap();
    let clock = Clock::starting_at(T0);
    let store = Store::open_in_memory().unwrap();
    let capture = Capture::default();
    let outbox = Outbox::start_with(
        store.clone(),
        clock.clone(),
        NotifyMetrics::unregistered().unwrap(),
        NotifierConfig::from_loaded(&loaded),
        Arc::new(capture.clone()),
        OutboxOptions::default(),
    )
    .await
    .unwrap();
    let dispatcher = Dispatcher::start(
        DispatcherDeps {
            clock: clock.clone(),
            store: store.clone(),
            sink: Arc::new(outbox.clone()),
            registry: prometheus::Registry::new(),
        },
        &loaded,
    )
    .await
    .unwrap();
    let mut alert = Alert {
        labels: Labels::from_pairs([("alertname", "HighErrorRate"), ("severity", "critical")]),
        annotations: Default::default(),
        active_at_ms: T0,
        starts_at_ms: T0,
        ends_at_ms: None,
        value: 0.07,
        generator_url: String::new(),
    };
    dispatcher.send_alerts(vec![alert.clone()]);
    // group_wait (30s by default) then delivery.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(
        capture.0.lock().unwrap().is_empty(),
        "nothing before group_wait"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let got = capture.0.lock().unwrap();
        let mut who: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        who.sort();
        assert_eq!(who, ["team/email[0]", "team/webhook[0]"]);
        assert!(got.iter().all(|g| g.2 == ["HighErrorRate:Firing"]));
    }
    // Resolved: only the webhook (send_resolved true by default) hears about it.
    tokio::time::sleep(Duration::from_secs(30)).await;
    alert.ends_at_ms = Some(clock.now_ms());
    alert.value = 0.01;
    dispatcher.send_alerts(vec![alert]);
    tokio::time::sleep(Duration::from_secs(6 * 60)).await;
    let got = capture.0.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].0, "team/webhook[0]");
    assert_eq!(got[2].2, ["HighErrorRate:Resolved"]);
    outbox.shutdown().await;
}
