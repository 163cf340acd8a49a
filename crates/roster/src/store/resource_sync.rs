//! Account sync's flows, written once for both backends over [`Tx`]: resolve the staged lines
//! to resources, check them, hold past the deletion threshold, and apply the diff set-based.

use super::db::{Db, Tx};
use super::lifecycle_sync;
use super::query::Sql;
use super::records;
use super::resource_sql::{self as rsql, Dialect, Values};
use super::staging;
use super::{ApplyOutcome, StoreError, StoreResult};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::full_update::{PreviewAction, Threshold};
use crate::domain::lifecycle::Policy;
use crate::domain::operation::{
    FullUpdateParams, OnError, Operation, OperationCounts, OperationType,
};
use crate::domain::resource_sync::{ResourcePreviewEntry, ResourceScope, StagedResource};
use crate::domain::token::Actor;
use crate::domain::{OperationId, ResourceId};
use crate::store::engine_sql::{self as esql, Staging};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Serialises resource operations of one source system across processes (PostgreSQL's advisory
/// lock; SQLite has one writer).
async fn lock_source(tx: &mut Tx, source: &str) -> StoreResult<()> {
    let lock = Sql::new("SELECT pg_advisory_xact_lock(hashtextextended('resources:' || $1, 0))")
        .bind(source);
    tx.advisory_lock(&lock).await
}

/// PostgreSQL settings for the transaction that applies a full-update of resources. It joins
/// every line with the source's resources (a million of each, for a large tenant):
/// - hash tables and sorts in memory rather than spilled in batches at the default `work_mem`
///   (the join that resolves the lines spilled in 32 batches at a million accounts);
/// - random reads priced as sequential ones: the few rows it then reads by key (the lines that
///   change something) were just read by its own scans and are in memory. At the default price
///   the planner scanned and hashed all the resources twice to update 20,000 of them;
/// - rows moved between parallel workers priced as cheap as they are beside a join of a million
///   lines: the joins that make the resolved copy and the doomed resources (each a
///   `CREATE TABLE … AS`) then run in parallel workers. At the default (0.1 a row) the planner
///   kept them in one process: 2.6 s rather than 1.6 s for the copy at 1M on 2 cores.
const APPLY_SETTINGS: [&str; 3] = [
    "SET LOCAL work_mem = '128MB'",
    "SET LOCAL random_page_cost = 1.1",
    "SET LOCAL parallel_tuple_cost = 0.01",
];

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
    tx.postgres_only(&APPLY_SETTINGS).await?;
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
pub(super) async fn create_missing(
    tx: &mut Tx,
    op: &Operation,
    params: &FullUpdateParams,
) -> StoreResult<()> {
    let staging = Staging(op.id);
    let mut values = Values::about(Uuid::nil(), None, super::now(), op.token_name.as_deref());
    values.op = op.id.0;
    values.bound = params.bound_source.clone();
    tx.execute(&values.sql(&esql::create_missing(tx.dialect(), &staging)))
        .await?;
    for (statement, binds_source) in esql::resolve_statements(&staging) {
        if !binds_source {
            tx.batch(&statement).await?;
        }
    }
    tx.execute(&values.sql(&esql::log_created(&staging)))
        .await?;
    Ok(())
}

/// Resolves every line to the resource it names into a copy that stands in for the staging table
/// until [`restore_uploaded`] puts the uploaded lines back, and records and marks the lines that
/// cannot apply. Returns how many lines are rejected in all.
pub(super) async fn resolve(
    tx: &mut Tx,
    staging: &Staging,
    values: &Values,
    partial: bool,
) -> StoreResult<i64> {
    let d = tx.dialect();
    fill(tx, values, rsql::resolved_copy(d, staging)).await?;
    for statement in rsql::swap_resolved(staging) {
        tx.batch(&statement).await?;
    }
    tx.execute(&values.sql(&rsql::resolve_by_identifier(d, staging)))
        .await?;
    if tx.scalar(&values.sql(&rsql::has_deleted())).await? {
        for statement in rsql::resolve_deleted(staging) {
            tx.execute(&values.sql(&statement)).await?;
        }
    }
    tx.batch(&rsql::index_staging(staging)).await?;
    if tx.dialect() == Dialect::Postgres {
        // A staging table is new: without statistics the planner may take it for empty and
        // probe it once per resource.
        tx.batch(&format!("ANALYZE {staging}")).await?;
    }
    tx.execute(&values.sql(&rsql::record_resolved(d, staging)))
        .await?;
    let mark_rejected = rsql::mark_rejected(staging);
    let live = tx.scalar(&values.sql(&rsql::has_live())).await?;
    let repeated: (bool, bool, bool) = tx
        .fetch_one(&values.sql(&rsql::repeated(d, staging)))
        .await?;
    let repeated = [repeated.0, repeated.1, repeated.2];
    for check in rsql::checks(staging, partial, live, repeated) {
        if tx.execute(&values.sql(&check)).await? > 0 {
            tx.execute(&values.sql(&mark_rejected)).await?;
        }
    }
    let rejected = Sql::new("SELECT count(*) FROM operation_rejection WHERE operation_id = $1");
    tx.scalar(&rejected.bind(values.op)).await
}

/// Creates and fills a table of the apply.
async fn fill(tx: &mut Tx, values: &Values, filled: rsql::Filled) -> StoreResult<()> {
    if let Some(create) = &filled.create {
        tx.batch(create).await?;
    }
    tx.execute(&values.sql(&filled.fill)).await?;
    Ok(())
}

/// Drops the resolved copy and puts the uploaded lines back in the staging table's place.
async fn restore_uploaded(tx: &mut Tx, staging: &Staging) -> StoreResult<()> {
    for statement in rsql::restore_uploaded(staging) {
        tx.batch(&statement).await?;
    }
    Ok(())
}

/// Deletes (first, freeing identifiers), restores, updates and creates, each step with its
/// change records. A full-update's deletions are those of its [`rsql::doomed`].
async fn write(
    tx: &mut Tx,
    staging: &Staging,
    values: &Values,
    partial: bool,
) -> StoreResult<OperationCounts> {
    let d = tx.dialect();
    let mut counts = OperationCounts::default();
    for (slot, steps) in [
        (&mut counts.removed, rsql::delete(d, staging, partial)),
        (&mut counts.reactivated, rsql::restore(d, staging)),
        (&mut counts.updated, rsql::update(d, staging)),
        (&mut counts.added, rsql::insert(d, staging)),
    ] {
        let mut last = 0;
        for statement in &steps {
            last = tx.execute(&values.sql(statement)).await?;
        }
        *slot = i64::try_from(last).unwrap_or(i64::MAX);
    }
    Ok(counts)
}

/// Applies a claimed full-update of resources inside the caller's transaction. A failed or held
/// outcome leaves only the recorded rejections (commit either way).
pub(super) async fn apply_full_update(
    tx: &mut Tx,
    op: &Operation,
    params: &FullUpdateParams,
    at: DateTime<Utc>,
) -> StoreResult<ApplyOutcome> {
    let staging = Staging(op.id);
    let scope = scope_of(op, params);
    let values = values(op.id, &scope, op.token_name.as_deref(), op.created, at);
    let rejected = resolve(tx, &staging, &values, false).await?;
    let outcome = apply_resolved(tx, &staging, &values, params, &scope, rejected).await?;
    restore_uploaded(tx, &staging).await?;
    Ok(outcome)
}

/// The apply of a full-update of resources once its lines are resolved.
async fn apply_resolved(
    tx: &mut Tx,
    staging: &Staging,
    values: &Values,
    params: &FullUpdateParams,
    scope: &ResourceScope,
    rejected: i64,
) -> StoreResult<ApplyOutcome> {
    let mut counts = OperationCounts {
        rejected,
        ..OperationCounts::default()
    };
    if rejected > 0 && params.on_error == OnError::Fail {
        return Ok(ApplyOutcome::Failed {
            reason: esql::rejection_reason(OperationId(values.op), rejected),
            counts,
        });
    }
    fill(tx, values, rsql::doomed(tx.dialect(), staging)).await?;
    let (live, snapshot, to_remove) = tx
        .fetch_one(&values.sql(&rsql::threshold_counts(staging)))
        .await?;
    let held = if params.approved {
        None
    } else {
        hold(&params.threshold, scope, live, snapshot, to_remove)
    };
    let outcome = match held {
        Some(reason) => {
            counts.removed = to_remove;
            ApplyOutcome::Pending { reason, counts }
        }
        None => {
            let written = write(tx, staging, values, false).await?;
            counts.added = written.added;
            counts.reactivated = written.reactivated;
            counts.updated = written.updated;
            counts.removed = written.removed;
            counts.unchanged = snapshot - written.added - written.reactivated - written.updated;
            ApplyOutcome::Complete(counts)
        }
    };
    tx.batch(&rsql::drop_doomed(staging)).await?;
    Ok(outcome)
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
pub(super) async fn apply_changes(
    tx: &mut Tx,
    op: OperationId,
    scope: &ResourceScope,
    token: &str,
    at: DateTime<Utc>,
) -> StoreResult<OperationCounts> {
    let staging = Staging(op);
    // Explicit changes apply whatever wrote the resources before.
    let values = values(op, scope, Some(token), far_future(), at);
    let rejected = resolve(tx, &staging, &values, true).await?;
    if rejected > 0 {
        let lines = staging::rejected_lines(tx, op, (-1, -1), 100).await?;
        return Err(StoreError::InvalidLines(
            format!("{rejected} resource line(s) cannot apply; nothing was changed"),
            lines,
        ));
    }
    let lines: i64 = tx
        .scalar(&values.sql(&format!(
            "SELECT count(*) FROM {staging} WHERE NOT remove AND NOT rejected"
        )))
        .await?;
    let mut counts = write(tx, &staging, &values, true).await?;
    counts.unchanged = lines - counts.added - counts.reactivated - counts.updated;
    restore_uploaded(tx, &staging).await?;
    tx.batch(&format!("DROP TABLE {staging}")).await?;
    Ok(counts)
}

/// A fence no write is newer than.
fn far_future() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A staged line a preview lists as an addition: (chunk, line, id, identifier, external_id).
type AdditionRow = (i32, i32, Option<Uuid>, Option<String>, Option<String>);

/// A page of what a full-update of resources not yet applied would do; resolved inside the
/// caller's transaction, which the caller rolls back.
pub(super) async fn preview(
    tx: &mut Tx,
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
    resolve(tx, &staging, &values, false).await?;
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
            let rows = tx
                .fetch_all(&values.sql(&rsql::preview_removals(&staging)))
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
            let rows: Vec<AdditionRow> = tx
                .fetch_all(&values.sql(&rsql::preview_additions(&staging)))
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
pub(super) async fn totals(tx: &mut Tx, op: &Operation) -> StoreResult<(i64, i64)> {
    let params = esql::params(op)?;
    let staging = Staging(op.id);
    let values = values(
        op.id,
        &scope_of(op, &params),
        None,
        op.created,
        super::now(),
    );
    resolve(tx, &staging, &values, false).await?;
    let add = tx
        .scalar(&values.sql(&rsql::count_additions(&staging)))
        .await?;
    let remove = tx
        .scalar(&values.sql(&rsql::count_removals(&staging)))
        .await?;
    Ok((add, remove))
}
