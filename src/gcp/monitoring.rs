//! Cloud Monitoring v3 `projects.timeSeries.list` (shapes from `monitoring-v3.json`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::client::{GcpClient, Request};
use super::error::GcpError;

pub const API: &str = "monitoring";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTimeSeriesResponse {
    #[serde(default)]
    pub time_series: Vec<TimeSeries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `Status`es of errors that "may have caused the time series data returned
    /// to be incomplete" (monitoring-v3.json, `ListTimeSeriesResponse`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub execution_errors: Vec<serde_json::Value>,
    /// "Cloud regions that were unreachable which may have caused incomplete
    /// data to be returned" (monitoring-v3.json).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
}

impl ListTimeSeriesResponse {
    /// Why this page may be missing data, when it may.
    pub fn incomplete(&self) -> Option<String> {
        let mut why = Vec::new();
        for e in &self.execution_errors {
            let msg = e
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("no message");
            why.push(format!(
                "execution error: {}",
                super::error::snippet(msg.as_bytes())
            ));
        }
        if !self.unreachable.is_empty() {
            why.push(format!("unreachable: {}", self.unreachable.join(", ")));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// Every series of a query, each whole, and whether Google said data may be missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesList {
    pub series: Vec<TimeSeries>,
    /// Why the answer may be incomplete (`executionErrors`, `unreachable`).
    pub incomplete: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeSeries {
    #[serde(default)]
    pub metric: Metric,
    #[serde(default)]
    pub resource: MonitoredResource,
    /// `GAUGE`, `DELTA`, `CUMULATIVE`.
    #[serde(default)]
    pub metric_kind: String,
    /// `BOOL`, `INT64`, `DOUBLE`, `STRING`, `DISTRIBUTION`, `MONEY`.
    #[serde(default)]
    pub value_type: String,
    /// Newest first.
    #[serde(default)]
    pub points: Vec<Point>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitoredResource {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub interval: TimeInterval,
    pub value: TypedValue,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeInterval {
    pub end_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypedValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bool_value: Option<bool>,
    /// Arrives as a JSON string.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::int64::option"
    )]
    pub int64_value: Option<i64>,
    /// A number, or `"NaN"`, `"Infinity"`, `"-Infinity"` (proto3 JSON).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::double::option"
    )]
    pub double_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_value: Option<Distribution>,
}

impl TypedValue {
    /// The value as a number (bools as 1/0); none for strings and distributions.
    pub fn as_f64(&self) -> Option<f64> {
        if let Some(d) = self.double_value {
            return Some(d);
        }
        if let Some(i) = self.int64_value {
            return Some(i as f64);
        }
        self.bool_value.map(|b| if b { 1.0 } else { 0.0 })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    #[serde(default, with = "super::int64::required")]
    pub count: i64,
    #[serde(default, with = "super::double::required")]
    pub mean: f64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::double::option"
    )]
    pub sum_of_squared_deviation: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_options: Option<BucketOptions>,
    /// int64 strings; may be shorter than the number of buckets (trailing zeros left out).
    #[serde(
        default,
        deserialize_with = "int64_list",
        serialize_with = "int64_list_out"
    )]
    pub bucket_counts: Vec<i64>,
}

fn int64_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(with = "super::int64::required")] i64);
    let v: Vec<W> = Vec::deserialize(d)?;
    Ok(v.into_iter().map(|w| w.0).collect())
}

fn int64_list_out<S: serde::Serializer>(v: &[i64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|n| n.to_string()))
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_buckets: Option<Linear>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_buckets: Option<Exponential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_buckets: Option<Explicit>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linear {
    #[serde(default)]
    pub num_finite_buckets: i32,
    #[serde(default)]
    pub width: f64,
    #[serde(default)]
    pub offset: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exponential {
    #[serde(default)]
    pub num_finite_buckets: i32,
    #[serde(default)]
    pub growth_factor: f64,
    #[serde(default)]
    pub scale: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Explicit {
    #[serde(default)]
    pub bounds: Vec<f64>,
}

/// The most buckets a distribution may declare (a bad answer must not exhaust memory).
const MAX_BUCKETS: i32 = 10_000;

impl BucketOptions {
    /// The finite upper bounds of buckets 0..=N (bucket N+1, the overflow, is `+Inf`).
    pub fn upper_bounds(&self) -> Result<Vec<f64>, String> {
        if let Some(l) = &self.linear_buckets {
            if !(0..=MAX_BUCKETS).contains(&l.num_finite_buckets)
                || l.width.is_nan()
                || l.width <= 0.0
            {
                return Err(format!("invalid linear buckets {l:?}"));
            }
            return Ok((0..=l.num_finite_buckets)
                .map(|i| l.offset + l.width * i as f64)
                .collect());
        }
        if let Some(e) = &self.exponential_buckets {
            if !(0..=MAX_BUCKETS).contains(&e.num_finite_buckets)
                || e.growth_factor.is_nan()
                || e.growth_factor <= 1.0
                || e.scale.is_nan()
                || e.scale <= 0.0
            {
                return Err(format!("invalid exponential buckets {e:?}"));
            }
            return Ok((0..=e.num_finite_buckets)
                .map(|i| e.scale * e.growth_factor.powi(i))
                .collect());
        }
        if let Some(x) = &self.explicit_buckets {
            if x.bounds.len() > MAX_BUCKETS as usize
                || x.bounds
                    .windows(2)
                    .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
            {
                return Err("explicit bucket bounds must increase".into());
            }
            return Ok(x.bounds.clone());
        }
        Err("no bucket options".into())
    }
}

/// `aggregation.*` of a `timeSeries.list` call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregation {
    pub alignment_period: Duration,
    pub per_series_aligner: Option<String>,
    pub cross_series_reducer: Option<String>,
    pub group_by_fields: Vec<String>,
}

/// One `timeSeries.list` query.
#[derive(Clone, Debug, PartialEq)]
pub struct ListTimeSeries {
    /// `projects/P`
    pub name: String,
    pub filter: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub aggregation: Option<Aggregation>,
    /// `HEADERS` returns series without points (to learn a metric's kind).
    pub headers_only: bool,
    pub page_size: u32,
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Clone)]
pub struct MonitoringClient {
    client: GcpClient,
    base: String,
}

impl MonitoringClient {
    pub fn new(client: GcpClient, endpoint: &str) -> Self {
        Self {
            client,
            base: endpoint.trim_end_matches('/').to_string(),
        }
    }

    /// One page of `projects.timeSeries.list`.
    pub async fn list_page(
        &self,
        q: &ListTimeSeries,
        page_token: Option<&str>,
    ) -> Result<ListTimeSeriesResponse, GcpError> {
        let mut req = Request::get(
            API,
            "timeSeries.list",
            format!("{}/v3/{}/timeSeries", self.base, q.name),
        )
        .query("filter", q.filter.clone())
        .query("interval.startTime", rfc3339(q.start))
        .query("interval.endTime", rfc3339(q.end))
        .query("pageSize", q.page_size.to_string())
        // `view` is "Required" (monitoring-v3.json); FULL pages by points.
        .query("view", if q.headers_only { "HEADERS" } else { "FULL" });
        if let Some(a) = &q.aggregation {
            req = req.query(
                "aggregation.alignmentPeriod",
                format!("{}s", a.alignment_period.as_secs()),
            );
            if let Some(al) = &a.per_series_aligner {
                req = req.query("aggregation.perSeriesAligner", al.clone());
            }
            if let Some(r) = &a.cross_series_reducer {
                req = req.query("aggregation.crossSeriesReducer", r.clone());
            }
            for f in &a.group_by_fields {
                req = req.query("aggregation.groupByFields", f.clone());
            }
        }
        if let Some(t) = page_token.filter(|t| !t.is_empty()) {
            req = req.query("pageToken", t);
        }
        self.client.send(req).await
    }

    /// Every page of a query (at most `max_pages`), with each series whole.
    /// In view FULL `pageSize` counts points, not series (monitoring-v3.json:
    /// "the maximum number of Points returned"), so one series may come in
    /// parts over several pages; the parts are joined here.
    pub async fn list_all(
        &self,
        q: &ListTimeSeries,
        max_pages: usize,
    ) -> Result<SeriesList, GcpError> {
        let incomplete_pages = std::sync::Mutex::new(Vec::new());
        let (parts, cut_short) = super::paging::collect_pages(max_pages, |token| {
            let incomplete_pages = &incomplete_pages;
            async move {
                let page = self.list_page(q, token.as_deref()).await?;
                if let Some(why) = page.incomplete() {
                    incomplete_pages
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(why);
                }
                Ok(super::paging::Page {
                    items: page.time_series,
                    next_page_token: page.next_page_token,
                })
            }
        })
        .await?;
        let mut incomplete = incomplete_pages
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        if cut_short {
            tracing::warn!(query = %q.filter, max_pages, "timeSeries.list: stopped after the page limit");
            incomplete.push(format!("stopped after {max_pages} pages"));
        }
        Ok(SeriesList {
            series: stitch(parts),
            incomplete: (!incomplete.is_empty()).then(|| incomplete.join("; ")),
        })
    }
}

/// Joins the parts of each series (same metric, resource, kind and value type)
/// into one, keeping the order in which series first appear.
pub fn stitch(parts: Vec<TimeSeries>) -> Vec<TimeSeries> {
    let mut out: Vec<TimeSeries> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for part in parts {
        let key = format!(
            "{:?}",
            (
                &part.metric,
                &part.resource,
                &part.metric_kind,
                &part.value_type
            )
        );
        match index.get(&key) {
            Some(&i) => out[i].points.extend(part.points),
            None => {
                index.insert(key, out.len());
                out.push(part);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds() {
        let lin = BucketOptions {
            linear_buckets: Some(Linear {
                num_finite_buckets: 3,
                width: 10.0,
                offset: 5.0,
            }),
            ..Default::default()
        };
        assert_eq!(lin.upper_bounds().unwrap(), vec![5.0, 15.0, 25.0, 35.0]);
        let exp = BucketOptions {
            exponential_buckets: Some(Exponential {
                num_finite_buckets: 2,
                growth_factor: 2.0,
                scale: 1.0,
            }),
            ..Default::default()
        };
        assert_eq!(exp.upper_bounds().unwrap(), vec![1.0, 2.0, 4.0]);
        let bad = BucketOptions {
            explicit_buckets: Some(Explicit {
                bounds: vec![1.0, 1.0],
            }),
            ..Default::default()
        };
        assert!(bad.upper_bounds().is_err());
    }

    #[test]
    fn parts_of_a_series_are_joined() {
        let part = |rev: &str, end: &str| -> TimeSeries {
            serde_json::from_value(serde_json::json!({
                "metric": {"type": "m"}, "resource": {"type": "r", "labels": {"revision_name": rev}},
                "metricKind": "DELTA", "valueType": "INT64",
                "points": [{"interval": {"endTime": end}, "value": {"int64Value": "1"}}]
            }))
            .unwrap()
        };
        let joined = stitch(vec![
            part("a", "2026-11-22T10:02:00Z"),
            part("a", "2026-11-22T10:01:00Z"),
            part("b", "2026-11-22T10:02:00Z"),
            part("a", "2026-11-22T10:00:00Z"),
        ]);
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[0].points.len(), 3);
        assert_eq!(joined[1].points.len(), 1);
    }

    #[test]
    fn non_finite_doubles_and_incomplete_pages() {
        let page: ListTimeSeriesResponse = serde_json::from_value(serde_json::json!({
            "timeSeries": [{"metric": {"type": "m"}, "resource": {"type": "r"}, "metricKind": "GAUGE", "valueType": "DOUBLE",
                "points": [
                    {"interval": {"endTime": "2026-11-22T10:02:00Z"}, "value": {"doubleValue": "NaN"}},
                    {"interval": {"endTime": "2026-11-22T10:01:00Z"}, "value": {"doubleValue": "-Infinity"}},
                    {"interval": {"endTime": "2026-11-22T10:00:00Z"}, "value": {"doubleValue": 0.5}}
                ]}],
            "executionErrors": [{"code": 14, "message": "region down"}],
            "unreachable": ["europe-west1"]
        }))
        .unwrap();
        let v: Vec<Option<f64>> = page.time_series[0]
            .points
            .iter()
            .map(|p| p.value.as_f64())
            .collect();
        assert!(v[0].unwrap().is_nan());
        assert_eq!(v[1], Some(f64::NEG_INFINITY));
        assert_eq!(v[2], Some(0.5));
        let why = page.incomplete().unwrap();
        assert!(
            why.contains("region down") && why.contains("europe-west1"),
            "{why}"
        );
    }

    #[test]
    fn int64_values_arrive_as_strings() {
        let p: Point = serde_json::from_value(serde_json::json!({
            "interval": {"startTime": "2026-11-22T10:00:00Z", "endTime": "2026-11-22T10:01:00Z"},
            "value": {"int64Value": "42"}
        }))
        .unwrap();
        assert_eq!(p.value.as_f64(), Some(42.0));
        let d: Distribution = serde_json::from_value(
            serde_json::json!({"count": "3", "mean": 2.0, "bucketCounts": ["1", "2"]}),
        )
        .unwrap();
        assert_eq!(d.bucket_counts, vec![1, 2]);
    }
}
