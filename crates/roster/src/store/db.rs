//! The database and the transaction every flow runs on. [`Db`] holds the backend's pools;
//! [`Tx`] is one connection of it, inside a transaction when it writes. Flows are written once
//! over [`Tx`]; what truly differs between the backends is asked of its [`Dialect`] or, for
//! powers one backend has alone (COPY, advisory locks), matched on its [`Link`].

use super::query::Sql;
use super::{StoreError, StoreResult};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, Transaction};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which backend a statement runs on, for the SQL that differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// How a `tags` column is tested for one value: the SQL before and after the bound tag
    /// (PostgreSQL: array containment, which its GIN index serves; SQLite: the JSON array).
    pub fn tag_test(self) -> (&'static str, &'static str) {
        match self {
            Self::Postgres => ("tags @> ARRAY[", "]::text[]"),
            Self::Sqlite => ("EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ", ")"),
        }
    }

    /// What a read of rows about to be changed appends: a row lock on PostgreSQL; SQLite's one
    /// writer holds the database.
    pub fn for_update(self) -> &'static str {
        match self {
            Self::Postgres => " FOR UPDATE",
            Self::Sqlite => "",
        }
    }

    /// What a read of rows that must not change before commit appends (a shared row lock).
    pub fn for_share(self) -> &'static str {
        match self {
            Self::Postgres => " FOR SHARE",
            Self::Sqlite => "",
        }
    }

    /// What a claim's read of the row to take appends: on PostgreSQL a row lock that concurrent
    /// claims skip, so that several processes each take a different row; SQLite's one writer
    /// serialises claims.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
            Self::Sqlite => "",
        }
    }

    /// Whether the table named by `$1` exists.
    pub fn table_exists(self) -> &'static str {
        match self {
            Self::Postgres => "SELECT to_regclass($1) IS NOT NULL",
            Self::Sqlite => {
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)"
            }
        }
    }

    /// The text of field `field` of the JSON document in `column`.
    pub fn json_text(self, column: &str, field: &str) -> String {
        match self {
            Self::Postgres => format!("{column}->>'{field}'"),
            Self::Sqlite => format!("json_extract({column}, '$.{field}')"),
        }
    }
}

/// How long a statement on a [`Db::lookup`] connection may run.
pub const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The backend's pools.
#[derive(Clone)]
pub enum Pools {
    /// PostgreSQL: `main` hands each request's connections its budget (see `budget`) as it lends
    /// them; `lookups` serves reads by key, whose statements are capped once when connected
    /// instead, so that such a read is one round trip (see [`Db::lookup`]).
    Postgres { main: PgPool, lookups: PgPool },
    /// SQLite has one writer: a pool of one connection that begins `IMMEDIATE` (so that
    /// read-modify-write cannot race), and read-only connections that WAL lets run beside it.
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
}

/// Roster's database.
#[derive(Clone)]
pub struct Db {
    pools: Pools,
    /// Callers waiting for a connection now.
    waiting: Arc<AtomicU64>,
}

/// How much of one pool is in use, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolUse {
    /// "postgres", or SQLite's "writer" and "reader".
    pub name: &'static str,
    /// Connections open.
    pub open: u32,
    /// Open connections not lent out.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// What a connection outside any transaction is lent for; it says the pool on each backend.
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// Reads: PostgreSQL's main pool, SQLite's readers.
    Read,
    /// Reads by key: PostgreSQL's lookup pool, SQLite's readers.
    Lookup,
    /// Statements that stand alone: PostgreSQL's main pool, SQLite's writer.
    Autocommit,
}

impl Db {
    pub(super) fn new(pools: Pools) -> Self {
        Self {
            pools,
            waiting: Arc::default(),
        }
    }

    /// Each pool's use, and how many callers wait for a connection.
    pub fn pool_use(&self) -> (Vec<PoolUse>, u64) {
        fn usage<DB: sqlx::Database>(name: &'static str, pool: &sqlx::Pool<DB>) -> PoolUse {
            PoolUse {
                name,
                open: pool.size(),
                idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                max: pool.options().get_max_connections(),
            }
        }
        let pools = match &self.pools {
            Pools::Postgres { main, lookups } => {
                vec![usage("postgres", main), usage("postgres lookups", lookups)]
            }
            Pools::Sqlite { writer, reader } => {
                vec![usage("writer", writer), usage("reader", reader)]
            }
        };
        (pools, self.waiting.load(Ordering::Relaxed))
    }

    /// Awaits `acquire` (of a connection), counted among the callers waiting for one.
    async fn queued<T>(&self, acquire: impl std::future::Future<Output = T>) -> T {
        let _waiting = Waiting::enter(&self.waiting);
        acquire.await
    }

    pub fn dialect(&self) -> Dialect {
        match self.pools {
            Pools::Postgres { .. } => Dialect::Postgres,
            Pools::Sqlite { .. } => Dialect::Sqlite,
        }
    }

    /// A writing transaction; [`Tx::commit`] ends it.
    pub async fn write(&self) -> StoreResult<Tx> {
        Ok(Tx(match &self.pools {
            Pools::Postgres { main: pool, .. } => {
                Held::PostgresTx(self.queued(pool.begin()).await?)
            }
            Pools::Sqlite { writer, .. } => {
                Held::SqliteTx(self.queued(writer.begin_with("BEGIN IMMEDIATE")).await?)
            }
        }))
    }

    /// A connection for reads, each statement on its own snapshot.
    pub async fn read(&self) -> StoreResult<Tx> {
        self.connection(Lane::Read).await
    }

    /// A connection for a read by key — a record by its id, a membership by its ends, a token
    /// by its hash, the groups of one member, the feed's head — that an index answers at once.
    /// On PostgreSQL it comes from the lookup pool: its statements are capped at
    /// [`LOOKUP_TIMEOUT`] for good rather than told their request's budget as they are lent,
    /// which would double the round trips (and nearly the database's work) of such a read. A
    /// request dropped while one runs leaves it to finish within the cap.
    pub async fn lookup(&self) -> StoreResult<Tx> {
        self.connection(Lane::Lookup).await
    }

    /// A connection that writes each statement in a transaction of its own, for single
    /// statements whose effect stands alone (recording a token's use).
    pub async fn autocommit(&self) -> StoreResult<Tx> {
        self.connection(Lane::Autocommit).await
    }

    /// A connection, outside any transaction, from the pool `lane` names.
    async fn connection(&self, lane: Lane) -> StoreResult<Tx> {
        Ok(Tx(match (&self.pools, lane) {
            (Pools::Postgres { lookups: pool, .. }, Lane::Lookup)
            | (Pools::Postgres { main: pool, .. }, Lane::Read | Lane::Autocommit) => {
                Held::Postgres(self.queued(pool.acquire()).await?)
            }
            (Pools::Sqlite { writer: pool, .. }, Lane::Autocommit)
            | (Pools::Sqlite { reader: pool, .. }, Lane::Read | Lane::Lookup) => {
                Held::Sqlite(self.queued(pool.acquire()).await?)
            }
        }))
    }

    /// Runs one statement that stands alone; whether it changed exactly one row.
    pub async fn write_one(&self, sql: &Sql) -> StoreResult<bool> {
        Ok(self.autocommit().await?.execute(sql).await? == 1)
    }

    /// Refreshes a table's planner statistics when many rows changed since they were taken:
    /// right after a large load, before autovacuum gets to it, PostgreSQL's planner would take the
    /// table for empty and join it row by row. SQLite needs nothing.
    pub async fn analyze_if_stale(&self, table: &'static str) -> StoreResult<()> {
        let Pools::Postgres { .. } = self.pools else {
            return Ok(());
        };
        let mut conn = self.autocommit().await?;
        let stale = Sql::new(
            "SELECT coalesce((SELECT s.n_mod_since_analyze > greatest(1000, c.reltuples * 0.2) \
             FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE s.relname = $1 AND s.schemaname = current_schema()), false)",
        )
        .bind(table);
        if conn.scalar::<bool>(&stale).await? {
            conn.batch(&format!("ANALYZE {table}")).await?;
        }
        Ok(())
    }

    /// A read-only transaction on one snapshot, so that the statements of one answer agree.
    pub async fn snapshot(&self) -> StoreResult<Tx> {
        Ok(Tx(match &self.pools {
            Pools::Postgres { main: pool, .. } => {
                let mut tx = self.queued(pool.begin()).await?;
                tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?;
                Held::PostgresSnapshot(tx)
            }
            Pools::Sqlite { reader, .. } => Held::SqliteTx(self.queued(reader.begin()).await?),
        }))
    }
}

/// One caller counted as waiting for a connection, until dropped.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a [`Tx`] holds.
enum Held {
    PostgresTx(Transaction<'static, Postgres>),
    /// A read-only transaction: it has no commit position to take.
    PostgresSnapshot(Transaction<'static, Postgres>),
    SqliteTx(Transaction<'static, Sqlite>),
    Postgres(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

/// One connection of the database, in a transaction when it was begun by [`Db::write`] or
/// [`Db::snapshot`].
pub struct Tx(Held);

/// The backend's connection under a [`Tx`], for what only one backend can do.
pub enum Link<'a> {
    Postgres(&'a mut PgConnection),
    Sqlite(&'a mut SqliteConnection),
}

/// A row type both backends can read.
pub trait Row: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

impl<T> Row for T where T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{}

/// Stamps a transaction that wrote changes with the next commit position; run just before commit.
/// The advisory lock is held until the commit is visible, so the next transaction's position is
/// taken after it: positions follow commit order.
pub const COMMIT_STAMP: &str = "WITH mine AS (SELECT pg_current_xact_id_if_assigned() AS xid), \
     wrote AS (SELECT xid FROM mine WHERE xid IS NOT NULL \
       AND EXISTS (SELECT 1 FROM change c WHERE c.xid = mine.xid)), \
     locked AS (SELECT xid, pg_advisory_xact_lock(7234101) FROM wrote) \
     INSERT INTO change_commit (xid, position) \
     SELECT xid, nextval('change_commit_seq') FROM locked";

impl Tx {
    pub fn dialect(&self) -> Dialect {
        match self.0 {
            Held::PostgresTx(_) | Held::PostgresSnapshot(_) | Held::Postgres(_) => {
                Dialect::Postgres
            }
            Held::SqliteTx(_) | Held::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// The backend's connection.
    pub fn link(&mut self) -> Link<'_> {
        match &mut self.0 {
            Held::PostgresTx(tx) | Held::PostgresSnapshot(tx) => Link::Postgres(tx),
            Held::SqliteTx(tx) => Link::Sqlite(tx),
            Held::Postgres(conn) => Link::Postgres(conn),
            Held::Sqlite(conn) => Link::Sqlite(conn),
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub async fn execute(&mut self, sql: &Sql) -> StoreResult<u64> {
        Ok(match self.link() {
            Link::Postgres(c) => sqlx::query_with(sql.text(), sql.arguments::<Postgres>()?)
                .persistent(sql.persistent())
                .execute(c)
                .await?
                .rows_affected(),
            Link::Sqlite(c) => sqlx::query_with(sql.text(), sql.arguments::<Sqlite>()?)
                .persistent(sql.persistent())
                .execute(c)
                .await?
                .rows_affected(),
        })
    }

    /// Runs SQL without arguments, statements separated by `;` allowed.
    pub async fn batch(&mut self, sql: &str) -> StoreResult<()> {
        match self.link() {
            Link::Postgres(c) => {
                c.execute(sql).await?;
            }
            Link::Sqlite(c) => {
                c.execute(sql).await?;
            }
        }
        Ok(())
    }

    /// Runs statements SQLite has no counterpart for (planner settings, `SET LOCAL …`; storage
    /// options) on PostgreSQL, and nothing on SQLite.
    pub async fn postgres_only(&mut self, statements: &[&str]) -> StoreResult<()> {
        if let Link::Postgres(c) = self.link() {
            c.execute(statements.join("; ").as_str()).await?;
        }
        Ok(())
    }

    pub async fn fetch_all<T: Row>(&mut self, sql: &Sql) -> StoreResult<Vec<T>> {
        Ok(match self.link() {
            Link::Postgres(c) => {
                sqlx::query_as_with(sql.text(), sql.arguments::<Postgres>()?)
                    .persistent(sql.persistent())
                    .fetch_all(c)
                    .await?
            }
            Link::Sqlite(c) => {
                sqlx::query_as_with(sql.text(), sql.arguments::<Sqlite>()?)
                    .persistent(sql.persistent())
                    .fetch_all(c)
                    .await?
            }
        })
    }

    pub async fn fetch_optional<T: Row>(&mut self, sql: &Sql) -> StoreResult<Option<T>> {
        Ok(match self.link() {
            Link::Postgres(c) => {
                sqlx::query_as_with(sql.text(), sql.arguments::<Postgres>()?)
                    .persistent(sql.persistent())
                    .fetch_optional(c)
                    .await?
            }
            Link::Sqlite(c) => {
                sqlx::query_as_with(sql.text(), sql.arguments::<Sqlite>()?)
                    .persistent(sql.persistent())
                    .fetch_optional(c)
                    .await?
            }
        })
    }

    /// The one row a statement returns (an error when it returns none).
    pub async fn fetch_one<T: Row>(&mut self, sql: &Sql) -> StoreResult<T> {
        self.fetch_optional(sql)
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// The first column of the one row a statement returns.
    pub async fn scalar<T>(&mut self, sql: &Sql) -> StoreResult<T>
    where
        (T,): Row,
    {
        Ok(self.fetch_one::<(T,)>(sql).await?.0)
    }

    /// Takes the PostgreSQL advisory lock that `lock` (a `pg_advisory_xact_lock` call) names, held
    /// until the transaction ends; on SQLite nothing, as its one writer serialises writers.
    pub async fn advisory_lock(&mut self, lock: &Sql) -> StoreResult<()> {
        if self.dialect() == Dialect::Postgres {
            self.execute(lock).await?;
        }
        Ok(())
    }

    /// Ends a transaction without keeping what it wrote.
    pub async fn rollback(self) -> StoreResult<()> {
        match self.0 {
            Held::PostgresTx(tx) | Held::PostgresSnapshot(tx) => tx.rollback().await?,
            Held::SqliteTx(tx) => tx.rollback().await?,
            Held::Postgres(_) | Held::Sqlite(_) => {}
        }
        Ok(())
    }

    /// Commits a writing transaction. On PostgreSQL a transaction that logged changes first
    /// takes its commit position (see [`COMMIT_STAMP`]), so no writer can forget it; a read
    /// connection is handed back.
    pub async fn commit(self) -> StoreResult<()> {
        match self.0 {
            Held::PostgresTx(mut tx) => {
                tx.execute(COMMIT_STAMP).await?;
                tx.commit().await?;
            }
            Held::PostgresSnapshot(tx) => tx.commit().await?,
            Held::SqliteTx(tx) => tx.commit().await?,
            Held::Postgres(_) | Held::Sqlite(_) => {}
        }
        Ok(())
    }
}
