//! Rollback notices across crashes, on simulated time: every `RearguardRollback`
//! event is in the store before dispatch sees it, and a "kill -9" (the
//! dispatcher stopped with its group flush pending, memory gone, the store
//! reopened) in the `group_wait` gap does not lose it; once notified, a
//! restart does not notify it again.

mod dispatch_common;

use std::sync::Arc;
use std::time::Duration;

use dispatch_common::{load, Recorder, T0};
use rearguard::action::events::{Event, EventEmitter, Phase, EVENT_ID_ANNOTATION};
use rearguard::adapters::notification_channel;
use rearguard::alert::AlertStatus;
use rearguard::clock::Clock;
use rearguard::dispatch::notification::BoxFuture;
use rearguard::dispatch::{Dispatcher, DispatcherDeps, Notification, NotificationSink};
use rearguard::store::Store;

const CONFIG: &str = "route:\n  receiver: team\n  group_by: [alertname, target]\n  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 4h\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: http://127.0.0.1:9/hook\n";

/// What FanOut does: hand over, then mark the events notified once accepted.
struct Marking {
    recorder: Arc<Recorder>,
    events: EventEmitter,
}

impl NotificationSink for Marking {
    fn send<'a>(&'a self, n: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let copy = n.clone();
            self.recorder.send(n).await?;
            self.events.mark_notified(&copy).await;
            Ok(())
        })
    }
}

/// One daemon process: its store handle, dispatcher and event emitter.
struct Process {
    store: Store,
    dispatcher: Arc<Dispatcher>,
    events: EventEmitter,
    recorder: Arc<Recorder>,
    queue: tokio::task::JoinHandle<()>,
}

impl Process {
    async fn start(dir: &std::path::Path, clock: &Clock) -> Process {
        Self::start_with(dir, clock, CONFIG).await
    }

    async fn start_with(dir: &std::path::Path, clock: &Clock, config: &str) -> Process {
        let store = Store::open(dir).unwrap();
        let recorder = Arc::new(Recorder::default());
        *recorder.clock.lock().unwrap() = Some(clock.clone());
        // As the daemon wires: the dispatcher's sink is a channel, fed once
        // the emitter (which needs the dispatcher) exists.
        let (intake, queue) = notification_channel();
        let dispatcher = Dispatcher::start(
            DispatcherDeps {
                clock: clock.clone(),
                store: store.clone(),
                sink: Arc::new(intake),
                registry: prometheus::Registry::new(),
            },
            &load(config),
        )
        .await
        .unwrap();
        let routing = dispatcher.clone();
        let events = EventEmitter::new(dispatcher.clone(), "http://rg/api/v1/rollbacks")
            .with_store(store.clone())
            .with_receivers(Arc::new(move |l| routing.notifying_receivers(l)));
        let queue = queue.spawn(Arc::new(Marking {
            recorder: recorder.clone(),
            events: events.clone(),
        }));
        events.present_pending(clock.now_ms()).await;
        dispatcher.sync().await;
        Process {
            store,
            dispatcher,
            events,
            recorder,
            queue,
        }
    }

    /// SIGKILL: pending flushes and memory are gone; only the store remains.
    async fn kill(self) {
        self.dispatcher.shutdown().await;
        self.queue.abort();
    }

    /// (event_id, phase) of the firing event alerts notified so far.
    fn notified(&self) -> Vec<(String, String)> {
        self.notified_to(None)
    }

    /// Like `notified`, to one receiver (or all).
    fn notified_to(&self, receiver: Option<&str>) -> Vec<(String, String)> {
        self.recorder
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| receiver.is_none_or(|r| n.receiver == r))
            .flat_map(|(_, n)| {
                n.alerts
                    .iter()
                    .filter(|a| a.status_at(n.created_at_ms) == AlertStatus::Firing)
                    .map(|a| {
                        (
                            a.annotations
                                .get(EVENT_ID_ANNOTATION)
                                .cloned()
                                .unwrap_or_default(),
                            a.labels.get("phase").unwrap_or("").to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn event(phase: Phase) -> Event {
    Event {
        phase,
        target: "backend".into(),
        service: "backend".into(),
        reason: "rollback".into(),
        trigger: None,
        from_revision: Some("backend-00002".into()),
        to_revision: Some("backend-00001".into()),
        summary: format!("rollback {}", phase.as_str()),
        description: String::new(),
    }
}

async fn advance(p: &Process, d: Duration) {
    tokio::time::sleep(d).await;
    p.dispatcher.sync().await;
}

#[tokio::test(start_paused = true)]
async fn a_notice_killed_in_group_wait_is_delivered_after_restart_once_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(T0);

    // Process 1: the rollback starts; killed 10 s into the 30 s group_wait.
    let p1 = Process::start(dir.path(), &clock).await;
    p1.events.emit(&event(Phase::Started), clock.now_ms()).await;
    let pending = p1.store.live_events(clock.now_ms()).await.unwrap();
    assert_eq!(pending.len(), 1, "written before dispatch");
    assert_eq!(pending[0].notified_at_ms, None);
    let started_id = pending[0].event_id.clone();
    advance(&p1, Duration::from_secs(10)).await;
    assert!(p1.notified().is_empty(), "still in group_wait");
    p1.kill().await;

    // Down for 10 minutes: longer than the event's 5-minute hold.
    tokio::time::sleep(Duration::from_secs(600)).await;

    // Process 2: the notice is presented again and delivered, with the same id.
    let p2 = Process::start(dir.path(), &clock).await;
    advance(&p2, Duration::from_secs(31)).await;
    assert_eq!(
        p2.notified(),
        [(started_id.clone(), "started".to_string())],
        "the lost notice arrives after the restart"
    );
    let row = &p2.store.live_events(clock.now_ms()).await.unwrap()[0];
    assert!(row.notified_at_ms.is_some(), "marked once accepted");
    // The outcome is emitted by the resumed run; then a crash before its flush.
    p2.events
        .emit(&event(Phase::Verified), clock.now_ms())
        .await;
    let verified_id = p2
        .store
        .live_events(clock.now_ms())
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.labels.get("phase").map(String::as_str) == Some("verified"))
        .unwrap()
        .event_id;
    assert_ne!(verified_id, started_id);
    p2.kill().await;

    // Process 3: the outcome arrives; the notified start is not notified as new.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p3 = Process::start(dir.path(), &clock).await;
    advance(&p3, Duration::from_secs(31)).await;
    let got = p3.notified();
    assert!(
        got.contains(&(verified_id.clone(), "verified".to_string())),
        "{got:?}"
    );
    // Same group (alertname, target): the notification carries both, the start
    // under its original id (a receiver drops it by id).
    assert!(got
        .iter()
        .all(|(id, _)| *id == verified_id || *id == started_id));
    p3.kill().await;

    // Process 4: everything notified; a restart notifies nothing new.
    let p4 = Process::start(dir.path(), &clock).await;
    advance(&p4, Duration::from_secs(120)).await;
    assert!(p4.notified().is_empty(), "{:?}", p4.notified());
    // After the hold, nothing is live and nothing is presented.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(p4.events.present_pending(clock.now_ms()).await, 0);
    p4.kill().await;
}

#[tokio::test(start_paused = true)]
async fn a_repeated_notice_keeps_its_id_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(T0);
    let p = Process::start(dir.path(), &clock).await;
    p.events.emit(&event(Phase::Skipped), clock.now_ms()).await;
    let first = p.store.live_events(clock.now_ms()).await.unwrap();
    advance(&p, Duration::from_secs(20)).await;
    p.events.emit(&event(Phase::Skipped), clock.now_ms()).await;
    let second = p.store.live_events(clock.now_ms()).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event_id, first[0].event_id);
    assert_eq!(second[0].starts_at_ms, first[0].starts_at_ms);
    assert!(second[0].ends_at_ms > first[0].ends_at_ms, "held longer");
    advance(&p, Duration::from_secs(20)).await;
    assert_eq!(p.notified().len(), 1, "one notice: {:?}", p.notified());
    p.kill().await;
}

/// An event routed to two receivers; the team was notified, the pager (a
/// longer group_wait) not yet when the process died, and it stayed down past
/// the event's hold: the restart still notifies the pager, and not the team again.
#[tokio::test(start_paused = true)]
async fn a_notice_for_two_receivers_is_pending_until_both_were_notified() {
    let config = "route:\n  receiver: team\n  group_by: [alertname, target]\n  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 4h\n  routes:\n    - matchers: ['severity=\"critical\"']\n      receiver: pager\n      group_wait: 60s\n      continue: true\n    - receiver: team\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: http://127.0.0.1:9/hook\n  - name: pager\n    webhook_configs:\n      - url: http://127.0.0.1:9/page\n";
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(T0);
    let p1 = Process::start_with(dir.path(), &clock, config).await;
    p1.events.emit(&event(Phase::Failed), clock.now_ms()).await;
    advance(&p1, Duration::from_secs(40)).await;
    assert_eq!(p1.notified_to(Some("team")).len(), 1);
    assert!(p1.notified_to(Some("pager")).is_empty());
    let row = &p1.store.live_events(clock.now_ms()).await.unwrap()[0];
    assert_eq!(row.notified_at_ms, None, "the pager has not had it");
    p1.kill().await;

    tokio::time::sleep(Duration::from_secs(600)).await;
    let p2 = Process::start_with(dir.path(), &clock, config).await;
    advance(&p2, Duration::from_secs(61)).await;
    assert_eq!(p2.notified_to(Some("pager")).len(), 1, "the pager hears it");
    assert!(
        p2.notified_to(Some("team")).is_empty(),
        "the team not again"
    );
    let row = &p2.store.live_events(clock.now_ms()).await.unwrap()[0];
    assert!(row.notified_at_ms.is_some());
    p2.kill().await;
}
