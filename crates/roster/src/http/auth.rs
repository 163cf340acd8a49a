//! Authentication and authorisation. Every route's required scope is read from its OpenAPI
//! `security` declaration, so the document and the enforcement are the same data; a route that
//! declares none is refused at start-up unless it is one of the few public ones.

use crate::app::Caller;
use crate::domain::token::{Principal, Scope, SecretHash, Token};
use crate::error::ApiError;
use crate::server::AppState;
use crate::store::Store;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Routes anyone may call: liveness and readiness probes. (`/docs` and `/openapi.json` are served
/// outside the API router and need no token either.)
pub const PUBLIC_ROUTES: [&str; 2] = ["/healthz", "/readyz"];

/// The name of the bearer security scheme in the OpenAPI document.
pub const SCHEME: &str = "bearer";

/// The scope each (method, route template) requires.
#[derive(Debug, Clone, Default)]
pub struct RouteScopes(HashMap<(Method, String), Scope>);

impl RouteScopes {
    /// Reads every operation's required scope from the OpenAPI document. Fails when a non-public
    /// route declares none, or declares one that is not a scope.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Result<Self, String> {
        let doc = serde_json::to_value(doc).map_err(|e| e.to_string())?;
        let mut scopes = HashMap::new();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            for (method, operation) in item.as_object().cloned().unwrap_or_default() {
                let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                    continue;
                };
                let declared = operation["security"][0][SCHEME][0].as_str();
                match (declared, PUBLIC_ROUTES.contains(&path.as_str())) {
                    (None, true) => {}
                    (None, false) => {
                        return Err(format!("{method} {path} declares no security scope"))
                    }
                    (Some(name), _) => {
                        let scope = Scope::from_name(name).ok_or_else(|| {
                            format!("{method} {path} declares unknown scope {name:?}")
                        })?;
                        scopes.insert((method, path.clone()), scope);
                    }
                }
            }
        }
        Ok(Self(scopes))
    }

    /// The scope `method path` needs. axum answers a HEAD with the route's GET handler (and no
    /// body), so a HEAD needs what the GET needs.
    fn required(&self, method: &Method, path: &str) -> Option<Scope> {
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        self.0.get(&(method, path.to_owned())).copied()
    }
}

/// Checks presented secrets against stored hashes, with a short cache so that a read does not
/// cost a second query. A revocation through this node takes effect at once; through another
/// node, within [`CACHE_TTL`].
pub struct Authenticator {
    store: Arc<Store>,
    cache: Mutex<HashMap<SecretHash, (Token, Instant)>>,
}

/// How long a looked-up token is trusted before it is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 10_000;

impl Authenticator {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of a presented secret, or why it is refused (with the token's id when the
    /// secret is a token's, revoked or expired).
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Principal, (ApiError, Option<uuid::Uuid>)> {
        let hash = SecretHash::of(presented);
        let token = match self.cached(&hash) {
            Some(token) => token,
            None => {
                let (token, stored) = self
                    .store
                    .token_by_hash(&hash)
                    .await
                    .map_err(|e| (e.into(), None))?
                    .ok_or_else(|| (unauthorized("the bearer token is not valid"), None))?;
                // The database found the row by hash; the comparison itself is constant-time.
                if !hash.matches(&stored) {
                    return Err((unauthorized("the bearer token is not valid"), None));
                }
                self.store
                    .touch_token(token.id, crate::store::now())
                    .await
                    .map_err(|e| (e.into(), Some(token.id)))?;
                self.remember(hash, token.clone());
                token
            }
        };
        standing(&token).map_err(|e| (e, Some(token.id)))?;
        Ok(Principal {
            token_id: token.id,
            name: token.name,
            scopes: token.scopes,
            source_system: token.source_system,
            read_scope: token.read_scope,
        })
    }

    /// Whether a token still stands (neither revoked nor expired), read from the database rather
    /// than the cache: for work that outlives its request, such as an event stream.
    pub async fn still_stands(&self, token_id: uuid::Uuid) -> Result<(), ApiError> {
        match self.store.get_token(token_id).await {
            Ok(token) => standing(&token),
            Err(crate::store::StoreError::NotFound { .. }) => {
                Err(unauthorized("the bearer token no longer exists"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets a token on this node (after it was revoked here).
    pub fn forget(&self, token_id: uuid::Uuid) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (token, _)| token.id != token_id);
        }
    }

    fn cached(&self, hash: &SecretHash) -> Option<Token> {
        let cache = self.cache.lock().ok()?;
        let (token, at) = cache.get(hash)?;
        (at.elapsed() < CACHE_TTL).then(|| token.clone())
    }

    fn remember(&self, hash: SecretHash, token: Token) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash, (token, Instant::now()));
        }
    }
}

/// Refuses a token that was revoked or has expired.
fn standing(token: &Token) -> Result<(), ApiError> {
    if token.revoked_at.is_some() {
        return Err(unauthorized(&format!(
            "token {:?} has been revoked",
            token.name
        )));
    }
    if token.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(unauthorized(&format!("token {:?} has expired", token.name)));
    }
    Ok(())
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::Unauthorized(format!(
        "{detail}; send `Authorization: Bearer <token>` with a valid roster token"
    ))
}

/// Middleware: authenticates the bearer token and checks the route's scope. Every refusal (401
/// or 403, here or in a handler) is logged, at a bounded rate, with the route, the token's id and
/// the request id.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let refused = |status: StatusCode, token: Option<uuid::Uuid>| {
        state.refusals.record(&Refusal {
            status,
            method: &method,
            route: &route,
            token,
            request_id: request_id.as_deref(),
        });
    };
    match admit(&state, request, &method, &route, request_id.clone()).await {
        Ok((request, token)) => {
            let response = next.run(request).await;
            if matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                refused(response.status(), token);
            }
            response
        }
        Err((e, token)) => {
            refused(e.status(), token);
            e.into_response()
        }
    }
}

/// Lets a request in with its [`Caller`], and the token's id; or says why not, with the token's
/// id when it is known.
async fn admit(
    state: &AppState,
    mut request: Request,
    method: &Method,
    path: &str,
    request_id: Option<String>,
) -> Result<(Request, Option<uuid::Uuid>), (ApiError, Option<uuid::Uuid>)> {
    let Some(scope) = state.route_scopes.required(method, path) else {
        if PUBLIC_ROUTES.contains(&path) {
            return Ok((request, None));
        }
        let missing = ApiError::Internal(format!("{method} {path} has no declared scope"));
        return Err((missing, None));
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| (unauthorized("this route needs a bearer token"), None))?;
    let principal = state.authenticator.authenticate(presented).await?;
    let token = principal.token_id;
    if !principal.has(scope) {
        let lacking = ApiError::Forbidden(format!(
            "token {:?} lacks the scope {:?} that {method} {path} needs",
            principal.name,
            scope.name()
        ));
        return Err((lacking, Some(token)));
    }
    request.extensions_mut().insert(Caller {
        principal,
        request_id,
    });
    Ok((request, Some(token)))
}

/// One refused request, as it is logged.
pub struct Refusal<'a> {
    pub status: StatusCode,
    pub method: &'a Method,
    pub route: &'a str,
    pub token: Option<uuid::Uuid>,
    pub request_id: Option<&'a str>,
}

/// Logs refused requests at WARN, at most [`REFUSALS_PER_SECOND`] a second (in bursts of as
/// many), so that a flood of refusals is seen without flooding the log: the next line logged
/// says how many were left out.
pub struct RefusalLog {
    limiter: governor::DefaultDirectRateLimiter,
    left_out: std::sync::atomic::AtomicU64,
}

/// Refusals logged a second, at most.
pub const REFUSALS_PER_SECOND: u32 = 10;

impl Default for RefusalLog {
    fn default() -> Self {
        let rate =
            std::num::NonZeroU32::new(REFUSALS_PER_SECOND).unwrap_or(std::num::NonZeroU32::MIN);
        Self {
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(rate)),
            left_out: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl RefusalLog {
    pub fn record(&self, refusal: &Refusal<'_>) {
        use std::sync::atomic::Ordering;
        if self.limiter.check().is_err() {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let left_out = self.left_out.swap(0, Ordering::Relaxed);
        tracing::warn!(
            status = refusal.status.as_u16(),
            method = %refusal.method,
            route = refusal.route,
            token_id = refusal.token.map(|t| t.to_string()),
            request_id = refusal.request_id,
            left_out_before = left_out,
            "request refused"
        );
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| unauthorized("this route needs a bearer token"))
    }
}
