//! The PostgreSQL backend: native types, row locks for read-modify-write, one pool.

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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;

mod codec;
mod engine;

mod resource_sync;

type Row = ResourceRow;

/// Roster's store on PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    db: super::db::Db,
}

/// Tells a connection, as it is handed out, how long its request has left (`statement_timeout`;
/// 0, no limit, outside a request) and whose it is (`application_name`, the request's tag), in
/// one round trip that also proves the connection alive. One prepared statement costs the server
/// about what `SELECT 1` does; two `SET`s in one simple query cost it about 60% more.
fn bound_statements(
    conn: &mut sqlx::PgConnection,
) -> futures_util::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    let (left, tag) = super::budget::current();
    let millis = left.map_or(0, |left| left.as_millis().max(1)).to_string();
    Box::pin(async move {
        sqlx::query(
            "SELECT set_config('statement_timeout', $1, false), \
             set_config('application_name', $2, false)",
        )
        .bind(millis)
        .bind(tag)
        .execute(conn)
        .await?;
        Ok(())
    })
}

impl PgStore {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Self> {
        // JIT off: roster's queries are short or index-driven, and compiling them costs more
        // than it saves (≈ 0.2 s on the sync plan of 100,000 cohorts).
        let options = PgConnectOptions::from_str(url)?
            .application_name("roster")
            .options([("jit", "off")]);
        // Each connection is told, as it is handed out, how long its request has left (none:
        // no limit for work outside a request), so that no statement outlives its request.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .after_connect(|conn, _| bound_statements(conn))
            .before_acquire(|conn, _| {
                Box::pin(async move { bound_statements(conn).await.map(|()| true) })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("src/store/postgres/migrations")
            .run(&pool)
            .await?;
        let db = super::db::Db::new(super::db::Pools::Postgres(pool.clone()));
        Ok(Self { pool, db })
    }

    /// Creates a resource with its audit and change records, in the caller's transaction.
    pub(super) async fn insert_resource(
        tx: &mut Transaction<'_, Postgres>,
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
            .bind(&new.tags)
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
        tx: &mut Transaction<'_, Postgres>,
        id: ResourceId,
    ) -> StoreResult<Resource> {
        let row: Option<Row> = sqlx::query_as(&format!("{} FOR UPDATE", *sql::SELECT_RESOURCE))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        row.ok_or_else(|| resource_not_found(id))?.try_into()
    }

    /// Writes `next` over the stored resource `current` (same id), returning what was stored.
    pub(super) async fn write_resource(
        tx: &mut Transaction<'_, Postgres>,
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
            .bind(&next.tags)
            .bind(next.active)
            .bind(next.expires_at)
            .bind(now())
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| resource_conflict(e, &current.source_system))?;
        row.try_into()
    }

    pub(super) async fn audit(
        tx: &mut Transaction<'_, Postgres>,
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
        tx: &mut Transaction<'_, Postgres>,
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
        tx: &mut Transaction<'_, Postgres>,
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
        tx: &mut Transaction<'_, Postgres>,
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
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("resource_identifier_key") => StoreError::conflict(ConflictKind::Duplicate, format!(
            "a live resource of this type with this identifier already exists in source system \"{source_system}\""
        )),
        Some("resource_external_id_key") => StoreError::conflict(ConflictKind::Duplicate, format!(
            "a live resource with this external_id already exists in source system \"{source_system}\""
        )),
        _ => e.into(),
    }
}

impl super::records::Backed for PgStore {
    fn db(&self) -> &super::db::Db {
        &self.db
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn cancel_statements(&self, tag: &str) -> StoreResult<()> {
        sqlx::query(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .bind(tag)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

impl PgStore {
    /// Commits a backend transaction, stamping its changes with their commit position.
    pub(super) async fn finish(mut tx: Transaction<'_, Postgres>) -> StoreResult<()> {
        sqlx::Executor::execute(&mut *tx, super::db::COMMIT_STAMP).await?;
        tx.commit().await?;
        Ok(())
    }
}
