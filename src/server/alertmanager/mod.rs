//! Alertmanager's API v2 (`api/v2/openapi.yaml` in prometheus/alertmanager),
//! on the same listener, so Prometheus, Thanos, Mimir, Google's managed rule
//! evaluator, `amtool` and Grafana can use rearguard as their Alertmanager:
//!
//! - `POST   /api/v2/alerts`           postable alerts (alert token or admin token)
//! - `GET    /api/v2/alerts`           gettable alerts (`filter`, `active`, `silenced`,
//!   `inhibited`, `unprocessed`, `receiver`)
//! - `GET    /api/v2/alerts/groups`    alert groups (same filters)
//! - `GET    /api/v2/silences`         silences (`filter`)
//! - `POST   /api/v2/silences`         create or update a silence (admin token) → `{"silenceID"}`
//! - `GET    /api/v2/silence/{id}`     one silence
//! - `DELETE /api/v2/silence/{id}`     expire a silence (admin token)
//! - `GET    /api/v2/status`           cluster, versionInfo, config.original, uptime
//! - `GET    /api/v2/receivers`        receiver names
//!
//! Errors of `POST /api/v2/alerts` are Alertmanager's: a JSON string with the
//! validation error (400), or go-swagger's `{"code", "message"}` for a body
//! that does not parse.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::auth::{self, AdminToken, AuthError};
use super::dispatch_api::{self, DispatchApiState};
use crate::clock::TimestampMs;
use crate::config::Secret;
use crate::dispatch::external::{ExternalAlerts, PostBatchError, PostableAlert};
use crate::dispatch::route::RouteTree;
use crate::dispatch::{DispatchAlertView, Dispatcher};
use crate::labels::Labels;
use crate::matchers::{parse_matchers, Matcher};

/// What the v2 routes need.
#[derive(Clone)]
pub struct AlertmanagerApiState {
    pub dispatcher: Arc<Dispatcher>,
    pub external: Arc<ExternalAlerts>,
    pub admin_token: AdminToken,
    /// `admin.alert_token_file`: may post alerts, nothing else.
    pub alert_token: Option<Secret>,
    pub started_at_ms: TimestampMs,
}

impl FromRef<AlertmanagerApiState> for AdminToken {
    fn from_ref(s: &AlertmanagerApiState) -> Self {
        s.admin_token.clone()
    }
}

impl FromRef<AlertmanagerApiState> for DispatchApiState {
    fn from_ref(s: &AlertmanagerApiState) -> Self {
        DispatchApiState {
            dispatcher: s.dispatcher.clone(),
            admin_token: s.admin_token.clone(),
            started_at_ms: s.started_at_ms,
        }
    }
}

/// The v2 routes, ready to `merge` into the server's router.
pub fn router(state: AlertmanagerApiState) -> Router {
    let silences: Router = Router::new()
        .route(
            "/api/v2/silences",
            get(dispatch_api::list_silences).post(dispatch_api::post_silence),
        )
        .route(
            "/api/v2/silence/{id}",
            get(dispatch_api::get_silence).delete(dispatch_api::delete_silence),
        )
        .with_state(DispatchApiState::from_ref(&state));
    Router::new()
        .route("/api/v2/alerts", get(get_alerts).post(post_alerts))
        .route("/api/v2/alerts/groups", get(get_groups))
        .route("/api/v2/status", get(status))
        .route("/api/v2/receivers", get(receivers))
        .with_state(state)
        .merge(silences)
        .layer(axum::extract::DefaultBodyLimit::max(super::MAX_BODY_BYTES))
}

/// Admits a sender with the alert token or the admin token. Neither
/// configured: 403; a missing or wrong token: 401.
pub fn check_sender(
    headers: &HeaderMap,
    admin: &AdminToken,
    alert: &Option<Secret>,
) -> Result<(), AuthError> {
    if admin.0.is_none() && alert.is_none() {
        return Err(AuthError::Disabled);
    }
    let as_alert = auth::check(headers, &AdminToken(alert.clone()));
    let as_admin = auth::check(headers, admin);
    match (as_alert, as_admin) {
        (Ok(()), _) | (_, Ok(())) => Ok(()),
        (Err(AuthError::Missing), _) | (_, Err(AuthError::Missing)) => Err(AuthError::Missing),
        _ => Err(AuthError::Invalid),
    }
}

/// go-swagger's error body for a request that does not parse.
fn swagger_error(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "code": 400, "message": message })),
    )
        .into_response()
}

async fn post_alerts(
    State(s): State<AlertmanagerApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = check_sender(&headers, &s.admin_token, &s.alert_token) {
        return e.into_response();
    }
    let batch: Vec<PostableAlert> = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return swagger_error(format!("parsing alerts body from \"\" failed, because {e}"))
        }
    };
    match s.external.post(batch).await {
        Ok(n) => {
            tracing::debug!(alerts = n, "external alerts accepted");
            StatusCode::OK.into_response()
        }
        // Alertmanager answers validation errors with the message as a JSON string.
        Err(PostBatchError::Batch(e)) => {
            (StatusCode::BAD_REQUEST, Json(e.to_string())).into_response()
        }
        Err(PostBatchError::Store(e)) => {
            tracing::error!(error = %e, "cannot store external alerts");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(e.to_string())).into_response()
        }
    }
}

/// The query parameters of `GET /api/v2/alerts` and `/alerts/groups`.
#[derive(Debug)]
pub struct AlertFilter {
    pub matchers: Vec<Matcher>,
    pub active: bool,
    pub silenced: bool,
    pub inhibited: bool,
    pub unprocessed: bool,
    pub receiver: Option<regex::Regex>,
}

fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{name} in query must be of type boolean: {v:?}")),
    }
}

impl AlertFilter {
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut f = AlertFilter {
            matchers: Vec::new(),
            active: true,
            silenced: true,
            inhibited: true,
            unprocessed: true,
            receiver: None,
        };
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "filter" => f.matchers.extend(
                    parse_matchers(&v)
                        .map_err(|e| format!("bad matcher format: {e}"))?
                        .0,
                ),
                "active" => f.active = parse_bool("active", &v)?,
                "silenced" => f.silenced = parse_bool("silenced", &v)?,
                "inhibited" => f.inhibited = parse_bool("inhibited", &v)?,
                "unprocessed" => f.unprocessed = parse_bool("unprocessed", &v)?,
                "receiver" if !v.is_empty() => {
                    // Alertmanager anchors the receiver regex.
                    f.receiver = Some(
                        regex::Regex::new(&format!("^(?:{v})$"))
                            .map_err(|e| format!("failed to parse receiver param: {e}"))?,
                    )
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// Alertmanager's `alertFilter`, on the view of one alert.
    pub fn admits(&self, a: &GettableAlert) -> bool {
        if let Some(re) = &self.receiver {
            if !a.receivers.iter().any(|r| re.is_match(&r.name)) {
                return false;
            }
        }
        let labels = Labels::from_map(&a.labels);
        if !self.matchers.iter().all(|m| m.matches(&labels)) {
            return false;
        }
        if !self.unprocessed && a.status.state == "unprocessed" {
            return false;
        }
        if !self.active && a.status.state == "active" {
            return false;
        }
        if !self.silenced && !a.status.silenced_by.is_empty() {
            return false;
        }
        if !self.inhibited && !a.status.inhibited_by.is_empty() {
            return false;
        }
        true
    }
}

/// Alertmanager's `receiver`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ReceiverName {
    pub name: String,
}

/// Alertmanager's `alertStatus` (plus `mutedBy`, which Alertmanager 0.25+ sends too).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatusV2 {
    pub state: &'static str,
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
    pub muted_by: Vec<String>,
}

/// Alertmanager's `gettableAlert`.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GettableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub receivers: Vec<ReceiverName>,
    pub fingerprint: String,
    pub starts_at: String,
    pub updated_at: String,
    pub ends_at: String,
    pub status: AlertStatusV2,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

fn gettable(v: DispatchAlertView) -> GettableAlert {
    GettableAlert {
        receivers: v
            .status
            .receivers
            .iter()
            .map(|r| ReceiverName { name: r.clone() })
            .collect(),
        status: AlertStatusV2 {
            state: v.status.state,
            silenced_by: v.status.silenced_by,
            inhibited_by: v.status.inhibited_by,
            muted_by: v.status.muted_by,
        },
        labels: v.labels,
        annotations: v.annotations,
        fingerprint: v.fingerprint,
        starts_at: v.starts_at,
        updated_at: v.updated_at,
        ends_at: v.ends_at,
        generator_url: v.generator_url,
    }
}

async fn get_alerts(State(s): State<AlertmanagerApiState>, RawQuery(q): RawQuery) -> Response {
    let filter = match AlertFilter::parse(q.as_deref()) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(e)).into_response(),
    };
    let list: Vec<GettableAlert> = s
        .dispatcher
        .alerts()
        .into_iter()
        .map(gettable)
        .filter(|a| filter.admits(a))
        .collect();
    Json(list).into_response()
}

/// Alertmanager's `alertGroup`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct AlertGroupV2 {
    pub labels: BTreeMap<String, String>,
    pub receiver: ReceiverName,
    pub alerts: Vec<GettableAlert>,
}

async fn get_groups(State(s): State<AlertmanagerApiState>, RawQuery(q): RawQuery) -> Response {
    let filter = match AlertFilter::parse(q.as_deref()) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(e)).into_response(),
    };
    let by_fp: BTreeMap<String, GettableAlert> = s
        .dispatcher
        .alerts()
        .into_iter()
        .map(|v| (v.fingerprint.clone(), gettable(v)))
        .collect();
    let groups: Vec<AlertGroupV2> = s
        .dispatcher
        .groups()
        .into_iter()
        .filter(|g| {
            filter
                .receiver
                .as_ref()
                .is_none_or(|re| re.is_match(&g.receiver))
        })
        .filter_map(|g| {
            let alerts: Vec<GettableAlert> = g
                .fingerprints
                .iter()
                .filter_map(|fp| by_fp.get(&format!("{fp:016x}")))
                .filter(|a| {
                    filter.admits(&GettableAlert {
                        // The group's receiver, not every receiver of the alert, decides here.
                        receivers: vec![ReceiverName {
                            name: g.receiver.clone(),
                        }],
                        ..(*a).clone()
                    })
                })
                .cloned()
                .collect();
            if alerts.is_empty() {
                return None;
            }
            Some(AlertGroupV2 {
                labels: g.labels,
                receiver: ReceiverName { name: g.receiver },
                alerts,
            })
        })
        .collect();
    Json(groups).into_response()
}

async fn receivers(State(s): State<AlertmanagerApiState>) -> Response {
    let list: Vec<ReceiverName> = s
        .dispatcher
        .receiver_names()
        .into_iter()
        .map(|name| ReceiverName { name })
        .collect();
    Json(list).into_response()
}

fn duration(d: std::time::Duration) -> String {
    crate::config::Dur(d).to_string()
}

/// One route of the tree as Alertmanager's YAML (no secrets: names and timings only).
fn route_yaml(tree: &RouteTree, idx: usize) -> serde_json::Value {
    let n = &tree.nodes[idx];
    let mut m = serde_json::Map::new();
    m.insert("receiver".into(), n.opts.receiver.clone().into());
    if n.opts.group_by_all {
        m.insert("group_by".into(), serde_json::json!(["..."]));
    } else if !n.opts.group_by.is_empty() {
        m.insert("group_by".into(), serde_json::json!(n.opts.group_by));
    }
    if n.r#continue {
        m.insert("continue".into(), true.into());
    }
    if !n.matchers.is_empty() {
        let ms: Vec<String> = n.matchers.0.iter().map(|m| m.to_string()).collect();
        m.insert("matchers".into(), serde_json::json!(ms));
    }
    m.insert("group_wait".into(), duration(n.opts.group_wait).into());
    m.insert(
        "group_interval".into(),
        duration(n.opts.group_interval).into(),
    );
    m.insert(
        "repeat_interval".into(),
        duration(n.opts.repeat_interval).into(),
    );
    if !n.opts.mute_time_intervals.is_empty() {
        m.insert(
            "mute_time_intervals".into(),
            serde_json::json!(n.opts.mute_time_intervals),
        );
    }
    if !n.opts.active_time_intervals.is_empty() {
        m.insert(
            "active_time_intervals".into(),
            serde_json::json!(n.opts.active_time_intervals),
        );
    }
    if !n.children.is_empty() {
        let kids: Vec<serde_json::Value> =
            n.children.iter().map(|c| route_yaml(tree, *c)).collect();
        m.insert("routes".into(), kids.into());
    }
    m.into()
}

/// `config.original`: the routing part of the config as Alertmanager YAML.
/// Receivers are listed by name only, so no secret leaves through the API.
pub fn config_original(d: &Dispatcher) -> String {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "global".into(),
        serde_json::json!({ "resolve_timeout": duration(std::time::Duration::from_millis(d.resolve_timeout_ms().max(0) as u64)) }),
    );
    if let Some(tree) = d.route_tree() {
        if !tree.nodes.is_empty() {
            doc.insert("route".into(), route_yaml(&tree, 0));
        }
    }
    let receivers: Vec<serde_json::Value> = d
        .receiver_names()
        .into_iter()
        .map(|n| serde_json::json!({ "name": n }))
        .collect();
    doc.insert("receivers".into(), receivers.into());
    serde_yaml_ng::to_string(&serde_json::Value::Object(doc)).unwrap_or_default()
}

async fn status(State(s): State<AlertmanagerApiState>) -> Response {
    Json(serde_json::json!({
        "cluster": { "status": "disabled", "peers": [] },
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "rearguard",
            "buildDate": "",
            "goVersion": "none (rearguard is written in Rust)",
        },
        "config": { "original": config_original(&s.dispatcher) },
        "uptime": crate::clock::to_datetime(s.started_at_ms)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::AUTHORIZATION, v.parse().unwrap());
        m
    }

    #[test]
    fn sender_tokens() {
        let admin = AdminToken(Some(Secret::new("adm")));
        let alert = Some(Secret::new("snd"));
        assert!(check_sender(&h("Bearer snd"), &admin, &alert).is_ok());
        assert!(check_sender(&h("Bearer adm"), &admin, &alert).is_ok());
        assert_eq!(
            check_sender(&h("Bearer x"), &admin, &alert),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            check_sender(&HeaderMap::new(), &admin, &alert),
            Err(AuthError::Missing)
        );
        assert!(check_sender(&h("Bearer snd"), &AdminToken(None), &alert).is_ok());
        assert_eq!(
            check_sender(&h("Bearer adm"), &AdminToken(None), &None),
            Err(AuthError::Disabled)
        );
    }

    #[test]
    fn filter_parses_alertmanager_params() {
        let f = AlertFilter::parse(Some(
            "filter=alertname%3D%22A%22&silenced=false&receiver=team-.*&active=true",
        ))
        .unwrap();
        assert_eq!(f.matchers.len(), 1);
        assert!(!f.silenced && f.active && f.inhibited);
        assert!(f.receiver.unwrap().is_match("team-a"));
        assert!(AlertFilter::parse(Some("active=maybe")).is_err());
        assert!(AlertFilter::parse(Some("filter=%7B")).is_err());
    }
}
