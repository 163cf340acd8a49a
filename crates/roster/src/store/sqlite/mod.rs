//! The SQLite backend: the embedded zero-setup default. One writer connection (SQLite has one
//! writer; `BEGIN IMMEDIATE` takes the write lock up front so read-modify-write cannot race) and a
//! pool of readers, which WAL mode lets run beside the writer.

use super::rows::{OperationRow, ResourceRow};
use super::{now, resource_not_found, sql, Store, StoreError, StoreResult};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::{ChangeKind, ChangeRecord};
use crate::domain::operation::{Operation, OperationCounts, OperationType};
use crate::domain::resource::{NewResource, Resource};
use crate::domain::token::Actor;
use crate::domain::{OperationId, ResourceId};
use crate::store::ConflictKind;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;

mod codec;
mod engine;
mod resource_sync;

type Row = ResourceRow;

/// Roster's store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    db: super::db::Db,
}

/// Readers that may run at once beside the writer.
const READERS: u32 = 8;

/// Creates the database's directory readable by its owner only (0700; an existing one is left
/// as it is, with a warning when others may read it) and the database file readable and writable
/// by its owner only (0600, tightened when it exists); SQLite gives its `-wal` and `-shm` files
/// the mode of the database file.
fn private_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if dir.exists() {
                let mode = std::fs::metadata(dir)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        dir = %dir.display(),
                        mode = format!("{:o}", mode & 0o777),
                        "the database's directory is open to other users; roster creates its own \
                         directory 0700"
                    );
                }
            } else {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file in WAL mode and applies pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        private_files(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot prepare {}: {e}", path.display()))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(super::ACQUIRE_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("src/store/sqlite/migrations")
            .run(&writer)
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_with(options.read_only(true))
            .await?;
        let db = super::db::Db::new(super::db::Pools::Sqlite {
            writer: writer.clone(),
            reader: reader.clone(),
        });
        Ok(Self { writer, reader, db })
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Creates a resource with its audit and change records, in the caller's transaction.
    pub(super) async fn insert_resource(
        tx: &mut Transaction<'_, Sqlite>,
        actor: &Actor,
        new: &NewResource,
    ) -> StoreResult<Resource> {
        let id = ResourceId::generate();
        Self::audit(
            tx,
            actor,
            AuditRecord::new("resource.create", target::resource(id)),
        )
        .await?;
        let row: Row = sqlx::query_as(&sql::INSERT_RESOURCE)
            .bind(id)
            .bind(new.ty.code())
            .bind(new.ty.name())
            .bind(new.subtype.map(|s| s.code()))
            .bind(&new.source_system)
            .bind(&new.identifier)
            .bind(&new.external_id)
            .bind(&new.displayname)
            .bind(&new.description)
            .bind(&new.notes)
            .bind(Json(&new.tags))
            .bind(new.active.unwrap_or(true))
            .bind(new.expires_at)
            .bind(now())
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| resource_conflict(e, &new.source_system))?;
        let resource: Resource = row.try_into()?;
        let change = ChangeRecord::resource(ChangeKind::ResourceCreated, &resource);
        Self::log_change(tx, actor, change).await?;
        Ok(resource)
    }

    pub(super) async fn lock_resource(
        tx: &mut Transaction<'_, Sqlite>,
        id: ResourceId,
    ) -> StoreResult<Resource> {
        let row: Option<Row> = sqlx::query_as(&sql::SELECT_RESOURCE)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        row.ok_or_else(|| resource_not_found(id))?.try_into()
    }

    /// Writes `next` over the stored resource `current` (same id), returning what was stored.
    pub(super) async fn write_resource(
        tx: &mut Transaction<'_, Sqlite>,
        current: &Resource,
        next: &Resource,
    ) -> StoreResult<Resource> {
        let row: Row = sqlx::query_as(&sql::UPDATE_RESOURCE)
            .bind(current.id)
            .bind(next.subtype.map(|s| s.code()))
            .bind(&next.identifier)
            .bind(&next.external_id)
            .bind(&next.displayname)
            .bind(&next.description)
            .bind(&next.notes)
            .bind(Json(&next.tags))
            .bind(next.active)
            .bind(next.expires_at)
            .bind(now())
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| resource_conflict(e, &current.source_system))?;
        row.try_into()
    }

    pub(super) async fn audit(
        tx: &mut Transaction<'_, Sqlite>,
        actor: &Actor,
        record: AuditRecord,
    ) -> StoreResult<()> {
        sqlx::query(sql::INSERT_AUDIT)
            .bind(now())
            .bind(actor.token_id)
            .bind(&actor.token_name)
            .bind(record.action)
            .bind(record.target)
            .bind(&actor.request_id)
            .bind(record.detail.map(Json))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(super) async fn log_change(
        tx: &mut Transaction<'_, Sqlite>,
        actor: &Actor,
        change: ChangeRecord,
    ) -> StoreResult<()> {
        sqlx::query(sql::INSERT_CHANGE)
            .bind(now())
            .bind(change.kind.code())
            .bind(change.resource_id)
            .bind(change.group_id)
            .bind(change.member_id)
            .bind(change.source_system)
            .bind(change.operation_id)
            .bind(&actor.token_name)
            .bind(change.attrs.map(Json))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(super) async fn insert_operation(
        tx: &mut Transaction<'_, Sqlite>,
        actor: &Actor,
        ty: OperationType,
        group_id: Option<ResourceId>,
        source_system: Option<&str>,
    ) -> StoreResult<OperationId> {
        Ok(sqlx::query_scalar(sql::INSERT_COMPLETED_OPERATION)
            .bind(ty.name())
            .bind(group_id)
            .bind(source_system)
            .bind(&actor.token_name)
            .bind(now())
            .fetch_one(&mut **tx)
            .await?)
    }

    pub(super) async fn set_counts(
        tx: &mut Transaction<'_, Sqlite>,
        id: OperationId,
        counts: OperationCounts,
    ) -> StoreResult<Operation> {
        let row: OperationRow = sqlx::query_as(&sql::SET_OPERATION_COUNTS)
            .bind(id)
            .bind(counts.added)
            .bind(counts.reactivated)
            .bind(counts.removed)
            .bind(counts.updated)
            .bind(counts.unchanged)
            .bind(counts.rejected)
            .fetch_one(&mut **tx)
            .await?;
        row.try_into()
    }
}

/// Turns a unique violation on a resource key into a conflict that names the key.
fn resource_conflict(e: sqlx::Error, source_system: &str) -> StoreError {
    let message = e.as_database_error().map(|d| d.message().to_owned());
    match message.as_deref() {
        Some(m) if m.contains("resource.identifier") => StoreError::conflict(ConflictKind::Duplicate, format!(
            "a live resource of this type with this identifier already exists in source system \"{source_system}\""
        )),
        Some(m) if m.contains("resource.external_id") => StoreError::conflict(ConflictKind::Duplicate, format!(
            "a live resource with this external_id already exists in source system \"{source_system}\""
        )),
        _ => e.into(),
    }
}

impl super::records::Backed for SqliteStore {
    fn db(&self) -> &super::db::Db {
        &self.db
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn cancel_statements(&self, _tag: &str) -> StoreResult<()> {
        // SQLite runs in the process, without a way to cancel another connection's statement:
        // its reads are bounded by the per-token limits instead.
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
