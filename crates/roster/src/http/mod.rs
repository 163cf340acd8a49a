//! The HTTP API: one file per area, each exporting its routes; extractors that answer bad input
//! with problem documents; the OpenAPI document built from the same route annotations.

mod audit;
pub mod auth;
mod changes;
mod cohorts;
pub mod contract;
mod correlation;
mod groups;
mod health;
mod lifecycle;
mod nesting;
pub mod operations;
mod resources;
pub mod scim;
mod scrape;
mod subscriptions;
mod tokens;

use crate::domain::input;
use crate::error::{ApiError, Problem};
use crate::server::{AppState, Limits};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// A JSON body; a body that cannot be read, that holds a NUL character or that nests deeper than
/// [`input::MAX_JSON_DEPTH`] is answered with a problem document.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with the header `Content-Type: application/json`".to_owned(),
            ));
        }
        let body = Bytes::from_request(request, state).await?;
        check_body(&body)?;
        let axum::Json(value) = axum::Json::from_bytes(&body)?;
        Ok(Self(value))
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/…+json`).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
    else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
}

/// Refuses a JSON body that holds a NUL character or nests too deep, saying so.
pub fn check_body(body: &[u8]) -> Result<(), ApiError> {
    input::check_json(body)
        .map_err(|refusal| ApiError::BadRequest(format!("the JSON body {refusal}")))
}

/// Path parameters; a malformed one (say, an invalid uuid) or one that holds a NUL character is
/// answered with a problem document.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Parameters that are not UTF-8 are refused by the typed extraction below.
        if let Ok(raw) = RawPathParams::from_request_parts(parts, state).await {
            for (name, value) in &raw {
                input::check_text(&format!("path parameter `{name}`"), value)
                    .map_err(ApiError::BadRequest)?;
            }
        }
        let axum::extract::Path(value) =
            axum::extract::Path::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Query parameters; an unknown or malformed one, or one that holds a NUL character, is answered
/// with a problem document.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Some(query) = parts.uri.query() {
            input::check_query(query).map_err(ApiError::BadRequest)?;
        }
        let axum::extract::Query(value) =
            axum::extract::Query::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Longest `wait` (a long poll) a request may ask for, in seconds; the server waits at most its
/// own limit, a little under its request timeout.
pub const MAX_WAIT_SECONDS: u64 = 3600;

/// Reads a `wait` parameter: whole seconds, at most [`MAX_WAIT_SECONDS`].
pub fn wait_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match <Option<u64> as serde::Deserialize>::deserialize(d)? {
        Some(s) if s > MAX_WAIT_SECONDS => Err(D::Error::custom(format!(
            "wait is {s} seconds; the most is {MAX_WAIT_SECONDS}"
        ))),
        s => Ok(s),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "roster",
        description = "Stores and vends group memberships imported from many directories."
    ),
    components(schemas(Problem)),
    modifiers(&BearerScheme),
    tags(
        (name = "resources", description = "Accounts, groups, prime identities and other records"),
        (name = "groups", description = "Memberships of groups"),
        (name = "cohorts", description = "Cohorts, prime identities, unified groups and sync plans"),
        (name = "operations", description = "Units of work that change memberships"),
        (name = "changes", description = "The change feed: every change in order, exports, history"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "audit", description = "The trail of every write (admin)"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "scim", description = "The SCIM 2.0 service provider, one base per source system (see docs/scim.md)"),
    )
)]
struct ApiDoc;

/// Declares the bearer scheme, so the docs page's "Authorize" button takes a token.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            auth::SCHEME,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every route of the API together with its OpenAPI description. Requests time out, and their
/// statements with them (`store` cancels those of a dropped request). Chunk uploads stream, so
/// they get their own body limit and timeout.
pub fn routes(
    limits: &Limits,
    store: &std::sync::Arc<crate::store::Store>,
) -> OpenApiRouter<AppState> {
    let timed = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(scrape::routes())
        .merge(resources::routes())
        .merge(groups::routes())
        .merge(nesting::routes())
        .merge(cohorts::routes())
        .merge(lifecycle::routes())
        .merge(correlation::routes())
        .merge(operations::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(changes::routes())
        .merge(subscriptions::routes())
        .merge(scim::routes());
    let timed = within(timed, limits.request_timeout, store);
    // A chunk streams (its handler enforces `upload_bytes` as it reads).
    let uploads = within(operations::upload_routes(), limits.upload_timeout, store);
    timed
        .merge(uploads)
        .layer(axum::middleware::map_response(explain_timeout))
}

/// Middleware: counts and times each request by route template (see [`scrape::record`]), which
/// [`scrape::matched`], a route layer, hands on.
pub use scrape::{matched as route_matched, record as record_request};

/// Answers the routes' requests that take longer than `timeout` with 408, and bounds their
/// database statements by the same time.
fn within(
    routes: OpenApiRouter<AppState>,
    timeout: std::time::Duration,
    store: &std::sync::Arc<crate::store::Store>,
) -> OpenApiRouter<AppState> {
    let budget = Budgeted {
        timeout,
        store: store.clone(),
    };
    routes
        .layer(axum::middleware::from_fn_with_state(
            budget,
            statement_budget,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
}

/// The state of [`statement_budget`].
#[derive(Clone)]
struct Budgeted {
    timeout: std::time::Duration,
    store: std::sync::Arc<crate::store::Store>,
}

/// Middleware: the request's database statements may take no longer than the request itself,
/// and those still running when the request is dropped unanswered (timed out, or its client
/// gone) are cancelled (see `store::budget`).
async fn statement_budget(
    axum::extract::State(state): axum::extract::State<Budgeted>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let budget = crate::store::budget::Budget::new(state.timeout);
    let mut unanswered = CancelOnDrop {
        store: Some(state.store),
        tag: budget.tag().to_owned(),
    };
    let response = crate::store::budget::within(budget, next.run(request)).await;
    unanswered.store = None;
    response
}

/// Cancels a request's statements when the request is dropped before it is answered.
struct CancelOnDrop {
    store: Option<std::sync::Arc<crate::store::Store>>,
    tag: String,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            let tag = std::mem::take(&mut self.tag);
            tokio::spawn(async move {
                if let Err(e) = store.cancel_statements(&tag).await {
                    tracing::warn!(error = %e, tag, "cannot cancel a dropped request's statements");
                }
            });
        }
    }
}

/// The policy of the docs page, where people paste tokens: its own scripts only, never framed.
const DOCS_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// Middleware: headers every response carries. Nothing is cached (answers carry token secrets,
/// webhook secrets and directory data); content types are not sniffed; under TLS (`tls`, its
/// state) browsers are told to keep to HTTPS; the docs page may run only its own scripts and may
/// not be framed.
pub async fn security_headers(
    axum::extract::State(tls): axum::extract::State<bool>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let docs = request.uri().path().starts_with("/docs");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !docs {
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if docs {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// Answers requests for paths that do not exist.
pub async fn no_route(uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::NotFound(format!(
        "there is no route {}; the API is described at /openapi.json and /docs",
        uri.path()
    ))
}

/// Answers requests with a method the path does not take.
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::MethodNotAllowed(format!(
        "{} does not take {method}; /openapi.json lists the methods it takes",
        uri.path()
    ))
}

/// Parses an optional JSON body: an empty body, or `null`, is the default value.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    check_body(body)?;
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON for this call: {e}")))
}

/// Turns a handler panic (a bug) into a problem document instead of a dropped connection.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a handler panicked".to_owned());
    ApiError::Internal(format!("panic: {detail}")).into_response()
}

/// Reads the paging parameters of a list; a bad `limit` or `cursor` is a bad request.
pub fn page_request<K: std::str::FromStr>(
    kind: crate::domain::page::ListKind,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<crate::domain::page::PageRequest<K>, ApiError> {
    crate::domain::page::PageRequest::parse(kind, limit, cursor)
        .map_err(|e| ApiError::BadRequest(e.0))
}

/// Gives a timed-out request (answered 408 by the timeout layer, with no body) a problem document.
pub async fn explain_timeout(response: axum::response::Response) -> axum::response::Response {
    let bare = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none();
    if response.status() == StatusCode::REQUEST_TIMEOUT && bare {
        return ApiError::Timeout(
            "the request took longer than the server's request timeout; for a long operation, \
             complete it without waiting and poll GET /api/v1/operations/{id}"
                .to_owned(),
        )
        .into_response();
    }
    response
}
