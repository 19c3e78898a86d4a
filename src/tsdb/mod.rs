//! In-memory time series: samples keyed by label set, an inverted index for
//! label matchers, out-of-order rejection, Prometheus stale markers and a
//! retention window that bounds memory.
//!
//! Sources write through [`SampleSink`], so they do not depend on the store's
//! shape; the PromQL engine reads through [`Queryable`].

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};

use crate::clock::{Clock, TimestampMs};
use crate::labels::{Label, Labels, Sample};

mod chunk;
mod durable;
#[cfg(test)]
mod tests;
mod wal;

use chunk::Chunk;
pub use durable::{DurableOptions, ReplayReport};

/// Where sources write samples.
pub trait SampleSink: Send + Sync {
    /// Appends samples; out-of-order samples for a series are dropped.
    fn append(&self, samples: &[Sample]);
    /// Marks series as stale at `t` (the series stopped being produced), with
    /// Prometheus's stale-marker semantics.
    fn mark_stale(&self, series: &[Labels], t: TimestampMs);
}

/// A sink that drops everything (for tools that need none).
pub struct NullSink;

impl SampleSink for NullSink {
    fn append(&self, _: &[Sample]) {}
    fn mark_stale(&self, _: &[Labels], _: TimestampMs) {}
}

/// The bit pattern Prometheus uses for a staleness marker (a specific NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0000000000002;

/// The staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the staleness marker (not just any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A placeholder for a native histogram sample. rearguard stores no native
/// histograms; test loaders write this marker where a test file has one, so
/// the engine can refuse (or, where Prometheus ignores histograms, skip) it
/// instead of answering wrongly.
pub const NATIVE_HISTOGRAM_MARKER_BITS: u64 = 0x7ff0000000000003;

/// The native-histogram placeholder value.
pub fn native_histogram_marker() -> f64 {
    f64::from_bits(NATIVE_HISTOGRAM_MARKER_BITS)
}

/// Whether `v` is the native-histogram placeholder.
pub fn is_native_histogram_marker(v: f64) -> bool {
    v.to_bits() == NATIVE_HISTOGRAM_MARKER_BITS
}

/// The default retention: 6 hours.
pub const DEFAULT_RETENTION_MS: i64 = 6 * 3600 * 1000;

/// Samples per chunk: whole chunks are dropped when they leave the retention
/// window, so a series keeps at most one chunk of samples older than it.
const CHUNK_SAMPLES: usize = 120;

/// The samples of one series selected for a query, ascending by time.
/// Stale markers are included; the engine interprets them.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesData {
    pub labels: Labels,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// Read access for the PromQL engine.
pub trait Queryable: Send + Sync {
    /// Every series matching all `matchers`, with its samples in `[mint, maxt]`
    /// (both ends inclusive). Series without samples in the range may be omitted.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData>;
}

/// Why a sample was not appended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    #[error("out of order sample: {labels} at {t} is not after the newest sample at {newest}")]
    OutOfOrder {
        labels: Labels,
        t: TimestampMs,
        newest: TimestampMs,
    },
    #[error("duplicate sample for timestamp: {labels} at {t} already has a different value")]
    Duplicate { labels: Labels, t: TimestampMs },
    #[error("too old: {labels} at {t} is outside the retention window")]
    TooOld { labels: Labels, t: TimestampMs },
}

struct Series {
    labels: Labels,
    chunks: VecDeque<Chunk>,
}

impl Series {
    fn last(&self) -> Option<(i64, f64)> {
        self.chunks.back()?.last()
    }

    /// Appends after the newest sample (callers check the order).
    fn push(&mut self, t: i64, v: f64) {
        if self
            .chunks
            .back()
            .is_none_or(|c| c.len() >= CHUNK_SAMPLES || c.is_sealed())
        {
            if let Some(full) = self.chunks.back_mut() {
                full.seal();
            }
            self.chunks.push_back(Chunk::new());
        }
        if let Some(c) = self.chunks.back_mut() {
            c.append(t, v);
        }
    }

    /// Drops whole chunks whose newest sample is before `cutoff`.
    fn trim(&mut self, cutoff: i64) -> usize {
        let mut dropped = 0;
        while self
            .chunks
            .front()
            .is_some_and(|c| c.max_t().is_none_or(|t| t < cutoff))
        {
            if let Some(c) = self.chunks.pop_front() {
                dropped += c.len();
            }
        }
        dropped
    }

    fn sample_count(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    fn copy_range(&self, mint: i64, maxt: i64) -> (Vec<i64>, Vec<f64>) {
        let overlapping = || {
            self.chunks
                .iter()
                .filter(move |c| match (c.min_t(), c.max_t()) {
                    (Some(first), Some(last)) => last >= mint && first <= maxt,
                    _ => false,
                })
        };
        // At most every sample of the overlapping chunks: one allocation each,
        // short-lived (the engine drops them after the evaluation).
        let upper_bound: usize = overlapping().map(Chunk::len).sum();
        let mut ts = Vec::with_capacity(upper_bound);
        let mut vs = Vec::with_capacity(upper_bound);
        for c in overlapping() {
            c.decode_range_into(mint, maxt, &mut ts, &mut vs);
        }
        (ts, vs)
    }

    /// Inserts a sample anywhere in time (used by test loaders); replaces a
    /// sample at the same timestamp.
    fn insert_unordered(&mut self, t: i64, v: f64) {
        if self.last().is_none_or(|(lt, _)| lt < t) {
            self.push(t, v);
            return;
        }
        let (mut ts, mut vs) = self.copy_range(i64::MIN, i64::MAX);
        match ts.binary_search(&t) {
            Ok(i) => vs[i] = v,
            Err(i) => {
                ts.insert(i, t);
                vs.insert(i, v);
            }
        }
        self.chunks.clear();
        for (t, v) in ts.into_iter().zip(vs) {
            self.push(t, v);
        }
    }
}

type SeriesId = u32;

#[derive(Default)]
struct Inner {
    series: Vec<Option<Series>>,
    free: Vec<SeriesId>,
    by_labels: HashMap<Labels, SeriesId>,
    /// label name → label value → ascending series ids.
    postings: HashMap<Arc<str>, HashMap<Arc<str>, Vec<SeriesId>>>,
    live_series: usize,
    samples: usize,
    /// WAL records not yet written to disk; `None` when the tsdb is not
    /// durable.
    wal_buf: Option<Vec<u8>>,
}

impl Inner {
    /// Interns the label strings through the postings keys so that all series
    /// share one allocation per distinct name and value.
    fn intern(&self, labels: &Labels) -> Labels {
        let mut out: Vec<Label> = Vec::with_capacity(labels.len());
        for l in labels.iter() {
            let (name, value) = match self.postings.get_key_value(&l.name) {
                Some((n, values)) => (
                    n.clone(),
                    values
                        .get_key_value(&l.value)
                        .map(|(v, _)| v.clone())
                        .unwrap_or_else(|| l.value.clone()),
                ),
                None => (l.name.clone(), l.value.clone()),
            };
            out.push(Label { name, value });
        }
        Labels::from_sorted_labels(out)
    }

    fn get_or_create(&mut self, labels: &Labels) -> SeriesId {
        if let Some(&id) = self.by_labels.get(labels) {
            return id;
        }
        let labels = self.intern(labels);
        let series = Series {
            labels: labels.clone(),
            chunks: VecDeque::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = Some(series);
                id
            }
            None => {
                self.series.push(Some(series));
                (self.series.len() - 1) as SeriesId
            }
        };
        for l in labels.iter() {
            let list = self
                .postings
                .entry(l.name.clone())
                .or_default()
                .entry(l.value.clone())
                .or_default();
            let pos = list.partition_point(|&x| x < id);
            list.insert(pos, id);
        }
        if let Some(buf) = self.wal_buf.as_mut() {
            wal::put_series(buf, id, &labels);
        }
        self.by_labels.insert(labels, id);
        self.live_series += 1;
        id
    }

    fn remove(&mut self, id: SeriesId) {
        let Some(series) = self.series.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.samples -= series.sample_count();
        for l in series.labels.iter() {
            if let Some(values) = self.postings.get_mut(&l.name) {
                if let Some(list) = values.get_mut(&l.value) {
                    if let Ok(pos) = list.binary_search(&id) {
                        list.remove(pos);
                    }
                    if list.is_empty() {
                        values.remove(&l.value);
                    }
                }
                if values.is_empty() {
                    self.postings.remove(&l.name);
                }
            }
        }
        self.by_labels.remove(&series.labels);
        self.free.push(id);
        self.live_series -= 1;
    }

    fn append(&mut self, labels: &Labels, t: i64, v: f64, cutoff: i64) -> Result<(), AppendError> {
        if t < cutoff {
            return Err(AppendError::TooOld {
                labels: labels.clone(),
                t,
            });
        }
        let id = self.get_or_create(labels);
        let Some(series) = self.series[id as usize].as_mut() else {
            return Ok(());
        };
        if let Some((lt, lv)) = series.last() {
            if t < lt {
                return Err(AppendError::OutOfOrder {
                    labels: labels.clone(),
                    t,
                    newest: lt,
                });
            }
            if t == lt {
                if lv.to_bits() == v.to_bits() {
                    return Ok(());
                }
                return Err(AppendError::Duplicate {
                    labels: labels.clone(),
                    t,
                });
            }
        }
        series.push(t, v);
        if let Some(buf) = self.wal_buf.as_mut() {
            wal::put_sample(buf, id, t, v);
        }
        let dropped = series.trim(cutoff);
        self.samples = self.samples + 1 - dropped;
        Ok(())
    }

    /// Candidate series for `matchers` from the index: the intersection of the
    /// postings of every matcher that cannot match the empty string; all series
    /// when every matcher matches it. Candidates still need a full check.
    fn candidates(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        let mut result: Option<Vec<SeriesId>> = None;
        for m in matchers {
            if m.is_match("") {
                continue;
            }
            // The matcher's ids, borrowed from the index for `=`.
            let matched: Cow<'_, [SeriesId]> = match &m.op {
                MatchOp::Equal => Cow::Borrowed(
                    self.postings
                        .get(m.name.as_str())
                        .and_then(|vals| vals.get(m.value.as_str()))
                        .map_or(&[][..], Vec::as_slice),
                ),
                _ => {
                    let mut ids = Vec::new();
                    let mut lists = 0;
                    if let Some(vals) = self.postings.get(m.name.as_str()) {
                        for (value, list) in vals {
                            if m.is_match(value) {
                                ids.extend_from_slice(list);
                                lists += 1;
                            }
                        }
                    }
                    if lists > 1 {
                        ids.sort_unstable();
                        ids.dedup();
                    }
                    Cow::Owned(ids)
                }
            };
            let ids = match result {
                None => matched.into_owned(),
                Some(prev) => intersect_sorted(&prev, &matched),
            };
            if ids.is_empty() {
                return Vec::new();
            }
            result = Some(ids);
        }
        match result {
            Some(ids) => ids,
            None => (0..self.series.len() as SeriesId)
                .filter(|&id| self.series[id as usize].is_some())
                .collect(),
        }
    }
}

/// The ids in both ascending lists, ascending: a merge, linear in their
/// lengths.
fn intersect_sorted(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        match x.cmp(&y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(x);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Whether a label set satisfies every matcher (a missing label reads as "").
pub fn matches_all(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .all(|m| m.is_match(labels.get(&m.name).unwrap_or("")))
}

/// Counts of what the tsdb holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsdbStats {
    pub series: usize,
    pub samples: usize,
}

/// The in-memory tsdb. Share it as `Arc<Tsdb>`; all methods take `&self`.
pub struct Tsdb {
    inner: RwLock<Inner>,
    retention_ms: AtomicI64,
    series_gauge: prometheus::IntGauge,
    appended: prometheus::IntCounter,
    rejected: prometheus::IntCounter,
    /// The WAL writer of a durable tsdb (see `durable.rs`).
    writer: std::sync::Mutex<Option<durable::Writer>>,
    wal_damaged: prometheus::IntCounter,
    replay_done: std::sync::atomic::AtomicBool,
}

impl Default for Tsdb {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION_MS)
    }
}

impl Tsdb {
    /// A tsdb keeping samples for `retention_ms` behind the newest append
    /// (and behind `now` at each [`Tsdb::gc`]).
    pub fn new(retention_ms: i64) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            retention_ms: AtomicI64::new(retention_ms.max(1)),
            series_gauge: prometheus::IntGauge::new(
                "rearguard_tsdb_series",
                "Series currently held in the in-memory tsdb.",
            )
            .expect("valid metric"),
            appended: prometheus::IntCounter::new(
                "rearguard_tsdb_samples_appended_total",
                "Samples appended to the in-memory tsdb.",
            )
            .expect("valid metric"),
            rejected: prometheus::IntCounter::new(
                "rearguard_tsdb_samples_rejected_total",
                "Samples rejected by the in-memory tsdb (out of order, duplicate or too old).",
            )
            .expect("valid metric"),
            writer: std::sync::Mutex::new(None),
            wal_damaged: prometheus::IntCounter::new(
                "rearguard_tsdb_files_set_aside_total",
                "Truncated or corrupt tsdb files (WAL segments, checkpoints) found at startup and renamed *.corrupt.",
            )
            .expect("valid metric"),
            // An in-memory tsdb has nothing to replay.
            replay_done: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Registers `rearguard_tsdb_series`, `rearguard_tsdb_samples_appended_total`
    /// and `rearguard_tsdb_samples_rejected_total`.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.series_gauge.clone()))?;
        registry.register(Box::new(self.appended.clone()))?;
        registry.register(Box::new(self.rejected.clone()))?;
        registry.register(Box::new(self.wal_damaged.clone()))?;
        Ok(())
    }

    pub fn retention_ms(&self) -> i64 {
        self.retention_ms.load(Ordering::Relaxed)
    }

    /// Changes the retention (config reload); takes effect at the next append or gc.
    pub fn set_retention_ms(&self, retention_ms: i64) {
        self.retention_ms
            .store(retention_ms.max(1), Ordering::Relaxed);
    }

    /// Calls [`Tsdb::gc`] every `every` (by `clock`) until `shutdown` turns true.
    pub async fn run_gc(
        self: Arc<Self>,
        clock: Clock,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let every_ms = every.as_millis().max(1) as i64;
        loop {
            let next = clock.now_ms() + every_ms;
            tokio::select! {
                _ = clock.sleep_until_ms(next) => self.gc(clock.now_ms()),
                r = shutdown.wait_for(|stop| *stop) => {
                    let _ = r;
                    return;
                }
            }
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one sample. Rejects samples older than the newest one of the
    /// series, a different value at the same timestamp, and samples older than
    /// the retention window behind that newest sample. An identical duplicate is
    /// accepted and ignored.
    pub fn append_sample(&self, labels: &Labels, t: i64, v: f64) -> Result<(), AppendError> {
        let mut inner = self.write();
        let cutoff = Self::cutoff_for(&inner, labels, t, self.retention_ms());
        let r = inner.append(labels, t, v, cutoff);
        self.account(&inner, usize::from(r.is_ok()), usize::from(r.is_err()));
        r
    }

    fn cutoff_for(inner: &Inner, labels: &Labels, t: i64, retention: i64) -> i64 {
        let newest = inner
            .by_labels
            .get(labels)
            .and_then(|&id| inner.series[id as usize].as_ref())
            .and_then(Series::last)
            .map_or(t, |(lt, _)| lt.max(t));
        newest.saturating_sub(retention)
    }

    fn account(&self, inner: &Inner, ok: usize, failed: usize) {
        self.appended.inc_by(ok as u64);
        self.rejected.inc_by(failed as u64);
        self.series_gauge.set(inner.live_series as i64);
    }

    /// Appends many samples under one lock; returns how many were rejected.
    pub fn append_batch(&self, samples: &[Sample]) -> usize {
        let mut inner = self.write();
        let mut failed = 0;
        for s in samples {
            let cutoff = Self::cutoff_for(&inner, &s.labels, s.timestamp_ms, self.retention_ms());
            if inner
                .append(&s.labels, s.timestamp_ms, s.value, cutoff)
                .is_err()
            {
                failed += 1;
            }
        }
        self.account(&inner, samples.len() - failed, failed);
        failed
    }

    /// Inserts a sample at any time, replacing one at the same timestamp.
    /// For test loaders (`load` blocks are additive and may go back in time);
    /// sources use [`Tsdb::append_sample`].
    pub fn insert_unordered(&self, labels: &Labels, t: i64, v: f64) {
        let mut inner = self.write();
        let id = inner.get_or_create(labels);
        if let Some(series) = inner.series[id as usize].as_mut() {
            let before = series.sample_count();
            series.insert_unordered(t, v);
            let after = series.sample_count();
            inner.samples = inner.samples + after - before;
        }
        self.account(&inner, 1, 0);
    }

    /// Writes a stale marker at `t` for each given series that exists, whose
    /// newest sample is before `t` and is not already a stale marker.
    pub fn mark_stale_at(&self, series: &[Labels], t: TimestampMs) {
        let mut guard = self.write();
        let inner = &mut *guard;
        let mut n = 0;
        for labels in series {
            let Some(&id) = inner.by_labels.get(labels) else {
                continue;
            };
            let Some(s) = inner.series[id as usize].as_mut() else {
                continue;
            };
            match s.last() {
                Some((lt, lv)) if lt < t && !is_stale_nan(lv) => {
                    s.push(t, stale_nan());
                    if let Some(buf) = inner.wal_buf.as_mut() {
                        wal::put_sample(buf, id, t, stale_nan());
                    }
                    n += 1;
                }
                _ => {}
            }
        }
        inner.samples += n;
        self.account(inner, n, 0);
    }

    /// Drops samples older than `now_ms - retention` (whole chunks) and series
    /// left without samples. Call it periodically.
    pub fn gc(&self, now_ms: TimestampMs) {
        let cutoff = now_ms.saturating_sub(self.retention_ms());
        let mut inner = self.write();
        let mut empty = Vec::new();
        let mut dropped = 0;
        for (id, slot) in inner.series.iter_mut().enumerate() {
            if let Some(s) = slot {
                dropped += s.trim(cutoff);
                if s.chunks.is_empty() {
                    empty.push(id as SeriesId);
                }
            }
        }
        inner.samples -= dropped;
        for id in empty {
            inner.remove(id);
        }
        self.series_gauge.set(inner.live_series as i64);
    }

    /// Drops everything (test loaders' `clear`).
    pub fn clear(&self) {
        let mut inner = self.write();
        let durable = inner.wal_buf.is_some();
        *inner = Inner::default();
        if durable {
            inner.wal_buf = Some(Vec::new());
        }
        drop(inner);
        self.series_gauge.set(0);
    }

    pub fn stats(&self) -> TsdbStats {
        let inner = self.read();
        TsdbStats {
            series: inner.live_series,
            samples: inner.samples,
        }
    }

    /// Bytes of encoded samples held (chunk payloads; excludes labels,
    /// index and per-chunk headers).
    pub fn encoded_sample_bytes(&self) -> usize {
        let inner = self.read();
        inner
            .series
            .iter()
            .flatten()
            .flat_map(|s| s.chunks.iter())
            .map(Chunk::encoded_len)
            .sum()
    }

    /// The label sets of all series matching `matchers` (any time).
    pub fn series_labels(&self, matchers: &[Matcher]) -> Vec<Labels> {
        let inner = self.read();
        inner
            .candidates(matchers)
            .into_iter()
            .filter_map(|id| inner.series[id as usize].as_ref())
            .filter(|s| matches_all(&s.labels, matchers))
            .map(|s| s.labels.clone())
            .collect()
    }
}

impl Queryable for Tsdb {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData> {
        let inner = self.read();
        let mut out = Vec::new();
        for id in inner.candidates(matchers) {
            let Some(s) = inner.series[id as usize].as_ref() else {
                continue;
            };
            if !matches_all(&s.labels, matchers) {
                continue;
            }
            let (timestamps, values) = s.copy_range(mint, maxt);
            if timestamps.is_empty() {
                continue;
            }
            out.push(SeriesData {
                labels: s.labels.clone(),
                timestamps,
                values,
            });
        }
        out
    }
}

impl SampleSink for Tsdb {
    fn append(&self, samples: &[Sample]) {
        self.append_batch(samples);
    }

    fn mark_stale(&self, series: &[Labels], t: TimestampMs) {
        self.mark_stale_at(series, t);
    }
}

impl<T: Queryable + ?Sized> Queryable for Arc<T> {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData> {
        (**self).select(matchers, mint, maxt)
    }
}
