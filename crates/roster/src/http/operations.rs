//! `/api/v1/operations`: the record of every unit of work that changed memberships.

use super::{Path, Query};
use crate::app::AppState;
use crate::domain::operation::{Operation, OperationFilter, OperationStatus, OperationType};
use crate::domain::page::{ListKind, Page};
use crate::domain::OperationId;
use crate::error::{ApiError, Problem};
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_operations))
        .routes(routes!(get_operation))
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
    limit: Option<u32>,
    /// The `next` value of the previous page.
    cursor: Option<String>,
}

/// List operations, newest first.
#[utoipa::path(get, path = "/api/v1/operations", tag = "operations", security(("bearer" = ["read"])),
    params(ListParams),
    responses((status = 200, description = "A page of operations", body = Page<Operation>),
              (status = 400, description = "A bad filter or cursor", body = Problem)))]
async fn list_operations(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Page<Operation>>, ApiError> {
    let page = super::page_request(ListKind::Operations, p.limit, p.cursor.as_deref())?;
    let filter = OperationFilter {
        ty: p.ty,
        status: p.status,
    };
    let rows = state.store.list_operations(&filter, &page).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        page.limit,
        ListKind::Operations,
        |o| o.id.0,
    )))
}

/// Get one operation: status, scope, counts and reason.
#[utoipa::path(get, path = "/api/v1/operations/{id}", tag = "operations", security(("bearer" = ["read"])),
    params(("id" = i64, Path, description = "Operation id")),
    responses((status = 200, description = "The operation", body = Operation),
              (status = 404, description = "No such operation", body = Problem)))]
async fn get_operation(
    State(state): State<AppState>,
    Path(id): Path<OperationId>,
) -> Result<axum::Json<Operation>, ApiError> {
    Ok(axum::Json(state.store.get_operation(id).await?))
}
