//! Small pieces the fake APIs share: Google's error body, timestamps, ids.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Value};

use rearguard_clock::{to_datetime, TimestampMs};

/// An error as Google's APIs answer it: HTTP status plus
/// `{"error": {"code", "message", "status"}}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub status: &'static str,
    pub message: String,
    /// `google.rpc.Status.details` (`ErrorInfo`, `RetryInfo`, ...), each with its `@type`.
    pub details: Vec<Value>,
}

impl ApiError {
    pub fn new(code: u16, status: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }
    /// Adds a typed detail (google/rpc/error_details.proto) to the error.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.details.push(detail);
        self
    }
    /// Adds `google.rpc.RetryInfo` with `retryDelay` (a proto3 JSON Duration):
    /// how Google's APIs say when to retry, in the body rather than a
    /// `Retry-After` header (https://cloud.google.com/apis/design/errors#retryinfo,
    /// google/rpc/error_details.proto `RetryInfo`).
    pub fn with_retry_delay(self, delay_ms: i64) -> Self {
        let secs = delay_ms.max(0) as f64 / 1000.0;
        self.with_detail(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{secs:.3}s"),
        }))
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, "INVALID_ARGUMENT", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NOT_FOUND", message)
    }
    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(409, "ABORTED", message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(401, "UNAUTHENTICATED", message)
    }

    pub fn body(&self) -> Value {
        let mut b =
            json!({"error": {"code": self.code, "message": self.message, "status": self.status}});
        if !self.details.is_empty() {
            b["error"]["details"] = json!(self.details);
        }
        b
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &self.body())
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    raw_json_response(status, body.to_string())
}

pub fn raw_json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        )],
        body,
    )
        .into_response()
}

/// RFC 3339 with nanoseconds and `Z`, as Google's JSON mapping prints timestamps.
pub fn timestamp(ms: TimestampMs) -> String {
    to_datetime(ms).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses an RFC 3339 timestamp (`google-datetime`) into milliseconds.
pub fn parse_timestamp(s: &str) -> Option<TimestampMs> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc).timestamp_millis())
}

/// Parses a `google-duration` (`"60s"`, `"1.5s"`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some((secs * 1000.0).round() as i64)
}

/// Lowercase letters, like the suffix of a Cloud Run revision name.
pub fn random_letters(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
}

/// A random version-4-looking UUID.
pub fn random_uuid() -> String {
    let mut rng = rand::thread_rng();
    let b: [u8; 16] = rng.gen();
    format!(
        "{}-{}-4{}-a{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        &hex::encode(&b[6..8])[1..],
        &hex::encode(&b[8..10])[1..],
        hex::encode(&b[10..16])
    )
}

pub fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    let v: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
    hex::encode(v)
}

/// Page tokens are opaque to clients; ours carry an offset and a fingerprint of
/// the request so a token used with another query is rejected like Google does.
pub fn page_token(offset: usize, request_key: &str) -> String {
    format!("{offset}.{}", short_hash(request_key))
}

pub fn parse_page_token(token: &str, request_key: &str) -> Result<usize, ApiError> {
    if token.is_empty() {
        return Ok(0);
    }
    let bad = || ApiError::invalid_argument(format!("Invalid page token: {token:?}"));
    let (offset, hash) = token.split_once('.').ok_or_else(bad)?;
    if hash != short_hash(request_key) {
        return Err(bad());
    }
    offset.parse().map_err(|_| bad())
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..6])
}

/// The query string as ordered pairs (repeated keys kept, e.g. `groupByFields`).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub fn parse_page_size(value: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match value {
        None | Some("") | Some("0") => Ok(default),
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| ApiError::invalid_argument(format!("Invalid pageSize: {v:?}")))?;
            if n < 0 {
                return Err(ApiError::invalid_argument("pageSize must not be negative"));
            }
            Ok((n as usize).min(max))
        }
    }
}
