//! Builds the router and its shared state, and serves it.

use crate::config::Settings;
use crate::domain::token::Secret;
use crate::http::{self, auth};
use crate::store::{self, Store, StoreError};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub authenticator: Arc<auth::Authenticator>,
    pub route_scopes: Arc<auth::RouteScopes>,
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted request body, in bytes.
    pub body_bytes: usize,
    /// Longest a request may take before it is answered with 408.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application: API routes behind authentication, `/openapi.json`, `/docs` and the
/// middleware.
///
/// # Panics
/// When a route declares no security scope (a programming error every test would catch).
pub fn router(store: Arc<dyn Store>, limits: Limits) -> Router {
    let (api, openapi) = http::routes().split_for_parts();
    let route_scopes = auth::RouteScopes::from_openapi(&openapi)
        .unwrap_or_else(|e| panic!("the API's security declarations are broken: {e}"));
    let state = AppState {
        authenticator: Arc::new(auth::Authenticator::new(store.clone())),
        store,
        route_scopes: Arc::new(route_scopes),
    };
    api.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authorize,
    ))
    .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
    .fallback(http::no_route)
    .method_not_allowed_fallback(http::wrong_method)
    .with_state(state)
    .layer(DefaultBodyLimit::max(limits.body_bytes))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ))
    .layer(CatchPanicLayer::custom(http::panic_response))
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(TraceLayer::new_for_http())
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot serve: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Bootstrap(String),
}

/// The name of the admin token created on first start.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

/// Opens the store (applying migrations), creates the first admin token on an empty database,
/// and serves until SIGINT or SIGTERM.
pub async fn serve(settings: &Settings) -> Result<(), ServeError> {
    let store = store::open(&settings.location).await?;
    bootstrap(store.as_ref(), settings.bootstrap_token.clone()).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        database = ?settings.location,
        "roster is serving; API docs at /docs"
    );
    let app = router(store, settings.limits);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("roster stopped");
    Ok(())
}

/// On a database without tokens, creates the admin token: the operator's chosen one
/// (`ROSTER_BOOTSTRAP_TOKEN`), or a random one printed once to the terminal.
async fn bootstrap(store: &dyn Store, chosen: Option<String>) -> Result<(), ServeError> {
    let generated = chosen.is_none();
    let secret = match chosen {
        Some(value) => Secret::chosen(value).map_err(|e| ServeError::Bootstrap(e.0))?,
        None => Secret::generate()
            .map_err(|e| ServeError::Bootstrap(format!("no randomness for a token: {e}")))?,
    };
    let created = store
        .bootstrap_token(BOOTSTRAP_TOKEN_NAME, &secret.hash())
        .await?;
    if created && generated {
        // Printed to the terminal on purpose, once; never logged.
        eprintln!(
            "\nroster: created the admin token {BOOTSTRAP_TOKEN_NAME:?}. It is shown only now:\n\n    {}\n\n\
             Use it as `Authorization: Bearer <token>`. Create more with `roster token create` \
             or POST /api/v1/tokens.\n",
            secret.expose()
        );
    } else if created {
        tracing::info!("created the admin token from ROSTER_BOOTSTRAP_TOKEN");
    }
    Ok(())
}

/// Opens the store, which applies pending migrations, and reports the backend.
pub async fn migrate(settings: &Settings) -> Result<&'static str, StoreError> {
    Ok(store::open(&settings.location).await?.backend())
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
