//! Whether each probe-less source (Cloud Monitoring, Cloud Logging, Cloud
//! Run, remote query sources) still sees: `rearguard_source_up{kind,name}`,
//! 1 while a poll succeeded within two intervals, else 0. Every poll runs
//! under a deadline of its own, so a call that hangs (not only one that
//! fails) turns the source down. The value is also written into the tsdb as
//! a sample, because rules (`RearguardSourceDown`) only see the tsdb.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntGaugeVec, Opts, Registry};

use crate::clock::{Clock, TimestampMs};
use crate::labels::{Labels, Sample, METRIC_NAME};
use crate::rules::querier::{Querier, QueryError};
use crate::tsdb::SampleSink;

/// The gauge's (and the series') name.
pub const SOURCE_UP: &str = "rearguard_source_up";

/// The `kind` label of each source.
pub mod kind {
    pub const CLOUD_MONITORING: &str = "cloud_monitoring";
    pub const CLOUD_LOGGING: &str = "cloud_logging";
    pub const CLOUD_RUN: &str = "cloud_run";
    pub const QUERY_SOURCE: &str = "query_source";
}

/// How long a source may go without a successful poll, and how long one
/// poll may take before it is abandoned: two intervals (one failed poll is
/// tolerated; the second makes the source down).
pub fn poll_deadline(interval: Duration) -> Duration {
    interval * 2
}

/// Whether a source is up at `now_ms`: a poll succeeded less than `deadline`
/// ago. A source that never succeeded counts from when it started, so a
/// fresh start is not "down" before it had a chance.
pub fn is_up(
    last_success_ms: Option<TimestampMs>,
    started_ms: TimestampMs,
    now_ms: TimestampMs,
    deadline: Duration,
) -> bool {
    now_ms - last_success_ms.unwrap_or(started_ms) < deadline.as_millis() as i64
}

struct Inner {
    gauge: IntGaugeVec,
    sink: Arc<dyn SampleSink>,
    clock: Clock,
}

/// Where source health goes: the gauge and the tsdb. Cheap to clone; the
/// default reports nowhere (tests of a single source).
#[derive(Clone, Default)]
pub struct SourceHealth(Option<Arc<Inner>>);

impl SourceHealth {
    pub fn register(
        registry: &Registry,
        sink: Arc<dyn SampleSink>,
        clock: Clock,
    ) -> Result<Self, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                SOURCE_UP,
                "1 while a poll of the source succeeded within two of its intervals, else 0 (rearguard is blind to it)",
            ),
            &["kind", "name"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Self(Some(Arc::new(Inner { gauge, sink, clock }))))
    }

    /// Sets the gauge and writes the sample `rearguard_source_up{kind,name}`.
    pub fn report(&self, kind: &str, name: &str, up: bool) {
        let Some(inner) = &self.0 else { return };
        inner.gauge.with_label_values(&[kind, name]).set(up as i64);
        inner.sink.append(&[Sample {
            labels: Labels::from_pairs([(METRIC_NAME, SOURCE_UP), ("kind", kind), ("name", name)]),
            timestamp_ms: inner.clock.now_ms(),
            value: if up { 1.0 } else { 0.0 },
        }]);
    }

    /// Forgets a source that was removed from the config.
    pub fn forget(&self, kind: &str, name: &str) {
        if let Some(inner) = &self.0 {
            let _ = inner.gauge.remove_label_values(&[kind, name]);
        }
    }
}

/// Runs the polls of one source under their deadline and reports its health.
pub struct PollTracker {
    kind: &'static str,
    name: String,
    deadline: Duration,
    started_ms: TimestampMs,
    last_success_ms: Option<TimestampMs>,
    up: bool,
    clock: Clock,
    health: SourceHealth,
}

impl PollTracker {
    pub fn new(
        kind: &'static str,
        name: impl Into<String>,
        interval: Duration,
        clock: Clock,
        health: SourceHealth,
    ) -> Self {
        Self {
            kind,
            name: name.into(),
            deadline: poll_deadline(interval),
            started_ms: clock.now_ms(),
            last_success_ms: None,
            up: true,
            clock,
            health,
        }
    }

    /// Runs one poll, abandoning it at the deadline; logs a failure or a
    /// hang, and reports whether the source is up. Returns the poll's value
    /// when it succeeded.
    pub async fn poll<T, E: Display>(
        &mut self,
        poll: impl Future<Output = Result<T, E>>,
    ) -> Option<T> {
        let result = match tokio::time::timeout(self.deadline, poll).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(kind = self.kind, source = %self.name, error = %e, "poll failed");
                None
            }
            Err(_) => {
                tracing::warn!(
                    kind = self.kind,
                    source = %self.name,
                    deadline_s = self.deadline.as_secs(),
                    "poll did not finish within its deadline (the API hangs); abandoned"
                );
                None
            }
        };
        self.finish(result.is_some());
        result
    }

    /// Records the end of a poll (or query) and reports the health.
    pub fn finish(&mut self, succeeded: bool) {
        if succeeded {
            self.last_success_ms = Some(self.clock.now_ms());
        }
        self.report();
    }

    /// How long one poll may take.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Reports the current health (also between polls).
    pub fn report(&mut self) {
        let up = is_up(
            self.last_success_ms,
            self.started_ms,
            self.clock.now_ms(),
            self.deadline,
        );
        if up != self.up {
            if up {
                tracing::info!(kind = self.kind, source = %self.name, "source is up again");
            } else {
                tracing::error!(
                    kind = self.kind,
                    source = %self.name,
                    deadline_s = self.deadline.as_secs(),
                    "source is down: no poll succeeded within its deadline; rearguard is blind to it"
                );
            }
            self.up = up;
        }
        self.health.report(self.kind, &self.name, up);
    }
}

impl Drop for PollTracker {
    fn drop(&mut self) {
        self.health.forget(self.kind, &self.name);
    }
}

/// A remote query source (`query_sources:`) whose queries are its polls:
/// each runs under the deadline (two evaluation intervals), and the source is
/// down when none succeeded within it.
pub struct WatchedQuerier {
    inner: Arc<dyn Querier>,
    name: String,
    deadline: Duration,
    tracker: std::sync::Mutex<PollTracker>,
}

impl WatchedQuerier {
    pub fn new(
        name: &str,
        inner: Arc<dyn Querier>,
        evaluation_interval: Duration,
        clock: Clock,
        health: SourceHealth,
    ) -> Self {
        let tracker =
            PollTracker::new(kind::QUERY_SOURCE, name, evaluation_interval, clock, health);
        Self {
            inner,
            name: name.to_string(),
            deadline: tracker.deadline(),
            tracker: std::sync::Mutex::new(tracker),
        }
    }
}

#[async_trait::async_trait]
impl Querier for WatchedQuerier {
    async fn query(&self, expr: &str, t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError> {
        let result = match tokio::time::timeout(self.deadline, self.inner.query(expr, t_ms)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    kind = kind::QUERY_SOURCE,
                    source = %self.name,
                    deadline_s = self.deadline.as_secs(),
                    "query did not finish within its deadline (the source hangs); abandoned"
                );
                Err(QueryError(format!(
                    "query source {} did not answer within {}s",
                    self.name,
                    self.deadline.as_secs()
                )))
            }
        };
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finish(result.is_ok());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_within_the_deadline_counting_from_the_start() {
        let d = Duration::from_secs(120);
        assert!(is_up(None, 0, 119_000, d));
        assert!(!is_up(None, 0, 120_000, d));
        assert!(is_up(Some(100_000), 0, 219_999, d));
        assert!(!is_up(Some(100_000), 0, 220_000, d));
        assert_eq!(poll_deadline(Duration::from_secs(60)), d);
    }

    #[derive(Default)]
    struct Written(std::sync::Mutex<Vec<Sample>>);

    impl SampleSink for Written {
        fn append(&self, samples: &[Sample]) {
            self.0.lock().unwrap().extend_from_slice(samples);
        }
        fn mark_stale(&self, _: &[Labels], _: TimestampMs) {}
    }

    struct Hangs;

    #[async_trait::async_trait]
    impl Querier for Hangs {
        async fn query(&self, _: &str, _: TimestampMs) -> Result<Vec<Sample>, QueryError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_source_that_hangs_goes_down() {
        let clock = Clock::starting_at(0);
        let registry = Registry::new();
        let db = Arc::new(Written::default());
        let health = SourceHealth::register(&registry, db.clone(), clock.clone()).unwrap();
        let q = WatchedQuerier::new(
            "gmp",
            Arc::new(Hangs),
            Duration::from_secs(15),
            clock.clone(),
            health,
        );
        let err = q.query("up", 0).await.unwrap_err();
        assert!(err.0.contains("gmp did not answer within 30s"), "{err}");
        assert_eq!(clock.now_ms(), 30_000);
        let written = db.0.lock().unwrap().clone();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].value, 0.0);
        assert_eq!(written[0].labels.get("kind"), Some(kind::QUERY_SOURCE));
        assert_eq!(written[0].labels.get("name"), Some("gmp"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_poll_is_abandoned_and_the_source_goes_down() {
        let clock = Clock::starting_at(0);
        let registry = Registry::new();
        let db = Arc::new(Written::default());
        let health = SourceHealth::register(&registry, db.clone(), clock.clone()).unwrap();
        let mut t = PollTracker::new(
            kind::CLOUD_MONITORING,
            "req",
            Duration::from_secs(60),
            clock.clone(),
            health,
        );
        let gauge = |r: &Registry| {
            r.gather()
                .iter()
                .find(|f| f.name() == SOURCE_UP)
                .map(|f| f.get_metric()[0].get_gauge().get_value())
        };
        assert_eq!(t.poll(async { Ok::<_, String>(1) }).await, Some(1));
        assert_eq!(gauge(&registry), Some(1.0));
        // Hangs forever: abandoned after 120 s, and the last success is
        // then 120 s old: down.
        let hang = std::future::pending::<Result<(), String>>();
        assert_eq!(t.poll(hang).await, None);
        assert_eq!(clock.now_ms(), 120_000);
        assert_eq!(gauge(&registry), Some(0.0));
        // The rules see the same in the tsdb.
        let written: Vec<(TimestampMs, f64, Option<String>)> =
            db.0.lock()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s.timestamp_ms,
                        s.value,
                        s.labels.get("kind").map(str::to_string),
                    )
                })
                .collect();
        assert_eq!(
            written,
            [
                (0, 1.0, Some("cloud_monitoring".to_string())),
                (120_000, 0.0, Some("cloud_monitoring".to_string()))
            ]
        );
        assert_eq!(
            db.0.lock().unwrap()[1].labels.get(METRIC_NAME),
            Some(SOURCE_UP)
        );
    }
}
