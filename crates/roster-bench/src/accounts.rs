//! S0, account load: a source's accounts through roster's full-update of resources, and the
//! raw-SQL floor of the same load and re-sync (COPY into staging, then set-based SQL without
//! checks or change records).

use anyhow::Result;
use sqlx::PgPool;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Which state of the source a line shows: the initial load, or the re-sync after 1% churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Load,
    Resync,
}

/// The churn of the re-sync among `n` accounts: the first 1% are deleted, the next 1% renamed,
/// the next 1% get a new display name.
fn churn(n: usize) -> usize {
    (n / 100).max(1)
}

/// The accounts (by index) a version holds.
pub fn indices(version: Version, n: usize) -> std::ops::Range<usize> {
    match version {
        Version::Load => 0..n,
        Version::Resync => churn(n)..n,
    }
}

/// Account `i` as this version shows it: (external id, identifier, display name).
fn account(version: Version, n: usize, i: usize) -> (String, String, String) {
    let c = churn(n);
    let renamed = version == Version::Resync && (c..2 * c).contains(&i);
    let retitled = version == Version::Resync && (2 * c..3 * c).contains(&i);
    (
        format!("00000000-0000-4000-8000-{i:012}"),
        format!(
            "{}{i}@contoso.example",
            if renamed { "renamed" } else { "user" }
        ),
        format!("{} {i}", if retitled { "Retitled" } else { "Person" }),
    )
}

/// Appends account `i` as an NDJSON line of the API.
pub fn ndjson(out: &mut String, version: Version, n: usize, i: usize) {
    let (external_id, identifier, name) = account(version, n, i);
    let _ = writeln!(
        out,
        "{{\"external_id\":\"{external_id}\",\"identifier\":\"{identifier}\",\
         \"subtype\":\"native\",\"displayname\":\"{name}\"}}"
    );
}

/// What the churned re-sync changes: (deleted, updated).
pub fn resync_changes(n: usize) -> (usize, usize) {
    (churn(n), 2 * churn(n))
}

/// The floor: stage the version by COPY, then write it with plain set-based SQL in one
/// transaction (insert the new; on re-sync, update the changed and soft-delete the missing).
pub async fn floor(pool: &PgPool, source: &str, version: Version, n: usize) -> Result<Duration> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("DROP TABLE IF EXISTS account_stage")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE account_stage (external_id text NOT NULL, identifier text NOT NULL, \
         displayname text)",
    )
    .execute(&mut *tx)
    .await?;
    let mut copy = tx
        .copy_in_raw("COPY account_stage (external_id, identifier, displayname) FROM STDIN")
        .await?;
    let range = indices(version, n);
    let mut buffer = String::with_capacity(1 << 20);
    for start in range.clone().step_by(20_000) {
        buffer.clear();
        for i in start..(start + 20_000).min(range.end) {
            let (external_id, identifier, name) = account(version, n, i);
            let _ = writeln!(buffer, "{external_id}\t{identifier}\t{name}");
        }
        copy.send(buffer.as_bytes()).await?;
    }
    copy.finish().await?;
    if version == Version::Resync {
        // Indexed and with fresh statistics, as roster's staging is: without them the planner
        // may join the just-loaded rows row by row. (The resource table's statistics are fresh:
        // each step of S0 starts on a vacuumed and analysed database.)
        for statement in [
            "CREATE INDEX ON account_stage (external_id)",
            "ANALYZE account_stage",
        ] {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE resource r SET identifier = s.identifier, displayname = s.displayname, \
             modified = now() FROM account_stage s WHERE r.source_system = $1 \
             AND NOT r.deleted AND r.external_id = s.external_id \
             AND (r.identifier IS DISTINCT FROM s.identifier \
               OR r.displayname IS DISTINCT FROM s.displayname)",
        )
        .bind(source)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE resource r SET deleted = true, deleted_at = now(), modified = now() \
             WHERE r.source_system = $1 AND NOT r.deleted AND NOT EXISTS \
             (SELECT 1 FROM account_stage s WHERE s.external_id = r.external_id)",
        )
        .bind(source)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO resource (id, type, typename, subtype, source_system, identifier, \
         external_id, displayname, created, modified) \
         SELECT gen_random_uuid(), 1, 'user', 1, $1, s.identifier, s.external_id, \
         s.displayname, now(), now() FROM account_stage s WHERE NOT EXISTS \
         (SELECT 1 FROM resource r WHERE r.source_system = $1 AND NOT r.deleted \
          AND r.external_id = s.external_id)",
    )
    .bind(source)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(started.elapsed())
}
