//! Builds the router and its shared state, and serves it.

use crate::app::{App, OperationDefaults};
use crate::config::Settings;
use crate::domain::token::Secret;
use crate::http::{self, auth};
use crate::ops::Engine;
use crate::store::{self, Store, StoreError};
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

/// What every handler shares, behind one reference count: the extractors and middleware clone
/// it for each request, and one atomic increment costs less than one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub authenticator: Arc<auth::Authenticator>,
    pub route_scopes: Arc<auth::RouteScopes>,
    pub operations: OperationDefaults,
    pub limits: Limits,
    pub scim_limiter: Arc<http::scim::rate::ScimLimiter>,
    pub scim_reads: Arc<http::scim::rate::ReadGate>,
    pub refusals: Arc<auth::RefusalLog>,
}

impl Shared {
    /// The use cases' view of the state.
    pub fn app(&self) -> App<'_> {
        App {
            store: self.store.as_ref(),
            engine: &self.engine,
            settings: &self.operations,
        }
    }
}

/// Limits applied to requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted request body, in bytes (chunk uploads excepted).
    pub body_bytes: usize,
    /// Longest a request may take before it is answered with 408 (chunk uploads excepted).
    pub request_timeout: Duration,
    /// Largest accepted chunk upload, in bytes; it streams, so this bounds time, not memory.
    pub upload_bytes: usize,
    /// Longest a chunk upload may take.
    pub upload_timeout: Duration,
    /// Longest an event stream stays open before the client must reconnect.
    pub stream_lifetime: Duration,
    /// SCIM lists and searches each token may run at once.
    pub scim_reads_per_token: usize,
    /// SCIM requests each token may send (none: unlimited).
    pub scim_rate: Option<http::scim::rate::ScimRate>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            upload_bytes: 1024 * 1024 * 1024,
            upload_timeout: Duration::from_secs(3600),
            stream_lifetime: Duration::from_secs(3600),
            scim_reads_per_token: http::scim::rate::DEFAULT_READS_PER_TOKEN,
            scim_rate: http::scim::rate::ScimRate::per_second(DEFAULT_SCIM_RATE),
        }
    }
}

/// SCIM requests a second each token may send, by default.
pub const DEFAULT_SCIM_RATE: u32 = 1000;

/// The parts the router is built from.
pub struct Services {
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub limits: Limits,
    pub operations: OperationDefaults,
    /// Whether roster itself serves HTTPS (then responses carry HSTS).
    pub tls: bool,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application: API routes behind authentication, `/openapi.json`, `/docs` and the
/// middleware.
///
/// # Panics
/// When a route declares no security scope, or the API document cannot be completed (programming
/// errors every test would catch).
pub fn router(services: Services) -> Router {
    let limits = services.limits;
    crate::telemetry::install();
    let (api, openapi) = http::routes(&limits, &services.store).split_for_parts();
    let route_scopes = auth::RouteScopes::from_openapi(&openapi)
        .unwrap_or_else(|e| panic!("the API's security declarations are broken: {e}"));
    let document = http::contract::document(openapi)
        .unwrap_or_else(|e| panic!("the API document cannot be completed: {e}"));
    let state = AppState(Arc::new(Shared {
        authenticator: Arc::new(auth::Authenticator::new(services.store.clone())),
        store: services.store,
        engine: services.engine,
        route_scopes: Arc::new(route_scopes),
        operations: services.operations,
        limits,
        scim_limiter: Arc::new(http::scim::rate::ScimLimiter::new(limits.scim_rate)),
        scim_reads: http::scim::rate::ReadGate::new(limits.scim_reads_per_token),
        refusals: Arc::default(),
    }));
    let rate_state = state.clone();
    api.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authorize,
    ))
    .route_layer(axum::middleware::from_fn(http::route_matched))
    .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document))
    .fallback(http::no_route)
    .method_not_allowed_fallback(http::wrong_method)
    .with_state(state)
    .layer(DefaultBodyLimit::max(limits.body_bytes))
    .layer(CatchPanicLayer::custom(http::panic_response))
    .layer(axum::middleware::from_fn_with_state(
        rate_state,
        http::scim::rate::limit,
    ))
    .layer(axum::middleware::from_fn(http::scim::scim_errors))
    // gzip or zstd when the client accepts it, at their fastest levels (a 1000-member page: 296 KB
    // plain, about 25 KB compressed); event streams and small answers stay as they are.
    .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
    .layer(axum::middleware::from_fn(http::record_request))
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(TraceLayer::new_for_http())
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
    .layer(axum::middleware::map_request(screen_request_id))
    .layer(axum::middleware::from_fn_with_state(
        services.tls,
        http::security_headers,
    ))
}

/// Longest `x-request-id` roster keeps from a client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Drops a client's `x-request-id` unless it is one value of 1 to [`MAX_REQUEST_ID_LEN`]
/// characters of `A-Z a-z 0-9 . _ : -`, so that roster generates one instead: the id is echoed,
/// logged and kept in the audit trail, and nothing of a refused one is.
async fn screen_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let headers = request.headers_mut();
    let ids = headers.get_all(&REQUEST_ID);
    let safe = |id: &[u8]| {
        (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
    };
    if ids.iter().count() > 1 || ids.iter().any(|id| !safe(id.as_bytes())) {
        headers.remove(&REQUEST_ID);
    }
    request
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
    #[error("TLS: {0}")]
    Tls(String),
}

/// The name of the admin token created on first start.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

/// Opens the store (applying migrations), creates the first admin token on an empty database,
/// and serves until SIGINT or SIGTERM.
pub async fn serve(settings: &Settings) -> Result<(), ServeError> {
    let shutdown = shutdown_signal();
    // TLS files are read first: a server that cannot serve must not create and print a token.
    let tls = match &settings.tls {
        Some(tls) => Some(tls_config(tls).await?),
        None => None,
    };
    let store = store::open(&settings.location).await?;
    bootstrap(store.as_ref(), settings.bootstrap_token.clone()).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        tls = settings.tls.is_some(),
        database = ?settings.location,
        "roster is serving; API docs at /docs"
    );
    let engine = Engine::new(store.clone(), settings.engine.clone());
    engine.start();
    if let Some(config) = &settings.relay {
        crate::relay::Relay::new(store.clone(), config.clone(), engine.node().to_owned()).start();
    }
    crate::webhooks::Deliverer::new(
        store.clone(),
        settings.webhooks.clone(),
        engine.node().to_owned(),
    )
    .map_err(|e| ServeError::Bootstrap(format!("the webhook client: {e}")))?
    .start();
    let app = router(Services {
        store,
        engine,
        limits: settings.limits,
        operations: settings.operations,
        tls: tls.is_some(),
    });
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        Some(config) => serve_tls(listener, app, config, shutdown).await?,
    }
    tracing::info!("roster stopped");
    Ok(())
}

/// Reads the certificate and key for HTTPS with rustls (ring provider).
async fn tls_config(
    tls: &crate::config::Tls,
) -> Result<axum_server::tls_rustls::RustlsConfig, ServeError> {
    // Another part of the process may have installed the provider already; either is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .map_err(|e| {
            ServeError::Tls(format!(
                "cannot load {} and {}: {e}",
                tls.cert.display(),
                tls.key.display()
            ))
        })
}

/// Serves HTTPS, stopping gracefully like plain HTTP.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    config: axum_server::tls_rustls::RustlsConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config)
        .handle(handle)
        .serve(app.into_make_service())
        .await?;
    Ok(())
}

/// On a database without tokens, creates the admin token: the operator's chosen one
/// (`ROSTER_BOOTSTRAP_TOKEN`), or a random one printed once to the terminal.
async fn bootstrap(store: &Store, chosen: Option<String>) -> Result<(), ServeError> {
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

/// Resolves on SIGINT or SIGTERM. The handlers are registered when this is called, not when it is
/// first polled, so a signal that arrives while the server starts is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM; stop roster with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
            tracing::info!("shutting down: finishing requests in flight");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing requests in flight");
    }
}
