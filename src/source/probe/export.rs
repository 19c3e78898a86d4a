//! Probe results as series: samples for the tsdb and a Prometheus collector
//! that exports the current result of every configured probe.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::check::{CompiledProbe, FailureReason, ProbeResult};
use super::Shared;
use crate::labels::{Labels, Sample, METRIC_NAME};

pub const PROBE_SUCCESS: &str = "probe_success";
pub const PROBE_DURATION: &str = "probe_duration_seconds";
pub const PROBE_STATUS_CODE: &str = "probe_http_status_code";
pub const PROBE_CONTENT_LENGTH: &str = "probe_http_content_length";
pub const PROBE_CERT_EXPIRY: &str = "probe_ssl_earliest_cert_expiry";
pub const PROBE_FAILURE_INFO: &str = "probe_failure_info";

const FAMILIES: [(&str, &str); 6] = [
    (
        PROBE_SUCCESS,
        "Whether the probe succeeded (1) or failed (0).",
    ),
    (
        PROBE_DURATION,
        "How long the probe took, in seconds, including reading the body.",
    ),
    (
        PROBE_STATUS_CODE,
        "The HTTP status code of the final response; 0 when none came.",
    ),
    (
        PROBE_CONTENT_LENGTH,
        "The response's Content-Length, or the body bytes read when it has none.",
    ),
    (
        PROBE_CERT_EXPIRY,
        "When the server's TLS certificate expires, in Unix seconds.",
    ),
    (
        PROBE_FAILURE_INFO,
        "1 for the reason the probe failed (timeout, connect, status, body, latency, tls).",
    ),
];

/// One of the series a probe exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    Success,
    Duration,
    StatusCode,
    ContentLength,
    CertExpiry,
    Failure(FailureReason),
}

impl Series {
    fn family(self) -> usize {
        match self {
            Series::Success => 0,
            Series::Duration => 1,
            Series::StatusCode => 2,
            Series::ContentLength => 3,
            Series::CertExpiry => 4,
            Series::Failure(_) => 5,
        }
    }

    pub fn metric_name(self) -> &'static str {
        FAMILIES[self.family()].0
    }

    /// The label a series adds to the probe's labels.
    fn extra_label(self) -> Option<(&'static str, &'static str)> {
        match self {
            Series::Failure(reason) => Some(("reason", reason.as_str())),
            _ => None,
        }
    }

    /// The full label set (metric name included) of this series for a probe.
    pub fn labels(self, probe_labels: &Labels) -> Labels {
        let mut b = probe_labels.builder().set(METRIC_NAME, self.metric_name());
        if let Some((k, v)) = self.extra_label() {
            b.insert(k, v);
        }
        b.build()
    }
}

/// The label sets of every series of one probe, built once per probe.
#[derive(Debug)]
pub struct SeriesLabels {
    fixed: [Labels; 5],
    failure: [Labels; 6],
}

impl SeriesLabels {
    pub fn new(probe_labels: &Labels) -> Self {
        Self {
            fixed: [
                Series::Success,
                Series::Duration,
                Series::StatusCode,
                Series::ContentLength,
                Series::CertExpiry,
            ]
            .map(|s| s.labels(probe_labels)),
            failure: FailureReason::ALL.map(|r| Series::Failure(r).labels(probe_labels)),
        }
    }

    fn get(&self, s: Series) -> &Labels {
        match s {
            Series::Failure(r) => {
                &self.failure[FailureReason::ALL.iter().position(|x| *x == r).unwrap_or(0)]
            }
            other => &self.fixed[other.family()],
        }
    }
}

/// The values one result yields.
fn values(r: &ProbeResult) -> Vec<(Series, f64)> {
    let mut v = vec![
        (Series::Success, if r.success { 1.0 } else { 0.0 }),
        (Series::Duration, r.duration.as_secs_f64()),
        (Series::StatusCode, f64::from(r.status_code.unwrap_or(0))),
        (Series::ContentLength, r.content_length.unwrap_or(0) as f64),
    ];
    if let Some(t) = r.cert_not_after {
        v.push((Series::CertExpiry, t as f64));
    }
    if let Some(reason) = r.reason {
        v.push((Series::Failure(reason), 1.0));
    }
    v
}

/// The samples for the tsdb, with the metric name in the label set.
pub fn samples(probe: &CompiledProbe, r: &ProbeResult) -> Vec<Sample> {
    values(r)
        .into_iter()
        .map(|(series, value)| Sample {
            labels: probe.series.get(series).clone(),
            timestamp_ms: r.at_ms,
            value,
        })
        .collect()
}

/// Exports the latest result of every configured probe; probes no longer
/// configured (or not yet run) are simply absent.
pub struct ProbeCollector {
    shared: Arc<Shared>,
    descs: Vec<Desc>,
}

impl ProbeCollector {
    pub(super) fn new(shared: Arc<Shared>) -> Result<Self, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    vec![],
                    Default::default(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { shared, descs })
    }
}

impl Collector for ProbeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut metrics: Vec<Vec<Metric>> = vec![Vec::new(); FAMILIES.len()];
        self.shared.for_each_result(|probe, result| {
            for (series, value) in values(result) {
                let mut pairs: Vec<LabelPair> = probe
                    .labels
                    .iter()
                    .map(|l| pair(&l.name, &l.value))
                    .collect();
                if let Some((k, v)) = series.extra_label() {
                    pairs.push(pair(k, v));
                    pairs.sort_by(|a, b| a.name().cmp(b.name()));
                }
                let mut g = Gauge::default();
                g.set_value(value);
                let mut m = Metric::from_label(pairs);
                m.set_gauge(g);
                metrics[series.family()].push(m);
            }
        });
        FAMILIES
            .iter()
            .zip(metrics)
            .filter(|(_, ms)| !ms.is_empty())
            .map(|((name, help), ms)| {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(MetricType::GAUGE);
                f.set_metric(ms);
                f
            })
            .collect()
    }
}

fn pair(name: &str, value: &str) -> LabelPair {
    let mut p = LabelPair::default();
    p.set_name(name.to_string());
    p.set_value(value.to_string());
    p
}

/// The series of `new` that are missing from it compared to `old`: these get stale markers.
pub fn gone(old: &[Labels], new: &[Sample]) -> Vec<Labels> {
    old.iter()
        .filter(|l| !new.iter().any(|s| &s.labels == *l))
        .cloned()
        .collect()
}
