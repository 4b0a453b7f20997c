//! The HTTP endpoint (`--http-listen`, 127.0.0.1:9250 by default), on its own port beside the
//! Postgres one: `/metrics` (OpenMetrics text for Prometheus), `/health` (the process answers),
//! `/ready` (every job has recovered), the dashboard at `/` and the JSON it polls
//! (`/api/jobs`).
//!
//! Same rule as the Postgres port: a non-loopback address needs `--password`, and then every
//! path but `/health` and `/ready` asks for HTTP basic authentication with `--user` and that
//! password (probes carry no credentials; they learn nothing but up or not).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::session::Shared;

/// What the handlers share.
pub struct HttpState {
    pub shared: std::sync::Weak<Shared>,
    pub registry: Registry,
    /// Set once the server has started every job (until then `/ready` says no).
    pub started: AtomicBool,
    /// `Basic <base64(user:password)>`, when a password is set.
    pub basic: Option<String>,
}

/// The `Authorization` header value that `user` and `password` send.
pub fn basic_credentials(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// The router of every path.
pub fn router(state: Arc<HttpState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/jobs", get(crate::dashboard::jobs))
        .route("/", get(crate::dashboard::index))
        .route("/assets/{file}", get(crate::dashboard::asset))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(protected)
        .with_state(state)
}

/// Serves `router` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "http endpoint stopped");
    }
}

async fn authenticate(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.basic {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"rivulet\"")],
                "authentication required\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    match crate::metrics::encode(&state.registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<Arc<HttpState>>) -> Response {
    let recovered = state.started.load(Ordering::Acquire)
        && state
            .shared
            .upgrade()
            .is_some_and(|shared| shared.jobs.recovered());
    if recovered {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "recovering\n").into_response()
    }
}
