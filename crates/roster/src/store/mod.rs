//! The store: the only place that knows SQL. One interface, grouped by area, with a PostgreSQL
//! backend for production and an embedded SQLite backend as the zero-setup default.

pub mod budget;
mod cohort_sync;
mod correlation_sync;
mod db;
mod engine;
mod engine_sql;
mod feed;
pub(crate) mod lifecycle_sync;
mod membership_sync;
mod postgres;
mod query;
mod records;
mod resource_sql;
mod resource_sync;
mod rows;
mod scim;
mod scim_sql;
mod sql;
mod sqlite;
mod staging;
mod subscriptions;

use crate::domain::audit::{AuditEntry, AuditFilter};
use crate::domain::feed::{ChangeBatch, ChangeFilter, Cursor, ExportScope, StoredChange};
use crate::domain::full_update::{LineError, PreviewAction, PreviewEntry, StagedLine};
use crate::domain::lifecycle::{Action, Policy, Propagation, Source, SourceRequest};
use crate::domain::membership::{Membership, MembershipFilter, MembershipInput, MembershipWrite};
use crate::domain::operation::{Operation, OperationCounts, OperationFilter, Scope, Target};
use crate::domain::page::PageRequest;
use crate::domain::resource::ResourceType;
use crate::domain::resource::{NewResource, Resource, ResourceFilter, ResourcePatch};
use crate::domain::resource_sync::{ResourcePreviewEntry, ResourceScope, StagedResource};
use crate::domain::token::{Actor, NewToken, SecretHash, Token};
use crate::domain::{InvalidInput, OperationId, ResourceId};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub use db::COMMIT_STAMP;
pub use feed::ExportItem;
pub use postgres::PgStore;
pub use scim::{ScimStore, MAX_MEMBERS_PER_EDIT};
pub use sqlite::SqliteStore;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named record does not exist (or is not visible to the request).
    #[error("{message}")]
    NotFound {
        kind: Record,
        id: String,
        message: String,
    },
    /// The write conflicts with stored data; `kind` says how.
    #[error("{message}")]
    Conflict { kind: ConflictKind, message: String },
    /// The caller's token may not make this write (its source binding).
    #[error("{0}")]
    Forbidden(String),
    /// The write breaks a domain rule that needs stored data to check.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Lines of a request break rules that need stored data to check; nothing was written.
    #[error("{0}")]
    InvalidLines(String, Vec<LineError>),
    /// What was asked for is no longer kept (a feed cursor older than the retained history).
    #[error("{0}")]
    Gone(String),
    /// The record changed since the version the write was based on.
    #[error("{0}")]
    Stale(String),
    /// A statement ran out of the time its request had left.
    #[error("{0}")]
    TimedOut(String),
    /// The database could not be reached in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused a value the request gave: a character or a time it cannot store, a
    /// number out of its range, text it cannot read as its type.
    #[error("{0}")]
    BadValue(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The kinds of record a [`StoreError::NotFound`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Resource,
    Membership,
    Operation,
    Token,
    Subscription,
    CorrelationRule,
    /// A link between a unified group and one of its groups.
    GroupLink,
}

impl Record {
    pub fn name(self) -> &'static str {
        match self {
            Self::Resource => "resource",
            Self::Membership => "membership",
            Self::Operation => "operation",
            Self::Token => "token",
            Self::Subscription => "subscription",
            Self::CorrelationRule => "correlation rule",
            Self::GroupLink => "group link",
        }
    }
}

/// How a write conflicts with stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// A key that must be unique is taken (an identifier, an external id, a token's name).
    Duplicate,
    /// The record's state forbids the write (an operation no longer pending, a subscription
    /// that is active).
    State,
    /// Another worker holds the lease the write needs.
    Lease,
    /// The write would break the shape of the identity tree (a cycle, a chain too deep).
    Tree,
    /// The write would pass the deletion threshold; nothing was changed.
    Threshold,
}

impl StoreError {
    /// `kind` `id` does not exist.
    pub fn not_found(kind: Record, id: impl std::fmt::Display) -> Self {
        let id = id.to_string();
        Self::NotFound {
            message: format!("{} {id} does not exist", kind.name()),
            kind,
            id,
        }
    }

    /// `kind` `id` is not found, as `message` explains.
    pub fn missing(kind: Record, id: impl std::fmt::Display, message: String) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
            message,
        }
    }

    pub fn conflict(kind: ConflictKind, message: impl Into<String>) -> Self {
        Self::Conflict {
            kind,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(e.to_string())
            }
            // 57014 query_canceled: the statement ran out of its request's time (see `budget`).
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                Self::TimedOut(format!(
                    "the request's time ran out while the database was working on it: {}",
                    db.message()
                ))
            }
            // A safety net: writes check their keys first, but a concurrent writer can take one
            // in between.
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::conflict(
                ConflictKind::Duplicate,
                format!(
                    "the write conflicts with stored data, perhaps written at the same moment: {}",
                    db.message()
                ),
            ),
            // Another safety net: requests are checked at the edge (no NUL, times in range), but
            // a value PostgreSQL cannot take is the request's fault, not a fault of roster.
            sqlx::Error::Database(db) if is_data_exception(db.as_ref()) => {
                let (code, message) = (db.code(), db.message());
                tracing::warn!(?code, message, "the database refused a value");
                Self::BadValue(format!(
                    "the database cannot store or compare a value of this request: {}",
                    db.message()
                ))
            }
            other => Self::Database(other),
        }
    }
}

/// Whether PostgreSQL refused a value a request gave it as text it cannot take or a number or
/// time out of its range: 22P05 untranslatable character, 22021 character not in repertoire,
/// 22008 datetime field overflow, 22007 invalid datetime format, 22003 numeric value out of
/// range. Other data exceptions (a failed cast of roster's own, a division by zero) stay faults
/// of roster.
fn is_data_exception(db: &dyn sqlx::error::DatabaseError) -> bool {
    const REFUSED_VALUES: [&str; 5] = ["22P05", "22021", "22008", "22007", "22003"];
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some_and(|pg| REFUSED_VALUES.contains(&pg.code()))
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The result of soft-deleting a resource: the resource and the delete operation that ended its
/// memberships (none when it was already deleted).
#[derive(Debug, Clone)]
pub struct Deletion {
    pub resource: Resource,
    pub operation: Option<Operation>,
}

/// The result of writing one membership.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub membership: Membership,
    pub write: MembershipWrite,
    pub operation_id: OperationId,
}

#[async_trait]
pub trait ResourceStore: Send + Sync {
    async fn create_resource(&self, actor: &Actor, new: &NewResource) -> StoreResult<Resource>;
    /// A resource by id, deleted or not.
    async fn get_resource(&self, id: ResourceId) -> StoreResult<Resource>;
    /// Resources in id order after the page's cursor; fetches one more than the page.
    async fn list_resources(
        &self,
        filter: &ResourceFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<Resource>>;
    /// Applies a partial update; a patch that changes nothing writes nothing. Deactivating a
    /// lifecycle authority's record deactivates its identity (under `policy`) in the same
    /// transaction.
    async fn update_resource(
        &self,
        actor: &Actor,
        id: ResourceId,
        patch: &ResourcePatch,
        policy: &Policy,
    ) -> StoreResult<Resource>;
    /// Soft-deletes a resource and ends its memberships, as one delete operation; deleting a
    /// lifecycle authority's record deactivates its identity in the same transaction.
    async fn delete_resource(
        &self,
        actor: &Actor,
        id: ResourceId,
        policy: &Policy,
    ) -> StoreResult<Deletion>;
    async fn restore_resource(&self, actor: &Actor, id: ResourceId) -> StoreResult<Resource>;
}

#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// The memberships of a group in member-id order; fetches one more than the page.
    async fn list_members(
        &self,
        group_id: ResourceId,
        filter: &MembershipFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<Membership>>;
    /// The memberships of a resource in group-id order; fetches one more than the page.
    async fn list_groups_of(
        &self,
        member_id: ResourceId,
        filter: &MembershipFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<Membership>>;
    async fn get_membership(
        &self,
        group_id: ResourceId,
        member_id: ResourceId,
    ) -> StoreResult<Membership>;
    /// Adds, re-activates or confirms one membership, recorded as a partial-update operation.
    async fn put_membership(
        &self,
        actor: &Actor,
        group_id: ResourceId,
        member_id: ResourceId,
        input: &MembershipInput,
    ) -> StoreResult<MembershipChange>;
    /// Ends one active membership, recorded as a partial-update operation.
    async fn remove_membership(
        &self,
        actor: &Actor,
        group_id: ResourceId,
        member_id: ResourceId,
    ) -> StoreResult<MembershipChange>;
}

#[async_trait]
pub trait OperationStore: Send + Sync {
    /// Operations newest first, after the page's cursor; fetches one more than the page.
    async fn list_operations(
        &self,
        filter: &OperationFilter,
        page: &PageRequest<i64>,
    ) -> StoreResult<Vec<Operation>>;
    async fn get_operation(&self, id: OperationId) -> StoreResult<Operation>;
    /// How many times workers have claimed the operation.
    async fn operation_attempts(&self, id: OperationId) -> StoreResult<u32>;
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token with the hash of its secret.
    async fn create_token(
        &self,
        actor: &Actor,
        new: &NewToken,
        hash: &SecretHash,
    ) -> StoreResult<Token>;
    /// Creates the first admin token if, and only if, no token exists yet. Returns whether it did.
    async fn bootstrap_token(&self, name: &str, hash: &SecretHash) -> StoreResult<bool>;
    /// Tokens in id order after the page's cursor; fetches one more than the page.
    async fn list_tokens(&self, page: &PageRequest<Uuid>) -> StoreResult<Vec<Token>>;
    async fn get_token(&self, id: Uuid) -> StoreResult<Token>;
    /// A token by id or by name.
    async fn find_token(&self, id_or_name: &str) -> StoreResult<Token>;
    /// Revokes a token; revoking a revoked token changes nothing.
    async fn revoke_token(&self, actor: &Actor, id: Uuid) -> StoreResult<Token>;
    /// The token whose secret has this hash, revoked or expired ones included, with the stored
    /// hash (which the caller compares in constant time).
    async fn token_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<(Token, Vec<u8>)>>;
    /// Records that the token was used at `at`.
    async fn touch_token(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Audit entries newest first, before the page's cursor; fetches one more than the page.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> StoreResult<Vec<AuditEntry>>;
}

/// One batch of an uploaded chunk: the usable lines (membership lines, or resource lines) and
/// the lines skipped with a reason.
#[derive(Debug)]
pub struct StagedBatch<L = StagedLine> {
    pub lines: Vec<L>,
    pub rejected: Vec<LineError>,
}

impl<L> Default for StagedBatch<L> {
    fn default() -> Self {
        Self {
            lines: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

/// The batches of one chunk, read from the request as the store writes them. An error ends the
/// upload and leaves the chunk as it was.
pub type LineStream<'a, L = StagedLine> = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<StagedBatch<L>, StoreError>> + Send + 'a>,
>;

/// What a chunk upload stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkReceipt {
    pub staged: i64,
    pub rejected: i64,
}

/// A new full-update, as the engine records it.
#[derive(Debug, Clone)]
pub struct FullUpdateDraft {
    pub target: Target,
    pub description: Option<String>,
    pub scope: Scope,
    /// The scope's source system (for a group scope: the group's).
    pub source_system: String,
    pub params: crate::domain::operation::FullUpdateParams,
}

/// How an apply ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyOutcome {
    Complete(OperationCounts),
    /// Held for approval: nothing was changed.
    Pending {
        reason: String,
        counts: OperationCounts,
    },
    Failed {
        reason: String,
        counts: OperationCounts,
    },
}

/// One change of a partial-update.
#[derive(Debug, Clone)]
pub struct MembershipEdit {
    pub group_id: ResourceId,
    pub member: crate::domain::full_update::MemberRef,
    pub member_type: Option<ResourceType>,
    pub action: PreviewAction,
    pub member_name: Option<String>,
    pub contributing: Option<bool>,
}

/// The operations engine's storage: staging, set-based applies, leases, approvals.
#[async_trait]
pub trait EngineStore: Send + Sync {
    /// Records a new full-update: `running`, `uploading`, with an empty staging area.
    async fn create_full_update(
        &self,
        actor: &Actor,
        draft: &FullUpdateDraft,
    ) -> StoreResult<Operation>;
    /// Replaces chunk `chunk` of an uploading full-update with the streamed lines.
    async fn stage_chunk(
        &self,
        id: OperationId,
        chunk: i32,
        lines: LineStream<'_>,
    ) -> StoreResult<ChunkReceipt>;
    /// Replaces chunk `chunk` of an uploading full-update of resources with the streamed lines.
    async fn stage_resource_chunk(
        &self,
        id: OperationId,
        chunk: i32,
        lines: LineStream<'_, StagedResource>,
    ) -> StoreResult<ChunkReceipt>;
    /// Ends the upload: the operation is queued for a worker.
    async fn queue_operation(&self, actor: &Actor, id: OperationId) -> StoreResult<Operation>;
    /// Claims the oldest queued operation, or one whose worker's lease expired. An operation
    /// whose lease expired after `max_attempts` claims (its workers keep dying) fails instead.
    async fn claim_operation(
        &self,
        node: &str,
        lease: std::time::Duration,
        max_attempts: u32,
    ) -> StoreResult<Option<Operation>>;
    /// Extends a held lease; false when the lease was lost to another worker.
    async fn renew_lease(
        &self,
        id: OperationId,
        node: &str,
        lease: std::time::Duration,
    ) -> StoreResult<bool>;
    /// Resolves, checks and applies a claimed full-update: of memberships, one group per
    /// transaction at least; of resources, in one transaction.
    /// Lifecycle authorities' records it deletes or deactivates end their identities (`policy`).
    async fn apply_full_update(
        &self,
        operation: &Operation,
        policy: &Policy,
    ) -> StoreResult<ApplyOutcome>;
    /// Records the outcome of an apply and releases the lease; refused (conflict) when `node`
    /// no longer holds the lease, whose new holder records the outcome instead.
    async fn finish_operation(
        &self,
        id: OperationId,
        node: &str,
        outcome: &ApplyOutcome,
    ) -> StoreResult<Operation>;
    /// What a full-update would add or remove, in (group, member) order after the cursor.
    async fn preview(
        &self,
        id: OperationId,
        action: Option<PreviewAction>,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<PreviewEntry>>;
    /// What a full-update of resources would create or restore (`Add`: lines, in (chunk, line)
    /// order after the cursor) or delete (`Remove`: resources, in id order after the cursor).
    async fn preview_resources(
        &self,
        id: OperationId,
        action: PreviewAction,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<ResourcePreviewEntry>>;
    /// How many memberships (or resources) a full-update not yet applied would add and remove.
    async fn preview_totals(&self, id: OperationId) -> StoreResult<(i64, i64)>;
    /// Approves (queues again, past the threshold) or rejects (fails) a pending operation.
    async fn decide(&self, actor: &Actor, id: OperationId, approve: bool)
        -> StoreResult<Operation>;
    /// The rejected lines of an operation, in (chunk, line) order after the cursor.
    async fn rejections(
        &self,
        id: OperationId,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<LineError>>;
    /// Applies explicit adds and removes in one transaction, as one partial-update operation.
    async fn apply_partial_update(
        &self,
        actor: &Actor,
        description: Option<String>,
        edits: &[MembershipEdit],
        bound_source: Option<&str>,
    ) -> StoreResult<Operation>;
    /// Upserts and deletes resources of one source system in one transaction, as one
    /// partial-update operation; refused whole (naming the lines) when a line cannot apply.
    async fn apply_resource_changes(
        &self,
        actor: &Actor,
        description: Option<String>,
        scope: &ResourceScope,
        lines: &[StagedResource],
        policy: &Policy,
    ) -> StoreResult<Operation>;
    /// Ends the memberships of a scope that its latest completed full-update did not confirm,
    /// refusing (and changing nothing) when a group would pass the deletion threshold.
    async fn reconcile(
        &self,
        actor: &Actor,
        description: Option<String>,
        scope: &Scope,
        threshold: &crate::domain::full_update::Threshold,
    ) -> StoreResult<Operation>;
    /// Hard-deletes ended memberships, and deleted resources nothing refers to, older than
    /// `before`, in batches of `batch` rows.
    async fn purge(
        &self,
        actor: &Actor,
        description: Option<String>,
        before: DateTime<Utc>,
        batch: i64,
    ) -> StoreResult<Operation>;
    /// Fails uploads that received nothing since `before`.
    async fn fail_abandoned(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// Cohorts, identities and unified groups.
#[async_trait]
pub trait CohortStore: Send + Sync {
    /// Links a resource to a prime (an account to its cohort, a prime to its parent), or unlinks
    /// it; refuses cycles and chains deeper than `MAX_DEPTH`.
    async fn link_prime(
        &self,
        actor: &Actor,
        id: ResourceId,
        kind: crate::domain::cohort::LinkKind,
        target: Option<ResourceId>,
    ) -> StoreResult<Resource>;
    /// The identity a resource belongs to: its root prime and everything under it.
    async fn identity(&self, id: ResourceId) -> StoreResult<crate::domain::cohort::IdentityTree>;
    /// The accounts of a resource's cohort or identity.
    async fn related(
        &self,
        id: ResourceId,
        scope: crate::domain::cohort::RelatedScope,
    ) -> StoreResult<Vec<Resource>>;
    async fn link_group(
        &self,
        actor: &Actor,
        unified: ResourceId,
        group: ResourceId,
        role: crate::domain::cohort::LinkRole,
    ) -> StoreResult<crate::domain::cohort::GroupLink>;
    async fn unlink_group(
        &self,
        actor: &Actor,
        unified: ResourceId,
        group: ResourceId,
    ) -> StoreResult<()>;
    async fn group_links(
        &self,
        unified: ResourceId,
    ) -> StoreResult<Vec<crate::domain::cohort::GroupLink>>;
    /// The cohorts in a unified group's effective membership, with what justifies each.
    async fn unified_members(
        &self,
        unified: ResourceId,
    ) -> StoreResult<Vec<crate::domain::cohort::EffectiveCohort>>;
    /// The sync plan of a unified group's mirror groups.
    /// The sync plan of a unified group's mirror groups (or a page of one group's).
    async fn sync_plan(
        &self,
        unified: ResourceId,
        page: Option<&crate::domain::cohort::PlanPage>,
    ) -> StoreResult<crate::domain::cohort::SyncPlan>;
    async fn create_rule(
        &self,
        actor: &Actor,
        request: &crate::domain::correlation::RuleRequest,
    ) -> StoreResult<crate::domain::correlation::CorrelationRule>;
    async fn update_rule(
        &self,
        actor: &Actor,
        id: Uuid,
        request: &crate::domain::correlation::RuleRequest,
    ) -> StoreResult<crate::domain::correlation::CorrelationRule>;
    async fn delete_rule(&self, actor: &Actor, id: Uuid) -> StoreResult<()>;
    async fn rules(&self) -> StoreResult<Vec<crate::domain::correlation::CorrelationRule>>;
    /// Runs a correlation rule as one `correlate` operation.
    async fn correlate(&self, actor: &Actor, rule: Uuid) -> StoreResult<Operation>;
    /// The cases of a correlation run (default: the latest).
    async fn correlation_cases(
        &self,
        operation: Option<i64>,
        situation: Option<crate::domain::correlation::Situation>,
    ) -> StoreResult<Vec<crate::domain::correlation::CorrelationCase>>;
}

/// Identity lifecycle: actions on the accounts of an identity, a cohort or one account, the
/// expiry sweep, cohort-local propagation and the sources' lifecycle settings.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Carries out an action as one operation (pending past the threshold): the operation and
    /// the accounts it changed, or would change.
    async fn act(
        &self,
        actor: &Actor,
        action: &Action,
        policy: &Policy,
    ) -> StoreResult<(Operation, Vec<ResourceId>)>;
    /// Applies a patch's persona attributes to every account of the cohort, as one operation.
    async fn propagate(
        &self,
        actor: &Actor,
        id: ResourceId,
        patch: &ResourcePatch,
    ) -> StoreResult<Propagation>;
    /// Deactivates the accounts whose `expires_at` passed, as one operation (none: none due).
    async fn expire_due(&self) -> StoreResult<Option<Operation>>;
    /// The accounts a lifecycle operation lists, in id order; fetches one more than the page.
    async fn lifecycle_targets(
        &self,
        op: OperationId,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<Resource>>;
    async fn source(&self, source_system: &str) -> StoreResult<Source>;
    async fn put_source(
        &self,
        actor: &Actor,
        source_system: &str,
        request: &SourceRequest,
    ) -> StoreResult<Source>;
}

/// The change feed: the log read in order by cursor, exports, history.
#[async_trait]
pub trait ChangeStore: Send + Sync {
    /// The changes after `after` that match `filter` (at most `limit`), and where to continue. A
    /// cursor older than the retained history is [`StoreError::Gone`].
    async fn changes(
        &self,
        after: &Cursor,
        filter: &ChangeFilter,
        limit: u32,
    ) -> StoreResult<ChangeBatch>;
    /// The cursor of "now": following from it gets every change not yet committed.
    async fn head(&self) -> StoreResult<Cursor>;
    /// The changes of a resource and of its memberships (as group or as member) that match
    /// `filter`, oldest first, after sequence number `after`.
    async fn history(
        &self,
        id: ResourceId,
        filter: &ChangeFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredChange>>;
    /// The members of group `id` (of source system `member_source` only, when it names one) that
    /// were active at `at`, from the log, by member id after `page.after`; each with the time it
    /// (last) joined.
    async fn members_at(
        &self,
        id: ResourceId,
        at: DateTime<Utc>,
        member_source: Option<&str>,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<(ResourceId, DateTime<Utc>)>>;
    /// Sends `scope`'s resources and active memberships (of members of source system
    /// `member_source` only, when it names one), read in one snapshot, then the cursor to follow
    /// from; stops early when the receiver goes away.
    async fn export(
        &self,
        scope: &ExportScope,
        member_source: Option<&str>,
        sink: tokio::sync::mpsc::Sender<StoreResult<ExportItem>>,
    ) -> StoreResult<()>;
    /// Deletes changes recorded before `before`; cursors before them answer Gone from then on.
    async fn trim_history(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Takes or renews relay `name`'s lease for `holder`; its stored position when `holder`
    /// holds it now, none while another holder's lease runs.
    async fn claim_relay(
        &self,
        name: &str,
        holder: &str,
        lease: Duration,
    ) -> StoreResult<Option<Cursor>>;
    /// Stores relay `name`'s position (renewing the lease); false when `holder` lost the lease.
    async fn advance_relay(
        &self,
        name: &str,
        holder: &str,
        position: &Cursor,
        lease: Duration,
    ) -> StoreResult<bool>;
}

/// Webhook subscriptions and their deliveries.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// Registers a subscription starting after `cursor`, signing with `secret`.
    async fn create_subscription(
        &self,
        actor: &Actor,
        spec: &crate::domain::subscription::SubscriptionSpec,
        cursor: &Cursor,
        secret: &str,
    ) -> StoreResult<crate::domain::subscription::Subscription>;
    async fn list_subscriptions(
        &self,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<crate::domain::subscription::Subscription>>;
    async fn get_subscription(
        &self,
        id: Uuid,
    ) -> StoreResult<crate::domain::subscription::Subscription>;
    async fn delete_subscription(&self, actor: &Actor, id: Uuid) -> StoreResult<()>;
    /// Makes a paused subscription active again, due at once, from `from` when given.
    async fn resume_subscription(
        &self,
        actor: &Actor,
        id: Uuid,
        from: Option<&Cursor>,
    ) -> StoreResult<()>;
    /// Leases the most overdue active subscription for `holder`; with its secret.
    async fn claim_delivery(
        &self,
        holder: &str,
        lease: Duration,
    ) -> StoreResult<Option<(crate::domain::subscription::Subscription, String)>>;
    /// Moves a claimed subscription's cursor past one delivered change, renewing the lease;
    /// false when the lease was lost.
    async fn record_delivery(
        &self,
        id: Uuid,
        holder: &str,
        cursor: &Cursor,
        lease: Duration,
    ) -> StoreResult<bool>;
    /// Ends a round: stores the cursor (past what the filters skipped) and releases the lease,
    /// due again at `next_attempt_at`.
    async fn release_delivery(
        &self,
        id: Uuid,
        holder: &str,
        cursor: &Cursor,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records a failed attempt and releases the lease; the subscription pauses at
    /// `pause_after` failures in a row.
    async fn record_failure(
        &self,
        id: Uuid,
        holder: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        pause_after: i32,
    ) -> StoreResult<bool>;
}

/// Everything roster stores, behind one seam.
#[async_trait]
pub trait Store:
    ResourceStore
    + MembershipStore
    + OperationStore
    + TokenStore
    + AuditStore
    + EngineStore
    + CohortStore
    + LifecycleStore
    + ChangeStore
    + SubscriptionStore
    + ScimStore
{
    /// "postgres" or "sqlite".
    fn backend(&self) -> &'static str;
    /// Cancels the statements running for the request tagged `tag` (see `budget`), when the
    /// request was dropped before it was answered.
    async fn cancel_statements(&self, tag: &str) -> StoreResult<()>;
    /// Succeeds when the database answers a query.
    async fn ping(&self) -> StoreResult<()>;
}

/// Where the data lives: a PostgreSQL URL, or the embedded SQLite database in a directory.
#[derive(Clone)]
pub enum Location {
    Postgres { url: String, max_connections: u32 },
    Sqlite { path: std::path::PathBuf },
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres { url, .. } => write!(f, "postgres {}", redact_url(url)),
            Self::Sqlite { path } => write!(f, "sqlite {}", path.display()),
        }
    }
}

impl Location {
    /// `postgres://…` selects PostgreSQL, `sqlite://PATH` a SQLite file; without a URL the embedded
    /// default `<data_dir>/roster.db` is used.
    pub fn from_settings(
        database_url: Option<&str>,
        data_dir: &Path,
        max_connections: u32,
    ) -> Result<Self, InvalidInput> {
        match database_url {
            None => Ok(Self::Sqlite {
                path: data_dir.join("roster.db"),
            }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres {
                    url: url.to_owned(),
                    max_connections,
                })
            }
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => Ok(Self::Sqlite { path: path.into() }),
                _ => Err(InvalidInput::new(format!(
                    "database URL {} is not supported: use postgres://… or sqlite://PATH",
                    redact_url(url)
                ))),
            },
        }
    }
}

/// Opens the store and applies pending migrations.
pub async fn open(location: &Location) -> StoreResult<Arc<dyn Store>> {
    Ok(match location {
        Location::Postgres {
            url,
            max_connections,
        } => Arc::new(PgStore::open(url, *max_connections).await?),
        Location::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
    })
}

/// A URL with its password replaced, safe to print.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// The current time at the precision both backends keep (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// How long a request waits for a pooled connection before the store reports itself unavailable.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The message for a resource that does not exist.
pub(crate) fn resource_not_found(id: ResourceId) -> StoreError {
    StoreError::not_found(Record::Resource, id)
}

/// The message for a membership that does not exist.
pub(crate) fn membership_not_found(group_id: ResourceId, member_id: ResourceId) -> StoreError {
    StoreError::missing(
        Record::Membership,
        format!("{group_id}/{member_id}"),
        format!("resource {member_id} is not a member of group {group_id}"),
    )
}
