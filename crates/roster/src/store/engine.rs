//! The operations engine's storage, written once over [`Tx`]: operations and their staging
//! tables, claims and leases (a worker that died loses its operation to another), approvals,
//! previews and purges. Uploads are loaded by `staging`; memberships are applied by
//! `membership_sync`, resources by `resource_sync`.

use super::db::{Db, Row, Tx};
use super::engine_sql::{self as esql, Staging};
use super::membership_sync::{self, describe, run_step};
use super::query::Sql;
use super::records;
use super::rows::{OperationRow, OPERATION_COLUMNS};
use super::{lifecycle_sync, resource_sql, resource_sync, staging};
use super::{
    now, ApplyOutcome, ChunkReceipt, FullUpdateDraft, LineStream, MembershipEdit, StoreError,
    StoreResult,
};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::full_update::{LineError, PreviewAction, PreviewEntry, Threshold};
use crate::domain::lifecycle::Policy;
use crate::domain::operation::{Operation, OperationCounts, OperationType, Scope, Target};
use crate::domain::page::PageRequest;
use crate::domain::resource_sync::{ResourcePreviewEntry, ResourceScope, StagedResource};
use crate::domain::token::Actor;
use crate::domain::OperationId;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// An operation, read on its own.
async fn operation(db: &Db, id: OperationId) -> StoreResult<Operation> {
    records::operation(&mut db.read().await?, id).await
}

/// An operation, locked for the rest of the transaction.
async fn lock_operation(tx: &mut Tx, id: OperationId) -> StoreResult<Operation> {
    let select = Sql::new(format!(
        "SELECT {OPERATION_COLUMNS} FROM operation WHERE id = $1{}",
        tx.dialect().for_update()
    ))
    .bind(id);
    let row: Option<OperationRow> = tx.fetch_optional(&select).await?;
    row.ok_or_else(|| esql::operation_not_found(id))?.try_into()
}

/// Drops the staging tables of these operations (those already gone are skipped).
async fn drop_staging(db: &Db, ids: impl IntoIterator<Item = i64>) -> StoreResult<()> {
    for id in ids {
        let drop = format!("DROP TABLE IF EXISTS {}", Staging(OperationId(id)));
        db.autocommit().await?.batch(&drop).await?;
    }
    Ok(())
}

/// Runs a statement that returns operation ids, in a transaction of its own.
async fn operation_ids(db: &Db, statement: &Sql) -> StoreResult<Vec<i64>> {
    let rows: Vec<(i64,)> = db.autocommit().await?.fetch_all(statement).await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Membership changes a full-update not yet applied would make, resolved in a transaction that
/// is rolled back: a preview changes nothing. `page` is the statement's parameters after the
/// scope's: the cursor and the row limit.
async fn preview_rows<T: Row>(
    db: &Db,
    op: &Operation,
    statements: impl IntoIterator<Item = String>,
    page: (Uuid, Uuid, i64),
) -> StoreResult<Vec<Vec<T>>> {
    let mut tx = db.write().await?;
    membership_sync::resolve(&mut tx, op, &esql::params(op)?, true).await?;
    let mut pages = Vec::new();
    for statement in statements {
        let select = Sql::new(statement)
            .bind(op.group_id)
            .bind(op.source_system.as_deref())
            .bind(op.id)
            .bind(page.0)
            .bind(page.1)
            .bind(page.2);
        pages.push(tx.fetch_all(&select).await?);
    }
    tx.rollback().await?;
    Ok(pages)
}

/// The operations engine's storage: staging, set-based applies, leases, approvals.
impl super::Store {
    /// Records a new full-update: `running`, `uploading`, with an empty staging area.
    pub async fn create_full_update(
        &self,
        actor: &Actor,
        draft: &FullUpdateDraft,
    ) -> StoreResult<Operation> {
        let mut tx = self.db().write().await?;
        let group_id = match &draft.scope {
            Scope::Group(id) => Some(*id),
            Scope::Source(_) => None,
        };
        let params = serde_json::to_value(&draft.params)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(e.into())))?;
        let insert = Sql::new(&**esql::INSERT_FULL_UPDATE)
            .bind(draft.description.as_deref())
            .bind(group_id)
            .bind(draft.source_system.as_str())
            .bind(params)
            .bind(actor.token_name.as_str())
            .bind(now())
            .bind(draft.target.name());
        let operation: Operation = tx.fetch_one::<OperationRow>(&insert).await?.try_into()?;
        let staging = Staging(operation.id);
        let create = match draft.target {
            Target::Memberships => esql::create_staging(tx.dialect(), &staging),
            Target::Resources => resource_sql::create_staging(tx.dialect(), &staging),
        };
        tx.batch(&create).await?;
        records::audit(
            &mut tx,
            actor,
            AuditRecord::new("operation.create", target::operation(operation.id)),
        )
        .await?;
        tx.commit().await?;
        Ok(operation)
    }

    /// Replaces chunk `chunk` of an uploading full-update with the streamed lines.
    pub async fn stage_chunk(
        &self,
        id: OperationId,
        chunk: i32,
        lines: LineStream<'_>,
    ) -> StoreResult<ChunkReceipt> {
        staging::stage_chunk(self.db(), id, chunk, lines).await
    }

    /// Replaces chunk `chunk` of an uploading full-update of resources with the streamed lines.
    pub async fn stage_resource_chunk(
        &self,
        id: OperationId,
        chunk: i32,
        lines: LineStream<'_, StagedResource>,
    ) -> StoreResult<ChunkReceipt> {
        staging::stage_chunk(self.db(), id, chunk, lines).await
    }

    /// Ends the upload: the operation is queued for a worker.
    pub async fn queue_operation(&self, actor: &Actor, id: OperationId) -> StoreResult<Operation> {
        let mut tx = self.db().write().await?;
        let op = lock_operation(&mut tx, id).await?;
        let state = (
            op.phase.map(|p| p.name().to_owned()),
            op.status.name().to_owned(),
        );
        esql::check_uploading(id, Some(state))?;
        let queue = Sql::new(&**esql::QUEUE_OPERATION).bind(id).bind(now());
        let row: OperationRow = tx.fetch_one(&queue).await?;
        records::audit(
            &mut tx,
            actor,
            AuditRecord::new("operation.complete", target::operation(id)),
        )
        .await?;
        tx.commit().await?;
        row.try_into()
    }

    /// Claims the oldest queued operation, or one whose worker's lease expired. An operation
    /// whose lease expired after `max_attempts` claims (its workers keep dying) fails instead.
    pub async fn claim_operation(
        &self,
        node: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> StoreResult<Option<Operation>> {
        let at = now();
        let give_up = Sql::new(esql::GIVE_UP)
            .bind(at)
            .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX));
        drop_staging(self.db(), operation_ids(self.db(), &give_up).await?).await?;
        let mut conn = self.db().autocommit().await?;
        let claim = Sql::new(esql::claim_operation(conn.dialect()))
            .bind(node)
            .bind(at + lease)
            .bind(at);
        let row: Option<OperationRow> = conn.fetch_optional(&claim).await?;
        row.map(Operation::try_from).transpose()
    }

    /// Extends a held lease; false when the lease was lost to another worker.
    pub async fn renew_lease(
        &self,
        id: OperationId,
        node: &str,
        lease: Duration,
    ) -> StoreResult<bool> {
        let renew = Sql::new(esql::RENEW_LEASE)
            .bind(id)
            .bind(node)
            .bind(now() + lease);
        self.db().write_one(&renew).await
    }

    /// Resolves, checks and applies a claimed full-update: of memberships, one group per
    /// transaction at least; of resources, in one transaction.
    /// Lifecycle authorities' records it deletes or deactivates end their identities (`policy`).
    pub async fn apply_full_update(
        &self,
        op: &Operation,
        policy: &Policy,
    ) -> StoreResult<ApplyOutcome> {
        if op.ty.is_lifecycle() {
            return lifecycle_sync::apply_lifecycle(self.db(), op).await;
        }
        match op.target {
            Target::Resources => resource_sync::apply_update(self.db(), op, policy).await,
            Target::Memberships => membership_sync::apply(self.db(), op).await,
        }
    }

    /// Records the outcome of an apply and releases the lease; refused (conflict) when `node`
    /// no longer holds the lease, whose new holder records the outcome instead.
    pub async fn finish_operation(
        &self,
        id: OperationId,
        node: &str,
        outcome: &ApplyOutcome,
    ) -> StoreResult<Operation> {
        let mut tx = self.db().write().await?;
        let (status, counts, reason) = esql::outcome_columns(outcome);
        let finish = Sql::new(&**esql::FINISH_OPERATION)
            .bind(id)
            .bind(status)
            .bind(counts.added)
            .bind(counts.reactivated)
            .bind(counts.removed)
            .bind(counts.updated)
            .bind(counts.unchanged)
            .bind(counts.rejected)
            .bind(reason)
            .bind(now())
            .bind(node);
        let row: OperationRow = tx
            .fetch_optional(&finish)
            .await?
            .ok_or_else(|| esql::lease_lost(id))?;
        let record = AuditRecord::new("operation.finish", target::operation(id))
            .with_detail(serde_json::json!({ "status": status }));
        records::audit(&mut tx, &Actor::system(esql::ENGINE_ACTOR), record).await?;
        tx.commit().await?;
        let operation: Operation = row.try_into()?;
        if esql::staging_done(&operation)? {
            drop_staging(self.db(), [id.0]).await?;
        }
        Ok(operation)
    }

    /// What a full-update would add or remove, in (group, member) order after the cursor.
    pub async fn preview(
        &self,
        id: OperationId,
        action: Option<PreviewAction>,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<PreviewEntry>> {
        let op = operation(self.db(), id).await?;
        op.check_previewable()?;
        let (after_group, after_member) = esql::preview_cursor(page)?;
        let action = action.unwrap_or(PreviewAction::Remove);
        let select = esql::preview(&Staging(id), &op, action);
        let pages: Vec<Vec<(Uuid, Uuid)>> = preview_rows(
            self.db(),
            &op,
            [select],
            (after_group, after_member, page.fetch()),
        )
        .await?;
        let rows = pages.into_iter().flatten().collect();
        Ok(esql::preview_entries(rows, action))
    }

    /// What a full-update of resources would create or restore (`Add`: lines, in (chunk, line)
    /// order after the cursor) or delete (`Remove`: resources, in id order after the cursor).
    pub async fn preview_resources(
        &self,
        id: OperationId,
        action: PreviewAction,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<ResourcePreviewEntry>> {
        let op = operation(self.db(), id).await?;
        op.check_previewable()?;
        resource_sync::preview_page(self.db(), &op, action, page.after.as_deref(), page.fetch())
            .await
    }

    /// How many memberships (or resources) a full-update not yet applied would add and remove.
    pub async fn preview_totals(&self, id: OperationId) -> StoreResult<(i64, i64)> {
        let op = operation(self.db(), id).await?;
        op.check_previewable()?;
        if op.target == Target::Resources {
            return resource_sync::preview_totals(self.db(), &op).await;
        }
        let counts = [PreviewAction::Add, PreviewAction::Remove].map(|action| {
            format!(
                "SELECT count(*) FROM ({}) p",
                esql::preview(&Staging(id), &op, action)
            )
        });
        let page = (Uuid::nil(), Uuid::nil(), i64::MAX);
        let pages: Vec<Vec<(i64,)>> = preview_rows(self.db(), &op, counts, page).await?;
        let mut totals = pages
            .into_iter()
            .map(|rows| rows.first().map_or(0, |(n,)| *n));
        Ok((totals.next().unwrap_or(0), totals.next().unwrap_or(0)))
    }

    /// Approves (queues again, past the threshold) or rejects (fails) a pending operation.
    pub async fn decide(
        &self,
        actor: &Actor,
        id: OperationId,
        approve: bool,
    ) -> StoreResult<Operation> {
        let mut tx = self.db().write().await?;
        let op = lock_operation(&mut tx, id).await?;
        let decision = if approve {
            op.check_pending()?;
            Sql::new(&**esql::APPROVE_OPERATION)
                .bind(id)
                .bind(op.approved_params())
                .bind(now())
        } else {
            op.check_rejectable()?;
            Sql::new(&**esql::REJECT_OPERATION)
                .bind(id)
                .bind(format!("rejected by token {:?}", actor.token_name))
                .bind(now())
        };
        let row: OperationRow = tx.fetch_one(&decision).await?;
        let action = if approve {
            "operation.approve"
        } else {
            "operation.reject"
        };
        records::audit(
            &mut tx,
            actor,
            AuditRecord::new(action, target::operation(id)),
        )
        .await?;
        tx.commit().await?;
        if !approve {
            drop_staging(self.db(), [id.0]).await?;
        }
        row.try_into()
    }

    /// The rejected lines of an operation, in (chunk, line) order after the cursor.
    pub async fn rejections(
        &self,
        id: OperationId,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<LineError>> {
        let mut conn = self.db().read().await?;
        records::operation(&mut conn, id).await?;
        let after = esql::rejection_cursor(page)?;
        staging::rejected_lines(&mut conn, id, after, page.fetch()).await
    }

    /// Applies explicit adds and removes in one transaction, as one partial-update operation.
    pub async fn apply_partial_update(
        &self,
        actor: &Actor,
        description: Option<String>,
        edits: &[MembershipEdit],
        bound_source: Option<&str>,
    ) -> StoreResult<Operation> {
        membership_sync::partial_update(self.db(), actor, description, edits, bound_source).await
    }

    /// Upserts and deletes resources of one source system in one transaction, as one
    /// partial-update operation; refused whole (naming the lines) when a line cannot apply.
    pub async fn apply_resource_changes(
        &self,
        actor: &Actor,
        description: Option<String>,
        scope: &ResourceScope,
        lines: &[StagedResource],
        policy: &Policy,
    ) -> StoreResult<Operation> {
        resource_sync::changes(self.db(), actor, description, scope, lines, policy).await
    }

    /// Ends the memberships of a scope that its latest completed full-update did not confirm,
    /// refusing (and changing nothing) when a group would pass the deletion threshold.
    pub async fn reconcile(
        &self,
        actor: &Actor,
        description: Option<String>,
        scope: &Scope,
        threshold: &Threshold,
    ) -> StoreResult<Operation> {
        membership_sync::reconcile(self.db(), actor, description, scope, threshold).await
    }

    /// Hard-deletes ended memberships, and deleted resources nothing refers to, older than
    /// `before`, in batches of `batch` rows.
    pub async fn purge(
        &self,
        actor: &Actor,
        description: Option<String>,
        before: DateTime<Utc>,
        batch: i64,
    ) -> StoreResult<Operation> {
        let db = self.db();
        let mut tx = db.write().await?;
        let op =
            records::insert_operation(&mut tx, actor, OperationType::Purge, None, None).await?;
        describe(&mut tx, op, description).await?;
        let record = AuditRecord::new("operation.purge", target::operation(op))
            .with_detail(serde_json::json!({ "before": before }));
        records::audit(&mut tx, actor, record).await?;
        tx.commit().await?;
        let mut memberships = 0i64;
        loop {
            let purge = Sql::new(esql::PURGE_MEMBERSHIPS).bind(before).bind(batch);
            let n = db.autocommit().await?.execute(&purge).await?;
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            memberships += n;
            if n < batch {
                break;
            }
        }
        let purge = Sql::new(esql::PURGE_GROUP_SYNC).bind(before);
        db.autocommit().await?.execute(&purge).await?;
        let mut resources = 0i64;
        loop {
            let mut tx = db.write().await?;
            let statements = esql::purge_resources(tx.dialect()).into_iter().map(|text| {
                Sql::new(text)
                    .bind(before)
                    .bind(batch)
                    .bind(now())
                    .bind(op)
                    .bind(actor.token_name.as_str())
            });
            let n = run_step(&mut tx, statements).await?;
            tx.commit().await?;
            resources += n;
            if n < batch {
                break;
            }
        }
        let mut conn = db.read().await?;
        let stale = Sql::new(format!(
            "SELECT id FROM operation WHERE type = 'full-update' AND status = 'complete' \
             AND completed < $1 AND {} = 'defer'",
            conn.dialect().json_text("params", "gc")
        ))
        .bind(before);
        let stale: Vec<(i64,)> = conn.fetch_all(&stale).await?;
        drop(conn);
        drop_staging(db, stale.into_iter().map(|(id,)| id)).await?;
        let counts = OperationCounts {
            removed: memberships,
            ..OperationCounts::default()
        };
        let mut tx = db.write().await?;
        let summary = Sql::new("UPDATE operation SET reason = $2 WHERE id = $1")
            .bind(op)
            .bind(esql::purge_summary(memberships, resources));
        tx.execute(&summary).await?;
        let operation = records::set_counts(&mut tx, op, counts).await?;
        tx.commit().await?;
        Ok(operation)
    }

    /// Refreshes the planner statistics of the tables that grow with every write, where many
    /// rows changed since they were taken (see [`Db::analyze_if_stale`]): without them,
    /// after a large load and before autovacuum gets to it (or where it is off), PostgreSQL
    /// reads a page of the change feed by sorting every change after the cursor.
    pub async fn refresh_statistics(&self) -> StoreResult<()> {
        for table in ["change", "change_commit", "resource", "group_member"] {
            self.db().analyze_if_stale(table).await?;
        }
        Ok(())
    }

    /// Fails uploads that received nothing since `before`.
    pub async fn fail_abandoned(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let abandoned = Sql::new(esql::FAIL_ABANDONED).bind(before).bind(now());
        let ids = operation_ids(self.db(), &abandoned).await?;
        let failed = ids.len() as u64;
        drop_staging(self.db(), ids).await?;
        Ok(failed)
    }
}
