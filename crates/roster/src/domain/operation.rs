//! Operations: the units of work that change memberships.

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
}

impl OperationType {
    pub const ALL: [OperationType; 6] = [
        Self::FullUpdate,
        Self::PartialUpdate,
        Self::Delete,
        Self::Reconcile,
        Self::Purge,
        Self::Correlate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::FullUpdate => "full-update",
            Self::PartialUpdate => "partial-update",
            Self::Delete => "delete",
            Self::Reconcile => "reconcile",
            Self::Purge => "purge",
            Self::Correlate => "correlate",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
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

/// What an operation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct OperationCounts {
    pub added: i64,
    pub reactivated: i64,
    pub removed: i64,
    pub unchanged: i64,
    pub rejected: i64,
}

/// One stored operation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Operation {
    pub id: OperationId,
    #[serde(rename = "type")]
    pub ty: OperationType,
    pub description: Option<String>,
    pub status: OperationStatus,
    /// The group the operation is scoped to, if any.
    pub group_id: Option<ResourceId>,
    /// The source system the operation is scoped to, if any.
    pub source_system: Option<String>,
    pub counts: OperationCounts,
    /// Why the operation failed or is pending.
    pub reason: Option<String>,
    pub created: DateTime<Utc>,
    /// When the status last changed.
    pub modified: DateTime<Utc>,
    pub completed: Option<DateTime<Utc>>,
}

/// Filters for listing operations.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub ty: Option<OperationType>,
    pub status: Option<OperationStatus>,
}
