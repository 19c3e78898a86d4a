//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, and the `/api/v1` admin API.

pub mod action_api;
pub mod alertmanager;
pub mod auth;
pub mod dispatch_api;
pub mod gcp_api;
pub mod rules_api;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};

use crate::config::Secret;

/// Whether the daemon is ready to serve (config loaded, first probe round done).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub registry: prometheus::Registry,
    pub ready: Readiness,
    pub admin_token: Option<Secret>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The largest request body any route reads (silences, holds, rollbacks,
/// form-encoded queries); larger ones get 413 before they are buffered.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    api: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state)
        .merge(api)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<AppState>) -> Response {
    let families = state.registry.gather();
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&families, &mut buf) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buf,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if (state.ready)() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: first probe round not done\n",
        )
            .into_response()
    }
}
