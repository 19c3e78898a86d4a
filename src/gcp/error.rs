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
        /// The `Retry-After` Google asked for, if any.
        retry_after: Option<Duration>,
        /// The IAM permission a 403 names in its `google.rpc.ErrorInfo`
        /// (`reason` `IAM_PERMISSION_DENIED`, `metadata.permission`), when
        /// Google sent one.
        denied_permission: Option<Box<str>>,
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
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
    /// `google.rpc.Status.details`: typed messages, each with an `@type`.
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

/// The messages of one `@type` among an error's `details`.
fn details_of_type<'a>(
    details: &'a [serde_json::Value],
    type_url: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    details
        .iter()
        .filter(move |d| d.get("@type").and_then(|t| t.as_str()) == Some(type_url))
}

/// The `@type` of `google.rpc.RetryInfo` in an error's `details`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.RetryInfo.retryDelay` among an error's `details` (google/rpc/error_details.proto:
/// "Describes when the clients can retry a failed request"), a proto3 JSON
/// `Duration` such as `"2s"` or `"0.500s"`.
fn retry_info_delay(details: &[serde_json::Value]) -> Option<Duration> {
    details_of_type(details, RETRY_INFO_TYPE)
        .find_map(|d| d.get("retryDelay").and_then(|v| v.as_str()))
        .and_then(parse_proto_duration)
}

/// The `@type` of `google.rpc.ErrorInfo` in an error's `details`.
pub const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// The permission an IAM denial names: Google's 403s carry a
/// `google.rpc.ErrorInfo` with `reason: "IAM_PERMISSION_DENIED"`, the
/// service's `domain` and `metadata` `{"permission", "resource"}`
/// (google/rpc/error_details.proto `ErrorInfo`; seen in the wild in
/// google/bigframes pull request 1564, a `resourcemanager.projects.setIamPolicy`
/// denial). Structured, so a hint does not depend on the message's wording.
fn denied_permission(details: &[serde_json::Value]) -> Option<Box<str>> {
    details_of_type(details, ERROR_INFO_TYPE)
        .filter(|d| d.get("reason").and_then(|r| r.as_str()) == Some("IAM_PERMISSION_DENIED"))
        .find_map(|d| d.pointer("/metadata/permission").and_then(|p| p.as_str()))
        .map(Box::from)
}

/// A proto3 JSON `google.protobuf.Duration`: decimal seconds with an `s` suffix.
pub fn parse_proto_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (0.0..1e12)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// Builds the error for a non-2xx answer from its body (which may be anything).
/// The wait Google asks for is the `Retry-After` header, else the body's
/// `RetryInfo.retryDelay` (Google's 429s usually carry only the latter).
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
            retry_after: retry_after.or_else(|| retry_info_delay(&b.error.details)),
            denied_permission: denied_permission(&b.error.details),
        },
        Err(_) => GcpError::Api {
            api,
            method,
            http_status,
            status: String::new(),
            message: snippet(body),
            retry_after,
            denied_permission: None,
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
    fn retry_info_is_the_wait_when_there_is_no_retry_after_header() {
        let body = serde_json::json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
                {"@type": RETRY_INFO_TYPE, "retryDelay": "17.500s"}
            ]}})
        .to_string();
        let e = api_error("logging", "entries.list", 429, body.as_bytes(), None);
        assert_eq!(e.retry_after(), Some(Duration::from_millis(17_500)));
        // The header, when present, wins.
        let e = api_error(
            "logging",
            "entries.list",
            429,
            body.as_bytes(),
            Some(Duration::from_secs(3)),
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(parse_proto_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_proto_duration("-1s"), None);
        assert_eq!(parse_proto_duration("soon"), None);
    }

    #[test]
    fn an_iam_denial_names_its_permission_from_error_info() {
        let body = serde_json::json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Permission denied (the wording may change)",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                 "domain": "run.googleapis.com",
                 "metadata": {"permission": "iam.serviceaccounts.actAs", "resource": "projects/p/serviceAccounts/rt"}}
            ]}})
        .to_string();
        let GcpError::Api {
            denied_permission, ..
        } = api_error("run", "services.patch", 403, body.as_bytes(), None)
        else {
            panic!("an API error");
        };
        assert_eq!(
            denied_permission.as_deref(),
            Some("iam.serviceaccounts.actAs")
        );
        // Another reason, or no metadata: none.
        let other = body.replace("IAM_PERMISSION_DENIED", "SERVICE_DISABLED");
        let GcpError::Api {
            denied_permission, ..
        } = api_error("run", "services.patch", 403, other.as_bytes(), None)
        else {
            panic!("an API error");
        };
        assert_eq!(denied_permission, None);
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
