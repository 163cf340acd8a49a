//! Nested groups: why a member is in a group (the paths), and the cycles among groups. The
//! transitive forms of the member check and of a resource's groups are parameters of those
//! routes (`groups`, `resources`).

use super::{page_request, Path, Query};
use crate::app::{nesting, Caller};
use crate::domain::nesting::{Cycle, MembershipPath, PathKey};
use crate::domain::page::{self, ListKind, Page};
use crate::domain::ResourceId;
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(membership_paths))
        .routes(routes!(list_cycles))
}

/// Query of the paths and the cycles: a page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NestingPageParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    cursor: Option<String>,
}

/// Why a resource is a member of a group: the paths from the group down to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PathPage {
    /// The length of the shortest path (1: a direct member); null when the resource is not a
    /// member of the group, directly or through nested groups.
    pub depth: Option<u32>,
    /// The paths, shortest first.
    pub items: Vec<MembershipPath>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next: Option<String>,
    /// True when the search stopped at its bound (100,000 edges followed) before it ran out of
    /// paths, in a nesting too dense to list them all: this page may be short, and paths after
    /// its last one may exist that are not listed.
    pub truncated: bool,
}

/// Why a resource is a member of a group: every path of live memberships from the group down to
/// the resource, shortest first. A path lists the groups from the group asked about down to the
/// member's direct group; every group in the middle of a path is active and not deleted, and no
/// group appears twice in one path.
#[utoipa::path(get, path = "/api/v1/groups/{id}/members/{member_id}/paths", tag = "groups", security(("bearer" = ["read"])),
    params(("id" = ResourceId, Path, description = "Group id"),
           ("member_id" = ResourceId, Path, description = "Member id"),
           NestingPageParams),
    responses((status = 200, description = "The paths (none, with a null depth, when the resource is not a member)", body = PathPage),
              (status = 403, description = "A group or member of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No such group or member", body = Problem)))]
async fn membership_paths(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, member_id)): Path<(ResourceId, ResourceId)>,
    Query(p): Query<NestingPageParams>,
) -> Result<axum::Json<PathPage>, ApiError> {
    let page = page_request::<PathKey>(ListKind::Paths, p.limit, p.cursor.as_deref())?;
    let (after, limit) = (page.after.as_ref(), page.limit as usize);
    let key = (id, member_id);
    let (shortest, found) = nesting::paths(state.app(), &caller, key, after, limit).await?;
    let next = found
        .more
        .then(|| found.paths.last())
        .flatten()
        .map(|last| page::cursor(ListKind::Paths, PathKey(last.groups.clone())));
    Ok(axum::Json(PathPage {
        depth: shortest.map(|m| m.depth),
        items: found.paths,
        next,
        truncated: found.truncated,
    }))
}

/// The cycles among groups: sets of groups that each hold the others through live memberships
/// (A ⊃ B ⊃ A). Members of a cycle are members of every group in it. An inactive group passes no
/// members on, so it breaks the cycles it is in. In the order of each cycle's first group id.
#[utoipa::path(get, path = "/api/v1/groups/cycles", tag = "groups", security(("bearer" = ["read"])),
    params(NestingPageParams),
    responses((status = 200, description = "A page of cycles (among groups of the token's source only, when its reads are bound)", body = Page<Cycle>)))]
async fn list_cycles(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<NestingPageParams>,
) -> Result<axum::Json<Page<Cycle>>, ApiError> {
    let page = page_request::<uuid::Uuid>(ListKind::Cycles, p.limit, p.cursor.as_deref())?;
    let first = |c: &Cycle| c.groups.first().map_or(uuid::Uuid::nil(), |g| g.0);
    let all = nesting::cycles(state.app(), &caller).await?;
    Ok(axum::Json(Page::of_sorted(
        all,
        &page,
        ListKind::Cycles,
        first,
    )))
}
