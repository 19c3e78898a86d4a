//! `GET /api/v1/evidence/logs?query=NAME`: the last entries a log query matched;
//! `GET /api/v1/cloud_run/services`: what rearguard sees of each Cloud Run service.
//!
//! Merge into the main router after its state is set:
//! `server::router(state).merge(gcp_api::router(evidence, views))`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::source::cloud_logging::LogEvidenceStore;
use crate::source::cloud_run::CloudRunViews;

#[derive(Clone)]
struct GcpApiState {
    evidence: LogEvidenceStore,
    views: CloudRunViews,
}

pub fn router(evidence: LogEvidenceStore, views: CloudRunViews) -> Router {
    Router::new()
        .route("/api/v1/evidence/logs", get(evidence_logs))
        .route("/api/v1/cloud_run/services", get(cloud_run_services))
        .with_state(GcpApiState { evidence, views })
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"status": "error", "error": message}))).into_response()
}

async fn evidence_logs(
    State(s): State<GcpApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = q.get("query").filter(|n| !n.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "give ?query=NAME, one of: {}",
                s.evidence.queries().join(", ")
            ),
        );
    };
    match s.evidence.entries(name) {
        Some(entries) => {
            Json(json!({"status": "success", "data": {"query": name, "entries": entries}}))
                .into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no log query named {name:?}; known: {}",
                s.evidence.queries().join(", ")
            ),
        ),
    }
}

async fn cloud_run_services(State(s): State<GcpApiState>) -> Response {
    let views: Vec<serde_json::Value> = s
        .views
        .all()
        .into_iter()
        .map(|v| {
            json!({
                "name": v.name, "etag": v.etag, "generation": v.generation, "ready": v.ready,
                "reconciling": v.reconciling, "latest_ready_revision": v.latest_ready_revision,
                "latest_created_revision": v.latest_created_revision, "serving": v.serving,
                "traffic_history": v.traffic_history, "revisions": v.revisions, "seen_ms": v.seen_ms,
            })
        })
        .collect();
    Json(json!({"status": "success", "data": views})).into_response()
}
