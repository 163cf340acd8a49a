//! Webhook subscriptions, written once for both backends (the statements are plain SQL with `$n`
//! parameters, which both take): registration, and the delivery worker's claims, progress and
//! failures. A claim is a lease on one due subscription; no transaction stays open while a
//! delivery is on the wire.

use super::query::Sql;
use super::records;
use super::{now, StoreError, StoreResult};
use super::{ConflictKind, Record};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::feed::{Cursor, Format};
use crate::domain::page::PageRequest;
use crate::domain::subscription::{Subscription, SubscriptionSpec, SubscriptionStatus};
use crate::domain::token::Actor;
use crate::domain::ResourceId;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// The columns [`SubscriptionRow`] reads.
pub const COLUMNS: &str = "id, url, format, source_system, group_id, kinds, status, cursor, \
     delivered, batch_size, failures, last_error, last_attempt_at, next_attempt_at, created";

pub const INSERT: &str = "INSERT INTO subscription (id, url, format, source_system, group_id, \
     kinds, secret, cursor, next_attempt_at, created, batch_size) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)";

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

/// Progress within a claim: `$3` the cursor after the delivered changes, `$4` now, `$5` the
/// renewed lease end, `$6` how many changes were delivered.
pub const DELIVERED: &str = "UPDATE subscription SET cursor = $3, delivered = delivered + $6, \
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
    batch_size: i32,
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
            batch_size: r.batch_size,
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
    StoreError::missing(
        Record::Subscription,
        id,
        format!("there is no subscription {id}"),
    )
}

/// Webhook subscriptions and their deliveries.
impl super::Store {
    /// Registers a subscription starting after `cursor`, signing with `secret`.
    pub async fn create_subscription(
        &self,
        actor: &Actor,
        spec: &SubscriptionSpec,
        cursor: &Cursor,
        secret: &str,
    ) -> StoreResult<Subscription> {
        let id = Uuid::now_v7();
        let kinds: Vec<&str> = spec.filter.kinds.iter().map(|k| k.name()).collect();
        let mut tx = self.db().write().await?;
        let insert = Sql::new(INSERT)
            .bind(id)
            .bind(spec.url.as_str())
            .bind(spec.format.name())
            .bind(spec.filter.source_system.as_deref())
            .bind(spec.filter.group_id)
            .bind(kinds.join(","))
            .bind(secret)
            .bind(cursor.encode())
            .bind(now())
            .bind(i32::try_from(spec.batch_size).unwrap_or(i32::MAX));
        tx.execute(&insert).await?;
        let record = AuditRecord::new("subscription.create", target::subscription(id))
            .with_detail(serde_json::json!({ "url": spec.url.as_str() }));
        records::audit(&mut tx, actor, record).await?;
        let row: SubscriptionRow = tx.fetch_one(&select_one(id)).await?;
        tx.commit().await?;
        row.try_into()
    }

    pub async fn list_subscriptions(
        &self,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Vec<Subscription>> {
        let list = Sql::new(format!(
            "SELECT {COLUMNS} FROM subscription WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(page.after.unwrap_or_default())
        .bind(page.fetch());
        let rows: Vec<SubscriptionRow> = self.db().read().await?.fetch_all(&list).await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    pub async fn get_subscription(&self, id: Uuid) -> StoreResult<Subscription> {
        let row: Option<SubscriptionRow> = self
            .db()
            .read()
            .await?
            .fetch_optional(&select_one(id))
            .await?;
        row.ok_or_else(|| not_found(id))?.try_into()
    }

    pub async fn delete_subscription(&self, actor: &Actor, id: Uuid) -> StoreResult<()> {
        let mut tx = self.db().write().await?;
        let delete = Sql::new("DELETE FROM subscription WHERE id = $1").bind(id);
        if tx.execute(&delete).await? == 0 {
            return Err(not_found(id));
        }
        let record = AuditRecord::new("subscription.delete", target::subscription(id));
        records::audit(&mut tx, actor, record).await?;
        tx.commit().await
    }

    /// Makes a paused subscription active again, due at once, from `from` when given.
    pub async fn resume_subscription(
        &self,
        actor: &Actor,
        id: Uuid,
        from: Option<&Cursor>,
    ) -> StoreResult<()> {
        let mut tx = self.db().write().await?;
        let resume = Sql::new(RESUME)
            .bind(id)
            .bind(now())
            .bind(from.map(Cursor::encode));
        if tx.execute(&resume).await? == 0 {
            let select = Sql::new("SELECT status FROM subscription WHERE id = $1").bind(id);
            let status: Option<(String,)> = tx.fetch_optional(&select).await?;
            return match (status, from) {
                (None, _) => Err(not_found(id)),
                // Already active: nothing to do (its deliveries keep their lease).
                (Some(_), None) => Ok(()),
                (Some(_), Some(_)) => Err(StoreError::conflict(
                    ConflictKind::State,
                    format!(
                    "subscription {id} is active; it is moved to another cursor only while paused"
                ),
                )),
            };
        }
        let record = AuditRecord::new("subscription.resume", target::subscription(id));
        records::audit(&mut tx, actor, record).await?;
        tx.commit().await
    }

    /// Leases the most overdue active subscription for `holder`; with its secret.
    pub async fn claim_delivery(
        &self,
        holder: &str,
        lease: Duration,
    ) -> StoreResult<Option<(Subscription, String)>> {
        let now = now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        // A read first, so that idle deliverers do not take the write lock (SQLite).
        let due: Option<(Uuid,)> = self
            .db()
            .read()
            .await?
            .fetch_optional(&Sql::new(DUE).bind(now))
            .await?;
        if due.is_none() {
            return Ok(None);
        }
        let mut tx = self.db().write().await?;
        let claim = Sql::new(claim()).bind(holder).bind(until).bind(now);
        let row: Option<ClaimRow> = tx.fetch_optional(&claim).await?;
        tx.commit().await?;
        row.map(ClaimRow::into_parts).transpose()
    }

    /// Moves a claimed subscription's cursor past `count` delivered changes, renewing the lease;
    /// false when the lease was lost.
    pub async fn record_delivery(
        &self,
        id: Uuid,
        holder: &str,
        (cursor, count): (&Cursor, usize),
        lease: Duration,
    ) -> StoreResult<bool> {
        let now = now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let delivered = Sql::new(DELIVERED)
            .bind(id)
            .bind(holder)
            .bind(cursor.encode())
            .bind(now)
            .bind(until)
            .bind(i64::try_from(count).unwrap_or(i64::MAX));
        self.db().write_one(&delivered).await
    }

    /// Ends a round: stores the cursor (past what the filters skipped) and releases the lease,
    /// due again at `next_attempt_at`.
    pub async fn release_delivery(
        &self,
        id: Uuid,
        holder: &str,
        cursor: &Cursor,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let release = Sql::new(RELEASE)
            .bind(id)
            .bind(holder)
            .bind(cursor.encode())
            .bind(next_attempt_at);
        self.db().write_one(&release).await
    }

    /// Records a failed attempt and releases the lease; the subscription pauses at
    /// `pause_after` failures in a row.
    pub async fn record_failure(
        &self,
        id: Uuid,
        holder: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        pause_after: i32,
    ) -> StoreResult<bool> {
        let failed = Sql::new(FAILED)
            .bind(id)
            .bind(holder)
            .bind(error)
            .bind(now())
            .bind(next_attempt_at)
            .bind(pause_after);
        self.db().write_one(&failed).await
    }
}

/// Selects one subscription.
fn select_one(id: Uuid) -> Sql {
    Sql::new(format!("SELECT {COLUMNS} FROM subscription WHERE id = $1")).bind(id)
}
