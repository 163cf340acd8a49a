//! The PostgreSQL backend: native types, row locks for read-modify-write, one pool.

use super::lifecycle_sync;
use super::rows::{self, AuditRow, MembershipRow, OperationRow, ResourceRow, TokenRow};
use super::{
    now, resource_not_found, sql, AuditStore, Deletion, MembershipChange, MembershipStore,
    OperationStore, ResourceStore, Store, StoreError, StoreResult, TokenStore,
};
use crate::domain::audit::{target, AuditEntry, AuditFilter, AuditRecord};
use crate::domain::change::{ChangeKind, ChangeRecord};
use crate::domain::lifecycle::Policy;
use crate::domain::membership::{Membership, MembershipFilter, MembershipInput, MembershipWrite};
use crate::domain::operation::{Operation, OperationCounts, OperationFilter, OperationType};
use crate::domain::page::PageRequest;
use crate::domain::resource::{NewResource, Resource, ResourceFilter, ResourcePatch, ResourceType};
use crate::domain::token::{Actor, NewToken, Scope, SecretHash, Token};
use crate::domain::{OperationId, ResourceId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use uuid::Uuid;

mod changes;
mod engine;

pub use changes::STAMP as COMMIT_STAMP;
mod resource_sync;

type Row = ResourceRow<Vec<String>>;

/// Tags are a text array: containment uses the GIN index.
const TAG_FILTER: sql::TagFilter = ("tags @> ARRAY[", "]::text[]");

/// Roster's store on PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
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
        Ok(Self { pool })
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

    /// Ends every active membership of a resource (as group and as member), with its changes.
    async fn end_memberships_of(
        tx: &mut Transaction<'_, Postgres>,
        actor: &Actor,
        id: ResourceId,
        op: OperationId,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let sql = format!(
            "WITH ended AS ({} RETURNING group_id, member_id, source) \
             INSERT INTO change (at, kind, group_id, member_id, source_system, operation_id, \
             token_name) SELECT $2, {}, group_id, member_id, source, $3, $4 FROM ended",
            sql::END_MEMBERSHIPS_OF,
            ChangeKind::MembershipRemoved.code()
        );
        let done = sqlx::query(&sql)
            .bind(id)
            .bind(at)
            .bind(op)
            .bind(&actor.token_name)
            .execute(&mut **tx)
            .await?;
        Ok(i64::try_from(done.rows_affected()).unwrap_or(i64::MAX))
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

    /// Locks the group and the member for a membership write and checks that both are live.
    async fn lock_membership_ends(
        tx: &mut Transaction<'_, Postgres>,
        group_id: ResourceId,
        member_id: ResourceId,
    ) -> StoreResult<Resource> {
        let group = Self::lock_resource(tx, group_id).await?;
        let member: Option<Row> = sqlx::query_as(&format!("{} FOR SHARE", *sql::SELECT_RESOURCE))
            .bind(member_id)
            .fetch_optional(&mut **tx)
            .await?;
        let member: Resource = member
            .ok_or_else(|| resource_not_found(member_id))?
            .try_into()?;
        crate::domain::membership::check_ends(&group, &member)?;
        Ok(group)
    }
}

/// Turns a unique violation on a resource key into a conflict that names the key.
fn resource_conflict(e: sqlx::Error, source_system: &str) -> StoreError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("resource_identifier_key") => StoreError::Conflict(format!(
            "a live resource of this type with this identifier already exists in source system \"{source_system}\""
        )),
        Some("resource_external_id_key") => StoreError::Conflict(format!(
            "a live resource with this external_id already exists in source system \"{source_system}\""
        )),
        _ => e.into(),
    }
}

#[async_trait]
impl ResourceStore for PgStore {
    async fn create_resource(&self, actor: &Actor, new: &NewResource) -> StoreResult<Resource> {
        let mut tx = self.pool.begin().await?;
        let resource = Self::insert_resource(&mut tx, actor, new).await?;
        Self::finish(tx).await?;
        Ok(resource)
    }

    async fn get_resource(&self, id: ResourceId) -> StoreResult<Resource> {
        let row: Option<Row> = sqlx::query_as(&sql::SELECT_RESOURCE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or_else(|| resource_not_found(id))?.try_into()
    }

    async fn list_resources(
        &self,
        filter: &ResourceFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<Resource>> {
        let mut q = sql::resource_list(filter, page, TAG_FILTER);
        let rows: Vec<Row> = q.build_query_as().fetch_all(&self.pool).await?;
        rows::resources(rows)
    }

    async fn update_resource(
        &self,
        actor: &Actor,
        id: ResourceId,
        patch: &ResourcePatch,
        policy: &Policy,
    ) -> StoreResult<Resource> {
        let mut tx = self.pool.begin().await?;
        let updated = lifecycle_sync::update(&mut tx, actor, id, patch, policy).await?;
        Self::finish(tx).await?;
        Ok(updated)
    }

    async fn delete_resource(
        &self,
        actor: &Actor,
        id: ResourceId,
        policy: &Policy,
    ) -> StoreResult<Deletion> {
        let mut tx = self.pool.begin().await?;
        lifecycle_sync::prepare(&mut tx, id).await?;
        let current = Self::lock_resource(&mut tx, id).await?;
        if current.deleted {
            return Ok(Deletion {
                resource: current,
                operation: None,
            });
        }
        let at = now();
        let group_id = (current.ty == ResourceType::Group).then_some(id);
        let op = Self::insert_operation(
            &mut tx,
            actor,
            OperationType::Delete,
            group_id,
            Some(&current.source_system),
        )
        .await?;
        let record = AuditRecord::new("resource.delete", target::resource(id))
            .with_detail(serde_json::json!({ "operation_id": op }));
        Self::audit(&mut tx, actor, record).await?;
        let row: Row = sqlx::query_as(&sql::SOFT_DELETE_RESOURCE)
            .bind(id)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
        let ended = Self::end_memberships_of(&mut tx, actor, id, op, at).await?;
        let resource: Resource = row.try_into()?;
        let change =
            ChangeRecord::resource(ChangeKind::ResourceDeleted, &resource).with_operation(op);
        Self::log_change(&mut tx, actor, change).await?;
        if resource.active {
            lifecycle_sync::hr_trigger(&mut tx, actor, &resource, policy).await?;
        }
        let counts = OperationCounts {
            removed: ended,
            ..OperationCounts::default()
        };
        let operation = Self::set_counts(&mut tx, op, counts).await?;
        Self::finish(tx).await?;
        Ok(Deletion {
            resource,
            operation: Some(operation),
        })
    }

    async fn restore_resource(&self, actor: &Actor, id: ResourceId) -> StoreResult<Resource> {
        let mut tx = self.pool.begin().await?;
        let current = Self::lock_resource(&mut tx, id).await?;
        if !current.deleted {
            return Ok(current);
        }
        Self::audit(
            &mut tx,
            actor,
            AuditRecord::new("resource.restore", target::resource(id)),
        )
        .await?;
        let row: Row = sqlx::query_as(&sql::RESTORE_RESOURCE)
            .bind(id)
            .bind(now())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| resource_conflict(e, &current.source_system))?;
        let restored: Resource = row.try_into()?;
        let change = ChangeRecord::resource(ChangeKind::ResourceRestored, &restored);
        Self::log_change(&mut tx, actor, change).await?;
        Self::finish(tx).await?;
        Ok(restored)
    }
}

#[async_trait]
impl MembershipStore for PgStore {
    async fn list_members(
        &self,
        group_id: ResourceId,
        filter: &MembershipFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<Membership>> {
        let rows: Vec<MembershipRow> =
            sql::membership_list(sql::MembershipSide::MembersOf(group_id), filter, page)
                .build_query_as()
                .fetch_all(&self.pool)
                .await?;
        // An empty page is a 404 when the resource itself does not exist; a page with rows needs
        // no second query.
        if rows.is_empty() {
            self.get_resource(group_id).await?;
        }
        Ok(rows.into_iter().map(Membership::from).collect())
    }

    async fn list_groups_of(
        &self,
        member_id: ResourceId,
        filter: &MembershipFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<Membership>> {
        let rows: Vec<MembershipRow> =
            sql::membership_list(sql::MembershipSide::GroupsOf(member_id), filter, page)
                .build_query_as()
                .fetch_all(&self.pool)
                .await?;
        // An empty page is a 404 when the resource itself does not exist; a page with rows needs
        // no second query.
        if rows.is_empty() {
            self.get_resource(member_id).await?;
        }
        Ok(rows.into_iter().map(Membership::from).collect())
    }

    async fn get_membership(
        &self,
        group_id: ResourceId,
        member_id: ResourceId,
    ) -> StoreResult<Membership> {
        let row: Option<MembershipRow> = sqlx::query_as(&sql::SELECT_MEMBERSHIP)
            .bind(group_id)
            .bind(member_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Membership::from)
            .ok_or_else(|| super::membership_not_found(group_id, member_id))
    }

    async fn put_membership(
        &self,
        actor: &Actor,
        group_id: ResourceId,
        member_id: ResourceId,
        input: &MembershipInput,
    ) -> StoreResult<MembershipChange> {
        let mut tx = self.pool.begin().await?;
        let group = Self::lock_membership_ends(&mut tx, group_id, member_id).await?;
        let before: Option<MembershipRow> = sqlx::query_as(&sql::SELECT_MEMBERSHIP)
            .bind(group_id)
            .bind(member_id)
            .fetch_optional(&mut *tx)
            .await?;
        let before = before.map(Membership::from);
        let op = Self::insert_operation(
            &mut tx,
            actor,
            OperationType::PartialUpdate,
            Some(group_id),
            Some(&group.source_system),
        )
        .await?;
        let record = AuditRecord::new("membership.put", target::membership(group_id, member_id))
            .with_detail(serde_json::json!({ "operation_id": op }));
        Self::audit(&mut tx, actor, record).await?;
        let row: MembershipRow = sqlx::query_as(&sql::UPSERT_MEMBERSHIP)
            .bind(&group.source_system)
            .bind(group_id)
            .bind(member_id)
            .bind(&input.member_name)
            .bind(input.contributing)
            .bind(op)
            .bind(now())
            .fetch_one(&mut *tx)
            .await?;
        let membership = Membership::from(row);
        let write = MembershipWrite::classify(before.as_ref(), &membership);
        if let Some(kind) = write.change_kind() {
            let change = ChangeRecord::membership(kind, &membership, &group.source_system, op);
            Self::log_change(&mut tx, actor, change).await?;
        }
        Self::set_counts(&mut tx, op, write.counts()).await?;
        Self::finish(tx).await?;
        Ok(MembershipChange {
            membership,
            write,
            operation_id: op,
        })
    }

    async fn remove_membership(
        &self,
        actor: &Actor,
        group_id: ResourceId,
        member_id: ResourceId,
    ) -> StoreResult<MembershipChange> {
        let mut tx = self.pool.begin().await?;
        let group = Self::lock_resource(&mut tx, group_id).await?;
        let op = Self::insert_operation(
            &mut tx,
            actor,
            OperationType::PartialUpdate,
            Some(group_id),
            Some(&group.source_system),
        )
        .await?;
        let record = AuditRecord::new("membership.remove", target::membership(group_id, member_id))
            .with_detail(serde_json::json!({ "operation_id": op }));
        Self::audit(&mut tx, actor, record).await?;
        let row: Option<MembershipRow> = sqlx::query_as(&sql::REMOVE_MEMBERSHIP)
            .bind(group_id)
            .bind(member_id)
            .bind(now())
            .bind(op)
            .fetch_optional(&mut *tx)
            .await?;
        let membership =
            Membership::from(row.ok_or_else(|| super::membership_not_found(group_id, member_id))?);
        let change = ChangeRecord::membership(
            ChangeKind::MembershipRemoved,
            &membership,
            &group.source_system,
            op,
        );
        Self::log_change(&mut tx, actor, change).await?;
        Self::set_counts(&mut tx, op, MembershipWrite::Removed.counts()).await?;
        Self::finish(tx).await?;
        Ok(MembershipChange {
            membership,
            write: MembershipWrite::Removed,
            operation_id: op,
        })
    }
}

#[async_trait]
impl OperationStore for PgStore {
    async fn list_operations(
        &self,
        filter: &OperationFilter,
        page: &PageRequest<i64>,
    ) -> StoreResult<Vec<Operation>> {
        let mut q = sql::operation_list(filter, page);
        let rows: Vec<OperationRow> = q.build_query_as().fetch_all(&self.pool).await?;
        rows::operations(rows)
    }

    async fn get_operation(&self, id: OperationId) -> StoreResult<Operation> {
        let row: Option<OperationRow> = sqlx::query_as(&sql::SELECT_OPERATION)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or_else(|| StoreError::NotFound(format!("operation {id} does not exist")))?
            .try_into()
    }

    async fn operation_attempts(&self, id: OperationId) -> StoreResult<u32> {
        let attempts: Option<i32> =
            sqlx::query_scalar("SELECT attempts FROM operation WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(attempts.map_or(0, |a| u32::try_from(a).unwrap_or(0)))
    }
}

type TokenRowOf = TokenRow<Vec<String>>;

fn scope_names(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(|s| s.name().to_owned()).collect()
}

fn token_not_found(what: &str) -> StoreError {
    StoreError::NotFound(format!("token {what} does not exist"))
}

#[async_trait]
impl TokenStore for PgStore {
    async fn create_token(
        &self,
        actor: &Actor,
        new: &NewToken,
        hash: &SecretHash,
    ) -> StoreResult<Token> {
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        let record =
            AuditRecord::new("token.create", target::token(id)).with_detail(new.audit_detail());
        Self::audit(&mut tx, actor, record).await?;
        let row: TokenRowOf = sqlx::query_as(&sql::INSERT_TOKEN)
            .bind(id)
            .bind(new.name.trim())
            .bind(&hash.0)
            .bind(scope_names(&new.scopes))
            .bind(&new.source_system)
            .bind(new.expires_at)
            .bind(now())
            .bind(new.read_scope.name())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match e.as_database_error() {
                Some(d) if d.is_unique_violation() => StoreError::Conflict(format!(
                    "a token named {:?} exists already (names are never reused)",
                    new.name.trim()
                )),
                _ => e.into(),
            })?;
        Self::finish(tx).await?;
        row.try_into()
    }

    async fn bootstrap_token(&self, name: &str, hash: &SecretHash) -> StoreResult<bool> {
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(sql::INSERT_BOOTSTRAP_TOKEN)
            .bind(id)
            .bind(name)
            .bind(&hash.0)
            .bind(vec![Scope::Admin.name().to_owned()])
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if inserted {
            let record = AuditRecord::new("token.bootstrap", target::token(id));
            Self::audit(&mut tx, &Actor::system("roster"), record).await?;
        }
        Self::finish(tx).await?;
        Ok(inserted)
    }

    async fn list_tokens(&self, page: &PageRequest<Uuid>) -> StoreResult<Vec<Token>> {
        let rows: Vec<TokenRowOf> = sqlx::query_as(&sql::LIST_TOKENS)
            .bind(page.after)
            .bind(page.fetch())
            .fetch_all(&self.pool)
            .await?;
        rows::tokens(rows)
    }

    async fn get_token(&self, id: Uuid) -> StoreResult<Token> {
        let row: Option<TokenRowOf> = sqlx::query_as(&sql::SELECT_TOKEN)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or_else(|| token_not_found(&id.to_string()))?
            .try_into()
    }

    async fn find_token(&self, id_or_name: &str) -> StoreResult<Token> {
        let row: Option<TokenRowOf> = match Uuid::parse_str(id_or_name) {
            Ok(id) => sqlx::query_as(&sql::SELECT_TOKEN).bind(id),
            Err(_) => sqlx::query_as(&sql::SELECT_TOKEN_BY_NAME).bind(id_or_name),
        }
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| token_not_found(&format!("{id_or_name:?}")))?
            .try_into()
    }

    async fn revoke_token(&self, actor: &Actor, id: Uuid) -> StoreResult<Token> {
        let mut tx = self.pool.begin().await?;
        let row: Option<TokenRowOf> = sqlx::query_as(&sql::REVOKE_TOKEN)
            .bind(id)
            .bind(now())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return self.get_token(id).await;
        };
        Self::audit(
            &mut tx,
            actor,
            AuditRecord::new("token.revoke", target::token(id)),
        )
        .await?;
        Self::finish(tx).await?;
        row.try_into()
    }

    async fn token_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<(Token, Vec<u8>)>> {
        let row: Option<rows::TokenHashRow<Vec<String>>> =
            sqlx::query_as(&sql::SELECT_TOKEN_BY_HASH)
                .bind(&hash.0)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok((Token::try_from(r.token)?, r.secret_hash)))
            .transpose()
    }

    async fn touch_token(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(sql::TOUCH_TOKEN)
            .bind(id)
            .bind(at)
            .bind(at - chrono::Duration::minutes(1))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = sql::audit_list(filter, page)
            .build_query_as()
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
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
