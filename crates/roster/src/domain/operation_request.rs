//! The body of `POST /api/v1/operations`: one variant per operation type.

use super::full_update::{MemberLine, ThresholdOverride};
use super::operation::{Gc, OnError, Target};
use super::resource::{ResourceType, Subtype};
use super::resource_sync::ResourceLine;
use super::{InvalidInput, ResourceId};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum NewOperation {
    /// The complete member list of one group (`group_id`) or of every group of a source system
    /// (`source_system`), uploaded in chunks (or given here as `members`). With
    /// `"target": "resources"`, the complete list of a source system's resources (optionally of one
    /// `type` and `subtype`), one resource a line (or given here as `resources`).
    FullUpdate(NewFullUpdate),
    /// Explicit adds and removes of memberships (`changes`), or upserts and deletes of a source
    /// system's resources (`"target": "resources"`, `resources`), applied at once in one
    /// transaction.
    PartialUpdate(NewPartialUpdate),
    /// Soft-delete a resource and end its memberships.
    Delete(NewDelete),
    /// End the memberships of a scope that its latest full-update (run with `gc: defer`) did not
    /// confirm.
    Reconcile(NewReconcile),
    /// Hard-delete ended memberships and unreferenced deleted resources older than the retention.
    Purge(NewPurge),
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFullUpdate {
    /// `memberships` (the default) or `resources`.
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub group_id: Option<ResourceId>,
    #[serde(default)]
    pub source_system: Option<String>,
    /// A small member list, staged as chunk 0 (large lists go in chunks).
    #[serde(default)]
    pub members: Option<Vec<MemberLine>>,
    /// Complete the operation at once (with `members`).
    #[serde(default)]
    pub complete: bool,
    #[serde(default)]
    pub on_error: OnError,
    /// Overrides the server's deletion threshold for this operation: any token may tighten it,
    /// only an `admin` token may loosen it.
    #[serde(default)]
    pub threshold: Option<ThresholdOverride>,
    #[serde(default)]
    pub gc: Gc,
    /// Changed rows per transaction (at least one whole group each).
    #[serde(default)]
    pub batch_size: Option<i64>,
    /// Membership lines: members named by their source's keys that do not exist are created as
    /// minimal accounts of the line's `type` (default `user`) instead of being rejected.
    #[serde(default)]
    pub create_missing: bool,
    /// Resources: the full-update covers only resources of this type (`type` names the operation
    /// type in this body)…
    #[serde(default)]
    pub resource_type: Option<ResourceType>,
    /// …and of this subtype.
    #[serde(default)]
    pub resource_subtype: Option<Subtype>,
    /// Resources: a small list, staged as chunk 0 (large lists go in chunks).
    #[serde(default)]
    pub resources: Option<Vec<ResourceLine>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPartialUpdate {
    /// `memberships` (the default) or `resources`.
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub description: Option<String>,
    /// Membership adds and removes.
    #[serde(default)]
    pub changes: Vec<MembershipChangeRequest>,
    /// Resources: the source system whose resources `resources` upserts or deletes.
    #[serde(default)]
    pub source_system: Option<String>,
    /// Resources: each line upserts (the default) or deletes (`"action": "delete"`) one resource.
    #[serde(default)]
    pub resources: Vec<ResourceLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    Add,
    Remove,
}

/// One add or remove; the member is named like an upload line.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipChangeRequest {
    pub group_id: ResourceId,
    pub action: ChangeAction,
    #[serde(default)]
    pub member_id: Option<ResourceId>,
    #[serde(default)]
    pub source_system: Option<String>,
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default, rename = "type")]
    pub ty: Option<ResourceType>,
    #[serde(default)]
    pub member_name: Option<String>,
    #[serde(default)]
    pub contributing: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDelete {
    #[serde(default)]
    pub description: Option<String>,
    pub resource_id: ResourceId,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReconcile {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub group_id: Option<ResourceId>,
    #[serde(default)]
    pub source_system: Option<String>,
    /// Overrides the server's deletion threshold (only `admin` may loosen it): a reconcile that
    /// would pass it is refused.
    #[serde(default)]
    pub threshold: Option<ThresholdOverride>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPurge {
    #[serde(default)]
    pub description: Option<String>,
    /// Purge what ended at least this many days ago (default: the server's retention).
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// Longest retention a purge (or the change log) keeps: a hundred years.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl NewPurge {
    /// The time before which a purge removes what ended: `retention_days` (or `default_days`, the
    /// server's) before `now`.
    pub fn cutoff(
        &self,
        default_days: u32,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, InvalidInput> {
        let days = self.retention_days.unwrap_or(default_days);
        if days > MAX_RETENTION_DAYS {
            return Err(InvalidInput::new(format!(
                "retention_days must be at most {MAX_RETENTION_DAYS} (a hundred years), not {days}"
            )));
        }
        chrono::Duration::try_days(i64::from(days))
            .and_then(|span| now.checked_sub_signed(span))
            .ok_or_else(|| InvalidInput::new(format!("retention_days {days} reaches too far back")))
    }
}

impl MembershipChangeRequest {
    /// The member, named the way an upload line names it.
    pub fn member_line(&self) -> MemberLine {
        MemberLine {
            member_id: self.member_id,
            source_system: self.source_system.clone(),
            identifier: self.identifier.clone(),
            external_id: self.external_id.clone(),
            ty: self.ty,
            member_name: self.member_name.clone(),
            contributing: self.contributing,
            group_id: None,
            group: None,
        }
    }
}
