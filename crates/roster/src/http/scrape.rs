//! `/metrics`: Prometheus text exposition (see docs/metrics.md), and the middleware that counts
//! and times every request by its route template.

use crate::app::Caller;
use crate::error::ApiError;
use crate::server::AppState;
use crate::telemetry;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The exposition's media type (Prometheus text format 0.0.4).
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics: requests, operations, the feed and its followers, the database pool.
/// They span every source system, so the token's reads must not be bound to one.
#[utoipa::path(get, path = "/metrics", tag = "health", security(("bearer" = ["read"])),
    responses((status = 200, description = "The metrics in Prometheus text format",
        content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.check_read_unbound("the metrics")?;
    let text = telemetry::exposition(&state.store).await?;
    Ok(([(header::CONTENT_TYPE, EXPOSITION)], text).into_response())
}

/// Route middleware: hands the matched route template to [`record`] on the response.
pub async fn matched(path: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(path) = path {
        response.extensions_mut().insert(path);
    }
    response
}

/// Middleware: counts and times each request by method, route template and status. A request
/// that matched no route (or was answered before routing, as a SCIM request over its rate is)
/// is filed under its area, so that a scan of random paths cannot grow the label set.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let area = area(request.uri().path());
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or(area, MatchedPath::as_str);
    telemetry::request(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// The label of a method: one of HTTP's own, or "other".
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// The label of a path no route matched.
fn area(path: &str) -> &'static str {
    if path.starts_with("/scim/") {
        "/scim/*"
    } else if path == "/docs" || path.starts_with("/docs/") || path == "/openapi.json" {
        "/docs/*"
    } else {
        "unmatched"
    }
}
