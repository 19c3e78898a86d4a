//! In-memory time series (the rules issue builds the full store and index).
//! Sources write through [`SampleSink`], so they do not depend on the store's shape.

use crate::clock::TimestampMs;
use crate::labels::{Labels, Sample};

/// Where sources write samples.
pub trait SampleSink: Send + Sync {
    /// Appends samples; out-of-order samples for a series are dropped.
    fn append(&self, samples: &[Sample]);
    /// Marks series as stale at `t` (the series stopped being produced), with
    /// Prometheus's stale-marker semantics.
    fn mark_stale(&self, series: &[Labels], t: TimestampMs);
}

/// A sink that drops everything (until the tsdb exists, and for tools that need none).
pub struct NullSink;

impl SampleSink for NullSink {
    fn append(&self, _: &[Sample]) {}
    fn mark_stale(&self, _: &[Labels], _: TimestampMs) {}
}
