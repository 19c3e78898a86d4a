//! The fake's HTTP server, its routing by discovery paths, and the control handle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::auth::AuthState;
use super::calls::Call;
use super::faults::{status_name, Fault, FaultKind, Faults};
use super::logging::{LogEntrySpec, LoggingState};
use super::monitoring::{MonitoringState, PointValue, SeriesSpec};
use super::run::{BehaviourRule, DeploySpec, Revision, RevisionBehaviour, RunState, ServiceSpec};
use super::util::{
    json_response, parse_duration_ms, parse_page_size, parse_page_token, query_get, query_pairs,
    raw_json_response, ApiError,
};
use rearguard_clock::{Clock, TimestampMs};

/// Options for [`FakeGcp::start_with`].
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// The project the metadata server reports (and the service account's domain).
    pub project: String,
    /// How long a Cloud Run operation takes to complete (on the Clock).
    pub operation_delay: Duration,
    /// Whether API calls need a bearer token (from the fake's token endpoints or
    /// a self-signed service-account JWT).
    pub require_auth: bool,
    /// Directory of Google's discovery documents. When set, the fake checks
    /// every request body and query against them and answers 400
    /// `INVALID_ARGUMENT` (like Google: "Invalid JSON payload received.
    /// Unknown name ...") when a field does not exist or has the wrong type.
    pub discovery_dir: Option<std::path::PathBuf>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            project: "sim-project".into(),
            operation_delay: Duration::from_secs(2),
            require_auth: true,
            discovery_dir: None,
        }
    }
}

pub(crate) struct Shared {
    pub clock: Clock,
    discovery: Option<Arc<super::discovery::DiscoverySet>>,
    state: Mutex<SimState>,
}

pub(crate) struct SimState {
    pub auth: AuthState,
    pub run: RunState,
    pub monitoring: MonitoringState,
    pub logging: LoggingState,
    /// PromQL query text → Prometheus `data` object answered for it.
    promql: std::collections::HashMap<String, Value>,
    faults: Faults,
    calls: Vec<Call>,
}

impl Shared {
    /// The state, with Cloud Run operations due by now completed.
    pub fn lock(&self) -> MutexGuard<'_, SimState> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.run.advance(self.clock.now_ms());
        s
    }
}

struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fake Google APIs: one HTTP server on loopback, and the handle that
/// controls it. Cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct FakeGcp {
    pub(crate) shared: Arc<Shared>,
    addr: SocketAddr,
    /// `None` only for the transient handle the admin routes use.
    _task: Option<Arc<ServerTask>>,
}

impl FakeGcp {
    /// Starts on `127.0.0.1:0` with default options.
    pub async fn start(clock: Clock) -> std::io::Result<Self> {
        Self::start_with(clock, FakeOptions::default()).await
    }

    pub async fn start_with(clock: Clock, options: FakeOptions) -> std::io::Result<Self> {
        let mut auth = AuthState::new(&options.project);
        auth.require_auth = options.require_auth;
        let mut run = RunState::new();
        run.operation_delay_ms = options.operation_delay.as_millis() as i64;
        let discovery = match &options.discovery_dir {
            Some(dir) => Some(super::discovery::load_cached(dir).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
            })?),
            None => None,
        };
        let shared = Arc::new(Shared {
            clock,
            discovery,
            state: Mutex::new(SimState {
                auth,
                run,
                monitoring: MonitoringState::default(),
                logging: LoggingState::default(),
                promql: std::collections::HashMap::new(),
                faults: Faults::default(),
                calls: Vec::new(),
            }),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake Google API server stopped");
            }
        });
        Ok(Self {
            shared,
            addr,
            _task: Some(Arc::new(ServerTask(task))),
        })
    }

    /// `http://127.0.0.1:PORT`: the base URL for `gcp.endpoints.{run,monitoring,logging}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`: the value for `GCE_METADATA_HOST`.
    pub fn metadata_host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT/token`: the `token_uri` for key files.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    pub fn now_ms(&self) -> TimestampMs {
        self.shared.clock.now_ms()
    }

    pub fn project(&self) -> String {
        self.shared.lock().auth.project.clone()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SimState> {
        self.shared.lock()
    }

    // ---- auth ---------------------------------------------------------------

    pub fn set_require_auth(&self, on: bool) {
        self.lock().auth.require_auth = on;
    }

    /// Lifetime of tokens the fake issues (default 3599 s).
    pub fn set_token_lifetime(&self, d: Duration) {
        self.lock().auth.token_lifetime_secs = d.as_secs();
    }

    /// How many access tokens the token endpoints have issued.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().auth.issued
    }

    // ---- Cloud Run -------------------------------------------------------------

    /// Creates a service (`projects/P/locations/L/services/S`) whose first
    /// revision is Ready (unless its behaviour says otherwise) and serves 100%.
    /// Returns the revision's full name.
    pub fn create_service(&self, spec: ServiceSpec) -> Result<String, ApiError> {
        let now = self.now_ms();
        self.lock().run.create_service(now, &spec)
    }

    /// Deploys a new revision like `gcloud run deploy` (template change, 100%
    /// to LATEST), through an operation that completes after the operation
    /// delay. Not in the call log. Returns (revision name, operation name).
    pub fn deploy(&self, service: &str, spec: DeploySpec) -> Result<(String, String), ApiError> {
        let now = self.now_ms();
        self.lock().run.deploy(now, service, &spec)
    }

    /// Changes how an existing revision behaves (full revision name).
    pub fn set_revision_behaviour(
        &self,
        revision: &str,
        b: RevisionBehaviour,
    ) -> Result<(), ApiError> {
        self.lock().run.set_revision_behaviour(revision, b)
    }

    /// Revisions created through the API get their behaviour from rules over
    /// their template (first match; none matching: healthy).
    pub fn add_behaviour_rule(&self, service: &str, rule: BehaviourRule) -> Result<(), ApiError> {
        self.lock().run.add_behaviour_rule(service, rule)
    }

    /// A rule: revisions whose first container has env `name=value` behave as `b`.
    pub fn behaviour_for_env(
        &self,
        service: &str,
        name: &str,
        value: &str,
        b: RevisionBehaviour,
    ) -> Result<(), ApiError> {
        let (name, value) = (name.to_string(), value.to_string());
        self.add_behaviour_rule(
            service,
            Arc::new(move |t: &Value| {
                let env = t["containers"][0]["env"].as_array()?;
                env.iter()
                    .any(|e| e["name"] == name.as_str() && e["value"] == value.as_str())
                    .then(|| b.clone())
            }),
        )
    }

    pub fn set_operation_delay(&self, d: Duration) {
        self.lock().run.operation_delay_ms = d.as_millis() as i64;
    }

    /// `false`: `services.patch` accepts any etag (see `RunState::enforce_etag`).
    pub fn set_run_etag_enforced(&self, on: bool) {
        self.lock().run.enforce_etag = on;
    }

    /// `true`: the caller lacks `iam.serviceaccounts.actAs` on the runtime
    /// service account, and every `services.patch` answers 403.
    pub fn set_run_deny_act_as(&self, on: bool) {
        self.lock().run.deny_act_as = on;
    }

    /// The service as `services.get` shows it now.
    pub fn service(&self, name: &str) -> Result<Value, ApiError> {
        self.lock().run.get_service(name)
    }

    pub fn revision(&self, name: &str) -> Option<Revision> {
        self.lock().run.revision(name).cloned()
    }

    /// Revisions serving now: (full revision name, percent > 0).
    pub fn serving(&self, service: &str) -> Vec<(String, i64)> {
        self.lock().run.serving(service)
    }

    /// Sets the `uri` the service reports (the simulated service's URL).
    pub fn set_service_uri(&self, service: &str, uri: &str) -> Result<(), ApiError> {
        self.lock().run.set_uri(service, uri)
    }

    /// Sleeps (on the Clock) until every pending Cloud Run operation has completed.
    pub async fn settle(&self) {
        loop {
            let next = self.lock().run.next_completion();
            match next {
                Some(t) => self.shared.clock.sleep_until_ms(t).await,
                None => return,
            }
        }
    }

    // ---- Monitoring ---------------------------------------------------------------

    /// Adds a point to a series (created on first use). For DELTA and
    /// CUMULATIVE series `start_ms..end_ms` is the point's interval; GAUGE
    /// points use `end_ms`. A point with the same end time replaces the old one.
    pub fn add_point(
        &self,
        spec: &SeriesSpec,
        start_ms: TimestampMs,
        end_ms: TimestampMs,
        value: PointValue,
    ) -> Result<(), ApiError> {
        self.lock()
            .monitoring
            .add_point(spec, start_ms, end_ms, value)
    }

    /// While `Some`, every `timeSeries.list` answer carries this execution
    /// error and lacks the newest point of each series (default `None`).
    pub fn set_monitoring_execution_error(&self, message: Option<&str>) {
        self.lock().monitoring.execution_error = message.map(str::to_string);
    }

    /// Series in these locations are left out of `timeSeries.list` answers,
    /// which list the locations in `unreachable` (default none).
    pub fn set_monitoring_unreachable(&self, locations: &[&str]) {
        self.lock().monitoring.unreachable_locations =
            locations.iter().map(|l| l.to_string()).collect();
    }

    /// The most points one FULL `timeSeries.list` page holds, whatever
    /// `pageSize` asks (default `None`: as many as asked).
    pub fn set_monitoring_page_points(&self, max: Option<usize>) {
        self.lock().monitoring.max_points_per_page = max;
    }

    /// Points become visible this long after their end time (default 0).
    pub fn set_monitoring_delay(&self, d: Duration) {
        self.lock().monitoring.ingest_delay_ms = d.as_millis() as i64;
    }

    /// What the Prometheus-compatible endpoint
    /// (`/v1/projects/P/location/global/prometheus/api/v1/query[_range]`)
    /// answers for this exact query text: `data` is Prometheus's `data` object,
    /// e.g. `{"resultType": "vector", "result": [...]}`. Unknown queries get an
    /// empty vector (or matrix).
    pub fn set_promql_response(&self, query: &str, data: Value) {
        self.lock().promql.insert(query.to_string(), data);
    }

    // ---- Logging -----------------------------------------------------------------

    /// Writes a log entry; returns its insertId.
    pub fn add_log_entry(&self, entry: LogEntrySpec) -> Result<String, ApiError> {
        let now = self.now_ms();
        self.lock().logging.add(now, entry)
    }

    /// Entries become visible this long after their timestamp (default 0).
    pub fn set_logging_delay(&self, d: Duration) {
        self.lock().logging.ingest_delay_ms = d.as_millis() as i64;
    }

    /// Each new `entries.list` query first gets `n` empty pages with a
    /// `nextPageToken` (the search is still running), then its entries.
    pub fn set_logging_empty_pages(&self, n: u32) {
        self.lock().logging.empty_pages = n;
    }

    /// `entries.list` calls allowed per project per minute (default `Some(60)`,
    /// Logging's quota); beyond it: 429 `RESOURCE_EXHAUSTED`.
    pub fn set_logging_quota(&self, per_minute: Option<usize>) {
        self.lock().logging.quota_per_minute = per_minute;
    }

    // ---- faults and the call log --------------------------------------------------

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.add(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls to one method id (e.g. `run.projects.locations.services.patch`).
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }
}

// ---- routing -------------------------------------------------------------------

pub mod methods {
    //! Method ids as the discovery documents name them (and the call log records them).
    pub const METADATA_TOKEN: &str = "metadata.token";
    pub const METADATA_EMAIL: &str = "metadata.email";
    pub const METADATA_UNIVERSE: &str = "metadata.universeDomain";
    pub const METADATA_PROJECT: &str = "metadata.projectId";
    pub const OAUTH_TOKEN: &str = "oauth2.token";
    /// IAM Service Account Credentials API (not among the fake's discovery documents).
    pub const GENERATE_ACCESS_TOKEN: &str =
        "iamcredentials.projects.serviceAccounts.generateAccessToken";
    pub const SERVICES_GET: &str = "run.projects.locations.services.get";
    pub const SERVICES_LIST: &str = "run.projects.locations.services.list";
    pub const SERVICES_PATCH: &str = "run.projects.locations.services.patch";
    pub const REVISIONS_LIST: &str = "run.projects.locations.services.revisions.list";
    pub const REVISIONS_GET: &str = "run.projects.locations.services.revisions.get";
    pub const OPERATIONS_GET: &str = "run.projects.locations.operations.get";
    pub const OPERATIONS_WAIT: &str = "run.projects.locations.operations.wait";
    pub const TIME_SERIES_LIST: &str = "monitoring.projects.timeSeries.list";
    pub const ENTRIES_LIST: &str = "logging.entries.list";
    /// Cloud Monitoring's Prometheus-compatible API (monitoring v1; not in the v3 document).
    pub const PROMQL_QUERY: &str = "monitoring.projects.location.prometheus.api.v1.query";
    pub const PROMQL_QUERY_RANGE: &str =
        "monitoring.projects.location.prometheus.api.v1.query_range";
}
use methods::*;

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (method id, resource name) for a request.
fn route(method: &Method, path: &str) -> Option<(&'static str, String)> {
    const MDS: &str = "/computeMetadata/v1/instance/service-accounts/default";
    if *method == Method::GET {
        match path {
            p if p == format!("{MDS}/token") => return Some((METADATA_TOKEN, String::new())),
            p if p == format!("{MDS}/email") => return Some((METADATA_EMAIL, String::new())),
            "/computeMetadata/v1/universe/universe-domain" => {
                return Some((METADATA_UNIVERSE, String::new()))
            }
            "/computeMetadata/v1/project/project-id" => {
                return Some((METADATA_PROJECT, String::new()))
            }
            _ => {}
        }
    }
    if *method == Method::POST && path == "/token" {
        return Some((OAUTH_TOKEN, String::new()));
    }
    // https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken:
    // POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken
    if *method == Method::POST {
        if let Some(email) = path
            .strip_prefix("/v1/projects/-/serviceAccounts/")
            .and_then(|r| r.strip_suffix(":generateAccessToken"))
        {
            return Some((GENERATE_ACCESS_TOKEN, email.to_string()));
        }
    }
    if *method == Method::POST && path == "/v2/entries:list" {
        return Some((ENTRIES_LIST, String::new()));
    }
    if let Some(rest) = path.strip_prefix("/v1/projects/") {
        let seg: Vec<&str> = rest.split('/').collect();
        if let [project, "location", "global", "prometheus", "api", "v1", endpoint] = seg.as_slice()
        {
            if *method == Method::GET || *method == Method::POST {
                let id = match *endpoint {
                    "query" => PROMQL_QUERY,
                    "query_range" => PROMQL_QUERY_RANGE,
                    _ => return None,
                };
                return Some((id, format!("projects/{project}")));
            }
        }
        return None;
    }
    if let Some(rest) = path.strip_prefix("/v3/") {
        let name = rest.strip_suffix("/timeSeries")?;
        let seg: Vec<&str> = name.split('/').collect();
        if *method == Method::GET && seg.len() == 2 && seg[0] == "projects" {
            return Some((TIME_SERIES_LIST, name.to_string()));
        }
        return None;
    }
    let rest = path.strip_prefix("/v2/")?;
    let seg: Vec<&str> = rest.split('/').collect();
    if seg.len() < 4 || seg[0] != "projects" || seg[2] != "locations" {
        return None;
    }
    match (&seg[4..], method) {
        (["services"], &Method::GET) => Some((SERVICES_LIST, seg[..4].join("/"))),
        (["services", _], &Method::GET) => Some((SERVICES_GET, rest.to_string())),
        (["services", _], &Method::PATCH) => Some((SERVICES_PATCH, rest.to_string())),
        (["services", _, "revisions"], &Method::GET) => Some((REVISIONS_LIST, seg[..6].join("/"))),
        (["services", _, "revisions", _], &Method::GET) => Some((REVISIONS_GET, rest.to_string())),
        (["operations", op], &Method::POST) if op.ends_with(":wait") => {
            Some((OPERATIONS_WAIT, rest.trim_end_matches(":wait").to_string()))
        }
        (["operations", _], &Method::GET) => Some((OPERATIONS_GET, rest.to_string())),
        _ => None,
    }
}

enum Answer {
    Json(Value),
    Text(String),
    Err(ApiError),
    Raw(u16, Value),
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = percent_decode(uri.path());
    if path.starts_with("/sim/") {
        let fake = FakeGcp {
            shared: shared.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            _task: None,
        };
        let body_json: Option<Value> = serde_json::from_slice(&body).ok();
        return match super::admin::handle(&fake, &method, &path, body_json.as_ref()) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => e.into_response(),
        };
    }
    let query = query_pairs(uri.query().unwrap_or(""));
    let routed = route(&method, &path);
    let method_id = routed.as_ref().map(|r| r.0).unwrap_or("unknown");
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let (call_index, fault) = {
        let mut s = shared.lock();
        let fault = s.faults.take(method_id);
        s.calls.push(Call {
            at_ms: shared.clock.now_ms(),
            method: method_id.to_string(),
            http_method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            etag: body_json
                .as_ref()
                .and_then(|b| b.get("etag"))
                .and_then(Value::as_str)
                .map(String::from),
            body: body_json.clone(),
            authorized: authorization.is_some(),
            status: 0,
            fault: fault.as_ref().map(|f| format!("{f:?}")),
        });
        (s.calls.len() - 1, fault)
    };
    let is_metadata = method_id.starts_with("metadata.");

    let response = 'resp: {
        if let Some(FaultKind::Delay(d)) = &fault {
            tokio::time::sleep(*d).await;
        }
        if let Some(FaultKind::Status {
            code,
            retry_after_secs,
        }) = &fault
        {
            let err = ApiError::new(*code, status_name(*code), fault_message(*code));
            let mut r = err.into_response();
            if let Some(secs) = retry_after_secs {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
                }
            }
            break 'resp r;
        }
        if let Some(FaultKind::RetryInfo { retry_delay_ms }) = &fault {
            break 'resp ApiError::new(429, "RESOURCE_EXHAUSTED", fault_message(429))
                .with_detail(quota_error_info(method_id))
                .with_retry_delay(*retry_delay_ms)
                .into_response();
        }
        let Some((method_id, name)) = routed else {
            break 'resp ApiError::not_found(format!(
                "The requested URL {path} was not found on this server ({method})."
            ))
            .into_response();
        };
        if is_metadata
            && headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google")
        {
            break 'resp (
                StatusCode::FORBIDDEN,
                [("metadata-flavor", "Google")],
                "Missing required header: \"Metadata-Flavor: Google\"\n",
            )
                .into_response();
        }
        if let Some(err) = strict_check(&shared, method_id, &query, &body, body_json.as_ref()) {
            break 'resp err.into_response();
        }
        let answer = if method_id == OPERATIONS_WAIT {
            wait(&shared, &name, body_json.as_ref(), authorization.as_deref()).await
        } else {
            dispatch(
                &shared,
                method_id,
                &name,
                &query,
                &body,
                body_json.as_ref(),
                Caller {
                    authorization: authorization.as_deref(),
                    quota_project: headers
                        .get("x-goog-user-project")
                        .and_then(|v| v.to_str().ok()),
                },
            )
        };
        if let Some(FaultKind::AnswerLost { code }) = &fault {
            // Carried out above; the client never learns it.
            let err = ApiError::new(*code, status_name(*code), fault_message(*code));
            break 'resp err.into_response();
        }
        let ok_json = |v: Value| match &fault {
            Some(FaultKind::MalformedJson) => {
                raw_json_response(StatusCode::OK, "{\"error\": <html>502 Bad Gateway".into())
            }
            Some(FaultKind::TruncatedJson) => {
                let s = v.to_string();
                let cut = s.len() / 2;
                let cut = (0..=cut)
                    .rev()
                    .find(|i| s.is_char_boundary(*i))
                    .unwrap_or(0);
                raw_json_response(StatusCode::OK, s[..cut].to_string())
            }
            _ => json_response(StatusCode::OK, &v),
        };
        match answer {
            Answer::Json(v) => ok_json(v),
            Answer::Text(t) => (
                StatusCode::OK,
                [
                    ("metadata-flavor", "Google"),
                    ("content-type", "application/text"),
                ],
                t,
            )
                .into_response(),
            Answer::Err(e) => e.into_response(),
            Answer::Raw(code, v) => json_response(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                &v,
            ),
        }
    };
    let mut response = response;
    if is_metadata {
        response
            .headers_mut()
            .insert("metadata-flavor", HeaderValue::from_static("Google"));
    }
    let status = response.status().as_u16();
    if let Some(c) = shared.lock().calls.get_mut(call_index) {
        c.status = status;
    }
    response
}

/// With discovery documents loaded: Google's 400 for unknown or mistyped
/// fields in the request body or query.
fn strict_check(
    shared: &Shared,
    method: &str,
    query: &[(String, String)],
    raw: &[u8],
    body: Option<&Value>,
) -> Option<ApiError> {
    let docs = shared.discovery.as_ref()?;
    let doc = docs.for_method(method).ok()?;
    let mut problems = Vec::new();
    if let Ok(issues) = doc.validate_params(method, query) {
        problems.extend(
            issues
                .iter()
                .map(|i| format!("Invalid query parameter {i}")),
        );
    }
    if doc.request_schema(method).is_some() {
        match body {
            Some(b) => {
                if let Ok(issues) = doc.validate_request(method, b) {
                    problems.extend(
                        issues
                            .iter()
                            .map(|i| format!("Invalid JSON payload received. {i}")),
                    );
                }
            }
            None if raw.is_empty() && method == OPERATIONS_WAIT => {}
            None => problems.push("Invalid JSON payload received. The body is not JSON.".into()),
        }
    } else if !raw.is_empty() && body.is_some_and(|b| b.as_object().is_some_and(|o| !o.is_empty()))
    {
        problems.push("Invalid JSON payload received. This method takes no request body.".into());
    }
    if problems.is_empty() {
        None
    } else {
        Some(ApiError::invalid_argument(problems.join("; ")))
    }
}

/// The `google.rpc.ErrorInfo` of a quota 429 (reason `RATE_LIMIT_EXCEEDED`,
/// domain `googleapis.com`: https://cloud.google.com/apis/design/errors#error_info).
pub(crate) fn quota_error_info(method_id: &str) -> Value {
    let service = method_id.split('.').next().unwrap_or("");
    serde_json::json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "RATE_LIMIT_EXCEEDED",
        "domain": "googleapis.com",
        "metadata": {"service": format!("{service}.googleapis.com")},
    })
}

fn fault_message(code: u16) -> String {
    match code {
        429 => "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service. (injected)".into(),
        503 => "The service is currently unavailable. (injected)".into(),
        _ => format!("Internal error encountered. (injected {code})"),
    }
}

async fn wait(
    shared: &Arc<Shared>,
    name: &str,
    body: Option<&Value>,
    authorization: Option<&str>,
) -> Answer {
    let now = shared.clock.now_ms();
    if let Err(e) = shared.lock().auth.check(now, authorization) {
        return Answer::Err(e);
    }
    let timeout_ms = body
        .and_then(|b| b.get("timeout"))
        .and_then(Value::as_str)
        .map(|t| {
            parse_duration_ms(t).ok_or_else(|| {
                ApiError::invalid_argument(format!(
                    "Invalid value at 'timeout' (type.googleapis.com/google.protobuf.Duration), {t:?}"
                ))
            })
        })
        .transpose();
    match timeout_ms {
        Ok(t) => wait_operation(shared, name, now + t.unwrap_or(60_000)).await,
        Err(e) => Answer::Err(e),
    }
}

/// Who calls: the `Authorization` header, and the quota project the call is
/// charged to when `x-goog-user-project` names one.
struct Caller<'a> {
    authorization: Option<&'a str>,
    quota_project: Option<&'a str>,
}

fn dispatch(
    shared: &Arc<Shared>,
    method_id: &'static str,
    name: &str,
    query: &[(String, String)],
    raw_body: &[u8],
    body: Option<&Value>,
    caller: Caller<'_>,
) -> Answer {
    let Caller {
        authorization,
        quota_project,
    } = caller;
    let now = shared.clock.now_ms();
    let mut s = shared.lock();
    match method_id {
        METADATA_TOKEN => return Answer::Json(s.auth.metadata_token(now)),
        METADATA_EMAIL => return Answer::Text(s.auth.email.clone()),
        METADATA_UNIVERSE => return Answer::Text("googleapis.com".into()),
        METADATA_PROJECT => return Answer::Text(s.auth.project.clone()),
        OAUTH_TOKEN => {
            return match s.auth.oauth_token(now, raw_body) {
                Ok(v) => Answer::Json(v),
                Err((code, v)) => Answer::Raw(code, v),
            }
        }
        _ => {}
    }
    if let Err(e) = s.auth.check(now, authorization) {
        return Answer::Err(e);
    }
    if method_id == GENERATE_ACCESS_TOKEN {
        return match s.auth.generate_access_token(now, name, body) {
            Ok(v) => Answer::Json(v),
            Err(e) => Answer::Err(e),
        };
    }
    let key = |extra: &str| format!("{method_id}|{name}|{extra}");
    let result = match method_id {
        SERVICES_GET => s.run.get_service(name),
        SERVICES_LIST => paged(query, 100, 1000, &key(""))
            .map(|(size, off)| s.run.list_services(name, size, off, &key(""))),
        SERVICES_PATCH => match body {
            Some(b) => s.run.patch(now, name, query, b),
            None => Err(ApiError::invalid_argument(
                "Invalid JSON payload received: the body must be a Service object.",
            )),
        },
        REVISIONS_LIST => paged(query, 100, 1000, &key(""))
            .and_then(|(size, off)| s.run.list_revisions(name, size, off, &key(""))),
        REVISIONS_GET => s.run.get_revision(name),
        OPERATIONS_GET => s.run.get_operation(name),
        TIME_SERIES_LIST => s.monitoring.list(now, name, query),
        PROMQL_QUERY | PROMQL_QUERY_RANGE => {
            // Parameters come in the query string (GET) or a form body (POST).
            let mut params = query.to_vec();
            params.extend(query_pairs(&String::from_utf8_lossy(raw_body)));
            let Some(q) = query_get(&params, "query").filter(|q| !q.trim().is_empty()) else {
                return Answer::Raw(
                    400,
                    serde_json::json!({"status": "error", "errorType": "bad_data", "error": "invalid parameter \"query\": empty query"}),
                );
            };
            let kind = if method_id == PROMQL_QUERY {
                "vector"
            } else {
                "matrix"
            };
            let data = s
                .promql
                .get(q)
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"resultType": kind, "result": []}));
            return Answer::Json(serde_json::json!({"status": "success", "data": data}));
        }
        ENTRIES_LIST => match body {
            Some(b) => {
                let consumer = quota_project.unwrap_or(&s.auth.project).to_string();
                s.logging.list_as(now, b, Some(&consumer))
            }
            None => Err(ApiError::invalid_argument("Invalid JSON payload received.")),
        },
        _ => Err(ApiError::not_found("method not implemented by the fake")),
    };
    match result {
        Ok(v) => Answer::Json(v),
        Err(e) => Answer::Err(e),
    }
}

fn paged(
    query: &[(String, String)],
    default: usize,
    max: usize,
    key: &str,
) -> Result<(usize, usize), ApiError> {
    let size = parse_page_size(query_get(query, "pageSize"), default, max)?;
    let offset = parse_page_token(query_get(query, "pageToken").unwrap_or(""), key)?;
    Ok((size, offset))
}

async fn wait_operation(shared: &Arc<Shared>, name: &str, deadline: TimestampMs) -> Answer {
    loop {
        let next = {
            let s = shared.lock();
            match s.run.operation_done_at(name) {
                None => {
                    return Answer::Err(ApiError::not_found(format!("Operation {name} not found.")))
                }
                Some((true, _)) => return result_answer(s.run.get_operation(name)),
                Some((false, at)) => {
                    if shared.clock.now_ms() >= deadline {
                        return result_answer(s.run.get_operation(name));
                    }
                    at.min(deadline)
                }
            }
        };
        shared.clock.sleep_until_ms(next).await;
    }
}

fn result_answer(r: Result<Value, ApiError>) -> Answer {
    match r {
        Ok(v) => Answer::Json(v),
        Err(e) => Answer::Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_discovery_paths() {
        let r = |m: Method, p: &str| route(&m, p);
        assert_eq!(
            r(Method::GET, "/v2/projects/p/locations/l/services/s"),
            Some((SERVICES_GET, "projects/p/locations/l/services/s".into()))
        );
        assert_eq!(
            r(
                Method::GET,
                "/v2/projects/p/locations/l/services/s/revisions"
            ),
            Some((REVISIONS_LIST, "projects/p/locations/l/services/s".into()))
        );
        assert_eq!(
            r(Method::POST, "/v2/projects/p/locations/l/operations/o:wait"),
            Some((
                OPERATIONS_WAIT,
                "projects/p/locations/l/operations/o".into()
            ))
        );
        assert_eq!(
            r(Method::GET, "/v3/projects/p/timeSeries"),
            Some((TIME_SERIES_LIST, "projects/p".into()))
        );
        assert_eq!(
            r(Method::POST, "/v2/entries:list"),
            Some((ENTRIES_LIST, String::new()))
        );
        assert_eq!(
            r(Method::DELETE, "/v2/projects/p/locations/l/services/s"),
            None
        );
        assert_eq!(percent_decode("/a%3Await%2"), "/a:wait%2");
    }
}
