//! Identity lifecycle: deactivate or activate the accounts of an identity, a cohort or one account
//! (`/api/v1/resources/{id}/actions/…`), and the sources' lifecycle settings
//! (`/api/v1/sources/{source_system}`).

use super::{Json, Path};
use crate::app::lifecycle;
use crate::app::Caller;
use crate::domain::lifecycle::{
    ActionRequest, ActionResult, DeactivateRequest, Source, SourceRequest,
};
use crate::domain::operation::OperationStatus;
use crate::domain::ResourceId;
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deactivate))
        .routes(routes!(activate))
        .routes(routes!(get_source, put_source))
}

/// Deactivate every account of the scope (`identity`: all under the root prime; `cohort`: the
/// persona's; `account`: this one) as one operation: all change or none does. More accounts
/// than the lifecycle threshold wait for approval (202, status `pending`).
#[utoipa::path(post, path = "/api/v1/resources/{id}/actions/deactivate", tag = "lifecycle", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "The account, record or prime to start from")),
    request_body = DeactivateRequest,
    responses((status = 200, description = "Applied", body = ActionResult),
              (status = 202, description = "Held for approval: past the threshold", body = ActionResult),
              (status = 403, description = "A source-bound token acting beyond one account of its source", body = Problem),
              (status = 404, description = "No such resource", body = Problem),
              (status = 422, description = "No reason, or scope account on a non-account", body = Problem)))]
async fn deactivate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Json(request): Json<DeactivateRequest>,
) -> Result<(StatusCode, axum::Json<ActionResult>), ApiError> {
    act(state, caller, id, request.into(), false).await
}

/// Activate every account of the scope again, as one operation. Nothing re-activates accounts by
/// itself (restoring an HR record does not): a person decides.
#[utoipa::path(post, path = "/api/v1/resources/{id}/actions/activate", tag = "lifecycle", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "The account, record or prime to start from")),
    request_body = ActionRequest,
    responses((status = 200, description = "Applied", body = ActionResult),
              (status = 403, description = "A source-bound token acting beyond one account of its source", body = Problem),
              (status = 404, description = "No such resource", body = Problem),
              (status = 422, description = "Scope account on a non-account", body = Problem)))]
async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Json(request): Json<ActionRequest>,
) -> Result<(StatusCode, axum::Json<ActionResult>), ApiError> {
    act(state, caller, id, request, true).await
}

async fn act(
    state: AppState,
    caller: Caller,
    id: ResourceId,
    request: ActionRequest,
    active: bool,
) -> Result<(StatusCode, axum::Json<ActionResult>), ApiError> {
    let result = lifecycle::act(state.app(), &caller, id, request, active).await?;
    let status = if result.operation.status == OperationStatus::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(result)))
}

/// A source system's settings (defaults for one never configured).
#[utoipa::path(get, path = "/api/v1/sources/{source_system}", tag = "lifecycle", security(("bearer" = ["read"])),
    params(("source_system" = String, Path, description = "Source system")),
    responses((status = 200, description = "The settings", body = Source),
              (status = 403, description = "Another source system than the token's reads are bound to", body = Problem)))]
async fn get_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_system): Path<String>,
) -> Result<axum::Json<Source>, ApiError> {
    caller.read_filter(Some(source_system.clone()))?;
    Ok(axum::Json(state.store.source(&source_system).await?))
}

/// Mark a source system as the identity-lifecycle authority (an HR system such as Workday): when
/// one of its records linked under a root prime is soft-deleted or deactivated, roster deactivates
/// the identity with the reason `hr-terminated`. Restoring the record re-activates nothing.
#[utoipa::path(put, path = "/api/v1/sources/{source_system}", tag = "lifecycle", security(("bearer" = ["admin"])),
    params(("source_system" = String, Path, description = "Source system")),
    request_body = SourceRequest,
    responses((status = 200, description = "Stored", body = Source),
              (status = 403, description = "A token bound to a source system", body = Problem),
              (status = 422, description = "A bad source system name", body = Problem)))]
async fn put_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_system): Path<String>,
    Json(request): Json<SourceRequest>,
) -> Result<axum::Json<Source>, ApiError> {
    let source = lifecycle::put_source(state.app(), &caller, &source_system, &request).await?;
    Ok(axum::Json(source))
}
