//! Optional HTTP control routes under `/sim/` (no auth, not in the call log),
//! for poking a running demo by hand:
//!
//! - `GET /sim/calls`: the call log as JSON.
//! - `GET /sim/services`: services with their serving revisions.
//! - `POST /sim/deploy` `{"service", "image"?, "env"?: {K: V}, "behaviour"?: "healthy"|"bad"|"never_ready"}`
//!   → `{"revision", "operation"}`.
//! - `POST /sim/faults` `{"method", "status"?, "retryAfterSeconds"?, "delayMs"?,
//!   "kind"?: "malformed"|"truncated", "times"?}`; `DELETE /sim/faults`.

use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};

use super::faults::{Fault, FaultKind};
use super::run::{DeploySpec, RevisionBehaviour};
use super::server::FakeGcp;
use super::util::ApiError;

pub(crate) fn handle(
    fake: &FakeGcp,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, ApiError> {
    let body = body.cloned().unwrap_or(Value::Null);
    match (method.as_str(), path) {
        ("GET", "/sim/calls") => Ok(Value::Array(
            fake.calls()
                .iter()
                .map(|c| {
                    json!({
                        "atMs": c.at_ms, "method": c.method, "httpMethod": c.http_method, "path": c.path,
                        "query": c.query, "etag": c.etag, "status": c.status, "fault": c.fault,
                    })
                })
                .collect(),
        )),
        ("GET", "/sim/services") => {
            let names = fake.lock().run.service_names();
            Ok(Value::Array(
                names
                    .iter()
                    .map(|n| json!({"name": n, "serving": fake.serving(n).iter().map(|(r, p)| json!({"revision": r, "percent": p})).collect::<Vec<_>>()}))
                    .collect(),
            ))
        }
        ("POST", "/sim/deploy") => {
            let service = body["service"]
                .as_str()
                .ok_or_else(|| ApiError::invalid_argument("body.service (projects/P/locations/L/services/S) is required"))?;
            let behaviour = match body["behaviour"].as_str().unwrap_or("healthy") {
                "healthy" => RevisionBehaviour::healthy(),
                "bad" => RevisionBehaviour::bad(),
                "never_ready" => RevisionBehaviour::never_ready(),
                other => return Err(ApiError::invalid_argument(format!("behaviour {other:?}: use healthy, bad or never_ready"))),
            };
            let env = body["env"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))).collect())
                .unwrap_or_default();
            let spec = DeploySpec { image: body["image"].as_str().map(String::from), env, behaviour };
            let (revision, operation) = fake.deploy(service, spec)?;
            Ok(json!({"revision": revision, "operation": operation}))
        }
        ("POST", "/sim/faults") => {
            let m = body["method"].as_str().ok_or_else(|| ApiError::invalid_argument("body.method is required (a method id, a prefix with *, or *)"))?;
            let kind = if let Some(code) = body["answerLostStatus"].as_u64() {
                FaultKind::AnswerLost { code: code as u16 }
            } else if let Some(code) = body["status"].as_u64() {
                FaultKind::Status { code: code as u16, retry_after_secs: body["retryAfterSeconds"].as_u64() }
            } else if let Some(ms) = body["delayMs"].as_u64() {
                FaultKind::Delay(Duration::from_millis(ms))
            } else {
                match body["kind"].as_str() {
                    Some("malformed") => FaultKind::MalformedJson,
                    Some("truncated") => FaultKind::TruncatedJson,
                    _ => return Err(ApiError::invalid_argument("give status, answerLostStatus, delayMs, or kind: malformed|truncated")),
                }
            };
            let mut f = Fault::new(m, kind);
            if let Some(n) = body["times"].as_u64() {
                f = f.times(n as u32);
            }
            fake.inject(f);
            Ok(json!({}))
        }
        ("DELETE", "/sim/faults") => {
            fake.clear_faults();
            Ok(json!({}))
        }
        _ => Err(ApiError::not_found(format!("no admin route {method} {path}"))),
    }
}
