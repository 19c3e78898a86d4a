//! What the action runner asks of the rest of the daemon, as small traits the
//! daemon wires (rule manager, probe engine, dispatch time intervals, the
//! Cloud Run source's history, the tsdb). [`Unknown`] answers "nothing
//! known" to each, for tests; the daemon wires a real answer to every one
//! (`crate::adapters`), also where a part is absent (`NoCloudRun`).

use crate::alert::Alert;
use crate::clock::TimestampMs;
use crate::dispatch::notification::BoxFuture;

/// Whether an alert fires now, by fingerprint (the rule manager knows).
pub trait AlertState: Send + Sync {
    /// `Some(true)` firing, `Some(false)` not firing (resolved or gone),
    /// `None` when unknown (e.g. rules not restored yet).
    fn is_firing(&self, fingerprint: u64) -> Option<bool>;

    /// Like [`AlertState::is_firing`], by fresh evidence only: an alert held
    /// firing only because it was restored at start (not evaluated as firing
    /// since) is `None`, unknown. Verification asks this, so the restore hold,
    /// which exists to avoid false resolutions, never fails a good rollback.
    fn is_firing_fresh(&self, fingerprint: u64) -> Option<bool> {
        self.is_firing(fingerprint)
    }

    /// The alert's expression over its `for` window until `now_ms`, for the
    /// audit (JSON), or `None` when unknown. The default knows nothing.
    fn history<'a>(
        &'a self,
        _fingerprint: u64,
        _now_ms: TimestampMs,
    ) -> BoxFuture<'a, Option<serde_json::Value>> {
        Box::pin(async { None })
    }

    /// How far before each evaluation the alert's rule reads data (its
    /// longest range through recording rules, plus the sources' lag), or
    /// `None` when unknown. See [`super::judge::expr_lookback_ms`].
    fn lookback_ms(&self, _fingerprint: u64) -> Option<i64> {
        None
    }

    /// The series names the alert's rule reads (through recording rules),
    /// or `None` when unknown.
    fn evidence_metrics(&self, _fingerprint: u64) -> Option<std::collections::BTreeSet<String>> {
        None
    }

    /// The error of the last evaluation of the alert's rule, when it failed:
    /// an alert kept through a failing query is not evidence.
    fn rule_error(&self, _fingerprint: u64) -> Option<String> {
        None
    }
}

/// Requests a revision served over a time range, from the tsdb's
/// `run.googleapis.com/request_count`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RequestCount {
    pub total: f64,
    /// Those answered 5xx.
    pub errors: f64,
}

/// Counts requests of a revision (`service` and `revision` are short names).
pub trait RequestCounts: Send + Sync {
    /// `None` when no source reads request counts (the guard does not apply).
    fn requests<'a>(
        &'a self,
        service: &'a str,
        revision: &'a str,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> BoxFuture<'a, Option<RequestCount>>;
}

impl RequestCounts for Unknown {
    fn requests<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: TimestampMs,
        _: TimestampMs,
    ) -> BoxFuture<'a, Option<RequestCount>> {
        Box::pin(async { None })
    }
}

/// Runs a probe now and says whether it passed (the probe engine's `probe_now`).
pub trait ProbeCheck: Send + Sync {
    /// `Some(passed)`, or `None` when no probe has that name.
    fn check<'a>(&'a self, probe: &'a str) -> BoxFuture<'a, Option<bool>>;
}

/// Whether a named `time_intervals` entry is active at a time (dispatch's time intervals).
pub trait TimeIntervals: Send + Sync {
    fn is_active(&self, name: &str, at_ms: TimestampMs) -> bool;
}

/// One revision serving a service from `since_ms` (the Cloud Run source's traffic history).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServingPeriod {
    pub revision: String,
    pub since_ms: TimestampMs,
}

/// Which revisions served a service, oldest first.
pub trait ServingHistory: Send + Sync {
    fn serving_history<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Vec<ServingPeriod>>;
}

/// Extra evidence for the audit: the last log entries and the probe the alert
/// names (its series come from [`AlertState::history`]).
pub trait EvidenceSource: Send + Sync {
    fn collect<'a>(
        &'a self,
        alert: &'a Alert,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, serde_json::Value>;
}

/// The neutral default for every trait above, for tests: knows nothing.
pub struct Unknown;

impl AlertState for Unknown {
    fn is_firing(&self, _: u64) -> Option<bool> {
        None
    }
}

impl ProbeCheck for Unknown {
    fn check<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async { None })
    }
}

impl TimeIntervals for Unknown {
    fn is_active(&self, _: &str, _: TimestampMs) -> bool {
        false
    }
}

impl ServingHistory for Unknown {
    fn serving_history<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Vec<ServingPeriod>> {
        Box::pin(async { Vec::new() })
    }
}

impl EvidenceSource for Unknown {
    fn collect<'a>(&'a self, _: &'a Alert, _: Option<&'a str>) -> BoxFuture<'a, serde_json::Value> {
        Box::pin(async { serde_json::Value::Null })
    }
}
