//! `/api/v1/groups/{id}/members`: the members of a group, and single-membership writes.

use super::resources::MembershipListParams;
use super::{optional_json, Path, Query};
use crate::app::resources::check_readable;
use crate::app::Caller;
use crate::app::{groups, nesting};
use crate::domain::membership::{Membership, MembershipInput, MembershipWrite};
use crate::domain::nesting::NestedMembership;
use crate::domain::page::{ListKind, Page};
use crate::domain::ResourceId;
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members))
        .routes(routes!(get_membership, put_membership, remove_membership))
}

/// A member of a group at a past time.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberAt {
    pub group_id: ResourceId,
    pub member_id: ResourceId,
    /// When the membership in force at that time began.
    pub since: DateTime<Utc>,
}

/// The members of a group now (memberships), or at `as_of` (members and since when).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MemberList {
    Now(Page<Membership>),
    AsOf(Page<MemberAt>),
}

/// List the members of a group (active ones unless `include_removed`), in member-id order; with
/// `as_of`, the members that were active at that time, from the change log.
#[utoipa::path(get, path = "/api/v1/groups/{id}/members", tag = "groups", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Group id"), MembershipListParams),
    responses((status = 200, description = "A page of memberships (or, with as_of, of members and since when); of members of the token's source only, when its reads are bound", body = MemberList),
              (status = 403, description = "A group of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No such group", body = Problem)))]
async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Query(p): Query<MembershipListParams>,
) -> Result<axum::Json<MemberList>, ApiError> {
    check_readable(state.app(), &caller, id).await?;
    let as_of = p.as_of()?;
    let (filter, page) = p.split(&caller, ListKind::Members)?;
    let Some(at) = as_of else {
        let listing = state.store.list_members(id, &filter, &page).await?;
        let page = Page::listed(listing, page.limit, ListKind::Members, |m| m.member_id.0);
        return Ok(axum::Json(MemberList::Now(page)));
    };
    // Answered from the log alone: a purged group still has its past.
    let rows = state
        .store
        .members_at(id, at, caller.read_source(), &page)
        .await?;
    let rows = rows
        .into_iter()
        .map(|(member_id, since)| MemberAt {
            group_id: id,
            member_id,
            since,
        })
        .collect();
    let page = Page::from_rows(rows, page.limit, ListKind::Members, |m: &MemberAt| {
        m.member_id.0
    });
    Ok(axum::Json(MemberList::AsOf(page)))
}

/// Query of the membership check.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckParams {
    /// Also through nested groups: the membership by its shortest path of live memberships, or
    /// 404 when there is none.
    #[serde(default)]
    transitive: bool,
}

/// A membership record or, with `transitive`, a membership through nested groups.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MembershipCheck {
    Direct(Membership),
    Transitive(NestedMembership),
}

/// The membership record of one member of a group, active or ended; with `transitive=true`,
/// whether the resource is a member directly or through nested groups, and the depth of its
/// shortest path.
#[utoipa::path(get, path = "/api/v1/groups/{id}/members/{member_id}", tag = "groups", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Group id"),
           ("member_id" = ResourceId, Path, description = "Member id"),
           CheckParams),
    responses((status = 200, description = "The membership", body = MembershipCheck),
              (status = 403, description = "A group or member of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "Never a member (with transitive, not a member now through any path)", body = Problem)))]
async fn get_membership(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<(ResourceId, ResourceId)>,
    Query(p): Query<CheckParams>,
) -> Result<axum::Json<MembershipCheck>, ApiError> {
    if p.transitive {
        let nested = nesting::check(state.app(), &caller, key).await?;
        return Ok(axum::Json(MembershipCheck::Transitive(nested)));
    }
    let (id, member_id) = key;
    check_readable(state.app(), &caller, id).await?;
    check_readable(state.app(), &caller, member_id).await?;
    let membership = state.store.get_membership(id, member_id).await?;
    Ok(axum::Json(MembershipCheck::Direct(membership)))
}

/// Add a member to a group (or re-activate or confirm the membership), recorded as a
/// partial-update operation. The body is optional. A token bound to a source system may only add
/// members of its own source to its own groups.
#[utoipa::path(put, path = "/api/v1/groups/{id}/members/{member_id}", tag = "groups", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Group id"),
           ("member_id" = ResourceId, Path, description = "Member id")),
    request_body(content = Option<MembershipInput>, description = "Optional attributes"),
    responses((status = 201, description = "Added", body = Membership),
              (status = 200, description = "Re-activated, updated or confirmed", body = Membership),
              (status = 404, description = "No such group or member", body = Problem),
              (status = 422, description = "Not a live group, or a deleted member", body = Problem)))]
async fn put_membership(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, member_id)): Path<(ResourceId, ResourceId)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let input: MembershipInput = optional_json(&body?)?;
    let key = (id, member_id);
    let change = groups::put_membership(state.app(), &caller, key, &input).await?;
    let status = match change.write {
        MembershipWrite::Added => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok((status, axum::Json(change.membership)))
}

/// End a membership (soft-delete), recorded as a partial-update operation.
#[utoipa::path(delete, path = "/api/v1/groups/{id}/members/{member_id}", tag = "groups", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Group id"),
           ("member_id" = ResourceId, Path, description = "Member id")),
    responses((status = 200, description = "The ended membership", body = Membership),
              (status = 404, description = "No such group, or not an active member", body = Problem)))]
async fn remove_membership(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, member_id)): Path<(ResourceId, ResourceId)>,
) -> Result<axum::Json<Membership>, ApiError> {
    let key = (id, member_id);
    let change = groups::remove_membership(state.app(), &caller, key).await?;
    Ok(axum::Json(change.membership))
}
