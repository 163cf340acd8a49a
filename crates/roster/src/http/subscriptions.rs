//! `/api/v1/subscriptions`: webhook subscriptions to the change feed (admin). Each has its own
//! durable cursor; deliveries are in order, at least once, retried with backoff and signed. See
//! `docs/changes.md`.

use super::{Json, Path, Query};
use crate::app::Caller;
use crate::domain::feed::Cursor;
use crate::domain::page::{ListKind, Page};
use crate::domain::subscription::{CreatedSubscription, NewSubscription, Start, Subscription};
use crate::domain::token::Secret;
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// Changes counted as pending on a subscription's read, at most.
const PENDING_CAP: u32 = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_subscription, list_subscriptions))
        .routes(routes!(get_subscription, delete_subscription))
        .routes(routes!(resume_subscription))
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

/// Register a webhook. Its signing secret is in this response and nowhere else.
#[utoipa::path(post, path = "/api/v1/subscriptions", tag = "changes", security(("bearer" = ["admin"])),
    request_body = NewSubscription,
    responses((status = 201, description = "Created; `secret` is shown once", body = CreatedSubscription),
              (status = 422, description = "A value breaks a rule", body = Problem)))]
async fn create_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Json(new): Json<NewSubscription>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = new.validate()?;
    let cursor = match &spec.start {
        Start::Now => state.store.head().await?,
        Start::Beginning => Cursor::start(),
        Start::At(cursor) => *cursor,
    };
    let secret = Secret::generate()
        .map_err(|e| ApiError::Internal(format!("no randomness for a signing secret: {e}")))?;
    let subscription = state
        .store
        .create_subscription(&caller.actor(), &spec, &cursor, secret.expose())
        .await?;
    let created = CreatedSubscription {
        subscription,
        secret: secret.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// List subscriptions, oldest first.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "changes", security(("bearer" = ["admin"])),
    params(ListParams),
    responses((status = 200, description = "A page of subscriptions", body = Page<Subscription>)))]
async fn list_subscriptions(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Page<Subscription>>, ApiError> {
    let page = super::page_request(ListKind::Subscriptions, p.limit, p.cursor.as_deref())?;
    let rows = state.store.list_subscriptions(&page).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        page.limit,
        ListKind::Subscriptions,
        |s| s.id,
    )))
}

/// One subscription: its status, cursor, pending changes (up to 1000), last error and next
/// attempt.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}", tag = "changes", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = Subscription),
              (status = 404, description = "No such subscription", body = Problem)))]
async fn get_subscription(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Subscription>, ApiError> {
    let mut subscription = state.store.get_subscription(id).await?;
    let cursor = Cursor::decode(&subscription.cursor)?;
    subscription.pending = match state
        .store
        .changes(&cursor, &subscription.filter(), PENDING_CAP)
        .await
    {
        Ok(batch) => u32::try_from(batch.items.len()).ok(),
        Err(crate::store::StoreError::Gone(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(axum::Json(subscription))
}

/// Delete a subscription; deliveries stop.
#[utoipa::path(delete, path = "/api/v1/subscriptions/{id}", tag = "changes", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 204, description = "Deleted"),
              (status = 404, description = "No such subscription", body = Problem)))]
async fn delete_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_subscription(&caller.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Optional body of `POST /api/v1/subscriptions/{id}/resume`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// Start again from here instead of the subscription's cursor: `now`, `start` or a feed
    /// cursor (an export's, after the history behind the old cursor was deleted).
    #[serde(default)]
    from: Option<String>,
}

/// Resume a paused subscription: deliveries start again at once, from its cursor (or `from`). An
/// active subscription is left as it is.
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/resume", tag = "changes", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = Option<Resume>, description = "Optional: where to start again"),
    responses((status = 200, description = "The subscription, active", body = Subscription),
              (status = 404, description = "No such subscription", body = Problem),
              (status = 409, description = "`from` given for an active subscription", body = Problem)))]
async fn resume_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Subscription>, ApiError> {
    let resume: Resume = super::optional_json(&body)?;
    let from = match resume.from.as_deref() {
        None => None,
        Some("now") => Some(state.store.head().await?),
        Some("start") => Some(Cursor::start()),
        Some(cursor) => Some(Cursor::decode(cursor)?),
    };
    state
        .store
        .resume_subscription(&caller.actor(), id, from.as_ref())
        .await?;
    Ok(axum::Json(state.store.get_subscription(id).await?))
}
