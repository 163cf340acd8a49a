//! The operations engine on SQLite: uploads go into a per-operation staging table in multi-row
//! INSERT batches; the diff is set-based SQL, each step a SELECT into the change log followed by
//! the write with the same predicate, in one transaction; the single writer connection keeps one
//! writer per group; claims and leases recover the work of a worker that died.

use super::SqliteStore;
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::{ChangeKind, ChangeRecord};
use crate::domain::full_update::{
    GroupRef, LineError, MemberRef, PreviewAction, PreviewEntry, StagedLine,
};
use crate::domain::lifecycle::Policy;
use crate::domain::operation::Target;
use crate::domain::operation::{
    FullUpdateParams, Gc, OnError, Operation, OperationCounts, OperationType, Scope,
};
use crate::domain::page::PageRequest;
use crate::domain::resource::ResourceType;
use crate::domain::resource_sync::{ResourcePreviewEntry, ResourceScope, StagedResource};
use crate::domain::token::Actor;
use crate::domain::{OperationId, ResourceId};
use crate::store::engine_sql::{self as esql, Staging};
use crate::store::resource_sql::{self, Dialect};
use crate::store::rows::{OperationRow, OPERATION_COLUMNS};
use crate::store::{
    now, ApplyOutcome, ChunkReceipt, EngineStore, FullUpdateDraft, LineStream, MembershipEdit,
    StoreResult,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::query_builder::Separated;
use sqlx::types::Json;
use sqlx::{Sqlite, Transaction};
use std::time::Duration;
use uuid::Uuid;

/// Rejection reasons kept per chunk; the count beyond is exact, the details are not kept.
const MAX_REJECTIONS_KEPT: usize = 10_000;

impl SqliteStore {
    async fn operation(&self, id: OperationId) -> StoreResult<Operation> {
        use crate::store::OperationStore;
        self.get_operation(id).await
    }

    async fn lock_operation(
        tx: &mut Transaction<'_, Sqlite>,
        id: OperationId,
    ) -> StoreResult<Operation> {
        let row: Option<OperationRow> = sqlx::query_as(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operation WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        row.ok_or_else(|| esql::operation_not_found(id))?.try_into()
    }

    async fn drop_staging(&self, id: OperationId) -> StoreResult<()> {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", Staging(id)))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Resolves members and groups named by their source's keys, records the lines that cannot be
    /// used, and removes them from the staging table. Returns how many lines are rejected.
    async fn resolve(&self, op: &Operation, params: &FullUpdateParams) -> StoreResult<i64> {
        let mut tx = self.begin().await?;
        let rejected = Self::resolve_in(&mut tx, op, params).await?;
        tx.commit().await?;
        Ok(rejected)
    }

    /// `resolve` inside a transaction of the caller's.
    async fn resolve_in(
        tx: &mut Transaction<'_, Sqlite>,
        op: &Operation,
        params: &FullUpdateParams,
    ) -> StoreResult<i64> {
        let staging = Staging(op.id);
        for (statement, binds_source) in esql::resolve_statements(&staging) {
            let query = sqlx::query(&statement);
            let query = if binds_source {
                query.bind(op.source_system.as_deref())
            } else {
                query
            };
            query.execute(&mut **tx).await?;
        }
        if params.create_missing {
            crate::store::resource_sync::create_missing(&mut *tx, op, params).await?;
        }
        sqlx::query(&esql::record_rejections(&staging, op))
            .bind(op.id)
            .bind(op.group_id)
            .bind(op.source_system.as_deref())
            .bind(params.bound_source.as_deref())
            .execute(&mut **tx)
            .await?;
        sqlx::query(&esql::delete_rejected(&staging))
            .bind(op.id)
            .execute(&mut **tx)
            .await?;
        let rejected: i64 = sqlx::query_scalar(esql::COUNT_REJECTIONS)
            .bind(op.id)
            .fetch_one(&mut **tx)
            .await?;
        Ok(rejected)
    }

    /// The groups a full-update covers, in id order.
    async fn scope_groups(&self, op: &Operation) -> StoreResult<Vec<ResourceId>> {
        match op.group_id {
            Some(group) => Ok(vec![group]),
            None => Ok(sqlx::query_scalar(esql::SOURCE_GROUPS)
                .bind(op.source_system.as_deref())
                .fetch_all(&self.reader)
                .await?),
        }
    }

    /// Applies the diff of one group inside `tx`: removals (unless deferred), insertions,
    /// re-activations and attribute updates, each with its change records. Returns `None` when a
    /// newer full-update of the group was applied already (this one is superseded).
    async fn apply_group(
        tx: &mut Transaction<'_, Sqlite>,
        op: &Operation,
        params: &FullUpdateParams,
        group: ResourceId,
        carries_attributes: bool,
    ) -> StoreResult<Option<(OperationCounts, i64)>> {
        let staging = Staging(op.id);
        let filter = esql::StagingFilter::for_operation(op);
        let newest: Option<i64> = sqlx::query_scalar(esql::NEWEST_FULL_UPDATE)
            .bind(group)
            .fetch_optional(&mut **tx)
            .await?;
        if newest.is_some_and(|n| n > op.id.0) {
            return Ok(None);
        }
        let active: i64 = sqlx::query_scalar(esql::ACTIVE_MEMBERS)
            .bind(group)
            .fetch_one(&mut **tx)
            .await?;
        let at = now();
        let step = Step {
            group,
            op: op.id,
            at,
            source: op.source_system.as_deref().unwrap_or_default(),
            token: op.token_name.as_deref(),
        };
        let mut counts = OperationCounts::default();
        if params.gc == Gc::Now {
            counts.removed = step
                .run(tx, esql::sqlite_remove_unconfirmed(&staging, filter, "$2"))
                .await?;
        }
        counts.added = step
            .run(tx, esql::sqlite_insert_new(&staging, filter))
            .await?;
        counts.reactivated = step
            .run(tx, esql::sqlite_reactivate(&staging, filter))
            .await?;
        if carries_attributes {
            counts.updated = step
                .run(tx, esql::sqlite_update_attributes(&staging, filter))
                .await?;
        }
        counts.unchanged = active - counts.removed - counts.updated;
        sqlx::query(esql::UPSERT_GROUP_SYNC)
            .bind(group)
            .bind(op.id)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        Ok(Some((counts, active)))
    }

    /// The live member an edit names, by id or by its source's keys.
    async fn edit_member(
        tx: &mut Transaction<'_, Sqlite>,
        index: usize,
        edit: &MembershipEdit,
    ) -> StoreResult<crate::domain::resource::Resource> {
        let Some((column, source, value)) = esql::edit_member_key(&edit.member) else {
            let MemberRef::Id(id) = edit.member else {
                return Err(esql::edit_member_not_found(index, "the member"));
            };
            return Self::lock_resource(tx, id).await;
        };
        let rows: Vec<super::Row> = sqlx::query_as(&format!(
            "SELECT {} FROM resource WHERE source_system = $1 AND {column} = $2 AND NOT deleted \
             AND ($3 IS NULL OR type = $3) LIMIT 2",
            crate::store::rows::RESOURCE_COLUMNS
        ))
        .bind(source)
        .bind(value)
        .bind(edit.member_type.map(ResourceType::code))
        .fetch_all(&mut **tx)
        .await?;
        match <[super::Row; 1]>::try_from(rows) {
            Ok([row]) => row.try_into(),
            Err(_) => Err(esql::edit_member_not_found(
                index,
                &format!("{column} {value:?} of source system {source:?}"),
            )),
        }
    }

    async fn describe(
        tx: &mut Transaction<'_, Sqlite>,
        id: OperationId,
        description: Option<String>,
    ) -> StoreResult<()> {
        if let Some(description) = description {
            sqlx::query("UPDATE operation SET description = $2 WHERE id = $1")
                .bind(id)
                .bind(description)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Replaces chunk `chunk` of an uploading full-update with the streamed lines, in multi-row
    /// INSERTs.
    async fn stage<L: InsertRow>(
        &self,
        id: OperationId,
        chunk: i32,
        mut lines: LineStream<'_, L>,
        columns: &str,
    ) -> StoreResult<ChunkReceipt> {
        let staging = Staging(id);
        let mut tx = self.begin().await?;
        let op: Option<(Option<String>, String)> =
            sqlx::query_as("SELECT phase, status FROM operation WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        esql::check_uploading(id, op)?;
        sqlx::query(&format!("DELETE FROM {staging} WHERE chunk = $1"))
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM operation_rejection WHERE operation_id = $1 AND chunk = $2")
            .bind(id)
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
        let mut rejected = Vec::new();
        let mut rejected_count = 0i64;
        let mut staged = 0i64;
        while let Some(batch) = lines.next().await {
            let batch = batch?;
            for rows in batch.lines.chunks(INSERT_ROWS) {
                let mut q = sqlx::QueryBuilder::<Sqlite>::new(format!(
                    "INSERT INTO {staging} ({columns}) "
                ));
                q.push_values(rows, |mut b, line| line.push(&mut b, chunk));
                staged += q.build().execute(&mut *tx).await?.rows_affected() as i64;
            }
            rejected_count += batch.rejected.len() as i64;
            let room = MAX_REJECTIONS_KEPT.saturating_sub(rejected.len());
            rejected.extend(batch.rejected.into_iter().take(room));
        }
        Self::insert_rejections(&mut tx, id, &rejected).await?;
        sqlx::query(esql::UPSERT_CHUNK)
            .bind(id)
            .bind(chunk)
            .bind(staged + rejected_count)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ChunkReceipt {
            staged,
            rejected: rejected_count,
        })
    }

    async fn insert_rejections(
        tx: &mut Transaction<'_, Sqlite>,
        id: OperationId,
        rejected: &[LineError],
    ) -> StoreResult<()> {
        for batch in rejected.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO operation_rejection (operation_id, chunk, line, reason) ",
            );
            q.push_values(batch, |mut row, e| {
                row.push_bind(id)
                    .push_bind(e.chunk)
                    .push_bind(e.line)
                    .push_bind(&e.reason);
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// The parameters every apply statement binds (see `engine_sql`).
struct Step<'a> {
    group: ResourceId,
    op: OperationId,
    at: DateTime<Utc>,
    source: &'a str,
    token: Option<&'a str>,
}

impl Step<'_> {
    /// Runs one apply step (its change records, then its write); returns how many change
    /// records it appended.
    async fn run(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        step: esql::SqliteStep,
    ) -> StoreResult<i64> {
        let logged = sqlx::query(&step.log)
            .bind(self.group)
            .bind(self.op)
            .bind(self.at)
            .bind(self.source)
            .bind(self.token)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        sqlx::query(&step.write)
            .bind(self.group)
            .bind(self.op)
            .bind(self.at)
            .bind(self.source)
            .bind(self.token)
            .execute(&mut **tx)
            .await?;
        Ok(i64::try_from(logged).unwrap_or(i64::MAX))
    }
}

/// The staging columns of one line, in `STAGING_COLUMNS` order.
struct StagingRow<'a> {
    group_id: Option<Uuid>,
    group_ref: Option<&'a str>,
    member_id: Option<Uuid>,
    member_source: Option<&'a str>,
    identifier: Option<&'a str>,
    external_id: Option<&'a str>,
}

impl<'a> From<&'a StagedLine> for StagingRow<'a> {
    fn from(line: &'a StagedLine) -> Self {
        let (group_id, group_ref) = match &line.group {
            GroupRef::Scope => (None, None),
            GroupRef::Id(id) => (Some(id.0), None),
            GroupRef::Identifier(identifier) => (None, Some(identifier.as_str())),
        };
        let (member_id, member_source, identifier, external_id) = match &line.member {
            MemberRef::Id(id) => (Some(id.0), None, None, None),
            MemberRef::Identifier {
                source_system,
                identifier,
            } => (
                None,
                Some(source_system.as_str()),
                Some(identifier.as_str()),
                None,
            ),
            MemberRef::ExternalId {
                source_system,
                external_id,
            } => (
                None,
                Some(source_system.as_str()),
                None,
                Some(external_id.as_str()),
            ),
        };
        Self {
            group_id,
            group_ref,
            member_id,
            member_source,
            identifier,
            external_id,
        }
    }
}

/// Lines per multi-row INSERT: at most 15 parameters each, well under SQLite's limit.
pub(super) const INSERT_ROWS: usize = 500;

/// A staged line that binds itself as one row of a multi-row INSERT.
pub(super) trait InsertRow: Send + Sync {
    fn push<'a>(&'a self, row: &mut Separated<'_, 'a, Sqlite, &'static str>, chunk: i32);
}

impl InsertRow for StagedLine {
    fn push<'a>(&'a self, b: &mut Separated<'_, 'a, Sqlite, &'static str>, chunk: i32) {
        let row = StagingRow::from(self);
        b.push_bind(chunk)
            .push_bind(self.line)
            .push_bind(row.group_id)
            .push_bind(row.group_ref)
            .push_bind(row.member_id)
            .push_bind(row.member_source)
            .push_bind(row.identifier)
            .push_bind(row.external_id)
            .push_bind(self.member_type.map(ResourceType::code))
            .push_bind(self.member_name.as_deref())
            .push_bind(self.contributing);
    }
}

#[async_trait]
impl EngineStore for SqliteStore {
    async fn create_full_update(
        &self,
        actor: &Actor,
        draft: &FullUpdateDraft,
    ) -> StoreResult<Operation> {
        let mut tx = self.begin().await?;
        let group_id = match &draft.scope {
            Scope::Group(id) => Some(*id),
            Scope::Source(_) => None,
        };
        let row: OperationRow = sqlx::query_as(&esql::INSERT_FULL_UPDATE)
            .bind(draft.description.as_deref())
            .bind(group_id)
            .bind(&draft.source_system)
            .bind(Json(&draft.params))
            .bind(&actor.token_name)
            .bind(now())
            .bind(draft.target.name())
            .fetch_one(&mut *tx)
            .await?;
        let operation: Operation = row.try_into()?;
        let staging = Staging(operation.id);
        let create = match draft.target {
            Target::Memberships => esql::create_staging(&staging, "blob", "integer"),
            Target::Resources => resource_sql::create_staging(Dialect::Sqlite, &staging),
        };
        sqlx::query(&create).execute(&mut *tx).await?;
        Self::audit(
            &mut tx,
            actor,
            AuditRecord::new("operation.create", target::operation(operation.id)),
        )
        .await?;
        tx.commit().await?;
        Ok(operation)
    }

    async fn stage_chunk(
        &self,
        id: OperationId,
        chunk: i32,
        lines: LineStream<'_>,
    ) -> StoreResult<ChunkReceipt> {
        self.stage(id, chunk, lines, esql::STAGING_COLUMNS).await
    }

    async fn stage_resource_chunk(
        &self,
        id: OperationId,
        chunk: i32,
        lines: LineStream<'_, StagedResource>,
    ) -> StoreResult<ChunkReceipt> {
        self.stage(id, chunk, lines, resource_sql::STAGING_COLUMNS)
            .await
    }

    async fn queue_operation(&self, actor: &Actor, id: OperationId) -> StoreResult<Operation> {
        let mut tx = self.begin().await?;
        let op = Self::lock_operation(&mut tx, id).await?;
        let state = (
            op.phase.map(|p| p.name().to_owned()),
            op.status.name().to_owned(),
        );
        esql::check_uploading(id, Some(state))?;
        let row: OperationRow = sqlx::query_as(&esql::QUEUE_OPERATION)
            .bind(id)
            .bind(now())
            .fetch_one(&mut *tx)
            .await?;
        Self::audit(
            &mut tx,
            actor,
            AuditRecord::new("operation.complete", target::operation(id)),
        )
        .await?;
        tx.commit().await?;
        row.try_into()
    }

    async fn claim_operation(
        &self,
        node: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> StoreResult<Option<Operation>> {
        let at = now();
        let given_up: Vec<i64> = sqlx::query_scalar(esql::GIVE_UP)
            .bind(at)
            .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
            .fetch_all(&self.writer)
            .await?;
        for id in given_up {
            self.drop_staging(OperationId(id)).await?;
        }
        // The writer connection serialises claims.
        let row: Option<OperationRow> = sqlx::query_as(&esql::CLAIM_OPERATION)
            .bind(node)
            .bind(at + lease)
            .bind(at)
            .fetch_optional(&self.writer)
            .await?;
        row.map(Operation::try_from).transpose()
    }

    async fn renew_lease(&self, id: OperationId, node: &str, lease: Duration) -> StoreResult<bool> {
        Ok(sqlx::query(esql::RENEW_LEASE)
            .bind(id)
            .bind(node)
            .bind(now() + lease)
            .execute(&self.writer)
            .await?
            .rows_affected()
            == 1)
    }

    async fn apply_full_update(
        &self,
        op: &Operation,
        policy: &Policy,
    ) -> StoreResult<ApplyOutcome> {
        if op.ty.is_lifecycle() {
            return crate::store::lifecycle_sync::apply_lifecycle(&self.db, op).await;
        }
        if op.target == Target::Resources {
            return self.apply_resource_update(op, policy).await;
        }
        let params: FullUpdateParams = esql::params(op)?;
        let rejected = self.resolve(op, &params).await?;
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
        let groups = self.scope_groups(op).await?;
        // Every step looks members up in the staging table by id.
        sqlx::query(&format!(
            "CREATE INDEX IF NOT EXISTS {staging}_member ON {staging} (member_id, group_id)"
        ))
        .execute(&self.writer)
        .await?;
        if op.group_id.is_none() && !params.approved && params.gc == Gc::Now {
            let diffs = sqlx::query_as(&esql::source_diffs(&staging))
                .bind(op.source_system.as_deref())
                .bind(op.id)
                .fetch_all(&self.reader)
                .await?;
            if let Some(reason) = esql::hold_reason(&params, diffs) {
                return Ok(ApplyOutcome::Pending { reason, counts });
            }
        }
        let carries_attributes: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {staging} \
             WHERE member_name IS NOT NULL OR contributing IS NOT NULL)"
        ))
        .fetch_one(&self.reader)
        .await?;
        let staged: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {staging}"))
            .fetch_one(&self.reader)
            .await?;
        let mut superseded = 0;
        let mut tx = self.begin().await?;
        let mut in_tx = 0i64;
        for group in groups {
            let Some((group_counts, active)) =
                Self::apply_group(&mut tx, op, &params, group, carries_attributes).await?
            else {
                superseded += 1;
                continue;
            };
            if op.group_id.is_some() && !params.approved {
                let diff = crate::domain::full_update::GroupDiff {
                    group_id: group,
                    active,
                    // Lines that name a usable member: the apply's own rejections are not members.
                    snapshot: staged - group_counts.rejected,
                    to_add: group_counts.added,
                    to_reactivate: group_counts.reactivated,
                    to_remove: group_counts.removed,
                };
                if let Some(reason) = params.threshold.hold_reason(&diff) {
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
                tx = self.begin().await?;
                in_tx = 0;
            }
        }
        tx.commit().await?;
        if superseded > 0 && op.group_id.is_some() {
            return Ok(ApplyOutcome::Failed {
                reason: "superseded: a newer full-update of the group was applied first".to_owned(),
                counts,
            });
        }
        Ok(ApplyOutcome::Complete(counts))
    }

    async fn finish_operation(
        &self,
        id: OperationId,
        node: &str,
        outcome: &ApplyOutcome,
    ) -> StoreResult<Operation> {
        let mut tx = self.begin().await?;
        let (status, counts, reason) = esql::outcome_columns(outcome);
        let row: OperationRow = sqlx::query_as(&esql::FINISH_OPERATION)
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
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| esql::lease_lost(id))?;
        let record = AuditRecord::new("operation.finish", target::operation(id))
            .with_detail(serde_json::json!({ "status": status }));
        Self::audit(&mut tx, &Actor::system(esql::ENGINE_ACTOR), record).await?;
        tx.commit().await?;
        let operation: Operation = row.try_into()?;
        if esql::staging_done(&operation)? {
            self.drop_staging(id).await?;
        }
        Ok(operation)
    }

    async fn preview(
        &self,
        id: OperationId,
        action: Option<PreviewAction>,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<PreviewEntry>> {
        let op = self.operation(id).await?;
        esql::check_previewable(&op)?;
        // Resolved in a transaction that is rolled back: a preview changes nothing.
        let mut tx = self.begin().await?;
        Self::resolve_in(&mut tx, &op, &esql::params(&op)?).await?;
        let (after_group, after_member) = esql::preview_cursor(page)?;
        let action = action.unwrap_or(PreviewAction::Remove);
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(&esql::preview(&Staging(id), &op, action))
            .bind(op.group_id)
            .bind(op.source_system.as_deref())
            .bind(id)
            .bind(after_group)
            .bind(after_member)
            .bind(page.fetch())
            .fetch_all(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(esql::preview_entries(rows, action))
    }

    async fn preview_resources(
        &self,
        id: OperationId,
        action: PreviewAction,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<ResourcePreviewEntry>> {
        let op = self.operation(id).await?;
        esql::check_previewable(&op)?;
        self.resource_preview(&op, action, page.after.as_deref(), page.fetch())
            .await
    }

    async fn preview_totals(&self, id: OperationId) -> StoreResult<(i64, i64)> {
        let op = self.operation(id).await?;
        esql::check_previewable(&op)?;
        if op.target == Target::Resources {
            return self.resource_totals(&op).await;
        }
        // Resolved in a transaction that is rolled back: a preview changes nothing.
        let mut tx = self.begin().await?;
        Self::resolve_in(&mut tx, &op, &esql::params(&op)?).await?;
        let mut totals = [0i64; 2];
        for (slot, action) in totals
            .iter_mut()
            .zip([PreviewAction::Add, PreviewAction::Remove])
        {
            let sql = format!(
                "SELECT count(*) FROM ({}) p",
                esql::preview(&Staging(id), &op, action)
            );
            *slot = sqlx::query_scalar(&sql)
                .bind(op.group_id)
                .bind(op.source_system.as_deref())
                .bind(id)
                .bind(Uuid::nil())
                .bind(Uuid::nil())
                .bind(i64::MAX)
                .fetch_one(&mut *tx)
                .await?;
        }
        tx.rollback().await?;
        Ok((totals[0], totals[1]))
    }

    async fn decide(
        &self,
        actor: &Actor,
        id: OperationId,
        approve: bool,
    ) -> StoreResult<Operation> {
        let mut tx = self.begin().await?;
        let op = Self::lock_operation(&mut tx, id).await?;
        let row: OperationRow = if approve {
            esql::check_pending(&op)?;
            let params = esql::approved_params(&op);
            sqlx::query_as(&esql::APPROVE_OPERATION)
                .bind(id)
                .bind(Json(&params))
                .bind(now())
                .fetch_one(&mut *tx)
                .await?
        } else {
            esql::check_rejectable(&op)?;
            sqlx::query_as(&esql::REJECT_OPERATION)
                .bind(id)
                .bind(format!("rejected by token {:?}", actor.token_name))
                .bind(now())
                .fetch_one(&mut *tx)
                .await?
        };
        let action = if approve {
            "operation.approve"
        } else {
            "operation.reject"
        };
        Self::audit(
            &mut tx,
            actor,
            AuditRecord::new(action, target::operation(id)),
        )
        .await?;
        tx.commit().await?;
        if !approve {
            self.drop_staging(id).await?;
        }
        row.try_into()
    }

    async fn rejections(
        &self,
        id: OperationId,
        page: &PageRequest<String>,
    ) -> StoreResult<Vec<LineError>> {
        self.operation(id).await?;
        let (chunk, line) = esql::rejection_cursor(page)?;
        let rows: Vec<(i32, i32, String)> = sqlx::query_as(esql::LIST_REJECTIONS)
            .bind(id)
            .bind(chunk)
            .bind(line)
            .bind(page.fetch())
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(chunk, line, reason)| LineError {
                chunk,
                line,
                reason,
            })
            .collect())
    }

    async fn apply_partial_update(
        &self,
        actor: &Actor,
        description: Option<String>,
        edits: &[MembershipEdit],
        bound_source: Option<&str>,
    ) -> StoreResult<Operation> {
        let mut tx = self.begin().await?;
        let op = Self::insert_operation(&mut tx, actor, OperationType::PartialUpdate, None, None)
            .await?;
        let mut counts = OperationCounts::default();
        for (index, edit) in edits.iter().enumerate() {
            let member = Self::edit_member(&mut tx, index, edit).await?;
            let group = Self::lock_resource(&mut tx, edit.group_id).await?;
            esql::check_edit(index, &group, &member, bound_source)?;
            let before: Option<crate::store::rows::MembershipRow> =
                sqlx::query_as(&crate::store::sql::SELECT_MEMBERSHIP)
                    .bind(group.id)
                    .bind(member.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let before = before.map(crate::domain::membership::Membership::from);
            let row: crate::store::rows::MembershipRow =
                sqlx::query_as(esql::edit_statement(edit.action))
                    .bind(&group.source_system)
                    .bind(group.id)
                    .bind(member.id)
                    .bind(&edit.member_name)
                    .bind(edit.contributing)
                    .bind(op)
                    .bind(now())
                    .fetch_one(&mut *tx)
                    .await?;
            let after = crate::domain::membership::Membership::from(row);
            let write = esql::classify_edit(edit.action, before.as_ref(), &after);
            counts += write.counts();
            if let Some(kind) = write.change_kind() {
                let change = ChangeRecord::membership(kind, &after, &group.source_system, op);
                Self::log_change(&mut tx, actor, change).await?;
            }
        }
        let record = AuditRecord::new("operation.partial-update", target::operation(op))
            .with_detail(serde_json::json!({ "changes": edits.len() }));
        Self::audit(&mut tx, actor, record).await?;
        Self::describe(&mut tx, op, description).await?;
        let operation = Self::set_counts(&mut tx, op, counts).await?;
        tx.commit().await?;
        Ok(operation)
    }

    async fn apply_resource_changes(
        &self,
        actor: &Actor,
        description: Option<String>,
        scope: &ResourceScope,
        lines: &[StagedResource],
        policy: &Policy,
    ) -> StoreResult<Operation> {
        self.resource_changes(actor, description, scope, lines, policy)
            .await
    }

    async fn reconcile(
        &self,
        actor: &Actor,
        description: Option<String>,
        scope: &Scope,
        threshold: &crate::domain::full_update::Threshold,
    ) -> StoreResult<Operation> {
        let mut tx = self.begin().await?;
        let (group_id, source) = esql::scope_columns(scope);
        let op = Self::insert_operation(
            &mut tx,
            actor,
            OperationType::Reconcile,
            group_id,
            source.as_deref(),
        )
        .await?;
        let targets: Vec<(Uuid, i64, bool, String)> = match scope {
            Scope::Group(group) => sqlx::query_as(esql::RECONCILE_GROUP).bind(group),
            Scope::Source(source) => sqlx::query_as(esql::RECONCILE_SOURCE).bind(source),
        }
        .fetch_all(&mut *tx)
        .await?;
        let mut counts = OperationCounts::default();
        for (group, full_update, group_scoped, group_source) in targets {
            let staging = Staging(OperationId(full_update));
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)",
            )
            .bind(staging.to_string())
            .fetch_one(&mut *tx)
            .await?;
            if !exists {
                continue;
            }
            let filter = esql::StagingFilter::for_scope(group_scoped);
            let active: i64 = sqlx::query_scalar(esql::ACTIVE_MEMBERS)
                .bind(group)
                .fetch_one(&mut *tx)
                .await?;
            let lines = esql::staged_lines(&staging, filter);
            let lines = sqlx::query_scalar(&lines);
            let lines = if filter.binds_group() {
                lines.bind(group)
            } else {
                lines
            };
            let snapshot: i64 = lines.fetch_one(&mut *tx).await?;
            let step = Step {
                group: ResourceId(group),
                op,
                at: now(),
                source: &group_source,
                token: Some(&actor.token_name),
            };
            let older_than = full_update.to_string();
            let sql = esql::sqlite_remove_unconfirmed(&staging, filter, &older_than);
            let removed = step.run(&mut tx, sql).await?;
            esql::check_reconcile(threshold, ResourceId(group), active, snapshot, removed)?;
            counts.removed += removed;
        }
        Self::describe(&mut tx, op, description).await?;
        Self::audit(
            &mut tx,
            actor,
            AuditRecord::new("operation.reconcile", target::operation(op)),
        )
        .await?;
        let operation = Self::set_counts(&mut tx, op, counts).await?;
        tx.commit().await?;
        Ok(operation)
    }

    async fn purge(
        &self,
        actor: &Actor,
        description: Option<String>,
        before: DateTime<Utc>,
        batch: i64,
    ) -> StoreResult<Operation> {
        let mut tx = self.begin().await?;
        let op = Self::insert_operation(&mut tx, actor, OperationType::Purge, None, None).await?;
        Self::describe(&mut tx, op, description).await?;
        let record = AuditRecord::new("operation.purge", target::operation(op))
            .with_detail(serde_json::json!({ "before": before }));
        Self::audit(&mut tx, actor, record).await?;
        tx.commit().await?;
        let mut memberships = 0i64;
        loop {
            let n = sqlx::query(esql::PURGE_MEMBERSHIPS)
                .bind(before)
                .bind(batch)
                .execute(&self.writer)
                .await?
                .rows_affected() as i64;
            memberships += n;
            if n < batch {
                break;
            }
        }
        sqlx::query(esql::PURGE_GROUP_SYNC)
            .bind(before)
            .execute(&self.writer)
            .await?;
        let mut resources = 0i64;
        let log = format!(
            "INSERT INTO change (at, kind, resource_id, source_system, operation_id, token_name) \
             SELECT $3, {}, id, source_system, $4, $5 FROM resource WHERE id IN ({})",
            ChangeKind::ResourcePurged.code(),
            esql::PURGEABLE_RESOURCES
        );
        let delete = format!(
            "DELETE FROM resource WHERE id IN ({})",
            esql::PURGEABLE_RESOURCES
        );
        loop {
            let mut tx = self.begin().await?;
            sqlx::query(&log)
                .bind(before)
                .bind(batch)
                .bind(now())
                .bind(op)
                .bind(&actor.token_name)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query(&delete)
                .bind(before)
                .bind(batch)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64;
            tx.commit().await?;
            resources += n;
            if n < batch {
                break;
            }
        }
        let stale: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM operation WHERE type = 'full-update' AND status = 'complete' \
             AND completed < $1 AND json_extract(params, '$.gc') = 'defer'",
        )
        .bind(before)
        .fetch_all(&self.reader)
        .await?;
        for id in stale {
            self.drop_staging(OperationId(id)).await?;
        }
        let counts = OperationCounts {
            removed: memberships,
            ..OperationCounts::default()
        };
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE operation SET reason = $2 WHERE id = $1")
            .bind(op)
            .bind(esql::purge_summary(memberships, resources))
            .execute(&mut *tx)
            .await?;
        let operation = Self::set_counts(&mut tx, op, counts).await?;
        tx.commit().await?;
        Ok(operation)
    }

    async fn fail_abandoned(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let ids: Vec<i64> = sqlx::query_scalar(esql::FAIL_ABANDONED)
            .bind(before)
            .bind(now())
            .fetch_all(&self.writer)
            .await?;
        for id in &ids {
            self.drop_staging(OperationId(*id)).await?;
        }
        Ok(ids.len() as u64)
    }
}
