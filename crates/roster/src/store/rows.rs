//! Row types shared by both backends, and their conversion to domain types.

use super::query::TextList;
use super::StoreError;
use crate::domain::audit::AuditEntry;
use crate::domain::membership::Membership;
use crate::domain::operation::{
    Operation, OperationCounts, OperationPhase, OperationStatus, OperationType, Target,
};
use crate::domain::resource::{Resource, ResourceType, Subtype};
use crate::domain::token::{ReadScope, Scope, Token};
use crate::domain::{OperationId, ResourceId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The columns of `resource` that [`ResourceRow`] reads, in its order.
pub const RESOURCE_COLUMNS: &str = "id, type, subtype, source_system, identifier, external_id, \
     displayname, description, notes, tags, active, expires_at, deleted, deleted_at, created, modified, \
     prime_id, deactivation_reason";

/// The columns of `group_member` that [`MembershipRow`] reads.
pub const MEMBERSHIP_COLUMNS: &str = "id, group_id, member_id, source, member_name, removed, \
     contributing, last_operation_id, created_timestamp, removed_timestamp";

/// The columns of `api_token` that [`TokenRow`] reads.
pub const TOKEN_COLUMNS: &str =
    "id, name, scopes, source_system, read_scope, expires_at, created, last_used_at, revoked_at";

/// The columns of `audit` that [`AuditRow`] reads.
pub const AUDIT_COLUMNS: &str = "id, at, token_id, token_name, action, target, request_id, detail";

/// The columns of `operation` that [`OperationRow`] reads.
pub const OPERATION_COLUMNS: &str = "id, type, description, status, group_id, source_system, \
     added, reactivated, removed, updated, unchanged, rejected, reason, created, modified, \
     completed, phase, params, token_name, target";

/// A `resource` row.
#[derive(sqlx::FromRow)]
pub struct ResourceRow {
    id: Uuid,
    #[sqlx(rename = "type")]
    ty: i16,
    subtype: Option<i16>,
    source_system: String,
    identifier: Option<String>,
    external_id: Option<String>,
    displayname: Option<String>,
    description: Option<String>,
    notes: Option<String>,
    tags: TextList,
    active: bool,
    expires_at: Option<DateTime<Utc>>,
    deleted: bool,
    deleted_at: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    prime_id: Option<Uuid>,
    deactivation_reason: Option<String>,
}

impl ResourceRow {
    pub fn id(&self) -> Uuid {
        self.id
    }
}

fn corrupt(what: String) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(what.into()))
}

impl TryFrom<ResourceRow> for Resource {
    type Error = StoreError;

    fn try_from(r: ResourceRow) -> Result<Self, StoreError> {
        let ty = ResourceType::from_code(r.ty)
            .ok_or_else(|| corrupt(format!("resource {} has unknown type code {}", r.id, r.ty)))?;
        let subtype = r
            .subtype
            .map(|code| {
                Subtype::from_code(code).ok_or_else(|| {
                    corrupt(format!("resource {} has unknown subtype code {code}", r.id))
                })
            })
            .transpose()?;
        Ok(Resource {
            id: ResourceId(r.id),
            ty,
            subtype,
            source_system: r.source_system,
            identifier: r.identifier,
            external_id: r.external_id,
            displayname: r.displayname,
            description: r.description,
            notes: r.notes,
            tags: r.tags.0,
            active: r.active,
            expires_at: r.expires_at,
            deactivation_reason: r.deactivation_reason,
            prime_id: r.prime_id.map(ResourceId),
            deleted: r.deleted,
            deleted_at: r.deleted_at,
            created: r.created,
            modified: r.modified,
        })
    }
}

/// Converts fetched resource rows, failing on the first corrupt one.
pub fn resources(rows: Vec<ResourceRow>) -> Result<Vec<Resource>, StoreError> {
    rows.into_iter().map(Resource::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub struct MembershipRow {
    id: i64,
    group_id: Uuid,
    member_id: Uuid,
    source: String,
    member_name: Option<String>,
    removed: bool,
    contributing: Option<bool>,
    last_operation_id: Option<i64>,
    created_timestamp: DateTime<Utc>,
    removed_timestamp: Option<DateTime<Utc>>,
    /// The member's `active`, read by the member lists only.
    #[sqlx(default)]
    member_active: Option<bool>,
    /// The feed's head in the row's snapshot, read by the first page of a list only.
    #[sqlx(default)]
    head: Option<i64>,
}

impl MembershipRow {
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn head(&self) -> Option<i64> {
        self.head
    }
}

impl From<MembershipRow> for Membership {
    fn from(r: MembershipRow) -> Self {
        Membership {
            id: r.id,
            group_id: ResourceId(r.group_id),
            member_id: ResourceId(r.member_id),
            source: r.source,
            member_name: r.member_name,
            removed: r.removed,
            contributing: r.contributing,
            last_operation_id: r.last_operation_id.map(OperationId),
            created_timestamp: r.created_timestamp,
            removed_timestamp: r.removed_timestamp,
            active: r.member_active,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct OperationRow {
    id: i64,
    #[sqlx(rename = "type")]
    ty: String,
    description: Option<String>,
    status: String,
    group_id: Option<Uuid>,
    source_system: Option<String>,
    added: i64,
    reactivated: i64,
    removed: i64,
    updated: i64,
    unchanged: i64,
    rejected: i64,
    reason: Option<String>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    completed: Option<DateTime<Utc>>,
    phase: Option<String>,
    params: sqlx::types::Json<serde_json::Value>,
    token_name: Option<String>,
    target: String,
}

impl TryFrom<OperationRow> for Operation {
    type Error = StoreError;

    fn try_from(r: OperationRow) -> Result<Self, StoreError> {
        let ty = OperationType::from_name(&r.ty)
            .ok_or_else(|| corrupt(format!("operation {} has unknown type {:?}", r.id, r.ty)))?;
        let status = OperationStatus::from_name(&r.status).ok_or_else(|| {
            corrupt(format!(
                "operation {} has unknown status {:?}",
                r.id, r.status
            ))
        })?;
        Ok(Operation {
            id: OperationId(r.id),
            ty,
            target: Target::from_name(&r.target).ok_or_else(|| {
                corrupt(format!(
                    "operation {} has unknown target {:?}",
                    r.id, r.target
                ))
            })?,
            description: r.description,
            status,
            group_id: r.group_id.map(ResourceId),
            source_system: r.source_system,
            counts: OperationCounts {
                added: r.added,
                reactivated: r.reactivated,
                removed: r.removed,
                updated: r.updated,
                unchanged: r.unchanged,
                rejected: r.rejected,
            },
            reason: r.reason,
            phase: r
                .phase
                .as_deref()
                .map(|p| {
                    OperationPhase::from_name(p).ok_or_else(|| {
                        corrupt(format!("operation {} has unknown phase {p:?}", r.id))
                    })
                })
                .transpose()?,
            params: r.params.0,
            token_name: r.token_name,
            created: r.created,
            modified: r.modified,
            completed: r.completed,
        })
    }
}

pub fn operations(rows: Vec<OperationRow>) -> Result<Vec<Operation>, StoreError> {
    rows.into_iter().map(Operation::try_from).collect()
}

/// An `api_token` row.
#[derive(sqlx::FromRow)]
pub struct TokenRow {
    id: Uuid,
    name: String,
    scopes: TextList,
    source_system: Option<String>,
    read_scope: String,
    expires_at: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<TokenRow> for Token {
    type Error = StoreError;

    fn try_from(r: TokenRow) -> Result<Self, StoreError> {
        let scopes = r
            .scopes
            .0
            .iter()
            .map(|s| {
                Scope::from_name(s)
                    .ok_or_else(|| corrupt(format!("token {} has unknown scope {s:?}", r.id)))
            })
            .collect::<Result<_, _>>()?;
        let read_scope = ReadScope::from_name(&r.read_scope).ok_or_else(|| {
            corrupt(format!(
                "token {} has unknown read_scope {:?}",
                r.id, r.read_scope
            ))
        })?;
        Ok(Token {
            id: r.id,
            name: r.name,
            scopes,
            source_system: r.source_system,
            read_scope,
            expires_at: r.expires_at,
            created: r.created,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// A token row with the hash of its secret, for authentication.
#[derive(sqlx::FromRow)]
pub struct TokenHashRow {
    #[sqlx(flatten)]
    pub token: TokenRow,
    pub secret_hash: Vec<u8>,
}

pub fn tokens(rows: Vec<TokenRow>) -> Result<Vec<Token>, StoreError> {
    rows.into_iter().map(Token::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    token_id: Option<Uuid>,
    token_name: String,
    action: String,
    target: String,
    request_id: Option<String>,
    detail: Option<sqlx::types::Json<serde_json::Value>>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            id: r.id,
            at: r.at,
            token_id: r.token_id,
            token_name: r.token_name,
            action: r.action,
            target: r.target,
            request_id: r.request_id,
            detail: r.detail.map(|d| d.0),
        }
    }
}

/// A `resource` row with its SCIM document.
#[derive(sqlx::FromRow)]
pub struct ScimRow {
    #[sqlx(flatten)]
    resource: ResourceRow,
    scim: Option<sqlx::types::Json<serde_json::Map<String, serde_json::Value>>>,
}

impl TryFrom<ScimRow> for crate::domain::scim::ScimRecord {
    type Error = StoreError;

    fn try_from(r: ScimRow) -> Result<Self, StoreError> {
        Ok(Self {
            resource: r.resource.try_into()?,
            doc: r.scim.map(|d| d.0).unwrap_or_default(),
        })
    }
}
