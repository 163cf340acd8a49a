//! Webhook subscriptions, written once for both backends (the statements are plain SQL with `$n`
//! parameters, which both take): registration, and the delivery worker's claims, progress and
//! failures. A claim is a lease on one due subscription; no transaction stays open while a
//! delivery is on the wire.

use super::{StoreError, StoreResult};
use crate::domain::feed::Format;
use crate::domain::subscription::{Subscription, SubscriptionStatus};
use crate::domain::ResourceId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The columns [`SubscriptionRow`] reads.
pub const COLUMNS: &str = "id, url, format, source_system, group_id, kinds, status, cursor, \
     delivered, failures, last_error, last_attempt_at, next_attempt_at, created";

pub const INSERT: &str = "INSERT INTO subscription (id, url, format, source_system, group_id, \
     kinds, secret, cursor, next_attempt_at, created) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)";

/// Resumes a paused subscription (from cursor `$3` when given); an active one is left alone, so
/// a delivery in flight keeps its lease.
pub const RESUME: &str = "UPDATE subscription SET status = 'active', failures = 0, \
     next_attempt_at = $2, cursor = coalesce($3, cursor), holder = NULL, until = NULL \
     WHERE id = $1 AND status = 'paused'";

/// Whether any active subscription is due and free at `$1`.
pub const DUE: &str = "SELECT id FROM subscription WHERE status = 'active' \
     AND next_attempt_at <= $1 AND (until IS NULL OR until < $1) LIMIT 1";

/// Leases the most overdue active subscription whose lease is free: `$1` holder, `$2` lease end,
/// `$3` now. The conditions are repeated outside the subquery so that of two concurrent claims
/// one finds the row taken.
pub fn claim() -> String {
    format!(
        "UPDATE subscription SET holder = $1, until = $2 WHERE id = (SELECT id FROM subscription \
         WHERE status = 'active' AND next_attempt_at <= $3 AND (until IS NULL OR until < $3) \
         ORDER BY next_attempt_at LIMIT 1) AND status = 'active' \
         AND (until IS NULL OR until < $3) RETURNING {COLUMNS}, secret"
    )
}

/// Progress within a claim: `$3` the cursor after the delivered change, `$4` now, `$5` the
/// renewed lease end.
pub const DELIVERED: &str = "UPDATE subscription SET cursor = $3, delivered = delivered + 1, \
     failures = 0, last_error = NULL, last_attempt_at = $4, until = $5 \
     WHERE id = $1 AND holder = $2";

/// The end of a round: `$3` the cursor (past what the filters skipped), `$4` when to look again.
/// Releases the lease.
pub const RELEASE: &str = "UPDATE subscription SET cursor = $3, next_attempt_at = $4, \
     holder = NULL, until = NULL WHERE id = $1 AND holder = $2";

/// A failed attempt: `$3` the error, `$4` now, `$5` the next attempt, `$6` the failures in a row
/// at which it pauses. Releases the lease.
pub const FAILED: &str = "UPDATE subscription SET failures = failures + 1, last_error = $3, \
     last_attempt_at = $4, next_attempt_at = $5, \
     status = CASE WHEN failures + 1 >= $6 THEN 'paused' ELSE status END, \
     holder = NULL, until = NULL WHERE id = $1 AND holder = $2";

#[derive(sqlx::FromRow)]
pub struct SubscriptionRow {
    id: Uuid,
    url: String,
    format: String,
    source_system: Option<String>,
    group_id: Option<Uuid>,
    kinds: String,
    status: String,
    cursor: String,
    delivered: i64,
    failures: i32,
    last_error: Option<String>,
    last_attempt_at: Option<DateTime<Utc>>,
    next_attempt_at: DateTime<Utc>,
    created: DateTime<Utc>,
}

/// A claimed subscription with its secret.
#[derive(sqlx::FromRow)]
pub struct ClaimRow {
    #[sqlx(flatten)]
    row: SubscriptionRow,
    secret: String,
}

fn corrupt(what: String) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(what.into()))
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StoreError;

    fn try_from(r: SubscriptionRow) -> Result<Self, StoreError> {
        Ok(Subscription {
            id: r.id,
            format: Format::from_name(&r.format)
                .ok_or_else(|| corrupt(format!("subscription {} has format {}", r.id, r.format)))?,
            status: SubscriptionStatus::from_name(&r.status)
                .ok_or_else(|| corrupt(format!("subscription {} has status {}", r.id, r.status)))?,
            url: r.url,
            source_system: r.source_system,
            group_id: r.group_id.map(ResourceId),
            kinds: r
                .kinds
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
            cursor: r.cursor,
            delivered: r.delivered,
            failures: r.failures,
            last_error: r.last_error,
            last_attempt_at: r.last_attempt_at,
            next_attempt_at: r.next_attempt_at,
            created: r.created,
            pending: None,
        })
    }
}

impl ClaimRow {
    pub fn into_parts(self) -> StoreResult<(Subscription, String)> {
        Ok((self.row.try_into()?, self.secret))
    }
}

pub fn not_found(id: Uuid) -> StoreError {
    StoreError::NotFound(format!("there is no subscription {id}"))
}

/// Implements [`crate::store::SubscriptionStore`] for a backend store with `write_tx`,
/// `read_tx` and `audit`.
macro_rules! impl_subscription_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::store::SubscriptionStore for $store {
            async fn create_subscription(
                &self,
                actor: &crate::domain::token::Actor,
                spec: &crate::domain::subscription::SubscriptionSpec,
                cursor: &crate::domain::feed::Cursor,
                secret: &str,
            ) -> crate::store::StoreResult<crate::domain::subscription::Subscription> {
                use crate::store::subscriptions as sub;
                let id = uuid::Uuid::now_v7();
                let kinds: Vec<&str> = spec.filter.kinds.iter().map(|k| k.name()).collect();
                let mut tx = self.write_tx().await?;
                sqlx::query(sub::INSERT)
                    .bind(id)
                    .bind(spec.url.as_str())
                    .bind(spec.format.name())
                    .bind(spec.filter.source_system.clone())
                    .bind(spec.filter.group_id)
                    .bind(kinds.join(","))
                    .bind(secret)
                    .bind(cursor.encode())
                    .bind(crate::store::now())
                    .execute(&mut *tx)
                    .await?;
                let record = crate::domain::audit::AuditRecord::new(
                    "subscription.create",
                    crate::domain::audit::target::subscription(id),
                )
                .with_detail(serde_json::json!({ "url": spec.url.as_str() }));
                <$store>::audit(&mut tx, actor, record).await?;
                let row: sub::SubscriptionRow = sqlx::query_as(&format!(
                    "SELECT {} FROM subscription WHERE id = $1",
                    sub::COLUMNS
                ))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                row.try_into()
            }

            async fn list_subscriptions(
                &self,
                page: &crate::domain::page::PageRequest<uuid::Uuid>,
            ) -> crate::store::StoreResult<Vec<crate::domain::subscription::Subscription>> {
                use crate::store::subscriptions as sub;
                let mut tx = self.read_tx().await?;
                let rows: Vec<sub::SubscriptionRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM subscription WHERE id > $1 ORDER BY id LIMIT $2",
                    sub::COLUMNS
                ))
                .bind(page.after.unwrap_or_default())
                .bind(page.fetch())
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn get_subscription(
                &self,
                id: uuid::Uuid,
            ) -> crate::store::StoreResult<crate::domain::subscription::Subscription> {
                use crate::store::subscriptions as sub;
                let mut tx = self.read_tx().await?;
                let row: Option<sub::SubscriptionRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM subscription WHERE id = $1",
                    sub::COLUMNS
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                row.ok_or_else(|| sub::not_found(id))?.try_into()
            }

            async fn delete_subscription(
                &self,
                actor: &crate::domain::token::Actor,
                id: uuid::Uuid,
            ) -> crate::store::StoreResult<()> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query("DELETE FROM subscription WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(crate::store::subscriptions::not_found(id));
                }
                let record = crate::domain::audit::AuditRecord::new(
                    "subscription.delete",
                    crate::domain::audit::target::subscription(id),
                );
                <$store>::audit(&mut tx, actor, record).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn resume_subscription(
                &self,
                actor: &crate::domain::token::Actor,
                id: uuid::Uuid,
                from: Option<&crate::domain::feed::Cursor>,
            ) -> crate::store::StoreResult<()> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(crate::store::subscriptions::RESUME)
                    .bind(id)
                    .bind(crate::store::now())
                    .bind(from.map(crate::domain::feed::Cursor::encode))
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM subscription WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    return match (status, from) {
                        (None, _) => Err(crate::store::subscriptions::not_found(id)),
                        // Already active: nothing to do (its deliveries keep their lease).
                        (Some(_), None) => Ok(()),
                        (Some(_), Some(_)) => Err(crate::store::StoreError::Conflict(format!(
                            "subscription {id} is active; it is moved to another cursor only \
                             while paused"
                        ))),
                    };
                }
                let record = crate::domain::audit::AuditRecord::new(
                    "subscription.resume",
                    crate::domain::audit::target::subscription(id),
                );
                <$store>::audit(&mut tx, actor, record).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_delivery(
                &self,
                holder: &str,
                lease: std::time::Duration,
            ) -> crate::store::StoreResult<
                Option<(crate::domain::subscription::Subscription, String)>,
            > {
                let now = crate::store::now();
                let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
                // A read first, so that idle deliverers do not take the write lock (SQLite).
                let mut read = self.read_tx().await?;
                let due: Option<uuid::Uuid> =
                    sqlx::query_scalar(crate::store::subscriptions::DUE)
                        .bind(now)
                        .fetch_optional(&mut *read)
                        .await?;
                read.commit().await?;
                if due.is_none() {
                    return Ok(None);
                }
                let mut tx = self.write_tx().await?;
                let row: Option<crate::store::subscriptions::ClaimRow> =
                    sqlx::query_as(&crate::store::subscriptions::claim())
                        .bind(holder)
                        .bind(until)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.commit().await?;
                row.map(crate::store::subscriptions::ClaimRow::into_parts)
                    .transpose()
            }

            async fn record_delivery(
                &self,
                id: uuid::Uuid,
                holder: &str,
                cursor: &crate::domain::feed::Cursor,
                lease: std::time::Duration,
            ) -> crate::store::StoreResult<bool> {
                let now = crate::store::now();
                let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(crate::store::subscriptions::DELIVERED)
                    .bind(id)
                    .bind(holder)
                    .bind(cursor.encode())
                    .bind(now)
                    .bind(until)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_delivery(
                &self,
                id: uuid::Uuid,
                holder: &str,
                cursor: &crate::domain::feed::Cursor,
                next_attempt_at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(crate::store::subscriptions::RELEASE)
                    .bind(id)
                    .bind(holder)
                    .bind(cursor.encode())
                    .bind(next_attempt_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn record_failure(
                &self,
                id: uuid::Uuid,
                holder: &str,
                error: &str,
                next_attempt_at: chrono::DateTime<chrono::Utc>,
                pause_after: i32,
            ) -> crate::store::StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(crate::store::subscriptions::FAILED)
                    .bind(id)
                    .bind(holder)
                    .bind(error)
                    .bind(crate::store::now())
                    .bind(next_attempt_at)
                    .bind(pause_after)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

pub(crate) use impl_subscription_store;
