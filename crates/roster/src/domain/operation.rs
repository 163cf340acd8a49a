//! Operations: the units of work that change memberships.

use super::full_update::Threshold;
use super::{OperationId, ResourceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OperationType {
    FullUpdate,
    PartialUpdate,
    Delete,
    Reconcile,
    Purge,
    Correlate,
    /// Deactivates the accounts of an identity, a cohort or one account.
    Deactivate,
    /// Re-activates them.
    Activate,
    /// The expiry sweeper's deactivation of the accounts whose `expires_at` passed.
    Expire,
    /// A persona's attributes written to every account of its cohort.
    Propagate,
}

impl OperationType {
    pub const ALL: [OperationType; 10] = [
        Self::FullUpdate,
        Self::PartialUpdate,
        Self::Delete,
        Self::Reconcile,
        Self::Purge,
        Self::Correlate,
        Self::Deactivate,
        Self::Activate,
        Self::Expire,
        Self::Propagate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::FullUpdate => "full-update",
            Self::PartialUpdate => "partial-update",
            Self::Delete => "delete",
            Self::Reconcile => "reconcile",
            Self::Purge => "purge",
            Self::Correlate => "correlate",
            Self::Deactivate => "deactivate",
            Self::Activate => "activate",
            Self::Expire => "expire",
            Self::Propagate => "propagate",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the operation sets accounts' `active` state (and lists them in `lifecycle_target`).
    pub fn is_lifecycle(self) -> bool {
        matches!(self, Self::Deactivate | Self::Activate | Self::Expire)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OperationStatus {
    Running,
    Pending,
    Complete,
    Failed,
}

impl OperationStatus {
    pub const ALL: [OperationStatus; 4] =
        [Self::Running, Self::Pending, Self::Complete, Self::Failed];

    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Pending => "pending",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What an operation writes: memberships (the default) or the resources of a source system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Memberships,
    Resources,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Self::Memberships => "memberships",
            Self::Resources => "resources",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Memberships, Self::Resources]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// What an operation changed (or, while pending, would change). An operation on resources counts
/// resources: `added` created, `reactivated` restored, `removed` soft-deleted, `updated` changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct OperationCounts {
    /// New memberships.
    pub added: i64,
    /// Ended memberships that became active again.
    pub reactivated: i64,
    /// Memberships ended.
    pub removed: i64,
    /// Active memberships whose name or contributing flag changed.
    pub updated: i64,
    /// Memberships confirmed as they were, not rewritten.
    pub unchanged: i64,
    /// Upload lines that could not be used.
    pub rejected: i64,
}

impl std::ops::AddAssign for OperationCounts {
    fn add_assign(&mut self, other: Self) {
        self.added += other.added;
        self.reactivated += other.reactivated;
        self.removed += other.removed;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.rejected += other.rejected;
    }
}

/// One stored operation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Operation {
    pub id: OperationId,
    #[serde(rename = "type")]
    pub ty: OperationType,
    /// What it writes: memberships, or resources (accounts and groups).
    pub target: Target,
    pub description: Option<String>,
    pub status: OperationStatus,
    /// The group the operation is scoped to, if any.
    pub group_id: Option<ResourceId>,
    /// The source system the operation is scoped to, if any.
    pub source_system: Option<String>,
    pub counts: OperationCounts,
    /// Why the operation failed or is pending.
    pub reason: Option<String>,
    /// Where a running operation is: `uploading` (takes chunks), `queued` (completed, waiting for
    /// a worker) or `applying`; null once it is pending, complete or failed.
    pub phase: Option<OperationPhase>,
    /// The parameters it was created with.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// The name of the token that created it.
    pub token_name: Option<String>,
    pub created: DateTime<Utc>,
    /// When the status last changed.
    pub modified: DateTime<Utc>,
    pub completed: Option<DateTime<Utc>>,
}

/// Why an operation cannot do what was asked of it in the state it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WrongState(pub String);

impl Operation {
    /// Only a pending operation is approved or rejected.
    pub fn check_pending(&self) -> Result<(), WrongState> {
        if self.status == OperationStatus::Pending {
            return Ok(());
        }
        Err(WrongState(format!(
            "operation {} is {}, not pending; only pending operations are approved or rejected",
            self.id,
            self.status.name()
        )))
    }

    /// A pending operation, or an upload not yet completed, may be rejected.
    pub fn check_rejectable(&self) -> Result<(), WrongState> {
        if self.status == OperationStatus::Pending || self.phase == Some(OperationPhase::Uploading)
        {
            return Ok(());
        }
        Err(WrongState(format!(
            "operation {} is {}; only pending operations and unfinished uploads can be rejected",
            self.id,
            self.status.name()
        )))
    }

    /// A preview needs the staged snapshot: a full-update not yet applied.
    pub fn check_previewable(&self) -> Result<(), WrongState> {
        let staged = self.status == OperationStatus::Pending
            || (self.status == OperationStatus::Running && self.phase.is_some());
        if self.ty == OperationType::FullUpdate && staged {
            return Ok(());
        }
        Err(WrongState(format!(
            "operation {} is a {} that is {}: only full-updates not yet applied have a preview",
            self.id,
            self.ty.name(),
            self.status.name()
        )))
    }

    /// The parameters of the operation once a person approved it: as they were, marked
    /// `approved`.
    pub fn approved_params(&self) -> serde_json::Value {
        let mut params = self.params.clone();
        if let Some(fields) = params.as_object_mut() {
            fields.insert("approved".to_owned(), serde_json::Value::Bool(true));
        }
        params
    }
}

/// Filters for listing operations.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub ty: Option<OperationType>,
    pub status: Option<OperationStatus>,
    /// Only operations scoped to this source system (or to a group of it).
    pub source_system: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OperationPhase {
    Uploading,
    Queued,
    Applying,
}

impl OperationPhase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uploading => "uploading",
            Self::Queued => "queued",
            Self::Applying => "applying",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Uploading, Self::Queued, Self::Applying]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// What a full-update covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One group's members.
    Group(ResourceId),
    /// Every group of a source system, and their members.
    Source(String),
}

/// What to do with upload lines that cannot be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The operation fails, naming the lines (the default).
    #[default]
    Fail,
    /// The lines are skipped and reported.
    Skip,
}

/// When a full-update ends the memberships its snapshot no longer confirms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Gc {
    /// In the same apply (the default).
    #[default]
    Now,
    /// Later, by a reconcile operation of the scope.
    Defer,
}

/// The parameters of a full-update, kept with the operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FullUpdateParams {
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub threshold: Threshold,
    #[serde(default)]
    pub gc: Gc,
    /// Rows changed per transaction, at least one whole group per transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: i64,
    /// The source system the creating token is bound to: members of other sources are refused.
    #[serde(default)]
    pub bound_source: Option<String>,
    /// Set when a person approved a held operation: the threshold no longer applies.
    #[serde(default)]
    pub approved: bool,
    /// Members named by their source's keys that do not exist are created as minimal accounts.
    #[serde(default)]
    pub create_missing: bool,
    /// A full-update of resources covers only this type…
    #[serde(default)]
    pub resource_type: Option<super::resource::ResourceType>,
    /// …and only this subtype.
    #[serde(default)]
    pub resource_subtype: Option<super::resource::Subtype>,
}

pub fn default_batch_size() -> i64 {
    10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(
        ty: OperationType,
        status: OperationStatus,
        phase: Option<OperationPhase>,
    ) -> Operation {
        let now = Utc::now();
        Operation {
            id: OperationId(9),
            ty,
            target: Target::Memberships,
            description: None,
            status,
            group_id: None,
            source_system: None,
            counts: OperationCounts::default(),
            reason: None,
            phase,
            params: serde_json::json!({"gc": "now"}),
            token_name: None,
            created: now,
            modified: now,
            completed: None,
        }
    }

    #[test]
    fn only_a_pending_operation_is_approved() {
        let full = OperationType::FullUpdate;
        assert!(operation(full, OperationStatus::Pending, None)
            .check_pending()
            .is_ok());
        for status in [
            OperationStatus::Running,
            OperationStatus::Complete,
            OperationStatus::Failed,
        ] {
            let err = operation(full, status, None).check_pending().unwrap_err();
            assert!(err.0.contains(status.name()), "{err}");
        }
    }

    #[test]
    fn pending_operations_and_unfinished_uploads_are_rejectable() {
        let full = OperationType::FullUpdate;
        let running = OperationStatus::Running;
        assert!(operation(full, OperationStatus::Pending, None)
            .check_rejectable()
            .is_ok());
        let uploading = operation(full, running, Some(OperationPhase::Uploading));
        assert!(uploading.check_rejectable().is_ok());
        let applying = operation(full, running, Some(OperationPhase::Applying));
        assert!(applying.check_rejectable().is_err());
        let complete = operation(full, OperationStatus::Complete, None);
        assert!(complete.check_rejectable().is_err());
    }

    #[test]
    fn only_unapplied_full_updates_have_a_preview() {
        let full = OperationType::FullUpdate;
        let queued = Some(OperationPhase::Queued);
        assert!(operation(full, OperationStatus::Pending, None)
            .check_previewable()
            .is_ok());
        let staged = operation(full, OperationStatus::Running, queued);
        assert!(staged.check_previewable().is_ok());
        let partial = operation(OperationType::PartialUpdate, OperationStatus::Pending, None);
        assert!(partial.check_previewable().is_err());
        let done = operation(full, OperationStatus::Complete, None);
        assert!(done.check_previewable().is_err());
    }

    #[test]
    fn approval_marks_the_params_and_keeps_the_rest() {
        let op = operation(OperationType::FullUpdate, OperationStatus::Pending, None);
        let params = op.approved_params();
        assert_eq!(params, serde_json::json!({"gc": "now", "approved": true}));
    }
}
