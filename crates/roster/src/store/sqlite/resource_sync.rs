//! Account sync on SQLite: resource lines go into the staging table in multi-row INSERTs; the
//! flows are the shared ones of `store::resource_sync`; the single writer serialises them.

use super::engine::InsertRow;
use super::SqliteStore;
use crate::domain::audit::{target, AuditRecord};
use crate::domain::full_update::PreviewAction;
use crate::domain::lifecycle::Policy;
use crate::domain::operation::{Operation, OperationType};
use crate::domain::resource_sync::{ResourcePreviewEntry, ResourceScope, StagedResource};
use crate::domain::token::Actor;
use crate::store::engine_sql::{self as esql, Staging};
use crate::store::lifecycle_sync;
use crate::store::resource_sql::{self as rsql, Dialect};
use crate::store::resource_sync::{self as sync, impl_conn};

impl_conn!(Sqlite, Dialect::Sqlite, super::SqliteStore, super::Row);
use crate::store::{now, ApplyOutcome, StoreResult};
use sqlx::query_builder::Separated;
use sqlx::Sqlite;

impl InsertRow for StagedResource {
    fn push<'a>(&'a self, b: &mut Separated<'_, 'a, Sqlite, &'static str>, chunk: i32) {
        b.push_bind(chunk)
            .push_bind(self.line)
            .push_bind(self.new_id.0)
            .push_bind(self.external_id.as_deref())
            .push_bind(self.identifier.as_deref())
            .push_bind(self.ty.code())
            .push_bind(self.subtype.map(|s| s.code()))
            .push_bind(self.displayname.as_deref())
            .push_bind(self.description.as_deref())
            .push_bind(self.notes.as_deref())
            .push_bind(serde_json::to_string(&self.tags).unwrap_or_else(|_| "[]".to_owned()))
            .push_bind(self.active)
            .push_bind(self.expires_at)
            .push_bind(self.present)
            .push_bind(self.delete);
    }
}

impl SqliteStore {
    /// Applies a claimed full-update of resources in one transaction; a lifecycle authority's
    /// records it deletes or deactivates end their identities in the same transaction.
    pub(super) async fn apply_resource_update(
        &self,
        op: &Operation,
        policy: &Policy,
    ) -> StoreResult<ApplyOutcome> {
        let params = esql::params(op)?;
        let mut tx = self.begin().await?;
        let at = now();
        let outcome = sync::apply_full_update(&mut tx, op, &params, at).await?;
        let actor = Actor::system(op.token_name.as_deref().unwrap_or("roster"));
        let source = op.source_system.as_deref().unwrap_or_default();
        lifecycle_sync::after_sync(&mut tx, &actor, source, op.id, at, policy).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn resource_preview(
        &self,
        op: &Operation,
        action: PreviewAction,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ResourcePreviewEntry>> {
        let mut tx = self.begin().await?;
        let rows = sync::preview(&mut tx, op, action, after, limit).await?;
        tx.rollback().await?;
        Ok(rows)
    }

    pub(super) async fn resource_totals(&self, op: &Operation) -> StoreResult<(i64, i64)> {
        let mut tx = self.begin().await?;
        let totals = sync::totals(&mut tx, op).await?;
        tx.rollback().await?;
        Ok(totals)
    }

    pub(super) async fn resource_changes(
        &self,
        actor: &Actor,
        description: Option<String>,
        scope: &ResourceScope,
        lines: &[StagedResource],
        policy: &Policy,
    ) -> StoreResult<Operation> {
        let mut tx = self.begin().await?;
        let op = Self::insert_operation(
            &mut tx,
            actor,
            OperationType::PartialUpdate,
            None,
            Some(&scope.source_system),
        )
        .await?;
        sqlx::query("UPDATE operation SET target = 'resources', description = $2 WHERE id = $1")
            .bind(op)
            .bind(description)
            .execute(&mut *tx)
            .await?;
        let staging = Staging(op);
        sqlx::query(&rsql::create_staging(Dialect::Sqlite, &staging))
            .execute(&mut *tx)
            .await?;
        for rows in lines.chunks(super::engine::INSERT_ROWS) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO {staging} ({}) ",
                rsql::STAGING_COLUMNS
            ));
            q.push_values(rows, |mut b, line| line.push(&mut b, 0));
            q.build().execute(&mut *tx).await?;
        }
        let at = now();
        let counts = sync::apply_changes(&mut tx, op, scope, &actor.token_name, at).await?;
        lifecycle_sync::after_sync(&mut tx, actor, &scope.source_system, op, at, policy).await?;
        let record = AuditRecord::new("operation.partial-update", target::operation(op))
            .with_detail(serde_json::json!({ "resources": lines.len() }));
        Self::audit(&mut tx, actor, record).await?;
        let operation = Self::set_counts(&mut tx, op, counts).await?;
        tx.commit().await?;
        Ok(operation)
    }
}
