//! The dispatch part of the admin API, in Alertmanager's API shapes:
//!
//! - `GET    /api/v1/silences`            every silence (`?state=active|pending|expired`, `?filter=<matchers>`)
//! - `GET    /api/v1/silences/{id}`       one silence
//! - `POST   /api/v1/silences`            create or update (admin token) → `{"silenceID": "..."}`
//! - `DELETE /api/v1/silences/{id}`       expire (admin token; `/api/v1/silence/{id}` too)
//! - `GET    /api/v1/status`              version, uptime, routing tree, receivers, groups, silence counts
//! - `GET    /api/v1/dispatch/alerts`     the dispatcher's view of the firing alerts (receivers,
//!   silenced/inhibited/muted by); `/api/v1/alerts` merges this per alert via
//!   [`Dispatcher::alert_status`].
//!
//! Silences are Alertmanager v2 `gettableSilence`/`postableSilence` objects.
//! Errors are `{"status": "error", "error": "..."}` with 400 (bad input, bad
//! JSON), 401/403 (token), 404 (no such silence) or 409 (already expired).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::auth::{AdminToken, RequireAdmin};
use crate::clock::{to_datetime, TimestampMs};
use crate::dispatch::{Dispatcher, SilenceError, SilenceInput, SilenceState};
use crate::store::silences::{SilenceMatcher, SilenceRecord};

/// What the dispatch routes need.
#[derive(Clone)]
pub struct DispatchApiState {
    pub dispatcher: Arc<Dispatcher>,
    pub admin_token: AdminToken,
    /// When the daemon started (for `uptime`).
    pub started_at_ms: TimestampMs,
}

impl axum::extract::FromRef<DispatchApiState> for AdminToken {
    fn from_ref(s: &DispatchApiState) -> Self {
        s.admin_token.clone()
    }
}

/// The dispatch routes, ready to `merge` into the server's router.
pub fn router(state: DispatchApiState) -> Router {
    Router::new()
        .route("/api/v1/silences", get(list_silences).post(post_silence))
        .route(
            "/api/v1/silences/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/api/v1/silence/{id}", delete(delete_silence))
        .route("/api/v1/status", get(status))
        .route("/api/v1/dispatch/alerts", get(dispatch_alerts))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "status": "error", "error": message.into() })),
    )
        .into_response()
}

fn rfc3339(ms: TimestampMs) -> String {
    to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SilenceStatus {
    pub state: SilenceState,
}

/// Alertmanager's `gettableSilence`.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GettableSilence {
    pub id: String,
    pub status: SilenceStatus,
    pub updated_at: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

/// Alertmanager's `postableSilence`.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostableSilence {
    #[serde(default)]
    pub id: Option<String>,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: DateTime<FixedOffset>,
    pub ends_at: DateTime<FixedOffset>,
    pub created_by: String,
    pub comment: String,
}

fn gettable(d: &Dispatcher, s: SilenceRecord) -> GettableSilence {
    GettableSilence {
        status: SilenceStatus {
            state: d.silence_state(&s),
        },
        updated_at: rfc3339(s.updated_at_ms),
        starts_at: rfc3339(s.starts_at_ms),
        ends_at: rfc3339(s.ends_at_ms),
        id: s.id,
        matchers: s.matchers,
        created_by: s.created_by,
        comment: s.comment,
    }
}

/// Alertmanager's silence filter: every filter matcher must name a label the
/// silence matches on and accept the silence's value for it.
fn silence_matches_filter(s: &SilenceRecord, filter: &[crate::matchers::Matcher]) -> bool {
    filter.iter().all(|f| {
        s.matchers
            .iter()
            .any(|m| m.name == f.name && f.matches_value(&m.value))
    })
}

/// `?state=active|pending|expired` and `?filter=<matchers>` (repeatable, Alertmanager's `filter`).
pub(crate) async fn list_silences(
    State(s): State<DispatchApiState>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut state = None;
    let mut filter = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "state" => state = Some(v.into_owned()),
            "filter" => match crate::matchers::parse_matchers(&v) {
                Ok(ms) => filter.extend(ms.0),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad filter: {e}")),
            },
            _ => {}
        }
    }
    let list: Vec<GettableSilence> = s
        .dispatcher
        .silences()
        .into_iter()
        .filter(|r| silence_matches_filter(r, &filter))
        .map(|r| gettable(&s.dispatcher, r))
        .filter(|g| {
            state
                .as_deref()
                .is_none_or(|st| g.status.state.as_str() == st)
        })
        .collect();
    Json(list).into_response()
}

pub(crate) async fn get_silence(
    State(s): State<DispatchApiState>,
    Path(id): Path<String>,
) -> Response {
    match s.dispatcher.silence(&id) {
        Some(r) => Json(gettable(&s.dispatcher, r)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
    }
}

pub(crate) async fn post_silence(
    _admin: RequireAdmin,
    State(s): State<DispatchApiState>,
    body: Bytes,
) -> Response {
    let p: PostableSilence = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid silence JSON: {e} (expected {{\"matchers\": [{{\"name\", \"value\", \"isRegex\", \"isEqual\"}}], \"startsAt\", \"endsAt\", \"createdBy\", \"comment\"}})"),
            )
        }
    };
    let now = s.dispatcher.clock().now_ms();
    let starts = p.starts_at.timestamp_millis();
    let ends = p.ends_at.timestamp_millis();
    if starts >= ends {
        return error(
            StatusCode::BAD_REQUEST,
            "Failed to create silence: start time must be before end time",
        );
    }
    if ends < now {
        return error(
            StatusCode::BAD_REQUEST,
            "Failed to create silence: end time can't be in the past",
        );
    }
    let input = SilenceInput {
        id: p.id.filter(|i| !i.is_empty()),
        matchers: p.matchers,
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by: p.created_by,
        comment: p.comment,
    };
    match s.dispatcher.set_silence(input).await {
        Ok(id) => {
            tracing::info!(silence = %id, "silence set through the API");
            Json(serde_json::json!({ "silenceID": id })).into_response()
        }
        Err(e) => silence_error(e),
    }
}

fn silence_error(e: SilenceError) -> Response {
    match e {
        SilenceError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        SilenceError::Invalid(m) => error(StatusCode::BAD_REQUEST, format!("invalid silence: {m}")),
        SilenceError::AlreadyExpired(_) => error(StatusCode::CONFLICT, e.to_string()),
        SilenceError::Store(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(crate) async fn delete_silence(
    _admin: RequireAdmin,
    State(s): State<DispatchApiState>,
    Path(id): Path<String>,
) -> Response {
    match s.dispatcher.expire_silence(&id).await {
        Ok(()) => {
            tracing::info!(silence = %id, "silence expired through the API");
            StatusCode::OK.into_response()
        }
        Err(e) => silence_error(e),
    }
}

async fn status(State(s): State<DispatchApiState>) -> Response {
    let d = &s.dispatcher;
    let now = d.clock().now_ms();
    let mut counts = serde_json::Map::new();
    for st in ["active", "pending", "expired"] {
        counts.insert(st.into(), 0.into());
    }
    for sil in d.silences() {
        let st = d.silence_state(&sil).as_str();
        let n = counts.get(st).and_then(|v| v.as_u64()).unwrap_or(0);
        counts.insert(st.into(), (n + 1).into());
    }
    let routes: Vec<_> = d
        .routes()
        .into_iter()
        .map(|(id, receiver, cont)| serde_json::json!({ "id": id, "receiver": receiver, "continue": cont }))
        .collect();
    Json(serde_json::json!({
        "versionInfo": { "version": env!("CARGO_PKG_VERSION"), "program": "rearguard" },
        "uptime": rfc3339(s.started_at_ms),
        "uptimeSeconds": (now - s.started_at_ms).max(0) / 1000,
        "cluster": { "status": "disabled" },
        "routes": routes,
        "groups": d.groups(),
        "silences": counts,
        "alerts": d.alerts().len(),
    }))
    .into_response()
}

async fn dispatch_alerts(State(s): State<DispatchApiState>) -> Response {
    Json(s.dispatcher.alerts()).into_response()
}
