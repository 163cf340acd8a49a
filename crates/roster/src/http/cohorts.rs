//! Cohorts and identities (`/api/v1/resources/{id}/prime|parent|identity|related`) and unified
//! groups with their effective membership and sync plan (`/api/v1/unified-groups`).

use super::{Json, Path, Query};
use crate::app::Caller;
use crate::domain::cohort::{
    EffectiveCohort, GroupLink, GroupLinkRequest, IdentityTree, LinkKind, NewUnifiedGroup,
    ParentLink, PlanParams, PrimeLink, RelatedParams, SyncPlan,
};
use crate::domain::resource::{NewResource, Resource, ResourceType, Subtype};
use crate::domain::ResourceId;
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(link_prime))
        .routes(routes!(link_parent))
        .routes(routes!(identity))
        .routes(routes!(related))
        .routes(routes!(create_unified_group))
        .routes(routes!(list_links))
        .routes(routes!(link_group, unlink_group))
        .routes(routes!(unified_members))
        .routes(routes!(sync_plan))
}

/// A list of resources.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceList {
    pub items: Vec<Resource>,
}

/// A list of effective cohorts.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortList {
    pub items: Vec<EffectiveCohort>,
}

/// A list of group links.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkList {
    pub items: Vec<GroupLink>,
}

/// Link an account (or an HR record) to its cohort prime, or unlink it with `null`.
#[utoipa::path(put, path = "/api/v1/resources/{id}/prime", tag = "cohorts", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Resource id")),
    request_body = PrimeLink,
    responses((status = 200, description = "Linked", body = Resource),
              (status = 404, description = "No such resource", body = Problem),
              (status = 422, description = "Not an account, or not a live prime", body = Problem)))]
async fn link_prime(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Json(body): Json<PrimeLink>,
) -> Result<axum::Json<Resource>, ApiError> {
    caller.check_unbound("linking identities")?;
    let linked = state
        .store
        .link_prime(&caller.actor(), id, LinkKind::Prime, body.prime_id)
        .await?;
    Ok(axum::Json(linked))
}

/// Link a prime to its parent prime, or make it a root with `null`. A link that would close a
/// cycle, or make a chain longer than 16 links, is refused with 409.
#[utoipa::path(put, path = "/api/v1/resources/{id}/parent", tag = "cohorts", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Prime id")),
    request_body = ParentLink,
    responses((status = 200, description = "Linked", body = Resource),
              (status = 404, description = "No such resource", body = Problem),
              (status = 409, description = "The link would close a cycle or pass the depth limit", body = Problem),
              (status = 422, description = "Not a prime, or the parent is not a live prime", body = Problem)))]
async fn link_parent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Json(body): Json<ParentLink>,
) -> Result<axum::Json<Resource>, ApiError> {
    caller.check_unbound("linking identities")?;
    let linked = state
        .store
        .link_prime(&caller.actor(), id, LinkKind::Parent, body.parent_id)
        .await?;
    Ok(axum::Json(linked))
}

/// The identity a resource belongs to: the root prime, and every prime under it with the
/// accounts linked to it (parents before children).
#[utoipa::path(get, path = "/api/v1/resources/{id}/identity", tag = "cohorts", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Resource id")),
    responses((status = 200, description = "The identity tree", body = IdentityTree),
              (status = 403, description = "A token whose reads are bound to a source system", body = Problem),
              (status = 404, description = "No such resource", body = Problem)))]
async fn identity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
) -> Result<axum::Json<IdentityTree>, ApiError> {
    caller.check_read_unbound("an identity")?;
    Ok(axum::Json(state.store.identity(id).await?))
}

/// The accounts related to a resource: `scope=cohort`, those of its cohort prime (one persona);
/// `scope=identity`, every account under its root prime (the person).
#[utoipa::path(get, path = "/api/v1/resources/{id}/related", tag = "cohorts", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Resource id"), RelatedParams),
    responses((status = 200, description = "The related accounts", body = ResourceList),
              (status = 403, description = "A token whose reads are bound to a source system", body = Problem),
              (status = 404, description = "No such resource", body = Problem)))]
async fn related(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Query(p): Query<RelatedParams>,
) -> Result<axum::Json<ResourceList>, ApiError> {
    caller.check_read_unbound("a cohort or an identity")?;
    let items = state.store.related(id, p.scope).await?;
    Ok(axum::Json(ResourceList { items }))
}

/// Create a unified group: a group of subtype `unified` that gathers groups of several sources.
#[utoipa::path(post, path = "/api/v1/unified-groups", tag = "cohorts", security(("bearer" = ["write"])),
    request_body = NewUnifiedGroup,
    responses((status = 201, description = "Created", body = Resource),
              (status = 409, description = "The identifier is taken", body = Problem),
              (status = 422, description = "A value breaks a rule", body = Problem)))]
async fn create_unified_group(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewUnifiedGroup>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewResource {
        ty: ResourceType::Group,
        subtype: Some(Subtype::Unified),
        source_system: body.source_system,
        identifier: Some(body.identifier),
        external_id: None,
        displayname: body.displayname,
        description: body.description,
        notes: None,
        tags: Vec::new(),
        active: None,
        expires_at: None,
    };
    new.validate()?;
    caller.check_unbound("a unified group")?;
    let group = state.store.create_resource(&caller.actor(), &new).await?;
    let location = format!("/api/v1/unified-groups/{}", group.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(group),
    ))
}

/// The groups linked to a unified group, with their roles.
#[utoipa::path(get, path = "/api/v1/unified-groups/{id}/links", tag = "cohorts", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Unified group id")),
    responses((status = 200, description = "The linked groups", body = LinkList),
              (status = 403, description = "A token whose reads are bound to a source system", body = Problem),
              (status = 404, description = "Not a live unified group", body = Problem)))]
async fn list_links(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
) -> Result<axum::Json<LinkList>, ApiError> {
    caller.check_read_unbound("a unified group")?;
    let items = state.store.group_links(id).await?;
    Ok(axum::Json(LinkList { items }))
}

/// Link a group to a unified group as `authoritative` (its memberships contribute) or `mirror`
/// (synced from the unified group; only memberships flagged `contributing` count). Linking again
/// changes the role.
#[utoipa::path(put, path = "/api/v1/unified-groups/{id}/links/{group_id}", tag = "cohorts", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Unified group id"),
           ("group_id" = ResourceId, Path, description = "Group id")),
    request_body = GroupLinkRequest,
    responses((status = 200, description = "Linked", body = GroupLink),
              (status = 404, description = "Not a live unified group", body = Problem),
              (status = 422, description = "Not a live group that can be linked", body = Problem)))]
async fn link_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, group)): Path<(ResourceId, ResourceId)>,
    Json(body): Json<GroupLinkRequest>,
) -> Result<axum::Json<GroupLink>, ApiError> {
    caller.check_unbound("a unified group")?;
    let link = state
        .store
        .link_group(&caller.actor(), id, group, body.role)
        .await?;
    Ok(axum::Json(link))
}

/// Unlink a group from a unified group.
#[utoipa::path(delete, path = "/api/v1/unified-groups/{id}/links/{group_id}", tag = "cohorts", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Unified group id"),
           ("group_id" = ResourceId, Path, description = "Group id")),
    responses((status = 204, description = "Unlinked"),
              (status = 404, description = "Not linked", body = Problem)))]
async fn unlink_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, group)): Path<(ResourceId, ResourceId)>,
) -> Result<StatusCode, ApiError> {
    caller.check_unbound("a unified group")?;
    state.store.unlink_group(&caller.actor(), id, group).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The effective membership of a unified group: the cohorts with an account that has an active,
/// contributing membership in a linked group, each with those memberships.
#[utoipa::path(get, path = "/api/v1/unified-groups/{id}/members", tag = "cohorts", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Unified group id")),
    responses((status = 200, description = "The effective cohorts", body = CohortList),
              (status = 403, description = "A token whose reads are bound to a source system", body = Problem),
              (status = 404, description = "Not a live unified group", body = Problem)))]
async fn unified_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
) -> Result<axum::Json<CohortList>, ApiError> {
    caller.check_read_unbound("a unified group")?;
    let items = state.store.unified_members(id).await?;
    Ok(axum::Json(CohortList { items }))
}

/// The sync plan of a unified group: for each mirror group, the accounts to add (the cohort's
/// one account in that tenant), to remove (their cohort no longer contributes), and what cannot
/// be decided (no account, several candidates, a member linked to no cohort), each with its
/// reason. With `group_id`, one mirror group's plan in pages of `limit` entries.
#[utoipa::path(get, path = "/api/v1/unified-groups/{id}/plan", tag = "cohorts", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Unified group id"), PlanParams),
    responses((status = 200, description = "The plan", body = SyncPlan),
              (status = 400, description = "A bad page", body = Problem),
              (status = 403, description = "A token whose reads are bound to a source system", body = Problem),
              (status = 404, description = "Not a live unified group, or not one of its mirrors", body = Problem)))]
async fn sync_plan(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Query(p): Query<PlanParams>,
) -> Result<axum::Json<SyncPlan>, ApiError> {
    caller.check_read_unbound("a unified group")?;
    let page = p.page().map_err(|e| ApiError::BadRequest(e.0))?;
    Ok(axum::Json(state.store.sync_plan(id, page.as_ref()).await?))
}
