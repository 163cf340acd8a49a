//! `/api/v1/audit`: the trail of every write, newest first.

use super::Query;
use crate::domain::audit::{AuditEntry, AuditFilter};
use crate::domain::page::{ListKind, Page};
use crate::domain::time;
use crate::error::ApiError;
use crate::server::AppState;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only entries about this target, e.g. `resource/<id>` or `group/<id>/member/<id>`.
    target: Option<String>,
    /// Only entries written with the token of this name.
    token: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[serde(default, deserialize_with = "time::optional")]
    since: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    #[serde(default, deserialize_with = "time::optional")]
    until: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// The audit trail, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = ["admin"])),
    params(ListParams),
    responses((status = 200, description = "A page of audit entries", body = Page<AuditEntry>)))]
async fn list_audit(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Page<AuditEntry>>, ApiError> {
    let page = super::page_request(ListKind::Audit, p.limit, p.cursor.as_deref())?;
    let filter = AuditFilter {
        target: p.target,
        token_name: p.token,
        since: p.since,
        until: p.until,
    };
    let rows = state.store.list_audit(&filter, &page).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        page.limit,
        ListKind::Audit,
        |e| e.id,
    )))
}
