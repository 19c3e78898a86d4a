//! The one request path every Google API call takes: auth headers, a timeout,
//! retries with exponential backoff and full jitter (honouring `Retry-After`),
//! Google's error body parsed, a size limit on answers, and metrics.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth::TokenSource;
use super::error::{api_error, GcpError};
use super::quota::CallQuota;

/// How requests are timed and retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff ceiling; doubles each attempt (full jitter picks in `[0, ceiling]`).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a longer one fails the call instead of stalling it.
    pub max_retry_after: Duration,
    /// Per attempt, unless a request says otherwise.
    pub timeout: Duration,
    /// Answers larger than this are refused.
    pub max_response_bytes: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
            max_response_bytes: 32 * 1024 * 1024,
        }
    }
}

impl RetryPolicy {
    /// The full-jitter backoff before attempt `attempt + 1` (attempt counts from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.initial_backoff.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        );
        let ceiling = exp.min(self.max_backoff);
        let ms = ceiling.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
    }
}

/// `rearguard_upstream_requests_total{api,method,code}`,
/// `rearguard_upstream_retries_total{api,method,reason}` and
/// `rearguard_upstream_request_duration_seconds{api,method}`.
#[derive(Clone)]
pub struct UpstreamMetrics {
    pub requests: IntCounterVec,
    pub retries: IntCounterVec,
    pub duration: HistogramVec,
    /// `rearguard_source_partial_results_total{kind,name}`: answers Google
    /// marked as possibly incomplete, by source kind and name.
    pub partial_results: IntCounterVec,
}

impl UpstreamMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "rearguard_upstream_requests_total",
                "Requests to Google APIs by API, method and HTTP status code (or timeout/connect/too_large), one per attempt.",
            ),
            &["api", "method", "code"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "rearguard_upstream_retries_total",
                "Retries of requests to Google APIs by API, method and the reason of the failed attempt (HTTP status, timeout or transport), one per retry made.",
            ),
            &["api", "method", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "rearguard_upstream_request_duration_seconds",
                "Duration of each attempt of a request to a Google API.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["api", "method"],
        )?;
        let partial_results = IntCounterVec::new(
            Opts::new(
                "rearguard_source_partial_results_total",
                "Polls of a Google source whose answer Google marked as possibly incomplete (executionErrors, unreachable regions) or that stopped at the page limit; nothing of such a poll is taken, the next one reads it again.",
            ),
            &["kind", "name"],
        )?;
        registry.register(Box::new(partial_results.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            requests,
            retries,
            duration,
            partial_results,
        })
    }

    /// Requests counted so far for `api`, `method` and `code` (tests, diagnostics).
    pub fn count(&self, api: &str, method: &str, code: &str) -> u64 {
        self.requests.with_label_values(&[api, method, code]).get()
    }

    /// Retries counted so far for `api`, `method` and `reason` (tests, diagnostics).
    pub fn retry_count(&self, api: &str, method: &str, reason: &str) -> u64 {
        self.retries.with_label_values(&[api, method, reason]).get()
    }
}

/// The `reason` label of a retry: the HTTP status Google answered with, or
/// `timeout` / `transport` when no answer came.
fn retry_reason(err: &GcpError) -> String {
    match err {
        GcpError::Timeout { .. } => "timeout".to_string(),
        _ => err
            .http_status()
            .map_or_else(|| "transport".to_string(), |s| s.to_string()),
    }
}

/// One request, described without being sent.
pub struct Request<'a> {
    pub api: &'static str,
    pub method: &'static str,
    pub http_method: reqwest::Method,
    pub url: String,
    pub query: Vec<(&'a str, String)>,
    pub body: Option<serde_json::Value>,
    /// Overrides the policy's per-attempt timeout (long polls such as `operations.wait`).
    pub timeout: Option<Duration>,
    /// A call quota every attempt must take a slot from (and that a 429 pauses).
    pub quota: Option<CallQuota>,
    /// Not idempotent (`services.patch`): one attempt only, whatever the
    /// policy says; the caller re-reads to learn whether it was carried out.
    pub once: bool,
}

impl<'a> Request<'a> {
    pub fn get(api: &'static str, method: &'static str, url: String) -> Self {
        Self {
            api,
            method,
            http_method: reqwest::Method::GET,
            url,
            query: Vec::new(),
            body: None,
            timeout: None,
            quota: None,
            once: false,
        }
    }

    pub fn with_body<B: Serialize>(
        api: &'static str,
        method: &'static str,
        http_method: reqwest::Method,
        url: String,
        body: &B,
    ) -> Result<Self, GcpError> {
        let body = serde_json::to_value(body).map_err(|e| {
            GcpError::InvalidRequest(format!("{api} {method}: cannot encode the body: {e}"))
        })?;
        Ok(Self {
            api,
            method,
            http_method,
            url,
            query: Vec::new(),
            body: Some(body),
            timeout: None,
            quota: None,
            once: false,
        })
    }

    pub fn query(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    pub fn quota(mut self, q: CallQuota) -> Self {
        self.quota = Some(q);
        self
    }

    /// One attempt only (see [`Request::once`]).
    pub fn not_retried(mut self) -> Self {
        self.once = true;
        self
    }
}

/// A shared handle (cheap to clone) for calling Google APIs with one set of
/// credentials, one HTTP connection pool, one retry policy and one set of metrics.
#[derive(Clone)]
pub struct GcpClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    tokens: TokenSource,
    policy: RetryPolicy,
    metrics: UpstreamMetrics,
}

impl GcpClient {
    /// `metrics` comes from [`UpstreamMetrics::register`] (register once per registry).
    pub fn new(
        tokens: TokenSource,
        policy: RetryPolicy,
        metrics: UpstreamMetrics,
    ) -> Result<Self, GcpError> {
        crate::tls::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("rearguard/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| GcpError::InvalidRequest(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                tokens,
                policy,
                metrics,
            }),
        })
    }

    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.inner.metrics
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    pub fn tokens(&self) -> &TokenSource {
        &self.inner.tokens
    }

    /// Sends `req` (retrying as the policy says) and decodes the JSON answer.
    pub async fn send<T: DeserializeOwned>(&self, req: Request<'_>) -> Result<T, GcpError> {
        let body = self.send_raw(&req).await?;
        decode(req.api, req.method, &body)
    }

    /// Sends `req` and returns the raw body of a 2xx answer.
    pub async fn send_raw(&self, req: &Request<'_>) -> Result<Vec<u8>, GcpError> {
        let policy = &self.inner.policy;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(q) = &req.quota {
                q.acquire().await;
            }
            let result = self.attempt(req).await;
            let err = match result {
                Ok(body) => return Ok(body),
                Err(e) => e,
            };
            if let (Some(q), Some(429)) = (&req.quota, err.http_status()) {
                q.pause(
                    err.retry_after()
                        .unwrap_or(policy.initial_backoff * 4)
                        .min(policy.max_retry_after),
                );
            }
            if !err.is_retryable() || req.once || attempt >= policy.max_attempts {
                return Err(err);
            }
            let wait = match err.retry_after() {
                Some(ra) if ra > policy.max_retry_after => return Err(err),
                Some(ra) => ra,
                None => policy.backoff(attempt),
            };
            tracing::debug!(api = req.api, method = req.method, attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying Google API call");
            tokio::time::sleep(wait).await;
            // Counted after the wait: a call dropped while waiting made no retry.
            self.inner
                .metrics
                .retries
                .with_label_values(&[req.api, req.method, &retry_reason(&err)])
                .inc();
        }
    }

    async fn attempt(&self, req: &Request<'_>) -> Result<Vec<u8>, GcpError> {
        let (api, method) = (req.api, req.method);
        let timeout = req.timeout.unwrap_or(self.inner.policy.timeout);
        let headers = self.inner.tokens.headers().await?;
        let started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(timeout, self.exchange(req, headers)).await;
        self.inner
            .metrics
            .duration
            .with_label_values(&[api, method])
            .observe(started.elapsed().as_secs_f64());
        let (code_label, result) = match outcome {
            Err(_) => (
                "timeout".to_string(),
                Err(GcpError::Timeout {
                    api,
                    method,
                    timeout,
                }),
            ),
            Ok(Err(e)) => {
                let label = match &e {
                    GcpError::TooLarge { .. } => "too_large",
                    GcpError::Timeout { .. } => "timeout",
                    _ => "connect",
                };
                (label.to_string(), Err(e))
            }
            Ok(Ok((status, retry_after, body))) => {
                let r = if (200..300).contains(&status) {
                    Ok(body)
                } else {
                    Err(api_error(api, method, status, &body, retry_after))
                };
                (status.to_string(), r)
            }
        };
        self.inner
            .metrics
            .requests
            .with_label_values(&[api, method, &code_label])
            .inc();
        result
    }

    /// One HTTP exchange: status, Retry-After and the (size-limited) body.
    async fn exchange(
        &self,
        req: &Request<'_>,
        auth: HeaderMap,
    ) -> Result<(u16, Option<Duration>, Vec<u8>), GcpError> {
        let (api, method) = (req.api, req.method);
        let limit = self.inner.policy.max_response_bytes;
        let mut rb = self
            .inner
            .http
            .request(req.http_method.clone(), &req.url)
            .headers(auth);
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(body) = &req.body {
            let bytes = serde_json::to_vec(body).map_err(|e| {
                GcpError::InvalidRequest(format!("{api} {method}: cannot encode the body: {e}"))
            })?;
            rb = rb
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(bytes);
        }
        let connect_err = |e: reqwest::Error| GcpError::Connect {
            api,
            method,
            url: strip_query(&req.url),
            message: without_url(&e),
        };
        let mut resp = rb.send().await.map_err(connect_err)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(GcpError::TooLarge { api, method, limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(connect_err)? {
            if body.len() + chunk.len() > limit {
                return Err(GcpError::TooLarge { api, method, limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, retry_after, body))
    }
}

/// Decodes a JSON answer; malformed or truncated JSON is an error, never a panic.
pub fn decode<T: DeserializeOwned>(
    api: &'static str,
    method: &'static str,
    body: &[u8],
) -> Result<T, GcpError> {
    serde_json::from_slice(body).map_err(|e| GcpError::Decode {
        api,
        method,
        message: e.to_string(),
    })
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(delta.max(0) as u64))
}

fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// reqwest's error text without the URL (which may carry a page token or filter).
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Adds the `Authorization` header value for a bearer token (tests).
pub fn bearer(token: &str) -> Result<HeaderMap, GcpError> {
    let mut h = HeaderMap::new();
    let v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| GcpError::Credentials("the token is not a valid header value".into()))?;
    h.insert(AUTHORIZATION, v);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_by_an_exponential_ceiling() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(3) <= Duration::from_millis(400));
            assert!(p.backoff(30) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn retry_after_seconds_and_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn decode_errors_do_not_panic() {
        let r: Result<serde_json::Value, _> = decode("run", "services.get", b"{\"a\": [1, 2");
        assert!(matches!(r, Err(GcpError::Decode { .. })));
    }
}
