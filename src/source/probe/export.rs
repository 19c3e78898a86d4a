//! Probe results as series: samples for the tsdb and a Prometheus collector
//! that exports the current result of every configured probe.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::check::{CompiledProbe, ProbeResult};
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

/// The values one result yields: (metric name, extra label, value).
fn values(r: &ProbeResult) -> Vec<(&'static str, Option<(&'static str, &'static str)>, f64)> {
    let mut v = vec![
        (PROBE_SUCCESS, None, if r.success { 1.0 } else { 0.0 }),
        (PROBE_DURATION, None, r.duration.as_secs_f64()),
        (
            PROBE_STATUS_CODE,
            None,
            f64::from(r.status_code.unwrap_or(0)),
        ),
        (
            PROBE_CONTENT_LENGTH,
            None,
            r.content_length.unwrap_or(0) as f64,
        ),
    ];
    if let Some(t) = r.cert_not_after {
        v.push((PROBE_CERT_EXPIRY, None, t as f64));
    }
    if let Some(reason) = r.reason {
        v.push((PROBE_FAILURE_INFO, Some(("reason", reason.as_str())), 1.0));
    }
    v
}

/// The samples for the tsdb, with the metric name in the label set.
pub fn samples(probe: &CompiledProbe, r: &ProbeResult) -> Vec<Sample> {
    values(r)
        .into_iter()
        .map(|(name, extra, value)| {
            let mut b = probe.labels.builder().set(METRIC_NAME, name);
            if let Some((k, v)) = extra {
                b.insert(k, v);
            }
            Sample {
                labels: b.build(),
                timestamp_ms: r.at_ms,
                value,
            }
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
            for (name, extra, value) in values(result) {
                let idx = FAMILIES.iter().position(|(n, _)| *n == name).unwrap_or(0);
                let mut pairs: Vec<LabelPair> = probe
                    .labels
                    .iter()
                    .map(|l| pair(&l.name, &l.value))
                    .collect();
                if let Some((k, v)) = extra {
                    pairs.push(pair(k, v));
                    pairs.sort_by(|a, b| a.name().cmp(b.name()));
                }
                let mut g = Gauge::default();
                g.set_value(value);
                let mut m = Metric::from_label(pairs);
                m.set_gauge(g);
                metrics[idx].push(m);
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
