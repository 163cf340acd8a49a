//! Authentication and authorisation. Every route's required scope is read from its OpenAPI
//! `security` declaration, so the document and the enforcement are the same data; a route that
//! declares none is refused at start-up unless it is one of the few public ones.

use crate::app::AppState;
use crate::domain::token::{Actor, Principal, Scope, SecretHash, Token};
use crate::error::ApiError;
use crate::store::Store;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
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
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<SecretHash, (Token, Instant)>>,
}

/// How long a looked-up token is trusted before it is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 10_000;

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of a presented secret, or why it is refused.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, ApiError> {
        let hash = SecretHash::of(presented);
        let token = match self.cached(&hash) {
            Some(token) => token,
            None => {
                let (token, stored) = self
                    .store
                    .token_by_hash(&hash)
                    .await?
                    .ok_or_else(|| unauthorized("the bearer token is not valid"))?;
                // The database found the row by hash; the comparison itself is constant-time.
                if !hash.matches(&stored) {
                    return Err(unauthorized("the bearer token is not valid"));
                }
                self.store
                    .touch_token(token.id, crate::store::now())
                    .await?;
                self.remember(hash, token.clone());
                token
            }
        };
        if token.revoked_at.is_some() {
            return Err(unauthorized(&format!(
                "token {:?} has been revoked",
                token.name
            )));
        }
        if token.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(unauthorized(&format!("token {:?} has expired", token.name)));
        }
        Ok(Principal {
            token_id: token.id,
            name: token.name,
            scopes: token.scopes,
            source_system: token.source_system,
        })
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

fn unauthorized(detail: &str) -> ApiError {
    ApiError::Unauthorized(format!(
        "{detail}; send `Authorization: Bearer <token>` with a valid roster token"
    ))
}

/// Middleware: authenticates the bearer token and checks the route's scope.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().clone();
    let Some(scope) = state.route_scopes.required(&method, &path) else {
        if PUBLIC_ROUTES.contains(&path.as_str()) {
            return Ok(next.run(request).await);
        }
        return Err(ApiError::Internal(format!(
            "{method} {path} has no declared scope"
        )));
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
        .ok_or_else(|| unauthorized("this route needs a bearer token"))?;
    let principal = state.authenticator.authenticate(presented).await?;
    if !principal.has(scope) {
        return Err(ApiError::Forbidden(format!(
            "token {:?} lacks the scope {:?} that {method} {path} needs",
            principal.name,
            scope.name()
        )));
    }
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    request.extensions_mut().insert(Caller {
        principal,
        request_id,
    });
    Ok(next.run(request).await)
}

/// The authenticated caller of a request, for handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: Option<String>,
}

impl Caller {
    /// Who is writing, for the audit trail.
    pub fn actor(&self) -> Actor {
        Actor {
            token_id: Some(self.principal.token_id),
            token_name: self.principal.name.clone(),
            request_id: self.request_id.clone(),
        }
    }

    /// Refuses a write to data of another source than the token's binding.
    pub fn check_source(&self, source_system: &str) -> Result<(), ApiError> {
        self.principal
            .check_source(source_system)
            .map_err(ApiError::Forbidden)
    }

    /// Refuses a token bound to a source system: `what` spans sources (cohorts, unified
    /// groups, correlation), so a connector's token may not do it.
    pub fn check_unbound(&self, what: &str) -> Result<(), ApiError> {
        match &self.principal.source_system {
            None => Ok(()),
            Some(bound) => Err(ApiError::Forbidden(format!(
                "token {:?} is bound to source system {bound:?}; {what} spans source systems and \
                 needs a token bound to none",
                self.principal.name
            ))),
        }
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
