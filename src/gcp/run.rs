//! Cloud Run Admin API v2: typed services, revisions and long-running
//! operations (shapes from Google's discovery document `run-v2.json`), and the
//! calls rearguard makes: `services.get`, `services.patch`, `revisions.list`,
//! `operations.get`, `operations.wait`.
//!
//! Fields rearguard does not model are kept in `extra` and sent back unchanged
//! by `services.patch`, so a read-modify-write never drops settings.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client::{GcpClient, Request};
use super::error::GcpError;

pub const API: &str = "run";

/// `GoogleCloudRunV2Condition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `RoutesReady`, `ConfigurationsReady`, `ContainerReady`, ...
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// `CONDITION_SUCCEEDED`, `CONDITION_FAILED`, `CONDITION_PENDING`, `CONDITION_RECONCILING`, `STATE_UNSPECIFIED`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
    /// `ERROR`, `WARNING`, `INFO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_reason: Option<String>,
}

pub const CONDITION_SUCCEEDED: &str = "CONDITION_SUCCEEDED";
pub const CONDITION_FAILED: &str = "CONDITION_FAILED";
pub const CONDITION_RECONCILING: &str = "CONDITION_RECONCILING";
pub const CONDITION_PENDING: &str = "CONDITION_PENDING";

impl Condition {
    pub fn succeeded(&self) -> bool {
        self.state == CONDITION_SUCCEEDED
    }
    pub fn failed(&self) -> bool {
        self.state == CONDITION_FAILED
    }
}

/// `GoogleCloudRunV2TrafficTarget.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficTargetAllocationType {
    /// Traffic goes to the latest ready revision.
    #[serde(rename = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST")]
    Latest,
    /// Traffic goes to the named revision.
    #[serde(rename = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION")]
    Revision,
    /// `TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED` (and any value added later).
    #[default]
    #[serde(rename = "TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED", other)]
    Unspecified,
}

impl TrafficTargetAllocationType {
    fn is_unspecified(&self) -> bool {
        *self == TrafficTargetAllocationType::Unspecified
    }
}

/// `GoogleCloudRunV2TrafficTarget`: where a share of traffic should go.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTarget {
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "TrafficTargetAllocationType::is_unspecified"
    )]
    pub type_: TrafficTargetAllocationType,
    /// Revision short name (for type `REVISION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default)]
    pub percent: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl TrafficTarget {
    /// 100% (or `percent`) to one named revision.
    pub fn to_revision(revision: impl Into<String>, percent: i32) -> Self {
        Self {
            type_: TrafficTargetAllocationType::Revision,
            revision: Some(revision.into()),
            percent,
            tag: None,
        }
    }
}

/// `GoogleCloudRunV2TrafficTargetStatus`: where traffic actually goes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTargetStatus {
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "TrafficTargetAllocationType::is_unspecified"
    )]
    pub type_: TrafficTargetAllocationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default)]
    pub percent: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// `GoogleCloudRunV2EnvVar`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A secret reference (`valueSource.secretKeyRef`), kept as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_source: Option<Value>,
}

/// `GoogleCloudRunV2Container` (env modelled; the rest kept in `extra`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Container {
    /// Whether the container declares a port (the ingress container does;
    /// a sidecar may not: "Only a single port can be specified", run-v2.json).
    pub fn has_port(&self) -> bool {
        self.extra
            .get("ports")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty())
    }
}

/// `GoogleCloudRunV2RevisionTemplate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionTemplate {
    /// The name the next revision gets; empty lets Cloud Run choose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RevisionTemplate {
    /// Index of the ingress container: the one with a port, else the only one
    /// (a single container may leave `ports` out and gets PORT=8080).
    pub fn ingress_index(&self) -> Option<usize> {
        self.containers
            .iter()
            .position(Container::has_port)
            .or_else(|| (self.containers.len() == 1).then_some(0))
    }

    /// `serviceAccount`: the runtime identity (None: the Compute Engine default).
    pub fn service_account(&self) -> Option<&str> {
        self.extra
            .get("serviceAccount")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// `GoogleCloudRunV2Service`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `projects/P/locations/L/services/S`
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::int64::option"
    )]
    pub generation: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::int64::option"
    )]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<RevisionTemplate>,
    /// The traffic split asked for.
    #[serde(default)]
    pub traffic: Vec<TrafficTarget>,
    /// The `Ready` condition of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_condition: Option<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_created_revision: Option<String>,
    /// Where traffic actually goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic_statuses: Vec<TrafficTargetStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default)]
    pub reconciling: bool,
    /// Sent back with `services.patch` so a concurrent change is refused (409 ABORTED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Service {
    /// Ready: the terminal condition succeeded.
    pub fn is_ready(&self) -> bool {
        self.terminal_condition
            .as_ref()
            .is_some_and(Condition::succeeded)
    }

    /// Revisions (full names resolved to short ones) that carry traffic now, with their percent.
    pub fn serving_revisions(&self) -> Vec<(String, i32)> {
        let mut out: BTreeMap<String, i32> = BTreeMap::new();
        for t in &self.traffic_statuses {
            if t.percent <= 0 {
                continue;
            }
            let rev = match (&t.revision, t.type_) {
                (Some(r), _) if !r.is_empty() => r.clone(),
                (_, TrafficTargetAllocationType::Latest) => match &self.latest_ready_revision {
                    Some(r) => short_name(r).to_string(),
                    None => continue,
                },
                _ => continue,
            };
            *out.entry(rev).or_default() += t.percent;
        }
        out.into_iter().collect()
    }

    /// The service's short name (`S` of `projects/P/locations/L/services/S`).
    pub fn short_name(&self) -> &str {
        short_name(&self.name)
    }
}

/// The last path segment of a resource name.
pub fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// `GoogleCloudRunV2Revision` (the fields rearguard reads; the rest in `extra`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// `projects/P/locations/L/services/S/revisions/R`
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::int64::option"
    )]
    pub generation: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::int64::option"
    )]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_time: Option<DateTime<Utc>>,
    /// The owning service's short name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub reconciling: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Revision {
    pub fn short_name(&self) -> &str {
        short_name(&self.name)
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The `Ready` condition succeeded.
    pub fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(Condition::succeeded)
    }

    /// The `Ready` condition failed (for example the container never started).
    pub fn has_failed(&self) -> bool {
        self.condition("Ready").is_some_and(Condition::failed)
    }
}

/// `GoogleCloudRunV2ListRevisionsResponse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRevisionsResponse {
    #[serde(default)]
    pub revisions: Vec<Revision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `GoogleRpcStatus`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RpcStatus {
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

/// `GoogleLongrunningOperation`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// `projects/P/locations/L/operations/ID`
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

impl Operation {
    /// The service the operation produced, when it is done and succeeded.
    pub fn response_service(&self) -> Option<Result<Service, GcpError>> {
        let v = self.response.as_ref()?;
        Some(
            serde_json::from_value(v.clone()).map_err(|e| GcpError::Decode {
                api: API,
                method: "operations.get",
                message: format!("operation response is not a Service: {e}"),
            }),
        )
    }
}

/// Options of `services.patch`.
#[derive(Clone, Debug, Default)]
pub struct PatchOptions {
    /// `updateMask`: the fields to change (e.g. `["traffic"]`); none sends the whole service.
    pub update_mask: Vec<String>,
    pub validate_only: bool,
}

/// The body of a `services.patch` that carries only what it changes, so a
/// `template.revision` pinned by gcloud or the Console is never echoed back
/// (Cloud Run answers that with 409 ALREADY_EXISTS "Revision named 'X' with
/// different configuration already exists" even when `updateMask` leaves
/// `template` out: google-cloud-python issues 11870 and 14259).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUpdate {
    pub name: String,
    pub etag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<TrafficTarget>>,
    /// The whole map (a field mask on a map replaces it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// A new template: its `revision` must be empty (a generated name) or new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<RevisionTemplate>,
}

impl ServiceUpdate {
    /// The `updateMask` (v2 field paths) naming exactly the fields sent.
    pub fn update_mask(&self) -> Vec<String> {
        let mut mask = Vec::new();
        if self.template.is_some() {
            mask.push("template".to_string());
        }
        if self.traffic.is_some() {
            mask.push("traffic".to_string());
        }
        if self.annotations.is_some() {
            mask.push("annotations".to_string());
        }
        mask
    }
}

/// The Cloud Run Admin API v2, over the shared request path.
#[derive(Clone)]
pub struct CloudRunClient {
    client: GcpClient,
    base: String,
}

/// A resource name is used as a URL path: refuse anything that could change the path.
fn check_name(name: &str, what: &str) -> Result<(), GcpError> {
    let ok = !name.is_empty()
        && name.starts_with("projects/")
        && !name
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~'));
    if ok {
        Ok(())
    } else {
        Err(GcpError::InvalidRequest(format!(
            "{what} {name:?} is not a resource name like projects/P/locations/L/..."
        )))
    }
}

impl CloudRunClient {
    /// `endpoint`: `gcp.endpoints.run` (e.g. `https://run.googleapis.com`, a regional endpoint, or the fake).
    pub fn new(client: GcpClient, endpoint: &str) -> Self {
        Self {
            client,
            base: endpoint.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/v2/{}", self.base, name)
    }

    /// `services.get`.
    pub async fn get_service(&self, name: &str) -> Result<Service, GcpError> {
        check_name(name, "service")?;
        self.client
            .send(Request::get(API, "services.get", self.url(name)))
            .await
    }

    /// `services.patch` with the service as read (and changed): its `etag` makes
    /// Cloud Run refuse the change if the service changed meanwhile
    /// ([`GcpError::StaleEtag`]). Returns the long-running operation.
    ///
    /// Sends the whole service: a `template.revision` pinned by gcloud or the
    /// Console makes Cloud Run answer 409 ALREADY_EXISTS. Rollbacks use
    /// [`CloudRunClient::update_service`].
    pub async fn patch_service(
        &self,
        service: &Service,
        opts: &PatchOptions,
    ) -> Result<Operation, GcpError> {
        self.send_patch(&service.name, service.etag.as_deref(), service, opts)
            .await
    }

    /// `services.patch` with only the fields `update` changes and the
    /// `updateMask` that names them.
    pub async fn update_service(
        &self,
        update: &ServiceUpdate,
        validate_only: bool,
    ) -> Result<Operation, GcpError> {
        let opts = PatchOptions {
            update_mask: update.update_mask(),
            validate_only,
        };
        self.send_patch(&update.name, Some(&update.etag), update, &opts)
            .await
    }

    async fn send_patch<B: Serialize>(
        &self,
        name: &str,
        etag: Option<&str>,
        body: &B,
        opts: &PatchOptions,
    ) -> Result<Operation, GcpError> {
        check_name(name, "service")?;
        if etag.unwrap_or("").is_empty() {
            return Err(GcpError::InvalidRequest(
                "services.patch without an etag could overwrite a concurrent change; read the service first".into(),
            ));
        }
        // Not idempotent: a patch whose answer was lost may have been applied,
        // and sending it again would be refused for its old etag (or apply twice).
        let mut req = Request::with_body(
            API,
            "services.patch",
            reqwest::Method::PATCH,
            self.url(name),
            body,
        )?
        .not_retried();
        if !opts.update_mask.is_empty() {
            req = req.query("updateMask", opts.update_mask.join(","));
        }
        if opts.validate_only {
            req = req.query("validateOnly", "true");
        }
        match self.client.send(req).await {
            Err(GcpError::Api {
                api,
                method,
                http_status: 409,
                status,
                message,
                ..
            }) if status == "ABORTED" => Err(GcpError::StaleEtag {
                api,
                method,
                message,
            }),
            other => other,
        }
    }

    /// One page of `revisions.list` (newest first, as Cloud Run returns them).
    pub async fn list_revisions_page(
        &self,
        service: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<ListRevisionsResponse, GcpError> {
        check_name(service, "service")?;
        let mut req = Request::get(
            API,
            "revisions.list",
            format!("{}/revisions", self.url(service)),
        )
        .query("pageSize", page_size.to_string());
        if let Some(t) = page_token.filter(|t| !t.is_empty()) {
            req = req.query("pageToken", t);
        }
        self.client.send(req).await
    }

    /// Every revision of `service`, following `nextPageToken` (at most `max_pages` pages).
    pub async fn list_revisions(&self, service: &str) -> Result<Vec<Revision>, GcpError> {
        const PAGE_SIZE: u32 = 100;
        const MAX_PAGES: usize = 50;
        let (out, cut_short) = super::paging::collect_pages(MAX_PAGES, |token| async move {
            let page = self
                .list_revisions_page(service, PAGE_SIZE, token.as_deref())
                .await?;
            Ok(super::paging::Page {
                items: page.revisions,
                next_page_token: page.next_page_token,
            })
        })
        .await?;
        if cut_short {
            tracing::warn!(
                service,
                max_pages = MAX_PAGES,
                "revisions.list: stopped after the page limit"
            );
        }
        Ok(out)
    }

    /// `operations.get`.
    pub async fn get_operation(&self, name: &str) -> Result<Operation, GcpError> {
        check_name(name, "operation")?;
        self.client
            .send(Request::get(API, "operations.get", self.url(name)))
            .await
    }

    /// `operations.wait`: blocks server-side up to `timeout` (returns the operation, done or not).
    pub async fn wait_operation(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Operation, GcpError> {
        check_name(name, "operation")?;
        let body = serde_json::json!({ "timeout": format!("{}s", timeout.as_secs().max(1)) });
        let req = Request::with_body(
            API,
            "operations.wait",
            reqwest::Method::POST,
            format!("{}:wait", self.url(name)),
            &body,
        )?
        .timeout(timeout + self.client.policy().timeout);
        self.client.send(req).await
    }

    /// Waits (with `operations.wait`, falling back to polling) until the operation
    /// is done or `deadline` passes; a done operation with an error is returned as is.
    pub async fn wait_until_done(
        &self,
        name: &str,
        deadline: Duration,
    ) -> Result<Operation, GcpError> {
        const WAIT_STEP: Duration = Duration::from_secs(30);
        const POLL_PAUSE: Duration = Duration::from_secs(1);
        let start = tokio::time::Instant::now();
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            let step = left.min(WAIT_STEP).max(Duration::from_secs(1));
            let asked = tokio::time::Instant::now();
            let op = self.wait_operation(name, step).await?;
            if op.done {
                return Ok(op);
            }
            if start.elapsed() >= deadline {
                return Err(GcpError::Timeout {
                    api: API,
                    method: "operations.wait",
                    timeout: deadline,
                });
            }
            // A server that answers at once without waiting: do not spin.
            if asked.elapsed() < step / 2 {
                tokio::time::sleep(POLL_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_round_trips_unknown_fields_and_int64_strings() {
        let raw = serde_json::json!({
            "name": "projects/p/locations/l/services/s",
            "generation": "7",
            "observedGeneration": "7",
            "etag": "\"abc\"",
            "ingress": "INGRESS_TRAFFIC_ALL",
            "template": {"revision": "s-00002", "containers": [{"image": "gcr.io/x", "env": [{"name": "FLAG", "value": "on"}], "ports": [{"containerPort": 8080}]}], "scaling": {"maxInstanceCount": 3}},
            "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
            "trafficStatuses": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
            "latestReadyRevision": "projects/p/locations/l/services/s/revisions/s-00002",
            "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": "2026-11-22T10:00:00.123456Z"},
            "reconciling": false
        });
        let s: Service = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(s.generation, Some(7));
        assert!(s.is_ready());
        assert_eq!(s.serving_revisions(), vec![("s-00002".to_string(), 100)]);
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["generation"], "7");
        assert_eq!(back["ingress"], "INGRESS_TRAFFIC_ALL");
        assert_eq!(back["template"]["scaling"]["maxInstanceCount"], 3);
        assert_eq!(
            back["template"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
    }

    #[test]
    fn bad_generation_is_an_error() {
        let r: Result<Service, _> =
            serde_json::from_value(serde_json::json!({"name": "x", "generation": "seven"}));
        assert!(r.is_err());
    }

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        assert!(check_name("projects/p/locations/l/services/s", "service").is_ok());
        assert!(check_name("projects/p/../../x", "service").is_err());
        assert!(check_name("projects/p/locations/l/services/s?x=1", "service").is_err());
        assert!(check_name("services/s", "service").is_err());
    }
}
