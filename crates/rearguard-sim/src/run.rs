//! Cloud Run Admin API v2: services.get/list/patch, revisions.list/get,
//! operations.get/wait. Shapes follow `run-v2.json` field for field.
//!
//! A patch changes the spec at once (generation, etag, template, traffic;
//! a changed template creates revision `<service>-000NN-xyz`) and returns a
//! long-running operation that completes `operation_delay` later on the
//! Clock. Only then does the new revision become Ready (or fail, per its
//! [`RevisionBehaviour`]), does traffic move, and does the service show Ready.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::util::{random_hex, random_letters, random_uuid, timestamp, ApiError};
use rearguard_clock::TimestampMs;

pub const SERVICE_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Service";
const LATEST: &str = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST";
const BY_REVISION: &str = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION";

/// How a revision behaves: whether it ever becomes Ready, and how the
/// simulated service answers when it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionBehaviour {
    /// `false`: the container never listens on PORT; the revision's Ready
    /// condition fails (`HEALTH_CHECK_CONTAINER_ERROR`) and it gets no traffic.
    pub becomes_ready: bool,
    /// Status of the health endpoint (`/health`, `/healthz`).
    pub health_status: u16,
    /// Fraction of ordinary requests answered 500 (0.0..=1.0).
    pub error_ratio: f64,
    /// Time to answer each request.
    pub latency: Duration,
    /// Memory utilization (0.0..=1.0) reported to Monitoring.
    pub memory_utilization: f64,
}

impl RevisionBehaviour {
    pub fn healthy() -> Self {
        Self {
            becomes_ready: true,
            health_status: 200,
            error_ratio: 0.0,
            latency: Duration::from_millis(20),
            memory_utilization: 0.35,
        }
    }
    /// Starts, but serves errors: health 503, half the requests 500, slow.
    pub fn bad() -> Self {
        Self {
            becomes_ready: true,
            health_status: 503,
            error_ratio: 0.5,
            latency: Duration::from_millis(1500),
            memory_utilization: 0.92,
        }
    }
    /// Never becomes Ready (did not listen on PORT).
    pub fn never_ready() -> Self {
        Self {
            becomes_ready: false,
            ..Self::healthy()
        }
    }
}

impl Default for RevisionBehaviour {
    fn default() -> Self {
        Self::healthy()
    }
}

/// Chooses the behaviour of a revision created through the API, from its
/// template (`containers[].env`, `image`). First match wins; none: healthy.
pub type BehaviourRule = Arc<dyn Fn(&Value) -> Option<RevisionBehaviour> + Send + Sync>;

/// A service to create through the control API.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// `projects/P/locations/L/services/S`.
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub behaviour: RevisionBehaviour,
}

impl ServiceSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: "us-docker.pkg.dev/cloudrun/container/hello:v1".into(),
            env: Vec::new(),
            behaviour: RevisionBehaviour::healthy(),
        }
    }
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// A deploy through the control API (what `gcloud run deploy` does: a new
/// revision from a changed template, 100% traffic to LATEST).
#[derive(Clone, Debug, Default)]
pub struct DeploySpec {
    /// New image; `None` keeps the current one.
    pub image: Option<String>,
    /// Environment variables set (added or replaced) on the first container.
    pub env: Vec<(String, String)>,
    pub behaviour: RevisionBehaviour,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RevisionState {
    Pending,
    Ready,
    Failed,
}

#[derive(Clone, Debug)]
pub struct Revision {
    pub name: String,
    pub short: String,
    pub service: String,
    pub uid: String,
    pub create_ms: TimestampMs,
    pub update_ms: TimestampMs,
    pub template: Value,
    pub state: RevisionState,
    pub behaviour: RevisionBehaviour,
}

#[derive(Clone, Debug)]
struct TrafficStatus {
    kind: &'static str,
    revision: String,
    percent: i64,
    tag: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Terminal {
    Succeeded,
    Reconciling,
    Failed(String),
}

pub struct Service {
    pub name: String,
    project: String,
    location: String,
    short: String,
    uid: String,
    generation: i64,
    observed_generation: i64,
    etag: String,
    create_ms: TimestampMs,
    update_ms: TimestampMs,
    transition_ms: TimestampMs,
    template: Value,
    traffic: Vec<Value>,
    statuses: Vec<TrafficStatus>,
    latest_created: Option<String>,
    latest_ready: Option<String>,
    terminal: Terminal,
    revision_seq: u32,
    /// Mutable fields the client set that we keep and echo (labels, description, ...).
    extra: Map<String, Value>,
    pub uri: String,
    rules: Vec<BehaviourRule>,
}

struct Operation {
    name: String,
    service: String,
    done_at_ms: TimestampMs,
    done: bool,
    generation: i64,
    new_revision: Option<String>,
    error: Option<(i64, String)>,
    /// What the operation reports as metadata / response once settled.
    snapshot: Option<Value>,
}

pub(crate) struct RunState {
    services: BTreeMap<String, Service>,
    revisions: BTreeMap<String, Revision>,
    operations: BTreeMap<String, Operation>,
    pub operation_delay_ms: i64,
    /// Refuse a patch whose `etag` is not the current one (409 ABORTED).
    /// `service.proto` marks `etag` output only and Google does not document
    /// that Cloud Run enforces it on update: `false` accepts any etag, so
    /// clients must not rely on it alone.
    pub enforce_etag: bool,
    /// The caller may not act as the service's runtime service account:
    /// every update answers 403. Cloud Run requires Service Account User on
    /// the service identity for traffic changes too ("Rollbacks, gradual
    /// rollouts, and traffic migration", Required roles:
    /// https://cloud.google.com/run/docs/rollouts-rollbacks-traffic-migration).
    pub deny_act_as: bool,
}

/// Fields of Service a patch may not set (output only); ignored like Google does.
const OUTPUT_ONLY: &[&str] = &[
    "uid",
    "generation",
    "createTime",
    "updateTime",
    "deleteTime",
    "expireTime",
    "creator",
    "lastModifier",
    "observedGeneration",
    "terminalCondition",
    "conditions",
    "latestReadyRevision",
    "latestCreatedRevision",
    "trafficStatuses",
    "uri",
    "urls",
    "reconciling",
    "satisfiesPzs",
    "threatDetectionEnabled",
];

fn split_service_name(name: &str) -> Option<(String, String, String)> {
    let p: Vec<&str> = name.split('/').collect();
    match p.as_slice() {
        ["projects", proj, "locations", loc, "services", svc]
            if !proj.is_empty() && !loc.is_empty() && !svc.is_empty() =>
        {
            Some((proj.to_string(), loc.to_string(), svc.to_string()))
        }
        _ => None,
    }
}

impl RunState {
    pub fn new() -> Self {
        Self {
            services: BTreeMap::new(),
            revisions: BTreeMap::new(),
            operations: BTreeMap::new(),
            operation_delay_ms: 2000,
            enforce_etag: true,
            deny_act_as: false,
        }
    }

    // ---- control API -------------------------------------------------------

    /// Creates a service whose first revision is Ready and serves 100%.
    pub fn create_service(
        &mut self,
        now: TimestampMs,
        spec: &ServiceSpec,
    ) -> Result<String, ApiError> {
        let (project, location, short) = split_service_name(&spec.name).ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "service name {:?} is not projects/P/locations/L/services/S",
                spec.name
            ))
        })?;
        if self.services.contains_key(&spec.name) {
            return Err(ApiError::new(
                409,
                "ALREADY_EXISTS",
                format!("Resource '{short}' already exists."),
            ));
        }
        let env: Vec<Value> = spec
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        let template = json!({
            "containers": [{
                "image": spec.image,
                "env": env,
                "ports": [{"name": "http1", "containerPort": 8080}],
                "resources": {"limits": {"cpu": "1000m", "memory": "512Mi"}, "cpuIdle": true, "startupCpuBoost": true},
                "startupProbe": {"timeoutSeconds": 240, "periodSeconds": 240, "failureThreshold": 1, "tcpSocket": {"port": 8080}},
            }],
            "scaling": {"maxInstanceCount": 100},
            "timeout": "300s",
            "serviceAccount": format!("rearguard-demo@{project}.iam.gserviceaccount.com"),
            "maxInstanceRequestConcurrency": 80,
            "executionEnvironment": "EXECUTION_ENVIRONMENT_GEN2",
        });
        let hash = random_letters(6);
        let mut svc = Service {
            name: spec.name.clone(),
            project,
            location,
            uri: format!("https://{short}-{hash}-uc.a.run.app"),
            short,
            uid: random_uuid(),
            generation: 1,
            observed_generation: 1,
            etag: new_etag(),
            create_ms: now,
            update_ms: now,
            transition_ms: now,
            template,
            traffic: vec![json!({"type": LATEST, "percent": 100})],
            statuses: Vec::new(),
            latest_created: None,
            latest_ready: None,
            terminal: Terminal::Succeeded,
            revision_seq: 0,
            extra: Map::new(),
            rules: Vec::new(),
        };
        let rev = new_revision(&mut svc, now, spec.behaviour.clone());
        let rev_name = rev.name.clone();
        let ready = spec.behaviour.becomes_ready;
        self.revisions.insert(rev_name.clone(), rev);
        svc.latest_created = Some(rev_name.clone());
        if let Some(r) = self.revisions.get_mut(&rev_name) {
            r.state = if ready {
                RevisionState::Ready
            } else {
                RevisionState::Failed
            };
        }
        if ready {
            svc.latest_ready = Some(rev_name.clone());
            svc.statuses = vec![TrafficStatus {
                kind: LATEST,
                revision: short_of(&rev_name),
                percent: 100,
                tag: None,
            }];
        } else {
            svc.terminal = Terminal::Failed(not_ready_message(&short_of(&rev_name)));
        }
        self.services.insert(spec.name.clone(), svc);
        Ok(rev_name)
    }

    /// A deploy like `gcloud run deploy`: new revision, traffic 100% LATEST,
    /// through an operation like any patch. Returns (revision, operation).
    pub fn deploy(
        &mut self,
        now: TimestampMs,
        service: &str,
        spec: &DeploySpec,
    ) -> Result<(String, String), ApiError> {
        let svc = self.service_ref(service)?;
        let mut template = svc.template.clone();
        if let Some(c) = template
            .get_mut("containers")
            .and_then(Value::as_array_mut)
            .and_then(|a| a.first_mut())
        {
            if let Some(image) = &spec.image {
                c["image"] = json!(image);
            }
            set_env(c, &spec.env);
        }
        // gcloud (and the Console) name the new revision themselves and pin it
        // in `template.revision` (`<service>-<generation:05>-<3 letters>`;
        // hashicorp/terraform-provider-google issue 9438: "the Cloud Console
        // (as well as gcloud) will specify a revision name"); it stays in the
        // service's template until the next deploy names another.
        let pinned = format!(
            "{}-{:05}-{}",
            svc.short,
            svc.revision_seq + 1,
            random_letters(3)
        );
        template["revision"] = json!(pinned);
        let body = json!({"template": template, "traffic": [{"type": LATEST, "percent": 100}]});
        let op = self.patch_inner(
            now,
            service,
            &body,
            true,
            Some(spec.behaviour.clone()),
            false,
        )?;
        let name = op["name"].as_str().unwrap_or_default().to_string();
        let rev = self
            .operations
            .get(&name)
            .and_then(|o| o.new_revision.clone())
            .unwrap_or_default();
        Ok((rev, name))
    }

    pub fn add_behaviour_rule(
        &mut self,
        service: &str,
        rule: BehaviourRule,
    ) -> Result<(), ApiError> {
        self.service_mut(service)?.rules.push(rule);
        Ok(())
    }

    pub fn set_revision_behaviour(
        &mut self,
        revision: &str,
        b: RevisionBehaviour,
    ) -> Result<(), ApiError> {
        let r = self
            .revisions
            .get_mut(revision)
            .ok_or_else(|| ApiError::not_found(format!("no revision {revision}")))?;
        r.behaviour = b;
        Ok(())
    }

    pub fn set_uri(&mut self, service: &str, uri: &str) -> Result<(), ApiError> {
        self.service_mut(service)?.uri = uri.to_string();
        Ok(())
    }

    pub fn revision(&self, name: &str) -> Option<&Revision> {
        self.revisions.get(name)
    }

    /// Revisions serving traffic now: (full revision name, percent).
    pub fn serving(&self, service: &str) -> Vec<(String, i64)> {
        let Some(svc) = self.services.get(service) else {
            return Vec::new();
        };
        svc.statuses
            .iter()
            .filter(|s| s.percent > 0)
            .map(|s| (format!("{}/revisions/{}", svc.name, s.revision), s.percent))
            .collect()
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    pub fn project_location(&self, service: &str) -> Option<(String, String, String)> {
        self.services
            .get(service)
            .map(|s| (s.project.clone(), s.location.clone(), s.short.clone()))
    }

    /// Time at which the next pending operation completes.
    pub fn next_completion(&self) -> Option<TimestampMs> {
        self.operations
            .values()
            .filter(|o| !o.done)
            .map(|o| o.done_at_ms)
            .min()
    }

    // ---- time ----------------------------------------------------------------

    /// Completes every operation due by `now`, in order.
    pub fn advance(&mut self, now: TimestampMs) {
        loop {
            let next = self
                .operations
                .values()
                .filter(|o| !o.done && o.done_at_ms <= now)
                .min_by_key(|o| (o.done_at_ms, o.generation))
                .map(|o| o.name.clone());
            let Some(op_name) = next else { break };
            self.complete(&op_name);
        }
    }

    fn complete(&mut self, op_name: &str) {
        let Some(op) = self.operations.get(op_name) else {
            return;
        };
        let (svc_name, at, generation, new_rev) = (
            op.service.clone(),
            op.done_at_ms,
            op.generation,
            op.new_revision.clone(),
        );
        let mut error = None;
        if let Some(rev) = new_rev.as_ref().and_then(|r| self.revisions.get_mut(r)) {
            rev.update_ms = at;
            if rev.behaviour.becomes_ready {
                rev.state = RevisionState::Ready;
            } else {
                rev.state = RevisionState::Failed;
                error = Some(not_ready_message(&rev.short));
            }
        }
        let revisions = &self.revisions;
        let Some(svc) = self.services.get_mut(&svc_name) else {
            return;
        };
        if let Some(rev) = &new_rev {
            if revisions
                .get(rev)
                .is_some_and(|r| r.state == RevisionState::Ready)
            {
                svc.latest_ready = Some(rev.clone());
            }
        }
        if error.is_none() && generation == svc.generation {
            match resolve_traffic(svc, revisions) {
                Ok(statuses) => svc.statuses = statuses,
                Err(e) => error = Some(e),
            }
        }
        if generation >= svc.observed_generation {
            svc.observed_generation = generation;
            svc.terminal = match &error {
                Some(msg) => Terminal::Failed(msg.clone()),
                None if generation == svc.generation => Terminal::Succeeded,
                None => svc.terminal.clone(),
            };
            svc.transition_ms = at;
            svc.update_ms = at;
            svc.etag = new_etag();
        }
        let snapshot = service_json(svc, revisions);
        if let Some(op) = self.operations.get_mut(op_name) {
            op.done = true;
            op.error = error.map(|m| (9, m));
            op.snapshot = Some(snapshot);
        }
    }

    // ---- API -------------------------------------------------------------------

    fn service_ref(&self, name: &str) -> Result<&Service, ApiError> {
        self.services
            .get(name)
            .ok_or_else(|| service_not_found(name))
    }

    fn service_mut(&mut self, name: &str) -> Result<&mut Service, ApiError> {
        self.services
            .get_mut(name)
            .ok_or_else(|| service_not_found(name))
    }

    pub fn get_service(&self, name: &str) -> Result<Value, ApiError> {
        Ok(service_json(self.service_ref(name)?, &self.revisions))
    }

    pub fn list_services(&self, parent: &str, page_size: usize, offset: usize, key: &str) -> Value {
        let all: Vec<&Service> = self
            .services
            .values()
            .filter(|s| {
                format!("projects/{}/locations/{}", s.project, s.location) == parent
                    || parent.ends_with("/locations/-")
            })
            .collect();
        let page: Vec<Value> = all
            .iter()
            .skip(offset)
            .take(page_size)
            .map(|s| service_json(s, &self.revisions))
            .collect();
        let mut out = json!({"services": page});
        if offset + page_size < all.len() {
            out["nextPageToken"] = json!(super::util::page_token(offset + page_size, key));
        }
        out
    }

    pub fn list_revisions(
        &self,
        parent: &str,
        page_size: usize,
        offset: usize,
        key: &str,
    ) -> Result<Value, ApiError> {
        let svc = self.service_ref(parent)?;
        // Newest first, as Cloud Run lists them.
        let mut revs: Vec<&Revision> = self
            .revisions
            .values()
            .filter(|r| r.service == svc.name)
            .collect();
        revs.sort_by(|a, b| b.create_ms.cmp(&a.create_ms).then(b.name.cmp(&a.name)));
        let page: Vec<Value> = revs
            .iter()
            .skip(offset)
            .take(page_size)
            .map(|r| revision_json(r, svc))
            .collect();
        let mut out = json!({});
        if !page.is_empty() {
            out["revisions"] = json!(page);
        }
        if offset + page_size < revs.len() {
            out["nextPageToken"] = json!(super::util::page_token(offset + page_size, key));
        }
        Ok(out)
    }

    pub fn get_revision(&self, name: &str) -> Result<Value, ApiError> {
        let rev = self.revisions.get(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "Resource '{}' of kind 'REVISION' does not exist.",
                short_of(name)
            ))
        })?;
        let svc = self.service_ref(&rev.service)?;
        Ok(revision_json(rev, svc))
    }

    pub fn get_operation(&self, name: &str) -> Result<Value, ApiError> {
        let op = self
            .operations
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("Operation {name} not found.")))?;
        let svc = self.service_ref(&op.service)?;
        Ok(operation_json(op, svc, &self.revisions))
    }

    /// When a wait on this operation should return: its completion time.
    pub fn operation_done_at(&self, name: &str) -> Option<(bool, TimestampMs)> {
        self.operations.get(name).map(|o| (o.done, o.done_at_ms))
    }

    /// `services.patch`.
    pub fn patch(
        &mut self,
        now: TimestampMs,
        name: &str,
        query: &[(String, String)],
        body: &Value,
    ) -> Result<Value, ApiError> {
        let flag = |k: &str| super::util::query_get(query, k) == Some("true");
        let svc = self.service_ref(name)?;
        if self.deny_act_as {
            let account = svc.template["serviceAccount"].as_str().unwrap_or_default();
            // Google's IAM denials name the permission in an ErrorInfo too
            // (google/rpc/error_details.proto; reason IAM_PERMISSION_DENIED,
            // metadata permission and resource).
            return Err(ApiError::new(
                403,
                "PERMISSION_DENIED",
                format!("Permission 'iam.serviceaccounts.actAs' denied on service account {account} (or it may not exist)."),
            )
            .with_detail(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {
                    "permission": "iam.serviceaccounts.actAs",
                    "resource": format!("projects/-/serviceAccounts/{account}"),
                },
            })));
        }
        // A body whose template names an existing revision is refused, even
        // when `updateMask` leaves `template` out and nothing in it changed:
        // revisions are immutable and their names unique (google-cloud-python
        // issues 11870, a traffic-only update, and 14259, updateMask
        // `scaling.minInstanceCount`; both 409 "Revision named 'X' with
        // different configuration already exists").
        if let Some(rev) = body
            .get("template")
            .and_then(|t| t.get("revision"))
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            if self
                .revisions
                .contains_key(&format!("{}/revisions/{rev}", svc.name))
            {
                return Err(ApiError::new(
                    409,
                    "ALREADY_EXISTS",
                    format!("Revision named '{rev}' with different configuration already exists."),
                ));
            }
        }
        if let Some(mask) = super::util::query_get(query, "updateMask") {
            let mut filtered = Map::new();
            for field in mask.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                let top = field.split('.').next().unwrap_or(field);
                let camel = snake_to_camel(top);
                if let Some(v) = body.get(&camel) {
                    filtered.insert(camel, v.clone());
                } else {
                    filtered.insert(camel, Value::Null);
                }
            }
            if let Some(e) = body.get("etag") {
                filtered.insert("etag".into(), e.clone());
            }
            let body = Value::Object(filtered);
            return self.patch_checked(
                now,
                name,
                &body,
                flag("forceNewRevision"),
                flag("validateOnly"),
            );
        }
        self.patch_checked(
            now,
            name,
            body,
            flag("forceNewRevision"),
            flag("validateOnly"),
        )
    }

    fn patch_checked(
        &mut self,
        now: TimestampMs,
        name: &str,
        body: &Value,
        force: bool,
        validate_only: bool,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::invalid_argument(
                "Invalid JSON payload received: the body must be a Service object.",
            ));
        }
        if let Some(n) = body.get("name").and_then(Value::as_str) {
            if !n.is_empty() && n != name {
                return Err(ApiError::invalid_argument(format!(
                    "service.name {n:?} does not match the resource name in the URL {name:?}."
                )));
            }
        }
        if validate_only {
            self.service_ref(name)?;
            self.check_etag(name, body)?;
            validate_traffic(body.get("traffic"), name, &self.revisions)?;
            let svc = self.service_ref(name)?;
            let snap = service_json(svc, &self.revisions);
            return Ok(json!({
                "name": format!("projects/{}/locations/{}/operations/{}", svc.project, svc.location, random_uuid()),
                "metadata": with_type(snap.clone()),
                "done": true,
                "response": with_type(snap),
            }));
        }
        self.patch_inner(now, name, body, force, None, true)
    }

    fn check_etag(&self, name: &str, body: &Value) -> Result<(), ApiError> {
        let svc = self.service_ref(name)?;
        if !self.enforce_etag {
            return Ok(());
        }
        if let Some(etag) = body.get("etag").and_then(Value::as_str) {
            if !etag.is_empty() && etag != svc.etag {
                return Err(ApiError::aborted(format!(
                    "The service '{}' was modified since it was read: the request's etag {etag:?} does not match the current etag {:?}. Read the service again and retry.",
                    svc.short, svc.etag
                )));
            }
        }
        Ok(())
    }

    fn patch_inner(
        &mut self,
        now: TimestampMs,
        name: &str,
        body: &Value,
        force_new_revision: bool,
        behaviour: Option<RevisionBehaviour>,
        check_etag: bool,
    ) -> Result<Value, ApiError> {
        if check_etag {
            self.check_etag(name, body)?;
        }
        validate_traffic(body.get("traffic"), name, &self.revisions)?;
        let delay = self.operation_delay_ms;
        let svc = self.service_mut(name)?;

        let mut changed = false;
        let mut new_template = None;
        if let Some(t) = body.get("template").filter(|t| !t.is_null()) {
            if !t.is_object() {
                return Err(ApiError::invalid_argument(
                    "service.template must be an object",
                ));
            }
            let mut t = t.clone();
            if t.get("containers")
                .and_then(Value::as_array)
                .is_none_or(|c| c.is_empty())
            {
                return Err(ApiError::invalid_argument(
                    "service.template.containers: at least one container is required.",
                ));
            }
            if let Some(rev) = t.get("revision").and_then(Value::as_str) {
                if !rev.starts_with(&format!("{}-", svc.short)) {
                    return Err(ApiError::invalid_argument(format!(
                        "service.template.revision {rev:?} must start with the service name followed by a dash."
                    )));
                }
            }
            let differs = strip_revision(&t) != strip_revision(&svc.template)
                || t.get("revision")
                    .is_some_and(|r| Some(r) != svc.template.get("revision"));
            if differs || force_new_revision {
                // The service's template keeps the name the client gave (or
                // none), as `services.get` shows it after a gcloud deploy.
                if t.get("revision").and_then(Value::as_str) == Some("") {
                    if let Some(obj) = t.as_object_mut() {
                        obj.remove("revision");
                    }
                }
                new_template = Some((
                    t,
                    body["template"]
                        .get("revision")
                        .and_then(Value::as_str)
                        .map(String::from),
                ));
            }
        }
        let new_traffic = body
            .get("traffic")
            .and_then(Value::as_array)
            .cloned()
            .filter(|t| *t != svc.traffic);
        let mut extra_changes = Map::new();
        if let Some(obj) = body.as_object() {
            for (k, v) in obj {
                if OUTPUT_ONLY.contains(&k.as_str())
                    || ["name", "etag", "template", "traffic"].contains(&k.as_str())
                {
                    continue;
                }
                if svc.extra.get(k) != Some(v) {
                    extra_changes.insert(k.clone(), v.clone());
                }
            }
        }

        let mut new_revision = None;
        if let Some((template, explicit_name)) = new_template {
            let behaviour = behaviour.unwrap_or_else(|| {
                svc.rules
                    .iter()
                    .find_map(|r| r(&template))
                    .unwrap_or_default()
            });
            svc.template = template;
            let mut rev = new_revision_named(svc, now, behaviour, explicit_name);
            rev.state = RevisionState::Pending;
            svc.latest_created = Some(rev.name.clone());
            new_revision = Some(rev);
            changed = true;
        }
        if let Some(t) = new_traffic {
            svc.traffic = t;
            changed = true;
        }
        if !extra_changes.is_empty() {
            for (k, v) in extra_changes {
                if v.is_null() {
                    svc.extra.remove(&k);
                } else {
                    svc.extra.insert(k, v);
                }
            }
            changed = true;
        }
        if changed {
            svc.generation += 1;
            svc.etag = new_etag();
            svc.update_ms = now;
            svc.terminal = Terminal::Reconciling;
            svc.transition_ms = now;
        }
        let op = Operation {
            name: format!(
                "projects/{}/locations/{}/operations/{}",
                svc.project,
                svc.location,
                random_uuid()
            ),
            service: svc.name.clone(),
            done_at_ms: now + if changed { delay } else { 0 },
            done: false,
            generation: svc.generation,
            new_revision: new_revision.as_ref().map(|r| r.name.clone()),
            error: None,
            snapshot: None,
        };
        if let Some(rev) = new_revision {
            self.revisions.insert(rev.name.clone(), rev);
        }
        let op_name = op.name.clone();
        self.operations.insert(op_name.clone(), op);
        if !changed {
            self.complete(&op_name);
        }
        self.get_operation(&op_name)
    }
}

impl Default for RunState {
    fn default() -> Self {
        Self::new()
    }
}

fn service_not_found(name: &str) -> ApiError {
    match split_service_name(name) {
        Some((p, l, s)) => ApiError::not_found(format!(
            "Resource '{s}' of kind 'SERVICE' in region '{l}' in project '{p}' does not exist."
        )),
        None => ApiError::invalid_argument(format!(
            "Invalid resource name {name:?}: expected projects/PROJECT/locations/LOCATION/services/SERVICE."
        )),
    }
}

fn not_ready_message(short: &str) -> String {
    format!(
        "Revision '{short}' is not ready and cannot serve traffic. The user-provided container failed to start and listen on the port defined provided by the PORT=8080 environment variable within the allocated timeout."
    )
}

fn new_etag() -> String {
    format!("\"{}\"", random_hex(12))
}

fn short_of(full: &str) -> String {
    full.rsplit('/').next().unwrap_or(full).to_string()
}

fn snake_to_camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn strip_revision(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("revision");
    }
    t
}

fn set_env(container: &mut Value, env: &[(String, String)]) {
    if env.is_empty() {
        return;
    }
    if !container.get("env").is_some_and(Value::is_array) {
        container["env"] = json!([]);
    }
    let Some(list) = container["env"].as_array_mut() else {
        return;
    };
    for (k, v) in env {
        match list
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(k))
        {
            Some(e) => *e = json!({"name": k, "value": v}),
            None => list.push(json!({"name": k, "value": v})),
        }
    }
}

fn new_revision(svc: &mut Service, now: TimestampMs, behaviour: RevisionBehaviour) -> Revision {
    new_revision_named(svc, now, behaviour, None)
}

fn new_revision_named(
    svc: &mut Service,
    now: TimestampMs,
    behaviour: RevisionBehaviour,
    name: Option<String>,
) -> Revision {
    svc.revision_seq += 1;
    let short = name.unwrap_or_else(|| {
        format!(
            "{}-{:05}-{}",
            svc.short,
            svc.revision_seq,
            random_letters(3)
        )
    });
    Revision {
        name: format!("{}/revisions/{short}", svc.name),
        short,
        service: svc.name.clone(),
        uid: random_uuid(),
        create_ms: now,
        update_ms: now,
        template: svc.template.clone(),
        state: RevisionState::Pending,
        behaviour,
    }
}

fn validate_traffic(
    traffic: Option<&Value>,
    service: &str,
    revisions: &BTreeMap<String, Revision>,
) -> Result<(), ApiError> {
    let Some(traffic) = traffic.filter(|t| !t.is_null()) else {
        return Ok(());
    };
    let targets = traffic
        .as_array()
        .ok_or_else(|| ApiError::invalid_argument("service.traffic must be a list"))?;
    let mut sum = 0;
    for (i, t) in targets.iter().enumerate() {
        let percent = t.get("percent").and_then(Value::as_i64).unwrap_or(0);
        if !(0..=100).contains(&percent) {
            return Err(ApiError::invalid_argument(format!(
                "service.traffic[{i}].percent must be between 0 and 100"
            )));
        }
        sum += percent;
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
        let revision = t.get("revision").and_then(Value::as_str).unwrap_or("");
        match kind {
            LATEST if revision.is_empty() => {}
            LATEST => {
                return Err(ApiError::invalid_argument(format!(
                    "service.traffic[{i}]: revision must not be set when type is {LATEST}"
                )))
            }
            BY_REVISION | "" if !revision.is_empty() => {
                let full = format!("{service}/revisions/{revision}");
                if !revisions.contains_key(&full) {
                    return Err(ApiError::invalid_argument(format!(
                        "service.traffic[{i}].revision: Revision named '{revision}' does not exist."
                    )));
                }
            }
            _ => {
                return Err(ApiError::invalid_argument(format!(
                "service.traffic[{i}]: set type to {LATEST}, or to {BY_REVISION} with a revision"
            )))
            }
        }
    }
    if !targets.is_empty() && sum != 100 {
        return Err(ApiError::invalid_argument(format!(
            "service.traffic: percentages must add up to 100, got {sum}"
        )));
    }
    Ok(())
}

fn resolve_traffic(
    svc: &Service,
    revisions: &BTreeMap<String, Revision>,
) -> Result<Vec<TrafficStatus>, String> {
    let mut out = Vec::new();
    for t in &svc.traffic {
        let percent = t.get("percent").and_then(Value::as_i64).unwrap_or(0);
        let tag = t.get("tag").and_then(Value::as_str).map(String::from);
        let revision = t.get("revision").and_then(Value::as_str).unwrap_or("");
        let (kind, short) = if revision.is_empty() {
            let latest = svc.latest_ready.as_deref().ok_or_else(|| {
                "Service has no ready revision to route LATEST traffic to.".to_string()
            })?;
            (LATEST, short_of(latest))
        } else {
            (BY_REVISION, revision.to_string())
        };
        let full = format!("{}/revisions/{short}", svc.name);
        if revisions.get(&full).map(|r| &r.state) != Some(&RevisionState::Ready) {
            return Err(not_ready_message(&short));
        }
        out.push(TrafficStatus {
            kind,
            revision: short,
            percent,
            tag,
        });
    }
    Ok(out)
}

fn with_type(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        let mut typed = Map::new();
        typed.insert("@type".into(), json!(SERVICE_TYPE));
        typed.extend(std::mem::take(o));
        *o = typed;
    }
    v
}

fn condition(kind: &str, state: &str, at: TimestampMs) -> Value {
    json!({"type": kind, "state": state, "lastTransitionTime": timestamp(at)})
}

fn service_json(svc: &Service, revisions: &BTreeMap<String, Revision>) -> Value {
    let terminal = match &svc.terminal {
        Terminal::Succeeded => condition("Ready", "CONDITION_SUCCEEDED", svc.transition_ms),
        Terminal::Reconciling => condition("Ready", "CONDITION_RECONCILING", svc.transition_ms),
        Terminal::Failed(msg) => {
            let mut c = condition("Ready", "CONDITION_FAILED", svc.transition_ms);
            c["message"] = json!(msg);
            c["reason"] = json!("REVISION_FAILED");
            c
        }
    };
    let configurations_state = match &svc.terminal {
        Terminal::Reconciling => "CONDITION_RECONCILING",
        _ if svc
            .latest_created
            .as_ref()
            .and_then(|r| revisions.get(r))
            .is_some_and(|r| r.state == RevisionState::Failed) =>
        {
            "CONDITION_FAILED"
        }
        _ => "CONDITION_SUCCEEDED",
    };
    let routes_state = match &svc.terminal {
        Terminal::Reconciling => "CONDITION_RECONCILING",
        _ if svc.statuses.is_empty() => "CONDITION_FAILED",
        _ => "CONDITION_SUCCEEDED",
    };
    let statuses: Vec<Value> = svc
        .statuses
        .iter()
        .map(|s| {
            let mut v = json!({"type": s.kind, "revision": s.revision, "percent": s.percent});
            if let Some(tag) = &s.tag {
                v["tag"] = json!(tag);
                v["uri"] = json!(format!(
                    "https://{tag}---{}",
                    svc.uri.trim_start_matches("https://")
                ));
            }
            v
        })
        .collect();
    let mut out = json!({
        "name": svc.name,
        "uid": svc.uid,
        "generation": svc.generation.to_string(),
        "createTime": timestamp(svc.create_ms),
        "updateTime": timestamp(svc.update_ms),
        "creator": format!("deployer@{}.iam.gserviceaccount.com", svc.project),
        "lastModifier": format!("deployer@{}.iam.gserviceaccount.com", svc.project),
        "ingress": "INGRESS_TRAFFIC_ALL",
        "launchStage": "GA",
        "template": svc.template,
        "traffic": svc.traffic,
        "observedGeneration": svc.observed_generation.to_string(),
        "terminalCondition": terminal,
        "conditions": [
            condition("RoutesReady", routes_state, svc.transition_ms),
            condition("ConfigurationsReady", configurations_state, svc.transition_ms),
        ],
        "trafficStatuses": statuses,
        "uri": svc.uri,
        "urls": [svc.uri],
        "etag": svc.etag,
    });
    if let Some(r) = &svc.latest_ready {
        out["latestReadyRevision"] = json!(r);
    }
    if let Some(r) = &svc.latest_created {
        out["latestCreatedRevision"] = json!(r);
    }
    if svc.terminal == Terminal::Reconciling {
        out["reconciling"] = json!(true);
    }
    if let Some(o) = out.as_object_mut() {
        for (k, v) in &svc.extra {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

fn revision_json(rev: &Revision, svc: &Service) -> Value {
    let t = &rev.template;
    let conditions = match rev.state {
        RevisionState::Ready => vec![
            condition("Ready", "CONDITION_SUCCEEDED", rev.update_ms),
            condition("ContainerHealthy", "CONDITION_SUCCEEDED", rev.update_ms),
            condition("ResourcesAvailable", "CONDITION_SUCCEEDED", rev.update_ms),
        ],
        RevisionState::Pending => vec![
            condition("Ready", "CONDITION_RECONCILING", rev.update_ms),
            condition("ContainerHealthy", "CONDITION_RECONCILING", rev.update_ms),
            condition("ResourcesAvailable", "CONDITION_RECONCILING", rev.update_ms),
        ],
        RevisionState::Failed => {
            let msg = format!(
                "The user-provided container failed to start and listen on the port defined provided by the PORT=8080 environment variable within the allocated timeout. Logs for this revision might contain more information.\n\nLogs URL: https://console.cloud.google.com/logs/viewer?project={}&resource=cloud_run_revision/service_name/{}/revision_name/{}",
                svc.project, svc.short, rev.short
            );
            let mut ready = condition("Ready", "CONDITION_FAILED", rev.update_ms);
            ready["message"] = json!(msg);
            ready["revisionReason"] = json!("HEALTH_CHECK_CONTAINER_ERROR");
            let mut healthy = condition("ContainerHealthy", "CONDITION_FAILED", rev.update_ms);
            healthy["message"] = json!(msg);
            healthy["revisionReason"] = json!("HEALTH_CHECK_CONTAINER_ERROR");
            vec![
                ready,
                healthy,
                condition("ResourcesAvailable", "CONDITION_SUCCEEDED", rev.update_ms),
            ]
        }
    };
    let mut out = json!({
        "name": rev.name,
        "uid": rev.uid,
        "generation": "1",
        "labels": {
            "serving.knative.dev/route": svc.short,
            "serving.knative.dev/configuration": svc.short,
            "serving.knative.dev/service": svc.short,
            "cloud.googleapis.com/location": svc.location,
        },
        "createTime": timestamp(rev.create_ms),
        "updateTime": timestamp(rev.update_ms),
        "launchStage": "GA",
        "service": svc.name,
        "containers": t.get("containers").cloned().unwrap_or(json!([])),
        "conditions": conditions,
        "observedGeneration": "1",
        "logUri": format!(
            "https://console.cloud.google.com/logs/viewer?project={}&resource=cloud_run_revision/service_name/{}/revision_name/{}",
            svc.project, svc.short, rev.short
        ),
        "etag": format!("\"{}\"", &rev.uid[..8]),
    });
    for key in [
        "scaling",
        "timeout",
        "serviceAccount",
        "maxInstanceRequestConcurrency",
        "executionEnvironment",
    ] {
        if let Some(v) = t.get(key) {
            out[key] = v.clone();
        }
    }
    if rev.state == RevisionState::Pending {
        out["reconciling"] = json!(true);
    }
    out
}

fn operation_json(op: &Operation, svc: &Service, revisions: &BTreeMap<String, Revision>) -> Value {
    let snapshot = op
        .snapshot
        .clone()
        .unwrap_or_else(|| service_json(svc, revisions));
    let mut out = json!({
        "name": op.name,
        "metadata": with_type(snapshot.clone()),
        "done": op.done,
    });
    if op.done {
        match &op.error {
            Some((code, message)) => out["error"] = json!({"code": code, "message": message}),
            None => out["response"] = with_type(snapshot),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "projects/p/locations/us-central1/services/backend";

    #[test]
    fn template_patch_creates_revision_and_completes_later() {
        let mut run = RunState::new();
        let first = run.create_service(0, &ServiceSpec::new(SVC)).unwrap();
        let svc = run.get_service(SVC).unwrap();
        assert_eq!(svc["generation"], "1");
        assert_eq!(svc["latestReadyRevision"], first.as_str());
        let etag = svc["etag"].as_str().unwrap().to_string();

        let mut template = svc["template"].clone();
        template["containers"][0]["image"] = json!("img:v2");
        let op = run
            .patch(1000, SVC, &[], &json!({"etag": etag, "template": template}))
            .unwrap();
        assert_eq!(op["done"], false);
        let svc = run.get_service(SVC).unwrap();
        assert_eq!(svc["generation"], "2");
        assert_eq!(svc["observedGeneration"], "1");
        assert_eq!(svc["reconciling"], true);
        let created = svc["latestCreatedRevision"].as_str().unwrap();
        assert!(created.contains("/revisions/backend-00002-"), "{created}");
        assert_eq!(svc["trafficStatuses"][0]["revision"], short_of(&first));

        // The stale etag is refused.
        let err = run
            .patch(1500, SVC, &[], &json!({"etag": etag, "traffic": []}))
            .unwrap_err();
        assert_eq!((err.code, err.status), (409, "ABORTED"));

        run.advance(3000);
        let svc = run.get_service(SVC).unwrap();
        assert_eq!(svc["observedGeneration"], "2");
        assert_eq!(svc["terminalCondition"]["state"], "CONDITION_SUCCEEDED");
        assert_eq!(svc["trafficStatuses"][0]["revision"], short_of(created));
        let op = run.get_operation(op["name"].as_str().unwrap()).unwrap();
        assert_eq!(op["done"], true);
        assert_eq!(op["response"]["@type"], SERVICE_TYPE);
    }

    #[test]
    fn never_ready_revision_keeps_traffic_on_old() {
        let mut run = RunState::new();
        let first = run.create_service(0, &ServiceSpec::new(SVC)).unwrap();
        let (bad, op) = run
            .deploy(
                0,
                SVC,
                &DeploySpec {
                    behaviour: RevisionBehaviour::never_ready(),
                    ..Default::default()
                },
            )
            .unwrap();
        run.advance(5000);
        let svc = run.get_service(SVC).unwrap();
        assert_eq!(svc["latestCreatedRevision"], bad.as_str());
        assert_eq!(svc["latestReadyRevision"], first.as_str());
        assert_eq!(svc["terminalCondition"]["state"], "CONDITION_FAILED");
        assert_eq!(run.serving(SVC), vec![(first.clone(), 100)]);
        let op = run.get_operation(&op).unwrap();
        assert!(op["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not ready"));
        let rev = run.get_revision(&bad).unwrap();
        assert_eq!(rev["conditions"][0]["state"], "CONDITION_FAILED");
    }

    #[test]
    fn traffic_patch_moves_traffic_back() {
        let mut run = RunState::new();
        let good = run.create_service(0, &ServiceSpec::new(SVC)).unwrap();
        let (bad, _) = run
            .deploy(
                0,
                SVC,
                &DeploySpec {
                    behaviour: RevisionBehaviour::bad(),
                    ..Default::default()
                },
            )
            .unwrap();
        run.advance(5000);
        assert_eq!(run.serving(SVC), vec![(bad.clone(), 100)]);
        let svc = run.get_service(SVC).unwrap();
        let body = json!({"etag": svc["etag"], "traffic": [{"type": BY_REVISION, "revision": short_of(&good), "percent": 100}]});
        run.patch(6000, SVC, &[], &body).unwrap();
        assert_eq!(run.serving(SVC), vec![(bad.clone(), 100)]);
        run.advance(8000);
        assert_eq!(run.serving(SVC), vec![(good, 100)]);
        // Unknown revision and bad sums are refused.
        let svc = run.get_service(SVC).unwrap();
        let e = run
            .patch(9000, SVC, &[], &json!({"etag": svc["etag"], "traffic": [{"type": BY_REVISION, "revision": "nope", "percent": 100}]}))
            .unwrap_err();
        assert_eq!(e.code, 400);
    }
}
