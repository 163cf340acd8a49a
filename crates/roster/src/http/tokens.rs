//! `/api/v1/tokens`: create (the secret is shown once), list, read and revoke API tokens.

use super::{Json, Path, Query};
use crate::app::Caller;
use crate::domain::page::{ListKind, Page};
use crate::domain::token::{NewToken, Secret, Token};
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(get_token, revoke_token))
}

/// A new token and its secret. The secret is shown only here; roster keeps only its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    token: Token,
    secret: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// Create a token. Its secret is in this response and nowhere else.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = ["admin"])),
    request_body = NewToken,
    responses((status = 201, description = "Created; `secret` is shown once", body = CreatedToken),
              (status = 409, description = "The name is taken", body = Problem),
              (status = 422, description = "A value breaks a rule", body = Problem)))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(new): Json<NewToken>,
) -> Result<impl IntoResponse, ApiError> {
    new.validate(chrono::Utc::now())?;
    let secret = Secret::generate()
        .map_err(|e| ApiError::Internal(format!("no randomness for a token secret: {e}")))?;
    let token = state
        .store
        .create_token(&caller.actor(), &new, &secret.hash())
        .await?;
    let created = CreatedToken {
        token,
        secret: secret.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// List tokens (never their secrets), oldest first.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = ["admin"])),
    params(ListParams),
    responses((status = 200, description = "A page of tokens", body = Page<Token>)))]
async fn list_tokens(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Page<Token>>, ApiError> {
    let page = super::page_request(ListKind::Tokens, p.limit, p.cursor.as_deref())?;
    let rows = state.store.list_tokens(&page).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        page.limit,
        ListKind::Tokens,
        |t| t.id,
    )))
}

/// One token (never its secret). A revoked token is gone (410); the list still shows it.
#[utoipa::path(get, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "Token id")),
    responses((status = 200, description = "The token", body = Token),
              (status = 404, description = "No such token", body = Problem),
              (status = 410, description = "The token is revoked", body = Problem)))]
async fn get_token(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Token>, ApiError> {
    let token = state.store.get_token(id).await?;
    if let Some(at) = token.revoked_at {
        return Err(ApiError::Gone(format!(
            "token {id} was revoked at {at}; GET /api/v1/tokens lists it with its revocation"
        )));
    }
    Ok(axum::Json(token))
}

/// Revoke a token: every later request with it is refused. Revoking twice changes nothing. A
/// token cannot revoke itself, so that no request locks its caller out: revoke it with another
/// admin token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "Token id")),
    responses((status = 200, description = "The revoked token", body = Token),
              (status = 404, description = "No such token", body = Problem),
              (status = 409, description = "The token making the request", body = Problem)))]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Token>, ApiError> {
    if caller.principal.token_id == id {
        return Err(ApiError::Conflict(
            "a token cannot revoke itself (that would lock its caller out): revoke it with \
             another admin token"
                .to_owned(),
        ));
    }
    let token = state.store.revoke_token(&caller.actor(), id).await?;
    state.authenticator.forget(id);
    Ok(axum::Json(token))
}
