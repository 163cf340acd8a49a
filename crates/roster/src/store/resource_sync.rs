//! Account sync's flows, written once for both backends over [`Conn`]: resolve the staged lines
//! to resources, check them, hold past the deletion threshold, and apply the diff set-based.

use super::db::{Db, Row, Tx};
use super::lifecycle_sync;
use super::query::Sql;
use super::records;
use super::resource_sql::{self as rsql, Dialect, Statement, Values};
use super::rows::ResourceRow;
use super::staging;
use super::{ApplyOutcome, StoreError, StoreResult};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::ChangeRecord;
use crate::domain::full_update::{LineError, PreviewAction, Threshold};
use crate::domain::lifecycle::Policy;
use crate::domain::operation::{
    FullUpdateParams, OnError, Operation, OperationCounts, OperationType,
};
use crate::domain::resource::{NewResource, Resource};
use crate::domain::resource_sync::{ResourcePreviewEntry, ResourceScope, StagedResource};
use crate::domain::token::Actor;
use crate::domain::{OperationId, ResourceId};
use crate::store::engine_sql::{self as esql, Staging};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Map;
use sqlx::types::Json;
use uuid::Uuid;

/// The statements account sync runs, on a transaction of either backend.
#[async_trait]
pub(super) trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns its row count.
    async fn run(&mut self, statement: &Statement, values: &Values) -> StoreResult<u64>;
    async fn run_sql(&mut self, sql: &str) -> StoreResult<()>;
    async fn flag(&mut self, statement: &Statement, values: &Values) -> StoreResult<bool>;
    async fn count(&mut self, statement: &Statement, values: &Values) -> StoreResult<i64>;
    async fn counts(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<(i64, i64, i64)>;
    async fn removals(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<Vec<(Uuid, Option<String>, Option<String>)>>;
    #[allow(clippy::type_complexity)]
    async fn additions(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<Vec<(i32, i32, Option<Uuid>, Option<String>, Option<String>)>>;
    /// The rejected lines of an operation, in (chunk, line) order, at most `limit`.
    async fn rejected_lines(&mut self, op: OperationId, limit: i64) -> StoreResult<Vec<LineError>>;
    /// The rows of a query, each read as a `T` (which both backends can read).
    async fn fetch<T: Row>(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<Vec<T>>;
    /// Resources selected with `RESOURCE_COLUMNS`.
    async fn resources(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<Vec<crate::domain::resource::Resource>>;
    /// A resource, locked for the transaction where the backend locks rows.
    async fn lock(&mut self, id: ResourceId) -> StoreResult<crate::domain::resource::Resource>;
    /// A resource, read without a lock.
    async fn get(&mut self, id: ResourceId) -> StoreResult<crate::domain::resource::Resource>;
    /// Writes `next` over the stored `current` (the same resource); what was stored.
    async fn write_resource(
        &mut self,
        current: &crate::domain::resource::Resource,
        next: &crate::domain::resource::Resource,
    ) -> StoreResult<crate::domain::resource::Resource>;
    async fn audit(
        &mut self,
        actor: &crate::domain::token::Actor,
        record: crate::domain::audit::AuditRecord,
    ) -> StoreResult<()>;
    /// Creates a resource with its audit and change records.
    async fn insert_resource(
        &mut self,
        actor: &crate::domain::token::Actor,
        new: &crate::domain::resource::NewResource,
    ) -> StoreResult<crate::domain::resource::Resource>;
    /// Whether a live user of `source` other than `except` has `name` as its identifier, without
    /// regard to case.
    async fn user_name_taken(
        &mut self,
        source: &str,
        name: &str,
        except: Option<ResourceId>,
    ) -> StoreResult<bool>;
    /// A resource's SCIM document (empty when it has none).
    async fn scim_doc(
        &mut self,
        id: ResourceId,
    ) -> StoreResult<serde_json::Map<String, serde_json::Value>>;
    /// Stores a resource's SCIM document, as a modification of the resource.
    async fn write_scim_doc(
        &mut self,
        id: ResourceId,
        doc: &serde_json::Map<String, serde_json::Value>,
    ) -> StoreResult<()>;
    async fn log_change(
        &mut self,
        actor: &crate::domain::token::Actor,
        change: crate::domain::change::ChangeRecord,
    ) -> StoreResult<()>;
    /// Serialises the transactions that take `key` (PostgreSQL: an advisory lock; SQLite has
    /// one writer).
    async fn serialize(&mut self, key: &str) -> StoreResult<()>;
    async fn operation(&mut self, id: OperationId) -> StoreResult<Operation>;
}

#[async_trait]
impl Conn for Tx {
    fn dialect(&self) -> Dialect {
        Tx::dialect(self)
    }

    async fn fetch<T: Row>(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<Vec<T>> {
        self.fetch_all(&rsql::to_sql(statement, values)).await
    }

    async fn resources(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<Vec<Resource>> {
        let rows: Vec<ResourceRow> = self.fetch_all(&rsql::to_sql(statement, values)).await?;
        super::rows::resources(rows)
    }

    async fn lock(&mut self, id: ResourceId) -> StoreResult<Resource> {
        records::lock(self, id).await
    }

    async fn write_resource(
        &mut self,
        current: &Resource,
        next: &Resource,
    ) -> StoreResult<Resource> {
        records::write_resource(self, current, next).await
    }

    async fn get(&mut self, id: ResourceId) -> StoreResult<Resource> {
        records::get(self, id).await
    }

    async fn audit(&mut self, actor: &Actor, record: AuditRecord) -> StoreResult<()> {
        records::audit(self, actor, record).await
    }

    async fn insert_resource(&mut self, actor: &Actor, new: &NewResource) -> StoreResult<Resource> {
        records::insert_resource(self, actor, new).await
    }

    async fn user_name_taken(
        &mut self,
        source: &str,
        name: &str,
        except: Option<ResourceId>,
    ) -> StoreResult<bool> {
        let taken = Sql::new(
            "SELECT EXISTS (SELECT 1 FROM resource WHERE source_system = $1 AND type = 1 \
             AND NOT deleted AND lower(identifier) = lower($2) AND id <> $3)",
        )
        .bind(source)
        .bind(name)
        .bind(except.map_or(Uuid::nil(), |id| id.0));
        self.scalar(&taken).await
    }

    async fn scim_doc(&mut self, id: ResourceId) -> StoreResult<Map<String, serde_json::Value>> {
        let select = Sql::new("SELECT scim FROM resource WHERE id = $1").bind(id);
        let doc: Option<(Option<Json<Map<String, serde_json::Value>>>,)> =
            self.fetch_optional(&select).await?;
        Ok(super::scim::doc_of(doc.and_then(|(d,)| d)))
    }

    async fn write_scim_doc(
        &mut self,
        id: ResourceId,
        doc: &Map<String, serde_json::Value>,
    ) -> StoreResult<()> {
        let update = Sql::new("UPDATE resource SET scim = $2, modified = $3 WHERE id = $1")
            .bind(id)
            .bind(serde_json::Value::Object(doc.clone()))
            .bind(super::now());
        self.execute(&update).await?;
        Ok(())
    }

    async fn log_change(&mut self, actor: &Actor, change: ChangeRecord) -> StoreResult<()> {
        records::log_change(self, actor, change).await
    }

    async fn operation(&mut self, id: OperationId) -> StoreResult<Operation> {
        records::operation(self, id).await
    }

    async fn serialize(&mut self, key: &str) -> StoreResult<()> {
        if Tx::dialect(self) == Dialect::Postgres {
            let lock = Sql::new("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(key);
            self.execute(&lock).await?;
        }
        Ok(())
    }

    async fn run(&mut self, statement: &Statement, values: &Values) -> StoreResult<u64> {
        self.execute(&rsql::to_sql(statement, values)).await
    }

    async fn run_sql(&mut self, sql: &str) -> StoreResult<()> {
        self.batch(sql).await
    }

    async fn flag(&mut self, statement: &Statement, values: &Values) -> StoreResult<bool> {
        self.scalar(&rsql::to_sql(statement, values)).await
    }

    async fn count(&mut self, statement: &Statement, values: &Values) -> StoreResult<i64> {
        self.scalar(&rsql::to_sql(statement, values)).await
    }

    async fn counts(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<(i64, i64, i64)> {
        self.fetch_one(&rsql::to_sql(statement, values)).await
    }

    async fn removals(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<Vec<(Uuid, Option<String>, Option<String>)>> {
        self.fetch_all(&rsql::to_sql(statement, values)).await
    }

    async fn additions(
        &mut self,
        statement: &Statement,
        values: &Values,
    ) -> StoreResult<Vec<(i32, i32, Option<Uuid>, Option<String>, Option<String>)>> {
        self.fetch_all(&rsql::to_sql(statement, values)).await
    }

    async fn rejected_lines(&mut self, op: OperationId, limit: i64) -> StoreResult<Vec<LineError>> {
        staging::rejected_lines(self, op, (-1, -1), limit).await
    }
}

/// Serialises resource operations of one source system across processes (PostgreSQL's advisory
/// lock; SQLite has one writer).
async fn lock_source(tx: &mut Tx, source: &str) -> StoreResult<()> {
    let lock = Sql::new("SELECT pg_advisory_xact_lock(hashtextextended('resources:' || $1, 0))")
        .bind(source);
    tx.advisory_lock(&lock).await
}

/// Applies a claimed full-update of resources in one transaction; a lifecycle authority's
/// records it deletes or deactivates end their identities in the same transaction.
pub(super) async fn apply_update(
    db: &Db,
    op: &Operation,
    policy: &Policy,
) -> StoreResult<ApplyOutcome> {
    let params = esql::params(op)?;
    db.analyze_if_stale("resource").await?;
    let mut tx = db.write().await?;
    let source = op.source_system.as_deref().unwrap_or_default();
    lock_source(&mut tx, source).await?;
    lifecycle_sync::before_sync(&mut tx, source).await?;
    let at = super::now();
    let outcome = apply_full_update(&mut tx, op, &params, at).await?;
    let actor = Actor::system(op.token_name.as_deref().unwrap_or("roster"));
    lifecycle_sync::after_sync(&mut tx, &actor, source, op.id, at, policy).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// A page of what a full-update of resources not yet applied would do; changes nothing.
pub(super) async fn preview_page(
    db: &Db,
    op: &Operation,
    action: PreviewAction,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<ResourcePreviewEntry>> {
    let mut tx = db.write().await?;
    let rows = preview(&mut tx, op, action, after, limit).await?;
    tx.rollback().await?;
    Ok(rows)
}

/// How many resources a full-update not yet applied would create or restore, and delete;
/// changes nothing.
pub(super) async fn preview_totals(db: &Db, op: &Operation) -> StoreResult<(i64, i64)> {
    let mut tx = db.write().await?;
    let totals = totals(&mut tx, op).await?;
    tx.rollback().await?;
    Ok(totals)
}

/// Upserts and deletes resources of one source system in one transaction, as one
/// partial-update operation; refused whole when a line cannot apply.
pub(super) async fn changes(
    db: &Db,
    actor: &Actor,
    description: Option<String>,
    scope: &ResourceScope,
    lines: &[StagedResource],
    policy: &Policy,
) -> StoreResult<Operation> {
    let mut tx = db.write().await?;
    lock_source(&mut tx, &scope.source_system).await?;
    lifecycle_sync::before_sync(&mut tx, &scope.source_system).await?;
    let op = records::insert_operation(
        &mut tx,
        actor,
        OperationType::PartialUpdate,
        None,
        Some(&scope.source_system),
    )
    .await?;
    let update =
        Sql::new("UPDATE operation SET target = 'resources', description = $2 WHERE id = $1")
            .bind(op)
            .bind(description);
    tx.execute(&update).await?;
    let staging = Staging(op);
    tx.batch(&rsql::create_staging(tx.dialect(), &staging))
        .await?;
    staging::stage_lines(&mut tx, &staging, lines).await?;
    let at = super::now();
    let counts = apply_changes(&mut tx, op, scope, &actor.token_name, at).await?;
    lifecycle_sync::after_sync(&mut tx, actor, &scope.source_system, op, at, policy).await?;
    let record = AuditRecord::new("operation.partial-update", target::operation(op))
        .with_detail(serde_json::json!({ "resources": lines.len() }));
    records::audit(&mut tx, actor, record).await?;
    let operation = records::set_counts(&mut tx, op, counts).await?;
    tx.commit().await?;
    Ok(operation)
}

/// The scope of a full-update of resources, from its parameters.
pub(super) fn scope_of(op: &Operation, params: &FullUpdateParams) -> ResourceScope {
    ResourceScope {
        source_system: op.source_system.clone().unwrap_or_default(),
        ty: params.resource_type,
        subtype: params.resource_subtype,
        partial: false,
    }
}

/// The values an operation's statements bind.
pub(super) fn values(
    op: OperationId,
    scope: &ResourceScope,
    token: Option<&str>,
    fence: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Values {
    Values {
        source: scope.source_system.clone(),
        op: op.0,
        at,
        token: token.map(str::to_owned),
        fence,
        ty: scope.ty.map(|t| t.code()),
        subtype: scope.subtype.map(|s| s.code()),
        after_id: Uuid::nil(),
        after_chunk: -1,
        after_line: -1,
        limit: 0,
        id: Uuid::nil(),
        other: None,
        bound: None,
        reason: None,
        cause: 0,
    }
}

/// With `create_missing`: creates the missing members of a membership full-update, resolves the
/// lines that name them and records their creation, inside the caller's transaction.
pub(super) async fn create_missing<C: Conn>(
    conn: &mut C,
    op: &Operation,
    params: &FullUpdateParams,
) -> StoreResult<()> {
    let staging = Staging(op.id);
    let mut values = Values::about(Uuid::nil(), None, super::now(), op.token_name.as_deref());
    values.op = op.id.0;
    values.bound = params.bound_source.clone();
    conn.run(&esql::create_missing(conn.dialect(), &staging), &values)
        .await?;
    for (statement, binds_source) in esql::resolve_statements(&staging) {
        if !binds_source {
            conn.run_sql(&statement).await?;
        }
    }
    conn.run(&esql::log_created(&staging), &values).await?;
    Ok(())
}

/// Resolves every line to the resource it names, records the lines that cannot apply and removes
/// them from the staging table. Returns how many lines are rejected in all.
pub(super) async fn resolve<C: Conn>(
    conn: &mut C,
    staging: &Staging,
    values: &Values,
    partial: bool,
) -> StoreResult<i64> {
    for statement in rsql::resolve_live(staging) {
        conn.run(&statement, values).await?;
    }
    if conn.flag(&rsql::has_deleted(), values).await? {
        for statement in rsql::resolve_deleted(staging) {
            conn.run(&statement, values).await?;
        }
    }
    conn.run_sql(&rsql::index_staging(staging)).await?;
    if conn.dialect() == Dialect::Postgres {
        // A staging table is new: without statistics the planner may take it for empty and
        // probe it once per resource.
        conn.run_sql(&format!("ANALYZE {staging}")).await?;
    }
    let mark_rejected = rsql::mark_rejected(staging);
    let live = conn.flag(&rsql::has_live(), values).await?;
    for check in rsql::checks(staging, partial, live) {
        if conn.run(&check, values).await? > 0 {
            conn.run(&mark_rejected, values).await?;
        }
    }
    conn.count(
        &rsql::compile("SELECT count(*) FROM operation_rejection WHERE operation_id = @op"),
        values,
    )
    .await
}

/// Deletes (first, freeing identifiers), restores, updates and creates, each step with its
/// change records.
async fn write<C: Conn>(
    conn: &mut C,
    staging: &Staging,
    values: &Values,
    partial: bool,
) -> StoreResult<OperationCounts> {
    let d = conn.dialect();
    let mut counts = OperationCounts::default();
    for (slot, steps) in [
        (&mut counts.removed, rsql::delete(d, staging, partial)),
        (&mut counts.reactivated, rsql::restore(d, staging)),
        (&mut counts.updated, rsql::update(d, staging)),
        (&mut counts.added, rsql::insert(d, staging)),
    ] {
        let mut last = 0;
        for statement in &steps {
            last = conn.run(statement, values).await?;
        }
        *slot = i64::try_from(last).unwrap_or(i64::MAX);
    }
    Ok(counts)
}

/// Applies a claimed full-update of resources inside the caller's transaction. A failed or held
/// outcome leaves only the recorded rejections (commit either way).
pub(super) async fn apply_full_update<C: Conn>(
    conn: &mut C,
    op: &Operation,
    params: &FullUpdateParams,
    at: DateTime<Utc>,
) -> StoreResult<ApplyOutcome> {
    let staging = Staging(op.id);
    let scope = scope_of(op, params);
    let values = values(op.id, &scope, op.token_name.as_deref(), op.created, at);
    let rejected = resolve(conn, &staging, &values, false).await?;
    let mut counts = OperationCounts {
        rejected,
        ..OperationCounts::default()
    };
    if rejected > 0 && params.on_error == OnError::Fail {
        return Ok(ApplyOutcome::Failed {
            reason: esql::rejection_reason(op.id, rejected),
            counts,
        });
    }
    let (live, snapshot, to_remove) = conn
        .counts(&rsql::threshold_counts(&staging), &values)
        .await?;
    if !params.approved {
        if let Some(reason) = hold(&params.threshold, &scope, live, snapshot, to_remove) {
            counts.removed = to_remove;
            return Ok(ApplyOutcome::Pending { reason, counts });
        }
    }
    let written = write(conn, &staging, &values, false).await?;
    counts.added = written.added;
    counts.reactivated = written.reactivated;
    counts.updated = written.updated;
    counts.removed = written.removed;
    counts.unchanged = snapshot - written.added - written.reactivated - written.updated;
    Ok(ApplyOutcome::Complete(counts))
}

fn hold(
    threshold: &Threshold,
    scope: &ResourceScope,
    live: i64,
    snapshot: i64,
    to_remove: i64,
) -> Option<String> {
    threshold.hold(
        &scope.describe(),
        "live resources",
        live,
        snapshot,
        to_remove,
    )
}

/// Applies the staged lines of a partial-update of resources inside the caller's transaction;
/// refused (the caller rolls back) when a line cannot apply.
pub(super) async fn apply_changes<C: Conn>(
    conn: &mut C,
    op: OperationId,
    scope: &ResourceScope,
    token: &str,
    at: DateTime<Utc>,
) -> StoreResult<OperationCounts> {
    let staging = Staging(op);
    // Explicit changes apply whatever wrote the resources before.
    let values = values(op, scope, Some(token), far_future(), at);
    let rejected = resolve(conn, &staging, &values, true).await?;
    if rejected > 0 {
        let lines = conn.rejected_lines(op, 100).await?;
        return Err(StoreError::InvalidLines(
            format!("{rejected} resource line(s) cannot apply; nothing was changed"),
            lines,
        ));
    }
    let lines = conn
        .count(
            &rsql::compile(&format!(
                "SELECT count(*) FROM {staging} WHERE NOT remove AND NOT rejected"
            )),
            &values,
        )
        .await?;
    let mut counts = write(conn, &staging, &values, true).await?;
    counts.unchanged = lines - counts.added - counts.reactivated - counts.updated;
    conn.run_sql(&format!("DROP TABLE {staging}")).await?;
    Ok(counts)
}

/// A fence no write is newer than.
fn far_future() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A page of what a full-update of resources not yet applied would do; resolved inside the
/// caller's transaction, which the caller rolls back.
pub(super) async fn preview<C: Conn>(
    conn: &mut C,
    op: &Operation,
    action: PreviewAction,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<ResourcePreviewEntry>> {
    let params = esql::params(op)?;
    let staging = Staging(op.id);
    let mut values = values(
        op.id,
        &scope_of(op, &params),
        None,
        op.created,
        super::now(),
    );
    resolve(conn, &staging, &values, false).await?;
    values.limit = limit;
    let invalid = || {
        StoreError::Invalid(crate::domain::InvalidInput::new(
            "the preview cursor is not valid",
        ))
    };
    match action {
        PreviewAction::Remove => {
            if let Some(after) = after {
                values.after_id = Uuid::parse_str(after).map_err(|_| invalid())?;
            }
            let rows = conn
                .removals(&rsql::preview_removals(&staging), &values)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(id, identifier, external_id)| ResourcePreviewEntry {
                    resource_id: Some(ResourceId(id)),
                    identifier,
                    external_id,
                    action,
                    chunk: None,
                    line: None,
                })
                .collect())
        }
        PreviewAction::Add => {
            if let Some(after) = after {
                let (chunk, line) = after
                    .split_once(':')
                    .and_then(|(c, l)| Some((c.parse().ok()?, l.parse().ok()?)))
                    .ok_or_else(invalid)?;
                values.after_chunk = chunk;
                values.after_line = line;
            }
            let rows = conn
                .additions(&rsql::preview_additions(&staging), &values)
                .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(chunk, line, id, identifier, external_id)| ResourcePreviewEntry {
                        resource_id: id.map(ResourceId),
                        identifier,
                        external_id,
                        action,
                        chunk: Some(chunk),
                        line: Some(line),
                    },
                )
                .collect())
        }
    }
}

/// How many resources a full-update not yet applied would create or restore, and delete.
pub(super) async fn totals<C: Conn>(conn: &mut C, op: &Operation) -> StoreResult<(i64, i64)> {
    let params = esql::params(op)?;
    let staging = Staging(op.id);
    let values = values(
        op.id,
        &scope_of(op, &params),
        None,
        op.created,
        super::now(),
    );
    resolve(conn, &staging, &values, false).await?;
    let add = conn
        .count(&rsql::count_additions(&staging), &values)
        .await?;
    let (_, _, remove) = conn
        .counts(&rsql::threshold_counts(&staging), &values)
        .await?;
    Ok((add, remove))
}
