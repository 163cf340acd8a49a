//! Full-updates, partial-updates and reconciles of memberships, written once over [`Tx`]: the
//! staged lines are resolved and checked, then each group's diff is applied set-based, one group
//! per transaction at least. PostgreSQL applies a group's diff in one statement that writes its
//! change records too (`WITH … RETURNING`), and an advisory lock per group keeps one writer on a
//! group across processes; SQLite, which has no data-modifying CTEs, logs each step with a SELECT
//! of its predicate just before the write, and its one writer serialises the groups.

use super::db::{Db, Dialect, Tx};
use super::engine_sql::{self as esql, Staging, StagingFilter};
use super::query::Sql;
use super::records;
use super::rows::{MembershipRow, ResourceRow, RESOURCE_COLUMNS};
use super::{now, resource_sync, sql, ApplyOutcome, MembershipEdit, StoreResult};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::ChangeRecord;
use crate::domain::full_update::{GroupDiff, MemberRef, Threshold};
use crate::domain::membership::{Membership, MembershipWrite};
use crate::domain::operation::{
    FullUpdateParams, Gc, OnError, Operation, OperationCounts, OperationType, Scope,
};
use crate::domain::resource::{Resource, ResourceType};
use crate::domain::token::Actor;
use crate::domain::{OperationId, ResourceId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The advisory lock every writer of a group's memberships takes first on PostgreSQL.
fn group_lock(group: ResourceId) -> Sql {
    Sql::new("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))").bind(group)
}

/// Runs a step's statements in order (see `engine_sql`); how many change records the first one
/// appended.
pub(super) async fn run_step(
    tx: &mut Tx,
    statements: impl IntoIterator<Item = Sql>,
) -> StoreResult<i64> {
    let mut logged = None;
    for statement in statements {
        let n = tx.execute(&statement).await?;
        logged.get_or_insert(n);
    }
    Ok(logged.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)))
}

/// The parameters every statement that applies a group's diff binds, always in this order, so
/// that `engine_sql`'s fragments can name them by position: `$1` group, `$2` operation id, `$3`
/// time, `$4` the group's source system, `$5` the token name; a statement that needs one more
/// binds it as `$6` (the token's bound source, or the full-update a reconcile keeps). Resource and
/// lifecycle statements have a map of their own, `resource_sql::Values`.
struct Step<'a> {
    group: ResourceId,
    op: OperationId,
    at: DateTime<Utc>,
    source: &'a str,
    token: Option<&'a str>,
}

impl Step<'_> {
    fn sql(&self, text: String) -> Sql {
        Sql::new(text)
            .bind(self.group)
            .bind(self.op)
            .bind(self.at)
            .bind(self.source)
            .bind(self.token)
    }

    async fn run(&self, tx: &mut Tx, statements: Vec<String>) -> StoreResult<i64> {
        run_step(tx, statements.into_iter().map(|text| self.sql(text))).await
    }
}

/// Resolves members and groups named by their source's keys; with `validate`, also records the
/// lines that cannot be used and removes them from the staging table. Returns how many lines are
/// rejected.
pub(super) async fn resolve(
    tx: &mut Tx,
    op: &Operation,
    params: &FullUpdateParams,
    validate: bool,
) -> StoreResult<i64> {
    let staging = Staging(op.id);
    let probe = Sql::new(esql::unresolved_probe(&staging));
    let (members, groups): (bool, bool) = tx.fetch_one(&probe).await?;
    for (statement, binds_source) in esql::resolve_statements(&staging) {
        if (binds_source && !groups) || (!binds_source && !members) {
            continue;
        }
        let statement = Sql::new(statement);
        let statement = if binds_source {
            statement.bind(op.source_system.as_deref())
        } else {
            statement
        };
        tx.execute(&statement).await?;
    }
    if params.create_missing && members {
        resource_sync::create_missing(tx, op, params).await?;
    }
    if validate {
        let record = Sql::new(esql::record_rejections(&staging, op))
            .bind(op.id)
            .bind(op.group_id)
            .bind(op.source_system.as_deref())
            .bind(params.bound_source.as_deref());
        if tx.execute(&record).await? > 0 {
            tx.execute(&Sql::new(esql::delete_rejected(&staging)).bind(op.id))
                .await?;
        }
    }
    tx.scalar(&Sql::new(esql::COUNT_REJECTIONS).bind(op.id))
        .await
}

/// Resolves in a transaction of its own (see [`resolve`]).
async fn resolve_committed(
    db: &Db,
    op: &Operation,
    params: &FullUpdateParams,
    validate: impl FnOnce(Dialect) -> bool,
) -> StoreResult<i64> {
    let mut tx = db.write().await?;
    let validate = validate(tx.dialect());
    let rejected = resolve(&mut tx, op, params, validate).await?;
    tx.commit().await?;
    Ok(rejected)
}

/// The groups a full-update covers, in id order.
async fn scope_groups(db: &Db, op: &Operation) -> StoreResult<Vec<ResourceId>> {
    match op.group_id {
        Some(group) => Ok(vec![group]),
        None => {
            let select = Sql::new(esql::SOURCE_GROUPS).bind(op.source_system.as_deref());
            let rows: Vec<(Uuid,)> = db.read().await?.fetch_all(&select).await?;
            Ok(rows.into_iter().map(|(id,)| ResourceId(id)).collect())
        }
    }
}

/// Applies a claimed full-update of memberships, one group per transaction at least.
pub(super) async fn apply(db: &Db, op: &Operation) -> StoreResult<ApplyOutcome> {
    let params = esql::params(op)?;
    // A source-scoped apply commits group by group, so it checks every line first; a
    // group-scoped one checks them in its single transaction (on PostgreSQL in the diff itself).
    let source_scoped = op.group_id.is_none();
    let rejected =
        resolve_committed(db, op, &params, |d| source_scoped || d == Dialect::Sqlite).await?;
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
    let staging = Staging(op.id);
    db.analyze_if_stale("group_member").await?;
    let groups = scope_groups(db, op).await?;
    let mut conn = db.autocommit().await?;
    if let Some(index) = esql::staging_index(conn.dialect(), &staging, source_scoped) {
        conn.batch(&index).await?;
    }
    drop(conn);
    let mut reads = db.read().await?;
    // Once a person approved it, a full-update passes the deletion threshold.
    let threshold = (!params.approved).then_some(&params.threshold);
    if let (true, Gc::Now, Some(threshold)) = (source_scoped, params.gc, threshold) {
        let diffs = Sql::new(esql::source_diffs(&staging))
            .bind(op.source_system.as_deref())
            .bind(op.id);
        let diffs = esql::source_group_diffs(reads.fetch_all(&diffs).await?);
        if let Some(reason) = esql::threshold_hold(threshold, diffs) {
            return Ok(ApplyOutcome::Pending { reason, counts });
        }
    }
    let carries_attributes: bool = reads
        .scalar(&Sql::new(format!(
            "SELECT EXISTS (SELECT 1 FROM {staging} \
             WHERE member_name IS NOT NULL OR contributing IS NOT NULL)"
        )))
        .await?;
    let staged: i64 = reads
        .scalar(&Sql::new(format!("SELECT count(*) FROM {staging}")))
        .await?;
    drop(reads);
    let mut superseded = 0;
    let mut tx = db.write().await?;
    let mut in_tx = 0i64;
    for group in groups {
        let Some((group_counts, active)) =
            apply_group(&mut tx, op, &params, group, carries_attributes).await?
        else {
            superseded += 1;
            continue;
        };
        if group_counts.rejected > 0 && params.on_error == OnError::Fail {
            // Nothing of this operation may apply: record the lines outside the rolled-back
            // transaction and fail.
            tx.rollback().await?;
            let rejected = resolve_committed(db, op, &params, |_| true).await?;
            return Ok(ApplyOutcome::Failed {
                reason: esql::rejection_reason(op.id, rejected),
                counts: OperationCounts {
                    rejected,
                    ..OperationCounts::default()
                },
            });
        }
        if let (false, Some(threshold)) = (source_scoped, threshold) {
            let diff = GroupDiff {
                group_id: group,
                active,
                // Lines that name a usable member: the apply's own rejections are not members.
                snapshot: staged - group_counts.rejected,
                to_add: group_counts.added,
                to_reactivate: group_counts.reactivated,
                to_remove: group_counts.removed,
            };
            if let Some(reason) = esql::threshold_hold(threshold, [diff]) {
                tx.rollback().await?;
                counts += OperationCounts {
                    removed: group_counts.removed,
                    ..OperationCounts::default()
                };
                return Ok(ApplyOutcome::Pending { reason, counts });
            }
        }
        counts += group_counts;
        in_tx += group_counts.added
            + group_counts.reactivated
            + group_counts.removed
            + group_counts.updated;
        if in_tx >= params.batch_size {
            tx.commit().await?;
            tx = db.write().await?;
            in_tx = 0;
        }
    }
    tx.commit().await?;
    if superseded > 0 && !source_scoped {
        return Ok(ApplyOutcome::Failed {
            reason: "superseded: a newer full-update of the group was applied first".to_owned(),
            counts,
        });
    }
    Ok(ApplyOutcome::Complete(counts))
}

/// Applies the diff of one group inside `tx`: removals (unless deferred), insertions,
/// re-activations and attribute updates, each with its change records. Returns `None` when a
/// newer full-update of the group was applied already (this one is superseded).
async fn apply_group(
    tx: &mut Tx,
    op: &Operation,
    params: &FullUpdateParams,
    group: ResourceId,
    carries_attributes: bool,
) -> StoreResult<Option<(OperationCounts, i64)>> {
    let staging = Staging(op.id);
    let filter = StagingFilter::for_operation(op);
    tx.advisory_lock(&group_lock(group)).await?;
    let newest: Option<(i64,)> = tx
        .fetch_optional(&Sql::new(esql::NEWEST_FULL_UPDATE).bind(group))
        .await?;
    if newest.is_some_and(|(n,)| n > op.id.0) {
        return Ok(None);
    }
    let active: i64 = tx
        .scalar(&Sql::new(esql::ACTIVE_MEMBERS).bind(group))
        .await?;
    let at = now();
    let step = Step {
        group,
        op: op.id,
        at,
        source: op.source_system.as_deref().unwrap_or_default(),
        token: op.token_name.as_deref(),
    };
    let remove = params.gc == Gc::Now;
    let d = tx.dialect();
    let (removed, added, reactivated, rejected) = match d {
        Dialect::Postgres => {
            let diff = step
                .sql(esql::pg_apply_diff(&staging, filter, remove))
                .bind(params.bound_source.as_deref());
            tx.fetch_one(&diff).await?
        }
        Dialect::Sqlite => {
            let [removals, additions, reactivations] = esql::sqlite_diff(&staging, filter, remove);
            let removed = step.run(tx, removals).await?;
            let added = step.run(tx, additions).await?;
            (removed, added, step.run(tx, reactivations).await?, 0)
        }
    };
    let mut counts = OperationCounts {
        removed,
        added,
        reactivated,
        rejected,
        ..OperationCounts::default()
    };
    if carries_attributes {
        let update = esql::update_attributes(d, &staging, filter);
        counts.updated = step.run(tx, update).await?;
    }
    counts.unchanged = active - counts.removed - counts.updated;
    let synced = Sql::new(esql::UPSERT_GROUP_SYNC)
        .bind(group)
        .bind(op.id)
        .bind(at);
    tx.execute(&synced).await?;
    Ok(Some((counts, active)))
}

/// Sets an operation's description, when there is one.
pub(super) async fn describe(
    tx: &mut Tx,
    id: OperationId,
    description: Option<String>,
) -> StoreResult<()> {
    if let Some(description) = description {
        let update = Sql::new("UPDATE operation SET description = $2 WHERE id = $1")
            .bind(id)
            .bind(description);
        tx.execute(&update).await?;
    }
    Ok(())
}

/// The live member an edit names, by id or by its source's keys.
async fn edit_member(tx: &mut Tx, index: usize, edit: &MembershipEdit) -> StoreResult<Resource> {
    let Some((column, source, value)) = esql::edit_member_key(&edit.member) else {
        let MemberRef::Id(id) = edit.member else {
            return Err(esql::edit_member_not_found(index, "the member"));
        };
        return records::lock(tx, id).await;
    };
    let select = Sql::new(format!(
        "SELECT {RESOURCE_COLUMNS} FROM resource WHERE source_system = $1 AND {column} = $2 \
         AND NOT deleted AND ($3 IS NULL OR type = $3) LIMIT 2"
    ))
    .bind(source)
    .bind(value)
    .bind(edit.member_type.map(ResourceType::code));
    let rows: Vec<ResourceRow> = tx.fetch_all(&select).await?;
    match <[ResourceRow; 1]>::try_from(rows) {
        Ok([row]) => row.try_into(),
        Err(_) => Err(esql::edit_member_not_found(
            index,
            &format!("{column} {value:?} of source system {source:?}"),
        )),
    }
}

/// Writes `edit` of the membership of `member` in `group` (an add that upserts its name and flag,
/// or a remove that leaves a tombstone) as part of operation `op`, with its change record; the
/// membership after it and what the write did.
pub(super) async fn write_edit(
    tx: &mut Tx,
    actor: &Actor,
    op: OperationId,
    group: &Resource,
    member: ResourceId,
    edit: &MembershipEdit,
) -> StoreResult<(Membership, MembershipWrite)> {
    let select = Sql::new(&**sql::SELECT_MEMBERSHIP)
        .bind(group.id)
        .bind(member);
    let before: Option<MembershipRow> = tx.fetch_optional(&select).await?;
    let before = before.map(Membership::from);
    let write = Sql::new(esql::edit_statement(edit.action))
        .bind(group.source_system.as_str())
        .bind(group.id)
        .bind(member)
        .bind(edit.member_name.as_deref())
        .bind(edit.contributing)
        .bind(op)
        .bind(now());
    let after = Membership::from(tx.fetch_one::<MembershipRow>(&write).await?);
    let write = esql::classify_edit(edit.action, before.as_ref(), &after);
    if let Some(kind) = write.change_kind() {
        let change = ChangeRecord::membership(kind, &after, &group.source_system, op);
        records::log_change(tx, actor, change).await?;
    }
    Ok((after, write))
}

/// Applies explicit adds and removes in one transaction, as one partial-update operation.
pub(super) async fn partial_update(
    db: &Db,
    actor: &Actor,
    description: Option<String>,
    edits: &[MembershipEdit],
    bound_source: Option<&str>,
) -> StoreResult<Operation> {
    let mut tx = db.write().await?;
    let op =
        records::insert_operation(&mut tx, actor, OperationType::PartialUpdate, None, None).await?;
    // The same per-group lock as full-updates take, in one order to avoid deadlocks.
    let mut groups: Vec<ResourceId> = edits.iter().map(|e| e.group_id).collect();
    groups.sort();
    groups.dedup();
    for group in groups {
        tx.advisory_lock(&group_lock(group)).await?;
    }
    let mut counts = OperationCounts::default();
    for (index, edit) in edits.iter().enumerate() {
        let member = edit_member(&mut tx, index, edit).await?;
        let group = records::lock(&mut tx, edit.group_id).await?;
        esql::check_edit(index, &group, &member, bound_source)?;
        let (_, write) = write_edit(&mut tx, actor, op, &group, member.id, edit).await?;
        counts += write.counts();
    }
    let record = AuditRecord::new("operation.partial-update", target::operation(op))
        .with_detail(serde_json::json!({ "changes": edits.len() }));
    records::audit(&mut tx, actor, record).await?;
    describe(&mut tx, op, description).await?;
    let operation = records::set_counts(&mut tx, op, counts).await?;
    tx.commit().await?;
    Ok(operation)
}

/// Ends the memberships of a scope that its latest completed full-update did not confirm, in one
/// transaction; refused whole when a group would pass the deletion threshold.
pub(super) async fn reconcile(
    db: &Db,
    actor: &Actor,
    description: Option<String>,
    scope: &Scope,
    threshold: &Threshold,
) -> StoreResult<Operation> {
    let mut tx = db.write().await?;
    let d = tx.dialect();
    let (group_id, source) = esql::scope_columns(scope);
    let op = records::insert_operation(
        &mut tx,
        actor,
        OperationType::Reconcile,
        group_id,
        source.as_deref(),
    )
    .await?;
    let targets = match scope {
        Scope::Group(group) => Sql::new(esql::RECONCILE_GROUP).bind(*group),
        Scope::Source(source) => Sql::new(esql::RECONCILE_SOURCE).bind(source.as_str()),
    };
    let targets: Vec<(Uuid, i64, bool, String)> = tx.fetch_all(&targets).await?;
    let mut counts = OperationCounts::default();
    for (group, full_update, group_scoped, group_source) in targets {
        let group = ResourceId(group);
        let staging = Staging(OperationId(full_update));
        let exists = Sql::new(d.table_exists()).bind(staging.to_string());
        if !tx.scalar::<bool>(&exists).await? {
            continue;
        }
        let filter = StagingFilter::for_scope(group_scoped);
        tx.advisory_lock(&group_lock(group)).await?;
        let active: i64 = tx
            .scalar(&Sql::new(esql::ACTIVE_MEMBERS).bind(group))
            .await?;
        let lines = Sql::new(esql::staged_lines(&staging, filter));
        let lines = if filter.binds_group() {
            lines.bind(group)
        } else {
            lines
        };
        let snapshot: i64 = tx.scalar(&lines).await?;
        let step = Step {
            group,
            op,
            at: now(),
            source: &group_source,
            token: Some(&actor.token_name),
        };
        let statements = esql::reconcile(d, &staging, filter);
        let statements = statements
            .into_iter()
            .map(|text| step.sql(text).bind(full_update));
        let removed = run_step(&mut tx, statements).await?;
        esql::check_reconcile(threshold, group, active, snapshot, removed)?;
        counts.removed += removed;
    }
    describe(&mut tx, op, description).await?;
    records::audit(
        &mut tx,
        actor,
        AuditRecord::new("operation.reconcile", target::operation(op)),
    )
    .await?;
    let operation = records::set_counts(&mut tx, op, counts).await?;
    tx.commit().await?;
    Ok(operation)
}

#[cfg(test)]
mod tests {
    use super::esql::{self, Staging, StagingFilter};
    use super::{Dialect, Sql};
    use crate::domain::OperationId;

    /// Every apply statement names only the positions [`super::Step`] binds, plus its own `$6`.
    #[test]
    fn apply_statements_stay_within_the_step_positions() {
        let staging = Staging(OperationId(7));
        for filter in [StagingFilter::WholeTable, StagingFilter::GroupColumn] {
            let mut statements = vec![
                esql::pg_apply_diff(&staging, filter, true),
                esql::pg_apply_diff(&staging, filter, false),
            ];
            for d in [Dialect::Postgres, Dialect::Sqlite] {
                statements.extend(esql::update_attributes(d, &staging, filter));
                statements.extend(esql::reconcile(d, &staging, filter));
            }
            for remove in [true, false] {
                statements.extend(esql::sqlite_diff(&staging, filter, remove).concat());
            }
            for text in statements {
                let highest = Sql::highest_placeholder(&text);
                assert!((1..=6).contains(&highest), "${highest} in {text}");
            }
        }
    }
}
