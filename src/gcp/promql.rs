//! Cloud Monitoring's Prometheus-compatible query API
//! (`/v1/projects/PROJECT/location/global/prometheus/api/v1/query`), for rule
//! groups whose query source is `cloud_monitoring_promql`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::client::{GcpClient, Request};
use super::error::GcpError;
use crate::clock::TimestampMs;
use crate::labels::{Labels, Sample};

pub const API: &str = "promql";

#[derive(Clone)]
pub struct PromqlClient {
    client: GcpClient,
    url: String,
    timeout: Option<Duration>,
}

#[derive(Deserialize)]
struct QueryResponse {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

impl PromqlClient {
    /// `endpoint`: `gcp.endpoints.monitoring`; `project`: the query source's project or `gcp.project`.
    pub fn new(
        client: GcpClient,
        endpoint: &str,
        project: &str,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            client,
            url: format!(
                "{}/v1/projects/{}/location/global/prometheus/api/v1/query",
                endpoint.trim_end_matches('/'),
                project
            ),
            timeout,
        }
    }

    /// An instant query at `t_ms`: the instant vector (a scalar becomes one sample without labels).
    pub async fn query(&self, expr: &str, t_ms: TimestampMs) -> Result<Vec<Sample>, GcpError> {
        let mut req = Request::get(API, "query", self.url.clone())
            .query("query", expr)
            .query(
                "time",
                format!("{}.{:03}", t_ms.div_euclid(1000), t_ms.rem_euclid(1000)),
            );
        if let Some(t) = self.timeout {
            req = req
                .query("timeout", format!("{}s", t.as_secs().max(1)))
                .timeout(t);
        }
        let body = match self.client.send_raw(&req).await {
            Ok(b) => b,
            // Prometheus's API answers 400/422 with its own error JSON.
            Err(GcpError::Api {
                http_status: 400 | 422,
                message,
                ..
            }) => {
                return Err(GcpError::InvalidRequest(format!(
                    "query {expr:?} rejected: {message}"
                )))
            }
            Err(e) => return Err(e),
        };
        parse_query_response(&body, t_ms)
    }
}

fn decode_err(message: impl Into<String>) -> GcpError {
    GcpError::Decode {
        api: API,
        method: "query",
        message: message.into(),
    }
}

fn parse_value(s: &str) -> Result<f64, GcpError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse()
            .map_err(|_| decode_err(format!("sample value {s:?} is not a number"))),
    }
}

/// Parses a Prometheus `/api/v1/query` answer.
pub fn parse_query_response(body: &[u8], t_ms: TimestampMs) -> Result<Vec<Sample>, GcpError> {
    let resp: QueryResponse =
        serde_json::from_slice(body).map_err(|e| decode_err(e.to_string()))?;
    if resp.status != "success" {
        return Err(GcpError::InvalidRequest(format!(
            "query failed: {}: {}",
            resp.error_type.unwrap_or_default(),
            resp.error.unwrap_or_default()
        )));
    }
    let data = resp
        .data
        .ok_or_else(|| decode_err("no data in a successful answer"))?;
    match data.result_type.as_str() {
        "vector" => {
            let items: Vec<VectorItem> =
                serde_json::from_value(data.result).map_err(|e| decode_err(e.to_string()))?;
            items
                .into_iter()
                .map(|it| {
                    Ok(Sample {
                        labels: Labels::from_map(&it.metric),
                        timestamp_ms: (it.value.0 * 1000.0).round() as i64,
                        value: parse_value(&it.value.1)?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| decode_err(e.to_string()))?;
            Ok(vec![Sample {
                labels: Labels::empty(),
                timestamp_ms: t_ms,
                value: parse_value(&v)?,
            }])
        }
        other => Err(decode_err(format!(
            "result type {other:?} is not an instant vector or scalar"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vectors_and_scalars() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"x"},"value":[1700000000.5,"1"]}]}}"#;
        let s = parse_query_response(body, 0).unwrap();
        assert_eq!(s[0].labels.get("job"), Some("x"));
        assert_eq!(s[0].timestamp_ms, 1_700_000_000_500);
        let body =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"NaN"]}}"#;
        assert!(parse_query_response(body, 5).unwrap()[0].value.is_nan());
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_query_response(body, 5)
            .unwrap_err()
            .to_string()
            .contains("parse error"));
        assert!(parse_query_response(b"{", 5).is_err());
    }
}
