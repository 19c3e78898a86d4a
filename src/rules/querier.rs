//! Where rules get their numbers from: the local PromQL engine over the tsdb,
//! or a remote Prometheus-compatible query API.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::clock::TimestampMs;
use crate::config::gcp::QuerySourceConfig;
use crate::config::secret::{read_secret_file, Secret};
use crate::labels::{Labels, Sample};
use crate::promql::{Engine, Value};
use crate::tsdb::Queryable;

/// A query that failed (bad expression, engine error, remote error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// Runs PromQL instant queries.
#[async_trait]
pub trait Querier: Send + Sync {
    /// Evaluates `expr` at `t_ms`. A scalar result comes back as one sample
    /// with no labels; a string or matrix result is an error.
    async fn query(&self, expr: &str, t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError>;

    /// The same, synchronously, for the `query` template function; `None`
    /// when this querier cannot answer without waiting (a remote API).
    fn query_sync(
        &self,
        _expr: &str,
        _t_ms: TimestampMs,
    ) -> Option<Result<Vec<Sample>, QueryError>> {
        None
    }
}

/// rearguard's own PromQL engine over its tsdb. Parsed expressions are cached
/// (rules evaluate the same text every interval).
pub struct LocalQuerier {
    db: Arc<dyn Queryable>,
    engine: Engine,
    parsed: Mutex<HashMap<String, Arc<promql_parser::parser::Expr>>>,
}

impl LocalQuerier {
    pub fn new(db: Arc<dyn Queryable>, engine: Engine) -> Self {
        Self {
            db,
            engine,
            parsed: Mutex::new(HashMap::new()),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn parse(&self, expr: &str) -> Result<Arc<promql_parser::parser::Expr>, QueryError> {
        let mut cache = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = cache.get(expr) {
            return Ok(e.clone());
        }
        let e = Arc::new(crate::promql::parse(expr).map_err(|e| QueryError(e.to_string()))?);
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(expr.to_string(), e.clone());
        Ok(e)
    }

    fn run(&self, expr: &str, t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError> {
        let e = self.parse(expr)?;
        let r = self
            .engine
            .instant_query_expr(self.db.as_ref(), &e, t_ms)
            .map_err(|e| QueryError(e.to_string()))?;
        value_to_samples(r.value, t_ms)
    }
}

/// A query value as rule input: a vector, or a scalar as one sample without labels.
pub fn value_to_samples(v: Value, t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError> {
    match v {
        Value::Vector(v) => Ok(v
            .into_iter()
            .map(|s| Sample {
                labels: s.metric,
                timestamp_ms: t_ms,
                value: s.value,
            })
            .collect()),
        Value::Scalar { v, .. } => Ok(vec![Sample {
            labels: Labels::empty(),
            timestamp_ms: t_ms,
            value: v,
        }]),
        other => Err(QueryError(format!(
            "rule result is not a vector or scalar (got {})",
            other.type_name()
        ))),
    }
}

#[async_trait]
impl Querier for LocalQuerier {
    async fn query(&self, expr: &str, t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError> {
        // Evaluation is CPU work: on the multi-threaded runtime, tell tokio so
        // other tasks (probes, the server) move to another worker meanwhile.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.run(expr, t_ms))
            }
            _ => self.run(expr, t_ms),
        }
    }

    fn query_sync(&self, expr: &str, t_ms: TimestampMs) -> Option<Result<Vec<Sample>, QueryError>> {
        Some(self.run(expr, t_ms))
    }
}

/// A Prometheus-compatible `/api/v1/query` endpoint (Prometheus, Thanos,
/// Mimir, VictoriaMetrics, or rearguard itself).
pub struct RemoteQuerier {
    client: reqwest::Client,
    base: String,
    bearer: Option<Secret>,
    basic: Option<(String, Secret)>,
    headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for RemoteQuerier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteQuerier")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl RemoteQuerier {
    /// A querier for `url` (the server's root, e.g. `http://prometheus:9090`).
    pub fn new(url: &str, timeout: Option<Duration>) -> Result<Self, QueryError> {
        let client = reqwest::Client::builder()
            .timeout(timeout.unwrap_or(DEFAULT_TIMEOUT))
            .build()
            .map_err(|e| QueryError(format!("cannot build HTTP client: {e}")))?;
        url::Url::parse(url)
            .map_err(|e| QueryError(format!("invalid query source url {url:?}: {e}")))?;
        Ok(Self {
            client,
            base: url.trim_end_matches('/').to_string(),
            bearer: None,
            basic: None,
            headers: BTreeMap::new(),
        })
    }

    pub fn with_bearer(mut self, token: Secret) -> Self {
        self.bearer = Some(token);
        self
    }

    pub fn with_basic_auth(mut self, user: String, password: Secret) -> Self {
        self.basic = Some((user, password));
        self
    }

    /// Builds the querier for a `query_sources` entry of type `prometheus`;
    /// `None` for other types (Cloud Monitoring's PromQL endpoint is built by the gcp module).
    pub fn from_config(
        cfg: &QuerySourceConfig,
        base_dir: &Path,
    ) -> Option<Result<Self, QueryError>> {
        let QuerySourceConfig::Prometheus {
            url,
            bearer_token_file,
            basic_auth,
            timeout,
            headers,
        } = cfg
        else {
            return None;
        };
        Some((|| {
            let mut q = Self::new(url, timeout.map(|d| d.0))?;
            if let Some(f) = bearer_token_file {
                q = q.with_bearer(read_secret_file(base_dir, f).map_err(QueryError)?);
            }
            if let Some(b) = basic_auth {
                let pw = read_secret_file(base_dir, &b.password_file).map_err(QueryError)?;
                q = q.with_basic_auth(b.username.clone(), pw);
            }
            q.headers = headers.clone();
            Ok(q)
        })())
    }
}

/// Prometheus's API envelope.
#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<ApiSample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct ApiSample {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

fn parse_value(s: &str) -> Result<f64, QueryError> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse()
            .map_err(|_| QueryError(format!("remote returned a non-numeric sample value {s:?}"))),
    }
}

/// Turns a Prometheus `/api/v1/query` response body into samples.
pub fn decode_query_response(body: &[u8], t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError> {
    let resp: ApiResponse = serde_json::from_slice(body).map_err(|e| {
        QueryError(format!(
            "remote returned a body that is not a Prometheus API response: {e}"
        ))
    })?;
    if resp.status != "success" {
        return Err(QueryError(format!(
            "remote query failed: {}: {}",
            resp.error_type.unwrap_or_else(|| "error".into()),
            resp.error.unwrap_or_default()
        )));
    }
    match resp.data {
        Some(ApiData::Vector(v)) => v
            .into_iter()
            .filter_map(|s| s.value.map(|val| (s.metric, val)))
            .map(|(metric, (_, val))| {
                Ok(Sample {
                    labels: Labels::from_map(&metric),
                    timestamp_ms: t_ms,
                    value: parse_value(&val)?,
                })
            })
            .collect(),
        Some(ApiData::Scalar((_, v))) => Ok(vec![Sample {
            labels: Labels::empty(),
            timestamp_ms: t_ms,
            value: parse_value(&v)?,
        }]),
        Some(ApiData::Matrix(_)) => Err(QueryError(
            "remote returned a range vector; a rule needs an instant vector or scalar".into(),
        )),
        Some(ApiData::String(_)) => Err(QueryError(
            "remote returned a string; a rule needs an instant vector or scalar".into(),
        )),
        None => Err(QueryError("remote response has no data".into())),
    }
}

fn format_time(t_ms: TimestampMs) -> String {
    let secs = t_ms.div_euclid(1000);
    let ms = t_ms.rem_euclid(1000);
    format!("{secs}.{ms:03}")
}

#[async_trait]
impl Querier for RemoteQuerier {
    async fn query(&self, expr: &str, t_ms: TimestampMs) -> Result<Vec<Sample>, QueryError> {
        let url = format!("{}/api/v1/query", self.base);
        let mut req = self
            .client
            .post(&url)
            .form(&[("query", expr), ("time", format_time(t_ms).as_str())]);
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t.expose());
        }
        if let Some((u, p)) = &self.basic {
            req = req.basic_auth(u, Some(p.expose()));
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| QueryError(format!("query to {url} failed: {}", e.without_url())))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            QueryError(format!(
                "reading the response of {url}: {}",
                e.without_url()
            ))
        })?;
        // Prometheus answers 400/422/503 with a JSON error body: prefer its message.
        match decode_query_response(&body, t_ms) {
            Ok(v) if status.is_success() => Ok(v),
            Err(e) if !status.is_success() && body.starts_with(b"{") => Err(e),
            Err(e) => Err(e),
            Ok(_) => Err(QueryError(format!("query to {url} answered HTTP {status}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[test]
    fn decodes_vector_scalar_and_errors() {
        let v = decode_query_response(
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1.5,"0"]},{"metric":{},"value":[1.5,"+Inf"]}]}}"#,
            1500,
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].labels.get("job"), Some("a"));
        assert_eq!(v[0].timestamp_ms, 1500);
        assert!(v[1].value.is_infinite());
        let s = decode_query_response(
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#,
            0,
        )
        .unwrap();
        assert_eq!(s[0].value, 2.5);
        let e = decode_query_response(
            br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
            0,
        )
        .unwrap_err();
        assert!(e.0.contains("bad_data: parse error"), "{e}");
        assert!(decode_query_response(b"<html>", 0).is_err());
        assert!(decode_query_response(
            br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            0
        )
        .is_err());
    }

    #[tokio::test]
    async fn remote_query_with_bearer_token() {
        crate::tls::ensure_crypto_provider();
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/query"))
            .and(header("authorization", "Bearer s3cret"))
            .and(body_string_contains("time=120.000"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[120,"1"]}]}}"#,
            ))
            .mount(&server)
            .await;
        let q = RemoteQuerier::new(&server.uri(), None)
            .unwrap()
            .with_bearer(Secret::new("s3cret"));
        let v = q.query("up == 1", 120_000).await.unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].labels.get("job"), Some("x"));
        let q = RemoteQuerier::new(&server.uri(), None).unwrap();
        assert!(
            q.query("up", 120_000).await.is_err(),
            "no token: the mock does not match"
        );
    }
}
