//! The one error type of every Google API call.

use std::time::Duration;

use serde::Deserialize;

/// What went wrong talking to a Google API. Messages never contain tokens.
#[derive(Debug, thiserror::Error)]
pub enum GcpError {
    /// Google answered with an error status and (usually) its JSON error body.
    #[error("{api} {method}: HTTP {http_status} {status}: {message}")]
    Api {
        api: &'static str,
        method: &'static str,
        http_status: u16,
        /// `error.status`, e.g. `ABORTED`, `PERMISSION_DENIED` (empty when the body had none).
        status: String,
        /// `error.message`, or the start of the body when it was not Google's error JSON.
        message: String,
        /// `error.code` as Google sent it (normally equal to `http_status`).
        code: Option<i64>,
        /// The `Retry-After` Google asked for, if any.
        retry_after: Option<Duration>,
    },
    /// `services.patch` was refused because the etag sent is no longer current
    /// (HTTP 409, `ABORTED`): somebody else changed the service; read it again.
    #[error("{api} {method}: the etag is stale (HTTP 409 ABORTED): {message}; read the service again before changing it")]
    StaleEtag {
        api: &'static str,
        method: &'static str,
        message: String,
    },
    #[error("{api} {method}: no answer within {timeout:?}")]
    Timeout {
        api: &'static str,
        method: &'static str,
        timeout: Duration,
    },
    #[error("{api} {method}: cannot reach {url}: {message}")]
    Connect {
        api: &'static str,
        method: &'static str,
        url: String,
        message: String,
    },
    #[error("{api} {method}: the answer is larger than {limit} bytes")]
    TooLarge {
        api: &'static str,
        method: &'static str,
        limit: usize,
    },
    #[error("{api} {method}: the answer is not the JSON expected: {message}")]
    Decode {
        api: &'static str,
        method: &'static str,
        message: String,
    },
    #[error("Google credentials: {0}")]
    Credentials(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl GcpError {
    /// The HTTP status Google answered with, when it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            GcpError::Api { http_status, .. } => Some(*http_status),
            GcpError::StaleEtag { .. } => Some(409),
            _ => None,
        }
    }

    /// Google's `error.status` (`ABORTED`, `NOT_FOUND`, ...).
    pub fn google_status(&self) -> Option<&str> {
        match self {
            GcpError::Api { status, .. } => Some(status),
            GcpError::StaleEtag { .. } => Some("ABORTED"),
            _ => None,
        }
    }

    pub fn is_stale_etag(&self) -> bool {
        matches!(self, GcpError::StaleEtag { .. })
    }

    pub fn is_not_found(&self) -> bool {
        self.http_status() == Some(404)
    }

    /// 429, 500, 502, 503, 504, timeouts and connection errors: worth another try.
    pub fn is_retryable(&self) -> bool {
        match self {
            GcpError::Api { http_status, .. } => is_retryable_status(*http_status),
            GcpError::Timeout { .. } | GcpError::Connect { .. } => true,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GcpError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub(crate) fn is_retryable_status(code: u16) -> bool {
    matches!(code, 429 | 500 | 502 | 503 | 504)
}

/// Google's JSON error body: `{"error": {"code": 409, "status": "ABORTED", "message": "..."}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Builds the error for a non-2xx answer from its body (which may be anything).
pub(crate) fn api_error(
    api: &'static str,
    method: &'static str,
    http_status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> GcpError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => GcpError::Api {
            api,
            method,
            http_status,
            status: b.error.status.unwrap_or_default(),
            message: b.error.message.unwrap_or_default(),
            code: b.error.code,
            retry_after,
        },
        Err(_) => GcpError::Api {
            api,
            method,
            http_status,
            status: String::new(),
            message: snippet(body),
            code: None,
            retry_after,
        },
    }
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut s: String = text.chars().filter(|c| !c.is_control()).collect();
    if body.len() > MAX {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_google_error_body() {
        let body = br#"{"error":{"code":409,"message":"etag mismatch","status":"ABORTED"}}"#;
        let e = api_error("run", "services.patch", 409, body, None);
        assert_eq!(e.google_status(), Some("ABORTED"));
        assert!(e.to_string().contains("etag mismatch"), "{e}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn non_json_error_body_is_kept_short() {
        let body = vec![b'x'; 1000];
        let e = api_error(
            "logging",
            "entries.list",
            503,
            &body,
            Some(Duration::from_secs(2)),
        );
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert!(e.to_string().len() < 400);
    }
}
