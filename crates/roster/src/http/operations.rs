//! `/api/v1/operations`: create operations, upload full-update chunks, complete, preview, approve
//! or reject them, and read them back.

use super::{Json, Path, Query};
use crate::app::operations::{self as ops, ChunkResult, PreviewPage};
use crate::app::Caller;
use crate::domain::full_update::{LineError, PreviewAction};
use crate::domain::operation::{Operation, OperationFilter, OperationStatus, OperationType};
use crate::domain::operation_request::NewOperation;
use crate::domain::page::{ListKind, Page};
use crate::domain::OperationId;
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_operations, create_operation))
        .routes(routes!(get_operation, cancel_operation))
        .routes(routes!(complete_operation))
        .routes(routes!(preview_operation))
        .routes(routes!(approve_operation))
        .routes(routes!(reject_operation))
        .routes(routes!(list_rejections))
}

/// The chunk upload route, which has its own body limit and timeout.
pub fn upload_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upload_chunk))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    #[serde(rename = "type")]
    #[param(rename = "type")]
    ty: Option<OperationType>,
    status: Option<OperationStatus>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Wait up to this many seconds for the operation to finish before answering (at most the
    /// server's limit, a little under its request timeout; 202 means it is still running).
    #[serde(default, deserialize_with = "super::wait_seconds")]
    #[param(maximum = 3600)]
    wait: Option<u64>,
}

/// List operations, newest first.
#[utoipa::path(get, path = "/api/v1/operations", tag = "operations", security(("bearer" = ["read"])),
    params(ListParams),
    responses((status = 200, description = "A page of operations (of the token's source only, when its reads are bound)", body = Page<Operation>),
              (status = 400, description = "A bad filter or cursor", body = Problem)))]
async fn list_operations(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Page<Operation>>, ApiError> {
    let page = super::page_request(ListKind::Operations, p.limit, p.cursor.as_deref())?;
    let filter = OperationFilter {
        ty: p.ty,
        status: p.status,
        source_system: caller.read_source().map(str::to_owned),
    };
    let rows = state.store.list_operations(&filter, &page).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        page.limit,
        ListKind::Operations,
        |o| o.id.0,
    )))
}

/// Get one operation: status, phase, scope, counts and reason. With `wait`, a running operation
/// is answered once it finishes (or when the wait ends, still running).
#[utoipa::path(get, path = "/api/v1/operations/{id}", tag = "operations", security(("bearer" = ["read"])),
    params(("id" = i64, Path, description = "Operation id"), WaitParams),
    responses((status = 200, description = "The operation", body = Operation),
              (status = 403, description = "An operation of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No such operation", body = Problem)))]
async fn get_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(wait): Query<WaitParams>,
) -> Result<axum::Json<Operation>, ApiError> {
    Ok(axum::Json(
        ops::get(state.app(), &caller, id, wait.wait).await?,
    ))
}

/// Create an operation. A full-update starts `running`/`uploading`: upload its chunks, then
/// complete it. Partial-updates, deletes, reconciles and purges (admin) apply at once.
#[utoipa::path(post, path = "/api/v1/operations", tag = "operations", security(("bearer" = ["write"])),
    params(WaitParams),
    request_body = NewOperation,
    responses((status = 201, description = "Created (and, but for a full-update, applied)", body = Operation),
              (status = 400, description = "Unreadable member lines, listed in `errors`", body = Problem),
              (status = 403, description = "Outside the token's source binding, or a purge without admin", body = Problem),
              (status = 404, description = "The group or resource the body names does not exist", body = Problem),
              (status = 409, description = "The resource to delete is deleted already", body = Problem),
              (status = 422, description = "A value breaks a rule", body = Problem)))]
async fn create_operation(
    State(state): State<AppState>,
    caller: Caller,
    Query(wait): Query<WaitParams>,
    Json(request): Json<NewOperation>,
) -> Result<impl IntoResponse, ApiError> {
    let op = ops::create(state.app(), &caller, request, wait.wait).await?;
    Ok((StatusCode::CREATED, axum::Json(op)))
}

/// Upload chunk `n` of a full-update: NDJSON, one member a line (`{"member_id": …}`,
/// `{"source_system": …, "identifier": …}` or `{"source_system": …, "external_id": …}`, with
/// optional `member_name`, `contributing`, `type`; and `group_id` or `group` in a full-update of a
/// source system). Sending chunk n again replaces it.
#[utoipa::path(put, path = "/api/v1/operations/{id}/chunks/{n}", tag = "operations", security(("bearer" = ["write"])),
    params(("id" = i64, Path, description = "Operation id"), ("n" = u32, Path, description = "Chunk number")),
    request_body(content = String, content_type = "application/x-ndjson"),
    responses((status = 200, description = "Stored", body = ChunkResult),
              (status = 400, description = "Unreadable lines (listed in `errors`); nothing of the chunk was stored", body = Problem),
              (status = 409, description = "The operation no longer takes chunks", body = Problem)))]
async fn upload_chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<(OperationId, u32)>,
    body: Body,
) -> Result<axum::Json<ChunkResult>, ApiError> {
    let body = body.into_data_stream().map_err(Into::into).boxed();
    let limit = state.limits.upload_bytes;
    Ok(axum::Json(
        ops::upload_chunk(state.app(), &caller, key, body, limit).await?,
    ))
}

/// 202 while the operation is still running, 200 once it has finished.
fn accepted(op: Operation) -> impl IntoResponse {
    let status = if op.status == OperationStatus::Running {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(op))
}

/// End the upload of a full-update: a worker computes the diff and applies it (or holds it
/// `pending` past the deletion threshold). `wait` blocks until then.
#[utoipa::path(post, path = "/api/v1/operations/{id}/complete", tag = "operations", security(("bearer" = ["write"])),
    params(("id" = i64, Path, description = "Operation id"), WaitParams),
    responses((status = 202, description = "Queued or applying", body = Operation),
              (status = 200, description = "Finished within `wait`", body = Operation),
              (status = 409, description = "Not an uploading full-update", body = Problem)))]
async fn complete_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(wait): Query<WaitParams>,
) -> Result<impl IntoResponse, ApiError> {
    let op = ops::complete_upload(state.app(), &caller, id, wait.wait).await?;
    Ok(accepted(op))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewParams {
    /// `remove` (the default) or `add`.
    action: Option<PreviewAction>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// What a full-update not yet applied would remove (or add): memberships in (group, member)
/// order; in a full-update of resources, the resources it would delete in id order, or the lines
/// that would create or restore one. Works before `complete` too, for a dry run.
#[utoipa::path(get, path = "/api/v1/operations/{id}/preview", tag = "operations", security(("bearer" = ["read"])),
    params(("id" = i64, Path, description = "Operation id"), PreviewParams),
    responses((status = 200, description = "A page of planned changes", body = PreviewPage),
              (status = 403, description = "An operation of another source system than the token's reads are bound to", body = Problem),
              (status = 409, description = "Not a full-update waiting to be applied", body = Problem)))]
async fn preview_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(p): Query<PreviewParams>,
) -> Result<axum::Json<PreviewPage>, ApiError> {
    let page = (p.limit, p.cursor.as_deref());
    Ok(axum::Json(
        ops::preview(state.app(), &caller, id, p.action, page).await?,
    ))
}

/// Cancel a full-update whose upload is not complete (say, after a dry run): it fails and
/// changes nothing.
#[utoipa::path(delete, path = "/api/v1/operations/{id}", tag = "operations", security(("bearer" = ["write"])),
    params(("id" = i64, Path, description = "Operation id")),
    responses((status = 200, description = "Failed, as cancelled", body = Operation),
              (status = 409, description = "Not an unfinished upload", body = Problem)))]
async fn cancel_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
) -> Result<axum::Json<Operation>, ApiError> {
    Ok(axum::Json(ops::cancel(state.app(), &caller, id).await?))
}

/// Approve a pending operation: it is applied although it passes the deletion threshold.
#[utoipa::path(post, path = "/api/v1/operations/{id}/approve", tag = "operations", security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "Operation id"), WaitParams),
    responses((status = 202, description = "Queued again", body = Operation),
              (status = 200, description = "Applied within `wait`", body = Operation),
              (status = 409, description = "Not pending", body = Problem)))]
async fn approve_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(wait): Query<WaitParams>,
) -> Result<impl IntoResponse, ApiError> {
    let op = ops::approve(state.app(), &caller, id, wait.wait).await?;
    Ok(accepted(op))
}

/// Reject a pending operation (or abandon an upload): it fails and changes nothing.
#[utoipa::path(post, path = "/api/v1/operations/{id}/reject", tag = "operations", security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "Operation id")),
    responses((status = 200, description = "Failed, as rejected", body = Operation),
              (status = 409, description = "Neither pending nor uploading", body = Problem)))]
async fn reject_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
) -> Result<axum::Json<Operation>, ApiError> {
    Ok(axum::Json(ops::reject(state.app(), &caller, id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// The upload lines of an operation that could not be used, with their chunk, line and reason.
#[utoipa::path(get, path = "/api/v1/operations/{id}/rejections", tag = "operations", security(("bearer" = ["read"])),
    params(("id" = i64, Path, description = "Operation id"), PageParams),
    responses((status = 200, description = "A page of rejected lines", body = Page<LineError>),
              (status = 403, description = "An operation of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No such operation", body = Problem)))]
async fn list_rejections(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(p): Query<PageParams>,
) -> Result<axum::Json<Page<LineError>>, ApiError> {
    let page = super::page_request(ListKind::Rejections, p.limit, p.cursor.as_deref())?;
    let rows = ops::rejections(state.app(), &caller, id, &page).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        page.limit,
        ListKind::Rejections,
        |e| format!("{}:{}", e.chunk, e.line),
    )))
}
