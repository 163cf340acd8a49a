//! The audit trail: one entry per write, written in the same transaction as the write.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub token_id: Option<Uuid>,
    pub token_name: String,
    /// What was done, e.g. `resource.create`, `membership.remove`, `token.revoke`.
    pub action: String,
    /// What it was done to, e.g. `resource/<id>`, `group/<id>/member/<id>`, `token/<id>`.
    pub target: String,
    pub request_id: Option<String>,
    /// What changed, where the action has details (changed attributes, operation id).
    pub detail: Option<Value>,
}

/// Filters for reading the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub target: Option<String>,
    pub token_name: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The audit record of one write, before it is stored.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub action: &'static str,
    pub target: String,
    pub detail: Option<Value>,
}

impl AuditRecord {
    pub fn new(action: &'static str, target: String) -> Self {
        Self {
            action,
            target,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// Audit targets, spelled one way everywhere.
pub mod target {
    use crate::domain::{OperationId, ResourceId};
    use uuid::Uuid;

    pub fn resource(id: ResourceId) -> String {
        format!("resource/{id}")
    }

    pub fn membership(group: ResourceId, member: ResourceId) -> String {
        format!("group/{group}/member/{member}")
    }

    pub fn token(id: Uuid) -> String {
        format!("token/{id}")
    }

    pub fn operation(id: OperationId) -> String {
        format!("operation/{id}")
    }

    pub fn subscription(id: Uuid) -> String {
        format!("subscription/{id}")
    }
}
