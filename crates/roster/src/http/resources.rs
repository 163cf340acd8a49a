//! `/api/v1/resources`: create, read, list, look up, update, soft-delete and restore resources.

use super::{Json, Path, Query};
use crate::app::{nesting, resources, Caller};
use crate::domain::lifecycle::{PatchParams, Propagate, Propagation};
use crate::domain::membership::{Membership, MembershipFilter};
use crate::domain::nesting::NestedMembership;
use crate::domain::operation::Operation;
use crate::domain::page::{ListKind, Page, PageRequest};
use crate::domain::resource::{
    NewResource, Resource, ResourceFilter, ResourcePatch, ResourceType, Subtype,
};
use crate::domain::{time, ResourceId};
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_resource, list_resources))
        .routes(routes!(lookup_resource))
        .routes(routes!(get_resource, update_resource, delete_resource))
        .routes(routes!(restore_resource))
        .routes(routes!(list_groups_of))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    #[serde(rename = "type")]
    #[param(rename = "type")]
    ty: Option<ResourceType>,
    subtype: Option<Subtype>,
    source_system: Option<String>,
    identifier: Option<String>,
    external_id: Option<String>,
    /// Only resources carrying this tag.
    tag: Option<String>,
    active: Option<bool>,
    /// Only resources whose `expires_at` is before this time (RFC 3339): the contractors whose
    /// accounts expire by then.
    #[serde(default, deserialize_with = "time::optional")]
    expires_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Also list soft-deleted resources.
    #[serde(default)]
    include_deleted: bool,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LookupParams {
    source_system: String,
    /// Find by identifier (UPN, email, sAMAccountName…).
    identifier: Option<String>,
    /// Find by the source's immutable id.
    external_id: Option<String>,
    /// Needed only when resources of several types share the identifier.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    ty: Option<ResourceType>,
}

/// The outcome of a soft-delete: the resource, and the delete operation that ended its memberships
/// (null when the resource was already deleted).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteResult {
    resource: Resource,
    operation: Option<Operation>,
}

/// Create a resource.
#[utoipa::path(post, path = "/api/v1/resources", tag = "resources", security(("bearer" = ["write"])),
    request_body = NewResource,
    responses(
        (status = 201, description = "Created", body = Resource),
        (status = 409, description = "A live resource of the source already has this identifier or external id", body = Problem),
        (status = 422, description = "A value breaks a rule", body = Problem),
    ))]
async fn create_resource(
    State(state): State<AppState>,
    caller: Caller,
    Json(new): Json<NewResource>,
) -> Result<impl IntoResponse, ApiError> {
    let resource = resources::create(state.app(), &caller, &new).await?;
    let location = format!("/api/v1/resources/{}", resource.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(resource),
    ))
}

/// List resources, filtered, in stable id order with keyset pagination.
#[utoipa::path(get, path = "/api/v1/resources", tag = "resources", security(("bearer" = ["read"])),
    params(ListParams),
    responses((status = 200, description = "A page of resources (of the token's source only, when its reads are bound)", body = Page<Resource>),
              (status = 400, description = "A bad filter or cursor", body = Problem),
              (status = 403, description = "Another source system than the token's reads are bound to", body = Problem)))]
async fn list_resources(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Page<Resource>>, ApiError> {
    let page = super::page_request(ListKind::Resources, p.limit, p.cursor.as_deref())?;
    let filter = ResourceFilter {
        ty: p.ty,
        subtype: p.subtype,
        source_system: caller.read_filter(p.source_system)?,
        identifier: p.identifier,
        external_id: p.external_id,
        tag: p.tag,
        active: p.active,
        expires_before: p.expires_before,
        include_deleted: p.include_deleted,
    };
    let listing = state.store.list_resources(&filter, &page).await?;
    Ok(axum::Json(Page::listed(
        listing,
        page.limit,
        ListKind::Resources,
        |r| r.id,
    )))
}

/// Find the live resource of a source system by its identifier or external id.
#[utoipa::path(get, path = "/api/v1/resources/lookup", tag = "resources", security(("bearer" = ["read"])),
    params(LookupParams),
    responses((status = 200, description = "The resource", body = Resource),
              (status = 403, description = "Another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No live resource has this key", body = Problem),
              (status = 409, description = "Resources of several types share the identifier; pass `type`", body = Problem)))]
async fn lookup_resource(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<LookupParams>,
) -> Result<axum::Json<Resource>, ApiError> {
    let mut filter = ResourceFilter {
        source_system: caller.read_filter(Some(p.source_system.clone()))?,
        ty: p.ty,
        ..ResourceFilter::default()
    };
    let key = match (p.identifier, p.external_id) {
        (Some(identifier), None) => {
            filter.identifier = Some(identifier.clone());
            format!("identifier {identifier:?}")
        }
        (None, Some(external_id)) => {
            filter.external_id = Some(external_id.clone());
            format!("external_id {external_id:?}")
        }
        _ => {
            return Err(ApiError::BadRequest(
                "pass exactly one of `identifier` and `external_id`".to_owned(),
            ))
        }
    };
    let mut found = state.store.find_resources(&filter, 2).await?;
    match found.len() {
        0 => Err(ApiError::NotFound(format!(
            "no live resource of source system {:?} has {key}",
            p.source_system
        ))),
        1 => Ok(axum::Json(found.remove(0))),
        _ => Err(ApiError::Conflict(format!(
            "several live resources of source system {:?} have {key}; pass `type` to choose one",
            p.source_system
        ))),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Also answer a soft-deleted resource (otherwise 410).
    #[serde(default)]
    include_deleted: bool,
}

/// Get a resource by id. A soft-deleted one is gone (410) unless `include_deleted` asks for it.
#[utoipa::path(get, path = "/api/v1/resources/{id}", tag = "resources", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Resource id"), GetParams),
    responses((status = 200, description = "The resource", body = Resource),
              (status = 403, description = "A resource of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No such resource", body = Problem),
              (status = 410, description = "The resource is soft-deleted", body = Problem)))]
async fn get_resource(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Query(p): Query<GetParams>,
) -> Result<axum::Json<Resource>, ApiError> {
    let resource = resources::readable(state.app(), &caller, id).await?;
    if let (false, Some(at)) = (
        p.include_deleted,
        resource.deleted_at.filter(|_| resource.deleted),
    ) {
        return Err(ApiError::Gone(format!(
            "resource {id} was deleted at {at}; read it with ?include_deleted=true, or restore \
             it with POST /api/v1/resources/{id}/restore"
        )));
    }
    Ok(axum::Json(resource))
}

/// What a patch answers: the resource, or with `propagate=cohort` the propagation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PatchResult {
    Resource(Box<Resource>),
    Propagation(Box<Propagation>),
}

/// Update some attributes of a resource; `null` clears a field. `type` and `source_system` cannot
/// change. A patch that changes nothing writes nothing. With `propagate=cohort` the persona
/// attributes (displayname, description, notes, tags) go to every account of the account's
/// cohort as one `propagate` operation, and the answer is the propagation.
#[utoipa::path(patch, path = "/api/v1/resources/{id}", tag = "resources", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Resource id"), PatchParams),
    request_body = ResourcePatch,
    responses((status = 200, description = "The updated resource (or, propagated, the propagation)", body = PatchResult),
              (status = 404, description = "No such resource", body = Problem),
              (status = 409, description = "The new identifier or external id is taken, or (propagate) the account has no cohort", body = Problem),
              (status = 422, description = "A value breaks a rule, or (propagate) an attribute of one account is named", body = Problem)))]
async fn update_resource(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Query(params): Query<PatchParams>,
    Json(patch): Json<ResourcePatch>,
) -> Result<axum::Json<PatchResult>, ApiError> {
    let app = state.app();
    Ok(axum::Json(match params.propagate {
        Some(Propagate::Cohort) => {
            let done = resources::propagate(app, &caller, id, &patch).await?;
            PatchResult::Propagation(Box::new(done))
        }
        None => {
            let resource = resources::update(app, &caller, id, &patch).await?;
            PatchResult::Resource(Box::new(resource))
        }
    }))
}

/// Soft-delete a resource and end its memberships (as a group and as a member) in one delete
/// operation. Deleting a deleted resource changes nothing.
#[utoipa::path(delete, path = "/api/v1/resources/{id}", tag = "resources", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Resource id")),
    responses((status = 200, description = "The deleted resource and the delete operation", body = DeleteResult),
              (status = 404, description = "No such resource", body = Problem)))]
async fn delete_resource(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
) -> Result<axum::Json<DeleteResult>, ApiError> {
    let deletion = resources::delete(state.app(), &caller, id).await?;
    Ok(axum::Json(DeleteResult {
        resource: deletion.resource,
        operation: deletion.operation,
    }))
}

/// Restore a soft-deleted resource. Its ended memberships stay ended until a source confirms them.
#[utoipa::path(post, path = "/api/v1/resources/{id}/restore", tag = "resources", security(("bearer" = ["write"])),
    params(("id" = ResourceId, Path, description = "Resource id")),
    responses((status = 200, description = "The restored resource", body = Resource),
              (status = 404, description = "No such resource", body = Problem),
              (status = 409, description = "A live resource took its identifier or external id meanwhile", body = Problem)))]
async fn restore_resource(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
) -> Result<axum::Json<Resource>, ApiError> {
    Ok(axum::Json(
        resources::restore(state.app(), &caller, id).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MembershipListParams {
    /// Also list ended (soft-deleted) memberships.
    #[serde(default)]
    include_removed: bool,
    /// Only the other side's resources of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    ty: Option<ResourceType>,
    /// Only memberships whose member account is active (true) or inactive (false).
    active: Option<bool>,
    /// Group member lists only: the members that were active at this time (RFC 3339), from the
    /// change log; takes neither `include_removed` nor `type`.
    #[serde(default, deserialize_with = "time::optional")]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

impl MembershipListParams {
    /// The `as_of` time, if asked for; it lists active members only, of any type.
    pub fn as_of(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        match self.as_of {
            Some(_) if self.include_removed || self.ty.is_some() || self.active.is_some() => {
                Err(ApiError::BadRequest(
                "as_of lists the members active at that time; it takes neither include_removed, \
                 type nor active"
                    .to_owned(),
                ))
            }
            at => Ok(at),
        }
    }

    /// The filter and page of the list; a caller whose reads are bound sees only the other
    /// side's resources of its source.
    pub fn split(
        self,
        caller: &Caller,
        kind: ListKind,
    ) -> Result<(MembershipFilter, PageRequest<uuid::Uuid>), ApiError> {
        let page = super::page_request(kind, self.limit, self.cursor.as_deref())?;
        let filter = MembershipFilter {
            include_removed: self.include_removed,
            ty: self.ty,
            active: self.active,
            source_system: caller.read_source().map(str::to_owned),
        };
        Ok((filter, page))
    }
}

/// Query of `GET /api/v1/resources/{id}/groups`: a member list's, but for `as_of`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupListParams {
    /// Also list ended (soft-deleted) memberships.
    #[serde(default)]
    include_removed: bool,
    /// Only groups of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    ty: Option<ResourceType>,
    /// Only memberships whose member account is active (true) or inactive (false).
    active: Option<bool>,
    /// Also the groups the resource is in through nested groups, each with the depth of its
    /// shortest path of live memberships (1: direct); takes neither `include_removed`, `type`
    /// nor `active`.
    #[serde(default)]
    transitive: bool,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

impl GroupListParams {
    /// The page of a transitive list; the filters of direct memberships do not apply to it.
    fn transitive_page(&self) -> Result<PageRequest<uuid::Uuid>, ApiError> {
        if self.include_removed || self.ty.is_some() || self.active.is_some() {
            return Err(ApiError::BadRequest(
                "transitive lists the groups a resource is in now, through live memberships; \
                 it takes neither include_removed, type nor active"
                    .to_owned(),
            ));
        }
        super::page_request(ListKind::Groups, self.limit, self.cursor.as_deref())
    }
}

/// The groups of a resource: its memberships, or with `transitive`, the groups it is in directly
/// or through nested groups.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum GroupList {
    Direct(Page<Membership>),
    Transitive(Page<NestedMembership>),
}

impl From<GroupListParams> for MembershipListParams {
    fn from(p: GroupListParams) -> Self {
        Self {
            include_removed: p.include_removed,
            ty: p.ty,
            active: p.active,
            as_of: None,
            limit: p.limit,
            cursor: p.cursor,
        }
    }
}

/// List the groups a resource belongs to, in group-id order; with `transitive=true`, also the
/// groups it is in through nested groups.
#[utoipa::path(get, path = "/api/v1/resources/{id}/groups", tag = "groups", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Resource id"), GroupListParams),
    responses((status = 200, description = "A page of memberships, or with transitive of nested memberships (in groups of the token's source only, when its reads are bound)", body = GroupList),
              (status = 403, description = "A resource of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No such resource", body = Problem)))]
async fn list_groups_of(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ResourceId>,
    Query(p): Query<GroupListParams>,
) -> Result<axum::Json<GroupList>, ApiError> {
    if p.transitive {
        let page = p.transitive_page()?;
        let all = nesting::groups_of(state.app(), &caller, id).await?;
        let page = Page::of_sorted(all, &page, ListKind::Groups, |m| m.group_id.0);
        return Ok(axum::Json(GroupList::Transitive(page)));
    }
    resources::check_readable(state.app(), &caller, id).await?;
    let (filter, page) = MembershipListParams::from(p).split(&caller, ListKind::Groups)?;
    let listing = state.store.list_groups_of(id, &filter, &page).await?;
    let page = Page::listed(listing, page.limit, ListKind::Groups, |m| m.group_id.0);
    Ok(axum::Json(GroupList::Direct(page)))
}
