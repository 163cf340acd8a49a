//! The store: the only place that knows SQL. One interface, grouped by area, with a PostgreSQL
//! backend for production and an embedded SQLite backend as the zero-setup default.

pub mod budget;
mod cohort_sync;
mod correlation_sync;
mod db;
mod engine;
mod engine_sql;
mod feed;
mod gauges;
pub(crate) mod lifecycle_sync;
mod membership_sync;
mod nesting;
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

use crate::domain::full_update::{LineError, PreviewAction, StagedLine};
use crate::domain::membership::{Membership, MembershipWrite};
use crate::domain::operation::{Operation, OperationCounts, Scope, Target};
use crate::domain::resource::Resource;
use crate::domain::resource::ResourceType;
use crate::domain::{InvalidInput, OperationId, ResourceId};
use chrono::{DateTime, SubsecRound, Utc};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use db::Dialect;
pub use db::{PoolUse, COMMIT_STAMP};
pub use feed::ExportItem;
pub use gauges::{Gauges, RelayGauge, SubscriptionGauge};
pub use scim::MAX_MEMBERS_PER_EDIT;

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

impl From<crate::domain::operation::WrongState> for StoreError {
    fn from(e: crate::domain::operation::WrongState) -> Self {
        Self::conflict(ConflictKind::State, e.0)
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

/// Everything roster stores, in PostgreSQL or in SQLite.
#[derive(Clone)]
pub struct Store {
    db: db::Db,
}

impl Store {
    fn db(&self) -> &db::Db {
        &self.db
    }

    /// Runs `work` in one write transaction, committed when it succeeds.
    async fn in_write<T>(
        &self,
        work: impl AsyncFnOnce(&mut db::Tx) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut tx = self.db.write().await?;
        let done = work(&mut tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// "postgres" or "sqlite".
    pub fn backend(&self) -> &'static str {
        match self.db.dialect() {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
        }
    }

    /// Cancels the statements running for the request tagged `tag` (see `budget`), when the
    /// request was dropped before it was answered. SQLite runs in the process, without a way to
    /// cancel another connection's statement: its reads are bounded by the per-token limits
    /// instead.
    pub async fn cancel_statements(&self, tag: &str) -> StoreResult<()> {
        if self.db.dialect() == Dialect::Postgres {
            let cancel = query::Sql::new(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()",
            )
            .bind(tag);
            self.db.autocommit().await?.execute(&cancel).await?;
        }
        Ok(())
    }

    /// Succeeds when the database answers a query.
    pub async fn ping(&self) -> StoreResult<()> {
        self.db.read().await?.batch("SELECT 1").await
    }
}

/// Opens the store and applies pending migrations.
pub async fn open(location: &Location) -> StoreResult<Arc<Store>> {
    let db = match location {
        Location::Postgres {
            url,
            max_connections,
        } => postgres::open(url, *max_connections).await?,
        Location::Sqlite { path } => sqlite::open(path).await?,
    };
    Ok(Arc::new(Store { db }))
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
