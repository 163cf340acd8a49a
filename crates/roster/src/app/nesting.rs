//! Nested groups: the groups a member is in through other groups, why, and the cycles. A token
//! whose reads are bound to a source system sees nesting among that source's groups only.

use super::resources::{check_readable, readable};
use super::{App, AppError, Caller};
use crate::domain::nesting::{self, Ancestry, Cycle, NestedMembership, PathKey, Paths};
use crate::domain::ResourceId;

/// Every group `member` is in, directly or through nesting, in group-id order.
pub async fn groups_of(
    app: App<'_>,
    caller: &Caller,
    member: ResourceId,
) -> Result<Vec<NestedMembership>, AppError> {
    check_readable(app, caller, member).await?;
    let ancestry = app.store.ancestry(member, caller.read_source()).await?;
    Ok(ancestry.groups())
}

/// Whether `member` is in `group`, directly or through nesting, by its shortest path.
pub async fn check(
    app: App<'_>,
    caller: &Caller,
    key: (ResourceId, ResourceId),
) -> Result<NestedMembership, AppError> {
    let (group, member) = key;
    ancestry(app, caller, key)
        .await?
        .within(group)
        .ok_or_else(|| {
            AppError::NotFound(format!(
            "resource {member} is not a member of group {group}, directly or through nested groups"
        ))
        })
}

/// The shortest membership of `member` in `group` (none: not a member) and the paths from
/// `group` down to `member` after `after`, at most `limit` of them.
pub async fn paths(
    app: App<'_>,
    caller: &Caller,
    key: (ResourceId, ResourceId),
    after: Option<&PathKey>,
    limit: usize,
) -> Result<(Option<NestedMembership>, Paths), AppError> {
    let group = key.0;
    let ancestry = ancestry(app, caller, key).await?;
    Ok((ancestry.within(group), ancestry.paths(group, after, limit)))
}

/// The ancestry of a member asked about in a group: both must exist and be readable.
async fn ancestry(
    app: App<'_>,
    caller: &Caller,
    (group, member): (ResourceId, ResourceId),
) -> Result<Ancestry, AppError> {
    readable(app, caller, group).await?;
    check_readable(app, caller, member).await?;
    Ok(app.store.ancestry(member, caller.read_source()).await?)
}

/// The cycles among groups.
pub async fn cycles(app: App<'_>, caller: &Caller) -> Result<Vec<Cycle>, AppError> {
    let edges = app.store.group_edges(caller.read_source()).await?;
    Ok(nesting::cycles(&edges))
}
