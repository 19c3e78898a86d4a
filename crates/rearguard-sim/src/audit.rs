//! Cloud Run's Admin Activity audit entries, shaped as Google writes them,
//! for the simulator's history mode.
//!
//! Sources: the `AuditLog` proto (googleapis `google/cloud/audit/audit_log.proto`:
//! `serviceName`, `methodName`, `resourceName`, `authenticationInfo`,
//! `request`, `response`, `status`), `LogEntry.operation`
//! (`google/logging/v2/log_entry.proto`, `LogEntryOperation` with `id`,
//! `producer`, `first`, `last`), and Cloud Run's audit logging page
//! (https://cloud.google.com/run/docs/audit-logging): service
//! `run.googleapis.com`, Admin Activity methods such as
//! `google.cloud.run.v2.Services.UpdateService` (long-running: one entry when
//! the operation starts, one when it ends) and gcloud's v1
//! `google.cloud.run.v1.Services.ReplaceService`. The entries sit on the
//! `cloud_run_revision` resource with the service's name in
//! `resource.labels.service_name`, so a filter with `:` on that label also
//! matches services whose names contain it.

use serde_json::{json, Value};

use super::util::timestamp;
use rearguard_clock::TimestampMs;

pub const ACTIVITY_LOG: &str = "cloudaudit.googleapis.com%2Factivity";
const AUDIT_TYPE: &str = "type.googleapis.com/google.cloud.audit.AuditLog";

/// Where an entry is about: `projects/P/locations/L/services/S`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRef {
    pub project: String,
    pub location: String,
    pub short: String,
}

impl ServiceRef {
    /// From a full service name; `None` when it is not one.
    pub fn parse(name: &str) -> Option<Self> {
        let seg: Vec<&str> = name.split('/').collect();
        match seg.as_slice() {
            ["projects", p, "locations", l, "services", s] => Some(Self {
                project: p.to_string(),
                location: l.to_string(),
                short: s.to_string(),
            }),
            _ => None,
        }
    }

    pub fn full(&self) -> String {
        format!(
            "projects/{}/locations/{}/services/{}",
            self.project, self.location, self.short
        )
    }
}

fn envelope(s: &ServiceRef, at_ms: TimestampMs, payload: Value) -> Value {
    json!({
        "logName": format!("projects/{}/logs/{ACTIVITY_LOG}", s.project),
        "resource": {
            "type": "cloud_run_revision",
            "labels": {
                "project_id": s.project,
                "location": s.location,
                "service_name": s.short,
                "configuration_name": "",
                "revision_name": "",
            },
        },
        "timestamp": timestamp(at_ms),
        "receiveTimestamp": timestamp(at_ms + 250),
        "severity": "NOTICE",
        "protoPayload": payload,
    })
}

fn payload(s: &ServiceRef, method: &str, resource: String, actor: &str) -> Value {
    json!({
        "@type": AUDIT_TYPE,
        "status": {},
        "authenticationInfo": {"principalEmail": actor},
        "requestMetadata": {"callerSuppliedUserAgent": "google-cloud-sdk gcloud/500.0.0"},
        "serviceName": "run.googleapis.com",
        "methodName": method,
        "authorizationInfo": [{
            "resource": format!("namespaces/{}/services/{}", s.project, s.short),
            "permission": "run.services.update",
            "granted": true,
        }],
        "resourceName": resource,
        "resourceLocation": {"currentLocations": [s.location]},
    })
}

/// The entry that starts a v2 `UpdateService` (or `CreateService`) operation.
pub fn v2_first(
    s: &ServiceRef,
    method: &str,
    operation: &str,
    actor: &str,
    at_ms: TimestampMs,
    request: Value,
) -> Value {
    let mut p = payload(s, method, s.full(), actor);
    p["request"] = request;
    let mut e = envelope(s, at_ms, p);
    e["operation"] = json!({"id": operation, "producer": "run.googleapis.com", "first": true});
    e
}

/// The entry that ends it: `response` is the v2 `Service` after the change.
pub fn v2_last(
    s: &ServiceRef,
    method: &str,
    operation: &str,
    actor: &str,
    at_ms: TimestampMs,
    service: Value,
) -> Value {
    let mut p = payload(s, method, s.full(), actor);
    let mut response = service;
    response["@type"] = json!("type.googleapis.com/google.cloud.run.v2.Service");
    p["response"] = response;
    let mut e = envelope(s, at_ms, p);
    e["operation"] = json!({"id": operation, "producer": "run.googleapis.com", "last": true});
    e
}

/// A v1 `ReplaceService` (what `gcloud run services update-traffic` calls):
/// one entry, its `response` the Knative service with `status.traffic`.
pub fn v1_replace(s: &ServiceRef, actor: &str, at_ms: TimestampMs, v2_service: &Value) -> Value {
    let resource = format!("namespaces/{}/services/{}", s.project, s.short);
    let mut p = payload(
        s,
        "google.cloud.run.v1.Services.ReplaceService",
        resource,
        actor,
    );
    let latest = v2_service["latestReadyRevision"]
        .as_str()
        .map(|r| r.rsplit('/').next().unwrap_or(r).to_string());
    let traffic: Vec<Value> = v2_service["trafficStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let percent = t["percent"].as_i64().unwrap_or(0);
            match t["revision"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => json!({"revisionName": r, "percent": percent}),
                None => json!({"latestRevision": true, "percent": percent, "revisionName": latest}),
            }
        })
        .collect();
    p["response"] = json!({
        "@type": "type.googleapis.com/google.cloud.run.v1.Service",
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": s.short, "namespace": s.project},
        "status": {"latestReadyRevisionName": latest, "traffic": traffic},
    });
    envelope(s, at_ms, p)
}

/// A `SetIamPolicy` on the service: an Admin Activity entry that changes no
/// traffic.
pub fn set_iam_policy(s: &ServiceRef, actor: &str, at_ms: TimestampMs, member: &str) -> Value {
    let mut p = payload(
        s,
        "google.cloud.run.v2.Services.SetIamPolicy",
        s.full(),
        actor,
    );
    p["request"] = json!({
        "resource": s.full(),
        "policy": {"bindings": [{"role": "roles/run.invoker", "members": [member]}]},
    });
    p["response"] =
        json!({"bindings": [{"role": "roles/run.invoker", "members": [member]}], "etag": "BwYk"});
    envelope(s, at_ms, p)
}
