//! The raw-SQL baselines, on the same schema and database: the physical floor (COPY into a
//! staging table, then INSERT … SELECT for new rows and an anti-join UPDATE for removed ones) and
//! the seed's row-bump design (upsert every member with the new operation id, then soft-delete
//! the older ones).

use anyhow::Result;
use sqlx::{PgConnection, PgPool};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A group and an operation of the baselines, made directly in the database.
pub struct FloorGroup {
    pub id: Uuid,
}

pub async fn group(pool: &PgPool, name: &str) -> Result<FloorGroup> {
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO resource (id, type, typename, source_system, identifier, created, modified) \
         VALUES (gen_random_uuid(), 2, 'group', 'bench-floor', $1, now(), now()) RETURNING id",
    )
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(FloorGroup { id })
}

async fn operation(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO operation (type, status, created, modified) \
         VALUES ('full-update', 'complete', now(), now()) RETURNING id",
    )
    .fetch_one(conn)
    .await?)
}

/// COPYs `members` into a fresh staging table.
async fn stage(conn: &mut PgConnection, members: &[Uuid]) -> Result<()> {
    sqlx::query("DROP TABLE IF EXISTS floor_stage")
        .execute(&mut *conn)
        .await?;
    sqlx::query("CREATE TABLE floor_stage (member_id uuid NOT NULL)")
        .execute(&mut *conn)
        .await?;
    let mut copy = conn
        .copy_in_raw("COPY floor_stage (member_id) FROM STDIN")
        .await?;
    let mut buffer = String::with_capacity(1 << 20);
    for batch in members.chunks(20_000) {
        buffer.clear();
        for m in batch {
            buffer.push_str(&m.to_string());
            buffer.push('\n');
        }
        copy.send(buffer.as_bytes()).await?;
    }
    copy.finish().await?;
    // With statistics: without them the planner may take the table for empty and join it row
    // by row.
    sqlx::query("ANALYZE floor_stage")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How the baseline writes the change log: not at all (the bare floor), or in the same
/// statements as the rows (the floor with change capture).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Off,
    On,
}

fn logged(capture: Capture, dml: &str, kind: i16) -> String {
    match capture {
        Capture::Off => dml.to_owned(),
        Capture::On => format!(
            "WITH changed AS ({dml} RETURNING member_id) \
             INSERT INTO change (at, kind, group_id, member_id, source_system, operation_id) \
             SELECT now(), {kind}, $1, member_id, 'bench-floor', $2 FROM changed"
        ),
    }
}

/// A full sync as the floor does it, in one transaction: stage, insert the new, end the missing.
pub async fn sync(
    pool: &PgPool,
    group: &FloorGroup,
    members: &[Uuid],
    capture: Capture,
) -> Result<Duration> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    // A bulk anti-join is a hash join. Without this, a group loaded since the statistics were
    // taken looks nearly empty to the planner, which then joins it row by row (a load of a
    // million members took more than ten minutes so).
    sqlx::query("SET LOCAL enable_nestloop = off")
        .execute(&mut *tx)
        .await?;
    let op = operation(&mut tx).await?;
    stage(&mut tx, members).await?;
    let insert = logged(
        capture,
        "INSERT INTO group_member (source, group_id, member_id, last_operation_id, \
         created_timestamp) SELECT 'bench-floor', $1, s.member_id, $2, now() FROM floor_stage s \
         WHERE NOT EXISTS (SELECT 1 FROM group_member gm \
         WHERE gm.group_id = $1 AND gm.member_id = s.member_id)",
        6,
    );
    sqlx::query(&insert)
        .bind(group.id)
        .bind(op)
        .execute(&mut *tx)
        .await?;
    let remove = logged(
        capture,
        "UPDATE group_member gm SET removed = true, removed_timestamp = now(), \
         last_operation_id = $2 WHERE gm.group_id = $1 AND NOT gm.removed \
         AND NOT EXISTS (SELECT 1 FROM floor_stage s WHERE s.member_id = gm.member_id)",
        7,
    );
    sqlx::query(&remove)
        .bind(group.id)
        .bind(op)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(started.elapsed())
}

/// A re-sync the seed's way: upsert every member with the new operation id, then soft-delete
/// the rows that kept an older one.
pub async fn row_bump(pool: &PgPool, group: &FloorGroup, members: &[Uuid]) -> Result<Duration> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let op = operation(&mut tx).await?;
    stage(&mut tx, members).await?;
    sqlx::query(
        "INSERT INTO group_member (source, group_id, member_id, last_operation_id, \
         created_timestamp) SELECT 'bench-floor', $1, s.member_id, $2, now() FROM floor_stage s \
         ON CONFLICT (group_id, member_id) DO UPDATE SET last_operation_id = excluded.last_operation_id, \
         removed = false, removed_timestamp = NULL",
    )
    .bind(group.id)
    .bind(op)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE group_member SET removed = true, removed_timestamp = now() \
         WHERE group_id = $1 AND NOT removed AND last_operation_id < $2",
    )
    .bind(group.id)
    .bind(op)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(started.elapsed())
}
