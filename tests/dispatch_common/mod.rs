//! A harness for dispatch tests: a dispatcher on paused tokio time, a sink that
//! records every notification with the time it arrived, and a stand-in for rule
//! evaluation that re-sends the active alerts every evaluation interval.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard::alert::{Alert, AlertSink};
use rearguard::clock::{Clock, TimestampMs};
use rearguard::config::{self, LoadedConfig};
use rearguard::dispatch::notification::BoxFuture;
use rearguard::dispatch::{
    Dispatcher, DispatcherDeps, Notification, NotificationSink, SilenceInput,
};
use rearguard::labels::Labels;
use rearguard::store::silences::SilenceMatcher;
use rearguard::store::Store;

/// 2026-11-23T00:00:00Z, a Monday.
pub const T0: TimestampMs = 1_795_392_000_000;

#[derive(Default)]
pub struct Recorder {
    pub got: Mutex<Vec<(TimestampMs, Notification)>>,
    pub fail: Mutex<bool>,
    pub clock: Mutex<Option<Clock>>,
}

impl NotificationSink for Recorder {
    fn send<'a>(&'a self, n: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if *self.fail.lock().unwrap() {
                return Err("outbox unavailable".to_string());
            }
            let now = self
                .clock
                .lock()
                .unwrap()
                .as_ref()
                .map(|c| c.now_ms())
                .unwrap_or(0);
            self.got.lock().unwrap().push((now, n));
            Ok(())
        })
    }
}

/// Notifications are not what the test looks at.
pub struct Discard;

impl NotificationSink for Discard {
    fn send<'a>(&'a self, _n: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A dispatcher configured by `yaml` on `clock`, over an in-memory store,
/// whose notifications go nowhere.
pub async fn discarding_dispatcher(yaml: &str, clock: &Clock) -> Arc<Dispatcher> {
    Dispatcher::start(
        DispatcherDeps {
            clock: clock.clone(),
            store: Store::open_in_memory().unwrap(),
            sink: Arc::new(Discard),
            registry: prometheus::Registry::new(),
        },
        &load(yaml),
    )
    .await
    .unwrap()
}

pub fn load(yaml: &str) -> LoadedConfig {
    config::load_str(Path::new("/tmp/dispatch-test.yaml"), yaml, |_| None)
        .unwrap_or_else(|e| panic!("{e}"))
}

pub struct Harness {
    pub clock: Clock,
    pub store: Store,
    pub sink: Arc<Recorder>,
    pub dispatcher: Arc<Dispatcher>,
    pub registry: prometheus::Registry,
    /// What rule evaluation currently reports (firing, and resolved within 15m).
    active: Mutex<BTreeMap<Labels, Alert>>,
    pub eval_interval: Duration,
}

impl Harness {
    pub async fn new(yaml: &str) -> Self {
        Self::with_store(
            yaml,
            Store::open_in_memory().unwrap(),
            Clock::starting_at(T0),
        )
        .await
    }

    pub async fn with_store(yaml: &str, store: Store, clock: Clock) -> Self {
        let sink = Arc::new(Recorder::default());
        *sink.clock.lock().unwrap() = Some(clock.clone());
        let registry = prometheus::Registry::new();
        let cfg = load(yaml);
        let dispatcher = Dispatcher::start(
            DispatcherDeps {
                clock: clock.clone(),
                store: store.clone(),
                sink: sink.clone(),
                registry: registry.clone(),
            },
            &cfg,
        )
        .await
        .unwrap();
        Self {
            clock,
            store,
            sink,
            dispatcher,
            registry,
            active: Mutex::new(BTreeMap::new()),
            eval_interval: Duration::from_secs(15),
        }
    }

    pub fn now(&self) -> TimestampMs {
        self.clock.now_ms()
    }

    /// An hour-long silence by alice from now on `name="value"`, without a comment.
    pub fn silence_from_now(&self, name: &str, value: &str) -> SilenceInput {
        SilenceInput {
            id: None,
            matchers: vec![SilenceMatcher {
                name: name.into(),
                value: value.into(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at_ms: self.now(),
            ends_at_ms: self.now() + 3_600_000,
            created_by: "alice".into(),
            comment: "".into(),
        }
    }

    /// Starts (or keeps) an alert firing, sent at once like a rule evaluation would.
    pub async fn fire(&self, labels: &[(&str, &str)]) -> Labels {
        self.fire_since(labels, self.now()).await
    }

    pub async fn fire_since(&self, labels: &[(&str, &str)], starts_at: TimestampMs) -> Labels {
        let l = Labels::from_pairs(labels.iter().copied());
        let alert = Alert {
            labels: l.clone(),
            annotations: BTreeMap::from([("summary".to_string(), "something broke".to_string())]),
            active_at_ms: starts_at,
            starts_at_ms: starts_at,
            ends_at_ms: None,
            value: 1.0,
            generator_url: "http://rearguard/graph".into(),
        };
        self.active.lock().unwrap().insert(l.clone(), alert.clone());
        self.dispatcher.send_alerts(vec![alert]);
        self.dispatcher.sync().await;
        l
    }

    pub async fn resolve(&self, labels: &Labels) {
        let now = self.now();
        let alert = {
            let mut active = self.active.lock().unwrap();
            let a = active.get_mut(labels).expect("alert is active");
            a.ends_at_ms = Some(now);
            a.value = 0.0;
            a.clone()
        };
        self.dispatcher.send_alerts(vec![alert]);
        self.dispatcher.sync().await;
    }

    /// Advances simulated time, re-sending the active alerts every evaluation
    /// interval as rule evaluation does (resolved ones for 15 minutes).
    pub async fn advance(&self, d: Duration) {
        let end = self.now() + d.as_millis() as i64;
        loop {
            let step = (self.eval_interval.as_millis() as i64).min(end - self.now());
            if step <= 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(step as u64)).await;
            let now = self.now();
            let batch: Vec<Alert> = {
                let mut active = self.active.lock().unwrap();
                active.retain(|_, a| a.ends_at_ms.is_none_or(|e| now - e < 15 * 60_000));
                active.values().cloned().collect()
            };
            if !batch.is_empty() {
                self.dispatcher.send_alerts(batch);
            }
            self.dispatcher.sync().await;
        }
        // Let flushes due at exactly `end` run.
        tokio::task::yield_now().await;
        self.dispatcher.sync().await;
    }

    pub fn take(&self) -> Vec<(TimestampMs, Notification)> {
        std::mem::take(&mut *self.sink.got.lock().unwrap())
    }

    /// (seconds since T0-relative `since`, receiver, alertnames firing, alertnames resolved)
    pub fn take_summary(&self, since: TimestampMs) -> Vec<(i64, String, Vec<String>, Vec<String>)> {
        self.take()
            .into_iter()
            .map(|(t, n)| {
                let firing = n
                    .alerts
                    .iter()
                    .filter(|a| !a.is_resolved())
                    .map(alert_id)
                    .collect();
                let resolved = n
                    .alerts
                    .iter()
                    .filter(|a| a.is_resolved())
                    .map(alert_id)
                    .collect();
                ((t - since) / 1000, n.receiver, firing, resolved)
            })
            .collect()
    }
}

/// `alertname` plus `/instance` when it has one.
pub fn alert_id(a: &Alert) -> String {
    match a.labels.get("instance") {
        Some(i) => format!("{}/{}", a.name(), i),
        None => a.name().to_string(),
    }
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}
