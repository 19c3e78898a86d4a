//! Query results and their Prometheus HTTP API JSON rendering.

use serde_json::{json, Map, Value as Json};

use crate::labels::Labels;

/// One element of an instant vector result.
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    pub metric: Labels,
    /// The evaluation time (ms).
    pub t: i64,
    pub value: f64,
}

/// One series of a matrix result: points ascending by time (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    pub metric: Labels,
    pub points: Vec<(i64, f64)>,
}

/// The value of a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<InstantSample>),
    Matrix(Vec<RangeSeries>),
}

impl Value {
    /// Prometheus's name for the type: `scalar`, `string`, `vector`, `matrix`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }

    /// Renders the `data` object of Prometheus's query API:
    /// `{"resultType": ..., "result": ...}`.
    pub fn to_api_json(&self) -> Json {
        let result = match self {
            Value::Scalar { t, v } => json!([time_json(*t), format_value(*v)]),
            Value::String { t, v } => json!([time_json(*t), v]),
            Value::Vector(samples) => Json::Array(
                samples
                    .iter()
                    .map(|s| {
                        json!({
                            "metric": labels_json(&s.metric),
                            "value": [time_json(s.t), format_value(s.value)],
                        })
                    })
                    .collect(),
            ),
            Value::Matrix(series) => Json::Array(
                series
                    .iter()
                    .map(|s| {
                        json!({
                            "metric": labels_json(&s.metric),
                            "values": s.points.iter().map(|(t, v)| json!([time_json(*t), format_value(*v)])).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            ),
        };
        json!({ "resultType": self.type_name(), "result": result })
    }
}

/// What a query returns: its value and the annotations Prometheus would attach.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// Warnings (`PromQL warning: ...`).
    pub warnings: Vec<String>,
    /// Informational annotations (`PromQL info: ...`).
    pub infos: Vec<String>,
}

impl QueryResult {
    /// The full Prometheus API response body:
    /// `{"status":"success","data":{...},"warnings":[...],"infos":[...]}`.
    pub fn to_api_response(&self) -> Json {
        let mut body = Map::new();
        body.insert("status".into(), json!("success"));
        body.insert("data".into(), self.value.to_api_json());
        if !self.warnings.is_empty() {
            body.insert("warnings".into(), json!(self.warnings));
        }
        if !self.infos.is_empty() {
            body.insert("infos".into(), json!(self.infos));
        }
        Json::Object(body)
    }
}

fn time_json(t: i64) -> Json {
    // Prometheus renders unix seconds with millisecond precision as a number.
    let secs = t as f64 / 1000.0;
    json!(secs)
}

fn labels_json(l: &Labels) -> Json {
    let mut m = Map::new();
    for label in l.iter() {
        m.insert(label.name.to_string(), json!(label.value.as_ref()));
    }
    Json::Object(m)
}

/// Formats a float the way Prometheus does in its API and in `count_values`
/// (Go's `strconv.FormatFloat(v, 'f', -1, 64)`, with `+Inf`/`-Inf`/`NaN`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_prometheus_api() {
        let v = Value::Vector(vec![InstantSample {
            metric: Labels::from_pairs([("__name__", "up"), ("job", "x")]),
            t: 1500,
            value: 1.0,
        }]);
        assert_eq!(
            v.to_api_json(),
            json!({"resultType":"vector","result":[{"metric":{"__name__":"up","job":"x"},"value":[1.5,"1"]}]})
        );
        let s = Value::Scalar {
            t: 0,
            v: f64::INFINITY,
        };
        assert_eq!(
            s.to_api_json(),
            json!({"resultType":"scalar","result":[0.0,"+Inf"]})
        );
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(-0.0), "-0");
    }
}
