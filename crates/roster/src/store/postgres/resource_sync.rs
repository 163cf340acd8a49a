//! Account sync on PostgreSQL: resource lines stream into the staging table by COPY; the flows
//! are the shared ones of `store::resource_sync`; one resource operation per source system at a
//! time, by advisory lock.

use super::engine::{copy_field, CopyRow};
use super::PgStore;
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

impl_conn!(Postgres, Dialect::Postgres, super::PgStore, super::Row);
use crate::store::{now, ApplyOutcome, StoreResult};
use sqlx::{Postgres, Transaction};

impl CopyRow for StagedResource {
    fn copy(&self, out: &mut String, chunk: i32) {
        use std::fmt::Write;
        let _ = write!(out, "{chunk}\t{}\t{}\t", self.line, self.new_id.0);
        copy_field(out, self.external_id.as_deref());
        copy_field(out, self.identifier.as_deref());
        let _ = write!(out, "{}\t", self.ty.code());
        copy_field(out, self.subtype.map(|s| s.code().to_string()).as_deref());
        copy_field(out, self.displayname.as_deref());
        copy_field(out, self.description.as_deref());
        copy_field(out, self.notes.as_deref());
        copy_field(out, Some(&array_literal(&self.tags)));
        out.push_str(if self.active { "t\t" } else { "f\t" });
        copy_field(out, self.expires_at.map(|t| t.to_rfc3339()).as_deref());
        let _ = write!(out, "{}\t", self.present);
        out.push_str(if self.delete { "t\n" } else { "f\n" });
    }
}

/// A text array literal, `{"a","b"}`.
fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// Serialises resource operations of one source system across processes.
async fn lock_source(tx: &mut Transaction<'_, Postgres>, source: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('resources:' || $1, 0))")
        .bind(source)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl PgStore {
    /// Refreshes a table's planner statistics when many rows changed since they were taken:
    /// right after a large load, before autovacuum gets to it, the planner would take the table
    /// for empty and join it row by row.
    pub(super) async fn analyze_if_stale(&self, table: &'static str) -> StoreResult<()> {
        let stale: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT s.n_mod_since_analyze > greatest(1000, c.reltuples * 0.2) \
             FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE s.relname = $1 AND s.schemaname = current_schema()), false)",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await?;
        if stale {
            sqlx::query(&format!("ANALYZE {table}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Applies a claimed full-update of resources in one transaction; a lifecycle authority's
    /// records it deletes or deactivates end their identities in the same transaction.
    pub(super) async fn apply_resource_update(
        &self,
        op: &Operation,
        policy: &Policy,
    ) -> StoreResult<ApplyOutcome> {
        let params = esql::params(op)?;
        self.analyze_if_stale("resource").await?;
        let mut tx = self.pool.begin().await?;
        let source = op.source_system.as_deref().unwrap_or_default();
        lock_source(&mut tx, source).await?;
        lifecycle_sync::before_sync(&mut tx, source).await?;
        let at = now();
        let outcome = sync::apply_full_update(&mut tx, op, &params, at).await?;
        let actor = Actor::system(op.token_name.as_deref().unwrap_or("roster"));
        lifecycle_sync::after_sync(&mut tx, &actor, source, op.id, at, policy).await?;
        Self::finish(tx).await?;
        Ok(outcome)
    }

    pub(super) async fn resource_preview(
        &self,
        op: &Operation,
        action: PreviewAction,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ResourcePreviewEntry>> {
        let mut tx = self.pool.begin().await?;
        let rows = sync::preview(&mut tx, op, action, after, limit).await?;
        tx.rollback().await?;
        Ok(rows)
    }

    pub(super) async fn resource_totals(&self, op: &Operation) -> StoreResult<(i64, i64)> {
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        lock_source(&mut tx, &scope.source_system).await?;
        lifecycle_sync::before_sync(&mut tx, &scope.source_system).await?;
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
        sqlx::query(&rsql::create_staging(Dialect::Postgres, &staging))
            .execute(&mut *tx)
            .await?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY {staging} ({}) FROM STDIN",
                rsql::STAGING_COLUMNS
            ))
            .await?;
        let mut buffer = String::new();
        for line in lines {
            line.copy(&mut buffer, 0);
        }
        copy.send(buffer.as_bytes()).await?;
        copy.finish().await?;
        let at = now();
        let counts = sync::apply_changes(&mut tx, op, scope, &actor.token_name, at).await?;
        lifecycle_sync::after_sync(&mut tx, actor, &scope.source_system, op, at, policy).await?;
        let record = AuditRecord::new("operation.partial-update", target::operation(op))
            .with_detail(serde_json::json!({ "resources": lines.len() }));
        Self::audit(&mut tx, actor, record).await?;
        let operation = Self::set_counts(&mut tx, op, counts).await?;
        Self::finish(tx).await?;
        Ok(operation)
    }
}
