//! The action part of the admin API:
//!
//! - `GET    /api/v1/rollbacks`                 the audit of action decisions, newest last
//!   (`?target=T&limit=N`, default 100)
//! - `GET    /api/v1/rollbacks/intents`         intents (what was done or tried), newest first
//! - `POST   /api/v1/rollbacks`                 a manual action (admin token):
//!   `{"target": "backend", "to_revision": "backend-00041-abc", "dry_run": false, "actor": "alice"}`;
//!   answers when the action is verified or given up, with its outcome
//! - `GET    /api/v1/holds`                     holds (the `HOLD` file shows as target `*`)
//! - `POST   /api/v1/holds`                     `{"target": "backend", "reason": "..."}` (admin; no target: all)
//! - `DELETE /api/v1/holds/{target}`            lift a hold (admin; `*` for the global one; `?reason=`)
//! - `GET    /api/v1/quarantine`                revisions never rolled back to
//! - `DELETE /api/v1/quarantine/{service}/{revision}` lift a quarantine (admin; short service name)
//!
//! Errors are `{"status": "error", "error": "..."}`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::{AdminToken, RequireAdmin};
use crate::action::plan::hold_file;
use crate::action::{ActionRunner, Outcome, Trigger};
use crate::store::actions::GLOBAL_HOLD;
use crate::store::Store;

/// What the action routes need.
#[derive(Clone)]
pub struct ActionApiState {
    pub runner: ActionRunner,
    pub store: Store,
    pub state_dir: std::path::PathBuf,
    pub admin_token: AdminToken,
}

impl axum::extract::FromRef<ActionApiState> for AdminToken {
    fn from_ref(s: &ActionApiState) -> Self {
        s.admin_token.clone()
    }
}

/// The action routes, ready to `merge` into the server's router.
pub fn router(state: ActionApiState) -> Router {
    Router::new()
        .route("/api/v1/rollbacks", get(list_audit).post(post_rollback))
        .route("/api/v1/rollbacks/intents", get(list_intents))
        .route("/api/v1/holds", get(list_holds).post(post_hold))
        .route("/api/v1/holds/{target}", delete(delete_hold))
        .route("/api/v1/quarantine", get(list_quarantine))
        .route(
            "/api/v1/quarantine/{service}/{revision}",
            delete(delete_quarantine),
        )
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "status": "error", "error": message.into() })),
    )
        .into_response()
}

fn store_error(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("state store: {e}"),
    )
}

#[derive(Deserialize, Default)]
struct ListQuery {
    target: Option<String>,
    limit: Option<usize>,
}

async fn list_audit(State(s): State<ActionApiState>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    match s.store.audit(q.target, limit).await {
        Ok(entries) => Json(json!({ "status": "success", "data": entries })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn list_intents(State(s): State<ActionApiState>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    match s.store.intents_since(q.target, i64::MIN, limit).await {
        Ok(intents) => Json(json!({ "status": "success", "data": intents })).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    target: String,
    #[serde(default)]
    to_revision: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    actor: Option<String>,
}

async fn post_rollback(
    _admin: RequireAdmin,
    State(s): State<ActionApiState>,
    body: Result<Json<RollbackRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let Some(target) = s.runner.resolve_target(&req.target) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no action named {:?} (defined: {})",
                req.target,
                s.runner.targets().join(", ")
            ),
        );
    };
    let actor = req.actor.unwrap_or_else(|| "api".into());
    let outcome = s
        .runner
        .run(
            &target,
            Trigger::manual(req.to_revision, req.dry_run, actor),
        )
        .await;
    let status = match &outcome {
        Outcome::Verified { .. } | Outcome::DryRun { .. } => StatusCode::OK,
        Outcome::Skipped { reason, .. } if reason == "in_progress" => StatusCode::CONFLICT,
        Outcome::Skipped { .. } | Outcome::Superseded { .. } => StatusCode::OK,
        Outcome::NotVerified { .. } | Outcome::Failed { .. } => StatusCode::BAD_GATEWAY,
    };
    (
        status,
        Json(json!({ "status": "success", "target": target, "data": outcome })),
    )
        .into_response()
}

async fn list_holds(State(s): State<ActionApiState>) -> Response {
    let mut holds = match s.store.holds().await {
        Ok(h) => serde_json::to_value(h).unwrap_or_default(),
        Err(e) => return store_error(e),
    };
    if let Some(reason) = hold_file(&s.state_dir).await {
        if let Some(arr) = holds.as_array_mut() {
            arr.insert(
                0,
                json!({"target": GLOBAL_HOLD, "reason": reason, "set_by": "HOLD file", "at_ms": null}),
            );
        }
    }
    Json(json!({ "status": "success", "data": holds })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldRequest {
    #[serde(default)]
    target: Option<String>,
    reason: String,
    #[serde(default)]
    actor: Option<String>,
}

async fn post_hold(
    _admin: RequireAdmin,
    State(s): State<ActionApiState>,
    body: Result<Json<HoldRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    if req.reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "a hold needs a reason");
    }
    let target = match req.target.as_deref() {
        None | Some(GLOBAL_HOLD) => None,
        Some(t) => match s.runner.resolve_target(t) {
            Some(t) => Some(t),
            None => return error(StatusCode::NOT_FOUND, format!("no action named {t:?}")),
        },
    };
    let actor = req.actor.unwrap_or_else(|| "api".into());
    match s.runner.hold(target.as_deref(), &req.reason, &actor).await {
        Ok(()) => Json(
            json!({ "status": "success", "target": target.unwrap_or_else(|| GLOBAL_HOLD.into()) }),
        )
        .into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize, Default)]
struct UnholdQuery {
    reason: Option<String>,
    actor: Option<String>,
}

async fn delete_hold(
    _admin: RequireAdmin,
    State(s): State<ActionApiState>,
    Path(target): Path<String>,
    Query(q): Query<UnholdQuery>,
) -> Response {
    let target = if target == GLOBAL_HOLD {
        None
    } else {
        Some(s.runner.resolve_target(&target).unwrap_or(target))
    };
    let reason = q.reason.unwrap_or_else(|| "lifted through the API".into());
    let actor = q.actor.unwrap_or_else(|| "api".into());
    match s.runner.unhold(target.as_deref(), &reason, &actor).await {
        Ok(true) => Json(json!({ "status": "success" })).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no hold on {}", target.as_deref().unwrap_or(GLOBAL_HOLD)),
        ),
        Err(e) => store_error(e),
    }
}

async fn list_quarantine(State(s): State<ActionApiState>) -> Response {
    match s.store.quarantine(None).await {
        Ok(q) => Json(json!({ "status": "success", "data": q })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn delete_quarantine(
    _admin: RequireAdmin,
    State(s): State<ActionApiState>,
    Path((service, revision)): Path<(String, String)>,
) -> Response {
    let all = match s.store.quarantine(None).await {
        Ok(q) => q,
        Err(e) => return store_error(e),
    };
    let Some(entry) = all.iter().find(|q| {
        q.revision == revision
            && (q.service == service || crate::action::cloud_run::short_name(&q.service) == service)
    }) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{revision} of {service} is not quarantined"),
        );
    };
    match s
        .store
        .unquarantine_revision(&entry.service, &entry.revision)
        .await
    {
        Ok(_) => Json(json!({ "status": "success" })).into_response(),
        Err(e) => store_error(e),
    }
}
