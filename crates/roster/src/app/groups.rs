//! Single-membership writes: a token bound to a source system adds members of its own source to
//! its own groups, and ends memberships of its own groups.

use super::resources::check_owner;
use super::{App, AppError, Caller};
use crate::domain::membership::MembershipInput;
use crate::domain::ResourceId;
use crate::store::MembershipChange;

/// Adds a member to a group (or re-activates or confirms the membership).
pub async fn put_membership(
    app: App<'_>,
    caller: &Caller,
    (group, member): (ResourceId, ResourceId),
    input: &MembershipInput,
) -> Result<MembershipChange, AppError> {
    check_owner(app, caller, group).await?;
    check_owner(app, caller, member).await?;
    Ok(app
        .store
        .put_membership(&caller.actor(), group, member, input)
        .await?)
}

/// Ends a membership.
pub async fn remove_membership(
    app: App<'_>,
    caller: &Caller,
    (group, member): (ResourceId, ResourceId),
) -> Result<MembershipChange, AppError> {
    check_owner(app, caller, group).await?;
    Ok(app
        .store
        .remove_membership(&caller.actor(), group, member)
        .await?)
}
