//! Memberships: one row per (group, member), soft-deleted when the member leaves.

use super::resource::{Resource, ResourceType};
use super::{InvalidInput, OperationId, ResourceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One membership record. A member can be any resource, so groups nest.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Membership {
    pub id: i64,
    pub group_id: ResourceId,
    pub member_id: ResourceId,
    /// The source system that reported the membership.
    pub source: String,
    pub member_name: Option<String>,
    pub removed: bool,
    /// Whether the membership counts towards unified groups: null leaves it to the group's role
    /// (authoritative groups contribute, mirror groups do not); true or false overrides the role.
    pub contributing: Option<bool>,
    /// The newest operation that confirmed, added or removed this membership.
    pub last_operation_id: Option<OperationId>,
    pub created_timestamp: DateTime<Utc>,
    pub removed_timestamp: Option<DateTime<Utc>>,
    /// In member lists: whether the member account is active. An inactive account's memberships
    /// stay recorded (its directory still holds them) but contribute to no unified group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// Attributes a caller may set when adding a single membership. Omitted fields keep their stored
/// value (null on a new membership).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipInput {
    #[serde(default)]
    pub member_name: Option<String>,
    #[serde(default)]
    pub contributing: Option<bool>,
}

/// Whether a single-membership write created, re-activated, changed or merely confirmed a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipWrite {
    Added,
    Reactivated,
    Updated,
    Unchanged,
    Removed,
}

/// Filters for listing the members of a group or the groups of a member.
#[derive(Debug, Clone, Default)]
pub struct MembershipFilter {
    pub include_removed: bool,
    /// Only members (or groups) of this type.
    pub ty: Option<ResourceType>,
    /// Only memberships whose member is (or is not) active.
    pub active: Option<bool>,
    /// Only the other side's resources of this source system (a reader bound to it).
    pub source_system: Option<String>,
}

impl MembershipWrite {
    /// What a write did, from the row before it (if any) and the row after it.
    pub fn classify(before: Option<&Membership>, after: &Membership) -> Self {
        match before {
            None => Self::Added,
            Some(b) if b.removed => Self::Reactivated,
            Some(b)
                if b.member_name != after.member_name || b.contributing != after.contributing =>
            {
                Self::Updated
            }
            Some(_) => Self::Unchanged,
        }
    }

    /// The change this write appends to the change log; none when nothing changed.
    pub fn change_kind(self) -> Option<super::change::ChangeKind> {
        use super::change::ChangeKind;
        match self {
            Self::Added | Self::Reactivated => Some(ChangeKind::MembershipAdded),
            Self::Updated => Some(ChangeKind::MembershipUpdated),
            Self::Removed => Some(ChangeKind::MembershipRemoved),
            Self::Unchanged => None,
        }
    }

    /// The operation counts of a single-membership write.
    pub fn counts(self) -> super::operation::OperationCounts {
        let mut counts = super::operation::OperationCounts::default();
        match self {
            Self::Added => counts.added = 1,
            Self::Reactivated => counts.reactivated = 1,
            Self::Updated => counts.updated = 1,
            Self::Unchanged => counts.unchanged = 1,
            Self::Removed => counts.removed = 1,
        }
        counts
    }
}

/// Checks that `member` may join `group`: the group is a live group and the member a live resource
/// other than the group itself.
pub fn check_ends(group: &Resource, member: &Resource) -> Result<(), InvalidInput> {
    if group.ty != ResourceType::Group {
        return Err(InvalidInput::new(format!(
            "resource {} is a {}, not a group; only groups have members",
            group.id,
            group.ty.name()
        )));
    }
    if group.deleted {
        return Err(InvalidInput::new(format!(
            "group {} is deleted; restore it before changing its members",
            group.id
        )));
    }
    if member.deleted {
        return Err(InvalidInput::new(format!(
            "resource {} is deleted; restore it before adding it to a group",
            member.id
        )));
    }
    if group.id == member.id {
        return Err(InvalidInput::new(format!(
            "group {} cannot be a member of itself",
            group.id
        )));
    }
    Ok(())
}
