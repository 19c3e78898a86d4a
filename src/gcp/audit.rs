//! A Cloud Run service's deploy and traffic history from the Admin Activity
//! audit log, read with `entries.list` through the same client and quota as
//! the `cloud_logging` source.
//!
//! Shapes: Cloud Audit Logs' `AuditLog` proto
//! (googleapis `google/cloud/audit/audit_log.proto`: `serviceName`,
//! `methodName`, `resourceName`, `authenticationInfo.principalEmail`,
//! `request`, `response`, `status`) inside `LogEntry.protoPayload`, and
//! `LogEntry.operation` (`google/logging/v2/log_entry.proto`,
//! `LogEntryOperation`: `id`, `producer`, `first`, `last`). Cloud Run's page
//! (https://cloud.google.com/run/docs/audit-logging) names the service
//! `run.googleapis.com` and says long-running methods "usually generate two
//! audit log entries: one when the operation starts and another when it
//! ends": only the entry that ends an operation says what serves after it.
//! v2 methods (`google.cloud.run.v2.Services.UpdateService`,
//! `...CreateService`) answer a v2 `Service` (`trafficStatuses`,
//! `latestReadyRevision`); v1 `google.cloud.run.v1.Services.ReplaceService`
//! and `CreateService` (what gcloud uses) answer a Knative `Service`
//! (`status.traffic[].revisionName`, `status.latestReadyRevisionName`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::logging::{ListLogEntriesRequest, LogEntry, LoggingClient};
use super::monitoring::rfc3339;
use super::quota::CallQuota;
use super::GcpError;
use crate::clock::{to_datetime, TimestampMs};

/// `LOG_ID` of the Admin Activity audit log, URL-encoded as in `logName`.
pub const ACTIVITY_LOG_ID: &str = "cloudaudit.googleapis.com%2Factivity";
/// `protoPayload.serviceName` of Cloud Run's audit entries.
pub const RUN_SERVICE_NAME: &str = "run.googleapis.com";
const PAGE_SIZE: i32 = 1000;
/// Pages read at most for one service's history (each a call against the quota).
const MAX_PAGES: usize = 200;

/// The methods that change what a service serves (the rest, such as
/// `SetIamPolicy`, are not deploys).
const CHANGING_METHODS: &[&str] = &[
    "google.cloud.run.v2.Services.CreateService",
    "google.cloud.run.v2.Services.UpdateService",
    "google.cloud.run.v1.Services.CreateService",
    "google.cloud.run.v1.Services.ReplaceService",
];

/// One completed change of a service: what served after it, who made it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServiceChange {
    pub at_ms: TimestampMs,
    pub method: String,
    /// `authenticationInfo.principalEmail`, when the entry has it.
    pub actor: Option<String>,
    /// Revisions (short names) carrying traffic after the change, with percent.
    pub serving: Vec<(String, i32)>,
    /// The latest Ready revision after the change.
    pub latest_ready: Option<String>,
}

impl ServiceChange {
    /// The revision carrying most of the traffic (ties: the greater name, as
    /// the live daemon's `serving_revision` picks).
    pub fn main_revision(&self) -> Option<&str> {
        self.serving
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(r, _)| r.as_str())
            .or(self.latest_ready.as_deref())
    }
}

/// Why an audit entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Api(#[from] GcpError),
    #[error("the Admin Activity audit log of {service} has more than {pages} pages between {from} and {to}; shorten the window (--from/--to)")]
    TooManyPages {
        service: String,
        pages: usize,
        from: String,
        to: String,
    },
}

/// The `entries.list` filter of a service's Admin Activity entries in
/// `[from, to]`. The service name is compared with `=`: `:` ("has") would
/// also match other services whose names contain it (`api` and `api-admin`).
pub fn activity_filter(service: &str, from_ms: TimestampMs, to_ms: TimestampMs) -> String {
    let (project, location, short) = split(service);
    let mut f = format!(
        "logName=\"projects/{project}/logs/{ACTIVITY_LOG_ID}\" AND protoPayload.serviceName=\"{RUN_SERVICE_NAME}\" AND resource.labels.service_name=\"{short}\""
    );
    if !location.is_empty() {
        f.push_str(&format!(" AND resource.labels.location=\"{location}\""));
    }
    f.push_str(&format!(
        " AND timestamp >= \"{}\" AND timestamp <= \"{}\"",
        rfc3339(to_datetime(from_ms)),
        rfc3339(to_datetime(to_ms))
    ));
    f
}

/// (project, location, short name) of `projects/P/locations/L/services/S`
/// (empty parts when the name has another form).
fn split(service: &str) -> (&str, &str, &str) {
    let seg: Vec<&str> = service.split('/').collect();
    match seg.as_slice() {
        ["projects", p, "locations", l, "services", s] => (p, l, s),
        _ => ("", "", super::run::short_name(service)),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Whether the entry's `resourceName` names exactly `short` in `location`
/// (v2: `projects/P/locations/L/services/S`; v1: `namespaces/P/services/S`,
/// whose location is the entry's `resource.labels.location`).
fn is_about(e: &LogEntry, payload: &Value, short: &str, location: &str) -> bool {
    let resource = str_at(payload, &["resourceName"]).unwrap_or("");
    let seg: Vec<&str> = resource.split('/').collect();
    let named = match seg.as_slice() {
        ["projects", _, "locations", l, "services", s, ..] => {
            *s == short && (location.is_empty() || *l == location)
        }
        ["namespaces", _, "services", s, ..] => *s == short,
        _ => false,
    };
    let labelled_location = e.resource.labels.get("location").map(String::as_str);
    named && (location.is_empty() || labelled_location.is_none_or(|l| l == location))
}

/// Revisions carrying traffic (short name, percent), and the latest Ready one.
type Serving = (Vec<(String, i32)>, Option<String>);

/// What served after a change, from the `response` of its completing entry.
fn serving_after(response: &Value) -> Option<Serving> {
    // v2: a `GoogleCloudRunV2Service`, read with the live client's type.
    if response.get("trafficStatuses").is_some() || response.get("latestReadyRevision").is_some() {
        let svc: super::run::Service = serde_json::from_value(response.clone()).ok()?;
        let latest = svc
            .latest_ready_revision
            .as_deref()
            .map(|r| super::run::short_name(r).to_string());
        return Some((svc.serving_revisions(), latest));
    }
    // v1 (Knative): `status.traffic[]` with `revisionName` and `percent`.
    let status = response.get("status")?;
    let latest = status
        .get("latestReadyRevisionName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut by_rev: BTreeMap<String, i32> = BTreeMap::new();
    for t in status.get("traffic").and_then(Value::as_array)? {
        let percent = t.get("percent").and_then(Value::as_i64).unwrap_or(0) as i32;
        if percent <= 0 {
            continue;
        }
        let rev = match t.get("revisionName").and_then(Value::as_str) {
            Some(r) if !r.is_empty() => r.to_string(),
            _ if t.get("latestRevision").and_then(Value::as_bool) == Some(true) => match &latest {
                Some(l) => l.clone(),
                None => continue,
            },
            _ => continue,
        };
        *by_rev.entry(rev).or_default() += percent;
    }
    Some((by_rev.into_iter().collect(), latest))
}

/// The completed changes of `service` (full name) among `entries`, oldest
/// first. The start entry of a long-running operation (`operation.first`
/// without `last`) is not a change; its end entry is. Failed calls
/// (`protoPayload.status.code` not 0), other methods (IAM policy changes),
/// other services (a loose filter's prefix matches) and entries without a
/// readable `response` are left out.
pub fn service_changes(entries: &[LogEntry], service: &str) -> Vec<ServiceChange> {
    let (_, location, short) = split(service);
    let mut out = Vec::new();
    for e in entries {
        let Some(payload) = e.proto_payload.as_ref().map(|p| Value::Object(p.clone())) else {
            continue;
        };
        if str_at(&payload, &["serviceName"]) != Some(RUN_SERVICE_NAME) {
            continue;
        }
        let method = str_at(&payload, &["methodName"]).unwrap_or("");
        if !CHANGING_METHODS.contains(&method) || !is_about(e, &payload, short, location) {
            continue;
        }
        let op = e.operation.as_ref();
        let first = op.is_some_and(|o| o.first);
        let last = op.is_some_and(|o| o.last);
        if first && !last {
            continue;
        }
        if payload
            .get("status")
            .and_then(|s| s.get("code"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
            != 0
        {
            continue;
        }
        let Some((serving, latest_ready)) = payload.get("response").and_then(serving_after) else {
            continue;
        };
        let Some(at) = e.timestamp else { continue };
        out.push(ServiceChange {
            at_ms: at.timestamp_millis(),
            method: method.to_string(),
            actor: str_at(&payload, &["authenticationInfo", "principalEmail"]).map(str::to_string),
            serving,
            latest_ready,
        });
    }
    out.sort_by_key(|c| c.at_ms);
    out
}

/// Reads `service`'s completed changes in `[from, to]`, oldest first, page by
/// page through the shared Logging quota. `on_page` hears the entries read so
/// far (progress).
pub async fn read_service_changes(
    logging: &LoggingClient,
    quota: &CallQuota,
    project: &str,
    service: &str,
    from_ms: TimestampMs,
    to_ms: TimestampMs,
    on_page: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<ServiceChange>, AuditError> {
    let mut body = ListLogEntriesRequest {
        resource_names: vec![format!("projects/{project}")],
        filter: activity_filter(service, from_ms, to_ms),
        order_by: "timestamp asc".into(),
        page_size: Some(PAGE_SIZE),
        page_token: None,
    };
    let mut entries = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = logging.list(&body, Some(quota)).await?;
        entries.extend(page.entries);
        on_page(entries.len());
        // An empty page with a token: the search is still running.
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) => body.page_token = Some(t),
            None => return Ok(service_changes(&entries, service)),
        }
    }
    Err(AuditError::TooManyPages {
        service: service.to_string(),
        pages: MAX_PAGES,
        from: rfc3339(to_datetime(from_ms)),
        to: rfc3339(to_datetime(to_ms)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SVC: &str = "projects/p/locations/europe-west1/services/api";

    fn entry(v: Value) -> LogEntry {
        serde_json::from_value(v).unwrap()
    }

    fn v2_update(ts: &str, service: &str, op: Value, response: Option<Value>) -> LogEntry {
        let mut payload = json!({
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "run.googleapis.com",
            "methodName": "google.cloud.run.v2.Services.UpdateService",
            "resourceName": format!("projects/p/locations/europe-west1/services/{service}"),
            "authenticationInfo": {"principalEmail": "dev@example.com"},
        });
        if let Some(r) = response {
            payload["response"] = r;
        }
        entry(json!({
            "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": service, "location": "europe-west1"}},
            "timestamp": ts,
            "protoPayload": payload,
            "operation": op,
        }))
    }

    #[test]
    fn only_the_end_of_a_long_running_change_counts() {
        let resp = json!({
            "latestReadyRevision": "projects/p/locations/europe-west1/services/api/revisions/api-00002-abc",
            "trafficStatuses": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
        });
        let entries = vec![
            v2_update(
                "2026-11-01T10:00:00Z",
                "api",
                json!({"id": "op1", "producer": "run.googleapis.com", "first": true}),
                None,
            ),
            v2_update(
                "2026-11-01T10:00:20Z",
                "api",
                json!({"id": "op1", "producer": "run.googleapis.com", "last": true}),
                Some(resp.clone()),
            ),
            // Another service whose name starts the same: a loose filter matches it.
            v2_update(
                "2026-11-01T11:00:20Z",
                "api-admin",
                json!({"id": "op2", "last": true}),
                Some(resp),
            ),
        ];
        let changes = service_changes(&entries, SVC);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].main_revision(), Some("api-00002-abc"));
        assert_eq!(changes[0].actor.as_deref(), Some("dev@example.com"));
        // The time of the end entry, not of the start.
        let end = chrono::DateTime::parse_from_rfc3339("2026-11-01T10:00:20Z").unwrap();
        assert_eq!(changes[0].at_ms, end.timestamp_millis());
    }

    #[test]
    fn a_v1_replace_service_gives_its_traffic_and_iam_changes_are_not_deploys() {
        let v1 = entry(json!({
            "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": "api", "location": "europe-west1"}},
            "timestamp": "2026-11-01T12:00:00Z",
            "protoPayload": {
                "serviceName": "run.googleapis.com",
                "methodName": "google.cloud.run.v1.Services.ReplaceService",
                "resourceName": "namespaces/p/services/api",
                "response": {"status": {"latestReadyRevisionName": "api-00003-xyz", "traffic": [
                    {"revisionName": "api-00001-aaa", "percent": 100},
                    {"latestRevision": true, "percent": 0},
                ]}},
            },
        }));
        let iam = entry(json!({
            "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": "api", "location": "europe-west1"}},
            "timestamp": "2026-11-01T12:30:00Z",
            "protoPayload": {
                "serviceName": "run.googleapis.com",
                "methodName": "google.cloud.run.v2.Services.SetIamPolicy",
                "resourceName": "projects/p/locations/europe-west1/services/api",
                "response": {"bindings": []},
            },
        }));
        let changes = service_changes(&[v1, iam], SVC);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].serving, vec![("api-00001-aaa".to_string(), 100)]);
        assert_eq!(changes[0].main_revision(), Some("api-00001-aaa"));
    }

    #[test]
    fn the_filter_compares_the_service_name_exactly() {
        let f = activity_filter(SVC, 0, 60_000);
        assert!(f.contains("resource.labels.service_name=\"api\""), "{f}");
        assert!(
            f.contains("logs/cloudaudit.googleapis.com%2Factivity"),
            "{f}"
        );
        assert!(
            f.contains("protoPayload.serviceName=\"run.googleapis.com\""),
            "{f}"
        );
    }
}
