//! `cloud_monitoring:` entries: one metric type each, pulled with
//! `timeSeries.list` on an interval and written as Google Managed Prometheus
//! names them. Every poll re-reads an overlap window (points arrive minutes
//! late) and skips points whose end time it has already taken, per series;
//! that state is persisted so a restart counts nothing twice.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::TimestampMs;
use crate::config::gcp::CloudMonitoringConfig;
use crate::gcp::monitoring::{Aggregation, ListTimeSeries, TimeSeries};
use crate::gcp::{GcpContext, GcpError};
use crate::labels::{Labels, LabelsBuilder, Sample, METRIC_NAME};
use crate::source::health::kind;
use crate::store::gcp::KIND_MONITORING;

pub use super::poll::GcpSourceDeps;
use super::poll::{PolledSource, SourcePolls};

/// `run.googleapis.com/request_count` → `run_googleapis_com:request_count`
/// (Google Managed Prometheus's naming of Google Cloud metrics).
pub fn gmp_metric_name(metric_type: &str) -> String {
    let (domain, path) = metric_type.split_once('/').unwrap_or(("", metric_type));
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let name = if domain.is_empty() {
        clean(path)
    } else {
        format!("{}:{}", clean(domain), clean(path))
    };
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{name}")
    } else {
        name
    }
}

fn label_name(s: &str) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert(0, '_');
    }
    n
}

/// The labels of a series: resource labels, metric labels (prefixed `metric_`
/// when a resource label has the same name), and `monitored_resource`.
pub fn series_labels(ts: &TimeSeries) -> LabelsBuilder {
    let mut b = LabelsBuilder::new();
    for (k, v) in &ts.resource.labels {
        b.insert(label_name(k), v);
    }
    for (k, v) in &ts.metric.labels {
        let name = label_name(k);
        if ts.resource.labels.contains_key(k) || name == "monitored_resource" || name == METRIC_NAME
        {
            b.insert(format!("metric_{name}"), v);
        } else {
            b.insert(name, v);
        }
    }
    b.insert("monitored_resource", &ts.resource.type_);
    b
}

/// Prometheus's formatting of an `le` bound.
pub fn format_le(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v != 0.0 && (v.abs() >= 1e21 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Per series: the newest point end time taken, and the running totals of the
/// counters built from it (keyed by sub-series: "" for a value, `le` bounds, `sum`, `count`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    pub last_end_ms: TimestampMs,
    #[serde(default)]
    pub totals: BTreeMap<String, f64>,
}

/// What a monitoring source persists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitoringState {
    /// Keyed by the series' label set (as text).
    pub series: BTreeMap<String, SeriesState>,
}

/// Series unseen this long are forgotten.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;
const MAX_PAGES: usize = 100;

/// One `cloud_monitoring:` entry.
pub struct CloudMonitoringSource {
    cfg: CloudMonitoringConfig,
    ctx: GcpContext,
    deps: GcpSourceDeps,
    state: MonitoringState,
    /// The metric kind, learned when an aggregation needs a default aligner.
    kind: Option<String>,
}

impl CloudMonitoringSource {
    /// Loads the persisted state of this entry (a broken one is logged and dropped).
    pub async fn load(cfg: CloudMonitoringConfig, ctx: GcpContext, deps: GcpSourceDeps) -> Self {
        let state = match deps.store.gcp_state(KIND_MONITORING, &cfg.name).await {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(source = %cfg.name, error = %e, "stored cloud_monitoring state unreadable; starting afresh");
                MonitoringState::default()
            }),
            Ok(None) => MonitoringState::default(),
            Err(e) => {
                tracing::warn!(source = %cfg.name, error = %e, "cannot read cloud_monitoring state; starting afresh");
                MonitoringState::default()
            }
        };
        Self {
            cfg,
            ctx,
            deps,
            state,
            kind: None,
        }
    }

    pub fn state(&self) -> &MonitoringState {
        &self.state
    }

    fn filter(&self) -> String {
        series_filter(&self.cfg.metric, self.cfg.filter.as_deref())
    }

    /// The aggregation to send, with a default aligner for the metric's kind.
    async fn aggregation(
        &mut self,
        query: &ListTimeSeries,
    ) -> Result<Option<Aggregation>, GcpError> {
        let Some(a) = &self.cfg.aggregation else {
            return Ok(None);
        };
        let period = a
            .alignment_period
            .map(Duration::from)
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_secs(60));
        let aligner = match &a.per_series_aligner {
            Some(al) => al.clone(),
            None => {
                if self.kind.is_none() {
                    let headers = ListTimeSeries {
                        headers_only: true,
                        page_size: 1,
                        ..query.clone()
                    };
                    let page = self.ctx.monitoring.list_page(&headers, None).await?;
                    self.kind = page.time_series.first().map(|t| t.metric_kind.clone());
                }
                default_aligner(self.kind.as_deref()).to_string()
            }
        };
        Ok(Some(Aggregation {
            alignment_period: period,
            per_series_aligner: Some(aligner),
            cross_series_reducer: a.cross_series_reducer.clone(),
            group_by_fields: a.group_by_fields.clone(),
        }))
    }

    /// One poll: reads the overlap window, writes new points, persists the state
    /// (before writing samples, so a crash between the two cannot count twice).
    /// Returns the samples written.
    pub async fn poll_once(&mut self) -> Result<usize, GcpError> {
        let now = self.deps.clock.now_ms();
        let window = self
            .cfg
            .overlap
            .as_millis()
            .max(self.cfg.interval.as_millis());
        let mut query = ListTimeSeries {
            name: format!("projects/{}", self.ctx.project),
            filter: self.filter(),
            start: crate::clock::to_datetime(now - window),
            end: crate::clock::to_datetime(now),
            aggregation: None,
            headers_only: false,
            page_size: 1000,
        };
        query.aggregation = self.aggregation(&query).await?;
        if let Some(a) = &query.aggregation {
            let lag = if a
                .per_series_aligner
                .as_deref()
                .is_some_and(is_summing_aligner)
            {
                self.cfg.ingestion_lag.as_millis()
            } else {
                0
            };
            let (start, end) =
                aligned_window(now, window, a.alignment_period.as_millis() as i64, lag);
            query.start = crate::clock::to_datetime(start);
            query.end = crate::clock::to_datetime(end);
        }
        let list = self.ctx.monitoring.list_all(&query, MAX_PAGES).await?;
        if let Some(why) = &list.incomplete {
            // Taking part of a period would mark it read: the rest would never
            // count. Nothing is taken; the next poll reads the window again.
            self.ctx
                .client
                .metrics()
                .partial_results
                .with_label_values(&["cloud_monitoring", &self.cfg.name])
                .inc();
            tracing::warn!(source = %self.cfg.name, reason = %why, "timeSeries.list answer may be incomplete; nothing taken this poll");
            return Ok(0);
        }
        let series = list.series;
        let mut samples = Vec::new();
        for ts in &series {
            if let Err(e) = convert(ts, &mut self.state, &mut samples) {
                tracing::warn!(source = %self.cfg.name, metric = %ts.metric.type_, error = %e, "series skipped");
            }
        }
        self.state
            .series
            .retain(|_, s| now - s.last_end_ms < FORGET_AFTER_MS);
        match serde_json::to_string(&self.state) {
            Ok(text) => {
                if let Err(e) = self
                    .deps
                    .store
                    .put_gcp_state(KIND_MONITORING, &self.cfg.name, now, text)
                    .await
                {
                    tracing::warn!(source = %self.cfg.name, error = %e, "cannot persist cloud_monitoring state");
                }
            }
            Err(e) => {
                tracing::warn!(source = %self.cfg.name, error = %e, "cannot encode cloud_monitoring state")
            }
        }
        samples.sort_by_key(|s| s.timestamp_ms);
        self.deps.sink.append(&samples);
        Ok(samples.len())
    }
}

/// Aligners whose value for a period grows as late points arrive: a period
/// read before all its points are in would be taken short.
pub fn is_summing_aligner(aligner: &str) -> bool {
    matches!(
        aligner,
        "ALIGN_DELTA"
            | "ALIGN_SUM"
            | "ALIGN_RATE"
            | "ALIGN_COUNT"
            | "ALIGN_COUNT_TRUE"
            | "ALIGN_COUNT_FALSE"
    )
}

/// The `(start, end)` of an aligned query: both on multiples of the period, so
/// every poll asks for the same periods (Monitoring ends the aligned periods at
/// the interval's end time; a moving end would give overlapping periods that
/// count the same points twice), and the end at least `lag_ms` old, so the
/// newest period taken is no longer filling.
pub fn aligned_window(
    now: TimestampMs,
    window_ms: i64,
    period_ms: i64,
    lag_ms: i64,
) -> (TimestampMs, TimestampMs) {
    let period = period_ms.max(1);
    let end = (now - lag_ms).div_euclid(period) * period;
    let start = (end - window_ms.max(period)).div_euclid(period) * period;
    (start, end)
}

/// The aligner used when an aggregation names none.
pub fn default_aligner(kind: Option<&str>) -> &'static str {
    match kind {
        Some("GAUGE") => "ALIGN_MEAN",
        // DELTA and CUMULATIVE (and distributions): the change per period, summed into a counter.
        _ => "ALIGN_DELTA",
    }
}

/// Converts the new points of one series into samples, updating its state.
pub fn convert(
    ts: &TimeSeries,
    state: &mut MonitoringState,
    out: &mut Vec<Sample>,
) -> Result<(), String> {
    let name = gmp_metric_name(&ts.metric.type_);
    let base = series_labels(ts);
    let key = base.clone().build().to_string();
    let kind = ts.metric_kind.as_str();
    let is_new = !state.series.contains_key(&key);
    let st = state.series.entry(key.clone()).or_default();
    let mut points: Vec<_> = ts.points.iter().collect();
    points.sort_by_key(|p| p.interval.end_time);
    let labels = |metric: &str, extra: Option<(&str, &str)>| -> Labels {
        let mut b = base.clone().set(METRIC_NAME, metric);
        if let Some((k, v)) = extra {
            b.insert(k, v);
        }
        b.build()
    };
    let mut first = is_new;
    for p in points {
        let end = p.interval.end_time.timestamp_millis();
        if end <= st.last_end_ms {
            continue;
        }
        let start_ms = p.interval.start_time.map(|t| t.timestamp_millis());
        if let Some(d) = &p.value.distribution_value {
            let bounds = match &d.bucket_options {
                Some(o) => o.upper_bounds()?,
                None => Vec::new(),
            };
            let mut cum = 0.0;
            let mut parts: Vec<(String, f64)> = Vec::with_capacity(bounds.len() + 3);
            for (i, ub) in bounds.iter().enumerate() {
                cum += d.bucket_counts.get(i).copied().unwrap_or(0) as f64;
                parts.push((format!("le={}", format_le(*ub)), cum));
            }
            parts.push(("le=+Inf".into(), d.count as f64));
            parts.push(("sum".into(), d.mean * d.count as f64));
            parts.push(("count".into(), d.count as f64));
            let delta = kind == "DELTA";
            for (part, v) in parts {
                let (metric, extra) = match part.strip_prefix("le=") {
                    Some(le) => (format!("{name}_bucket"), Some(("le", le.to_string()))),
                    None => (format!("{name}_{part}"), None),
                };
                let l = labels(&metric, extra.as_ref().map(|(k, v)| (*k, v.as_str())));
                let total = st.totals.entry(part).or_insert(0.0);
                if delta {
                    if first {
                        push_zero(out, &l, start_ms, end);
                    }
                    // A NaN or infinite delta would poison the running total for good.
                    if v.is_finite() {
                        *total += v;
                    }
                } else {
                    *total = v;
                }
                out.push(Sample {
                    labels: l,
                    timestamp_ms: end,
                    value: *total,
                });
            }
        } else if let Some(v) = p.value.as_f64() {
            let l = labels(&name, None);
            let value = if kind == "DELTA" {
                if first {
                    push_zero(out, &l, start_ms, end);
                }
                let total = st.totals.entry(String::new()).or_insert(0.0);
                // A NaN or infinite delta would poison the running total for good.
                if v.is_finite() {
                    *total += v;
                }
                *total
            } else {
                v
            };
            out.push(Sample {
                labels: l,
                timestamp_ms: end,
                value,
            });
        } else {
            return Err(format!("value type {} is not numeric; only numbers, bools and distributions become samples", ts.value_type));
        }
        first = false;
        st.last_end_ms = end;
    }
    Ok(())
}

/// A counter built from deltas starts at 0 at the start of its first interval,
/// so `increase()` sees its first point as an increase.
fn push_zero(
    out: &mut Vec<Sample>,
    labels: &Labels,
    start_ms: Option<TimestampMs>,
    end: TimestampMs,
) {
    if let Some(s) = start_ms.filter(|s| *s < end) {
        out.push(Sample {
            labels: labels.clone(),
            timestamp_ms: s,
            value: 0.0,
        });
    }
}

/// Runs every `cloud_monitoring:` entry; `apply` changes the set on reload.
pub type CloudMonitoringManager = SourcePolls<CloudMonitoringSource>;

impl PolledSource for CloudMonitoringSource {
    type Config = CloudMonitoringConfig;
    type Shared = ();
    type Polled = usize;
    const KIND: &'static str = kind::CLOUD_MONITORING;

    fn name(cfg: &CloudMonitoringConfig) -> &str {
        &cfg.name
    }

    fn interval(cfg: &CloudMonitoringConfig) -> Duration {
        cfg.interval.into()
    }

    async fn load(cfg: CloudMonitoringConfig, ctx: GcpContext, deps: GcpSourceDeps, _: ()) -> Self {
        CloudMonitoringSource::load(cfg, ctx, deps).await
    }

    async fn poll_once(&mut self) -> Result<usize, GcpError> {
        CloudMonitoringSource::poll_once(self).await
    }
}

/// The `timeSeries.list` filter: the metric type, AND the user's filter.
pub fn series_filter(metric: &str, user: Option<&str>) -> String {
    let base = format!("metric.type = \"{metric}\"");
    match user.map(str::trim).filter(|f| !f.is_empty()) {
        // Always parenthesised: AND binds tighter than OR, and an OR may
        // hide without spaces around it (`a OR(b)`).
        Some(f) => format!("{base} AND ({f})"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_filter_keeps_its_precedence() {
        let m = "run.googleapis.com/request_count";
        assert_eq!(series_filter(m, None), format!("metric.type = \"{m}\""));
        assert_eq!(
            series_filter(m, Some("  ")),
            format!("metric.type = \"{m}\"")
        );
        assert_eq!(
            series_filter(m, Some("resource.labels.x = \"1\" OR(resource.labels.x = \"2\")")),
            format!("metric.type = \"{m}\" AND (resource.labels.x = \"1\" OR(resource.labels.x = \"2\"))")
        );
    }

    #[test]
    fn gmp_names() {
        assert_eq!(
            gmp_metric_name("run.googleapis.com/request_count"),
            "run_googleapis_com:request_count"
        );
        assert_eq!(
            gmp_metric_name("run.googleapis.com/container/memory/utilizations"),
            "run_googleapis_com:container_memory_utilizations"
        );
        assert_eq!(format_le(0.005), "0.005");
        assert_eq!(format_le(1.0), "1");
        assert_eq!(format_le(f64::INFINITY), "+Inf");
    }

    fn ts(kind: &str, points: serde_json::Value) -> TimeSeries {
        serde_json::from_value(serde_json::json!({
            "metric": {"type": "run.googleapis.com/request_count", "labels": {"response_code_class": "5xx", "service_name": "m"}},
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": "backend", "revision_name": "backend-1"}},
            "metricKind": kind, "valueType": "INT64", "points": points
        }))
        .unwrap()
    }

    #[test]
    fn delta_points_accumulate_once() {
        let mut st = MonitoringState::default();
        let mut out = Vec::new();
        let p = |s: u32, v: &str| serde_json::json!({"interval": {"startTime": format!("2026-11-22T10:0{s}:00Z"), "endTime": format!("2026-11-22T10:0{}:00Z", s + 1)}, "value": {"int64Value": v}});
        // Newest first, as Google sends them.
        convert(
            &ts("DELTA", serde_json::json!([p(1, "3"), p(0, "2")])),
            &mut st,
            &mut out,
        )
        .unwrap();
        let vals: Vec<f64> = out.iter().map(|s| s.value).collect();
        assert_eq!(vals, vec![0.0, 2.0, 5.0]);
        let l = &out[1].labels;
        assert_eq!(l.metric_name(), Some("run_googleapis_com:request_count"));
        assert_eq!(l.get("monitored_resource"), Some("cloud_run_revision"));
        assert_eq!(l.get("service_name"), Some("backend"));
        assert_eq!(l.get("metric_service_name"), Some("m"));
        assert_eq!(l.get("response_code_class"), Some("5xx"));
        // The overlap re-read brings the same two points and a new one.
        out.clear();
        convert(
            &ts(
                "DELTA",
                serde_json::json!([p(2, "4"), p(1, "3"), p(0, "2")]),
            ),
            &mut st,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.iter().map(|s| s.value).collect::<Vec<_>>(), vec![9.0]);
    }

    #[test]
    fn aligned_windows_sit_on_period_boundaries_behind_the_lag() {
        let m = 60_000;
        // 10:06:30 with a 5m period and a 3m lag: the newest period taken ends at 10:00.
        let t = 1_800_000_000_000 + 6 * m + 30_000;
        let base = 1_800_000_000_000;
        assert_eq!(
            aligned_window(t, 10 * m, 5 * m, 3 * m),
            (base - 10 * m, base)
        );
        // A minute later the same periods are asked for.
        assert_eq!(
            aligned_window(t + m, 10 * m, 5 * m, 3 * m),
            (base - 10 * m, base)
        );
        // Without a lag the end is the last boundary.
        assert_eq!(
            aligned_window(t, 10 * m, 5 * m, 0),
            (base - 5 * m, base + 5 * m)
        );
        assert!(is_summing_aligner("ALIGN_DELTA") && !is_summing_aligner("ALIGN_MEAN"));
    }

    #[test]
    fn non_finite_points_do_not_poison_counters() {
        let mut st = MonitoringState::default();
        let mut out = Vec::new();
        let mut t = ts(
            "DELTA",
            serde_json::json!([
                {"interval": {"startTime": "2026-11-22T10:02:00Z", "endTime": "2026-11-22T10:03:00Z"}, "value": {"doubleValue": 2.0}},
                {"interval": {"startTime": "2026-11-22T10:01:00Z", "endTime": "2026-11-22T10:02:00Z"}, "value": {"doubleValue": "NaN"}},
                {"interval": {"startTime": "2026-11-22T10:00:00Z", "endTime": "2026-11-22T10:01:00Z"}, "value": {"doubleValue": 1.0}}
            ]),
        );
        t.value_type = "DOUBLE".into();
        convert(&t, &mut st, &mut out).unwrap();
        assert_eq!(out.last().unwrap().value, 3.0);
        // A gauge keeps the value as it is (Prometheus stores NaN and infinities).
        let mut out = Vec::new();
        let g = ts(
            "GAUGE",
            serde_json::json!([
                {"interval": {"endTime": "2026-11-22T10:01:00Z"}, "value": {"doubleValue": "Infinity"}}
            ]),
        );
        convert(&g, &mut MonitoringState::default(), &mut out).unwrap();
        assert_eq!(out[0].value, f64::INFINITY);
    }

    #[test]
    fn distributions_become_classic_histograms() {
        let mut st = MonitoringState::default();
        let mut out = Vec::new();
        let t: TimeSeries = serde_json::from_value(serde_json::json!({
            "metric": {"type": "run.googleapis.com/request_latencies"},
            "resource": {"type": "cloud_run_revision", "labels": {}},
            "metricKind": "DELTA", "valueType": "DISTRIBUTION",
            "points": [{"interval": {"startTime": "2026-11-22T10:00:00Z", "endTime": "2026-11-22T10:01:00Z"},
                "value": {"distributionValue": {"count": "4", "mean": 2.5,
                    "bucketOptions": {"explicitBuckets": {"bounds": [1, 5]}}, "bucketCounts": ["1", "3"]}}}]
        }))
        .unwrap();
        convert(&t, &mut st, &mut out).unwrap();
        let get = |name: &str, le: Option<&str>| {
            out.iter()
                .rfind(|s| s.labels.metric_name() == Some(name) && s.labels.get("le") == le)
                .map(|s| s.value)
        };
        assert_eq!(
            get("run_googleapis_com:request_latencies_bucket", Some("1")),
            Some(1.0)
        );
        assert_eq!(
            get("run_googleapis_com:request_latencies_bucket", Some("5")),
            Some(4.0)
        );
        assert_eq!(
            get("run_googleapis_com:request_latencies_bucket", Some("+Inf")),
            Some(4.0)
        );
        assert_eq!(
            get("run_googleapis_com:request_latencies_sum", None),
            Some(10.0)
        );
        assert_eq!(
            get("run_googleapis_com:request_latencies_count", None),
            Some(4.0)
        );
    }

    #[test]
    fn gauges_and_strings() {
        let mut st = MonitoringState::default();
        let mut out = Vec::new();
        let mut g = ts(
            "GAUGE",
            serde_json::json!([{"interval": {"endTime": "2026-11-22T10:01:00Z"}, "value": {"doubleValue": 0.25}}]),
        );
        convert(&g, &mut st, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, 0.25);
        g.points = vec![serde_json::from_value(serde_json::json!({"interval": {"endTime": "2026-11-22T10:02:00Z"}, "value": {"stringValue": "x"}})).unwrap()];
        assert!(convert(&g, &mut st, &mut out).is_err());
    }
}
