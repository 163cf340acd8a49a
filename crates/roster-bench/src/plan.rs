//! S7, the sync plan: a unified group of `n` cohorts (a home account and a guest in each of three
//! mirror tenants), with 1% of the guests missing from their mirror and 1% of the cohorts gone
//! from the authoritative group; the plan is read through the API.

use anyhow::{bail, Result};
use sqlx::PgPool;
use uuid::Uuid;

/// Seeds the scenario straight in the database; returns the unified group's id.
pub async fn seed(pool: &PgPool, n: usize) -> Result<Uuid> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TABLE plan_cohort AS SELECT i, gen_random_uuid() AS prime, \
         gen_random_uuid() AS home, gen_random_uuid() AS foo, gen_random_uuid() AS bar, \
         gen_random_uuid() AS baz FROM generate_series(1, $1::int) i",
    )
    .bind(i32::try_from(n)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO resource (id, type, typename, source_system, identifier, created, modified) \
         SELECT prime, 3, 'prime', 'plan', 'p' || i, now(), now() FROM plan_cohort",
    )
    .execute(&mut *tx)
    .await?;
    for tenant in ["home", "foo", "bar", "baz"] {
        sqlx::query(&format!(
            "INSERT INTO resource (id, type, typename, subtype, source_system, identifier, \
             prime_id, created, modified) SELECT {tenant}, 1, 'user', {}, 'plan-{tenant}', \
             'u' || i, prime, now(), now() FROM plan_cohort",
            if tenant == "home" { 1 } else { 2 }
        ))
        .execute(&mut *tx)
        .await?;
    }
    let unified: Uuid = sqlx::query_scalar(
        "INSERT INTO resource (id, type, typename, subtype, source_system, identifier, created, \
         modified) VALUES (gen_random_uuid(), 2, 'group', 11, 'plan', 'unified', now(), now()) \
         RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await?;
    for tenant in ["home", "foo", "bar", "baz"] {
        let group: Uuid = sqlx::query_scalar(
            "INSERT INTO resource (id, type, typename, source_system, identifier, created, \
             modified) VALUES (gen_random_uuid(), 2, 'group', $1, 'engineering', now(), now()) \
             RETURNING id",
        )
        .bind(format!("plan-{tenant}"))
        .fetch_one(&mut *tx)
        .await?;
        let role = if tenant == "home" {
            "authoritative"
        } else {
            "mirror"
        };
        sqlx::query(
            "INSERT INTO unified_link (unified_id, group_id, role, created) \
             VALUES ($1, $2, $3, now())",
        )
        .bind(unified)
        .bind(group)
        .bind(role)
        .execute(&mut *tx)
        .await?;
        // Home: every cohort but 1% (i % 100 = 1); mirrors: every guest but 1% (i % 100 = 0).
        let skip = if tenant == "home" { 1 } else { 0 };
        sqlx::query(&format!(
            "INSERT INTO group_member (source, group_id, member_id, created_timestamp) \
             SELECT $1, $2, {tenant}, now() FROM plan_cohort WHERE i % 100 <> {skip}"
        ))
        .bind(format!("plan-{tenant}"))
        .bind(group)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    // The plan is measured on a settled database, as autovacuum leaves it: the scenarios before
    // leave millions of dead rows, whose vacuum would otherwise run during the measurement.
    for table in ["resource", "group_member", "unified_link", "change"] {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
            .execute(pool)
            .await?;
    }
    Ok(unified)
}

/// Checks a plan read from the API: per mirror, 1% adds and 1% removals, nothing unresolved.
pub fn check(plan: &serde_json::Value, n: usize) -> Result<()> {
    let groups = plan["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let expected = n / 100;
    for g in groups {
        let count = |key: &str| g[key].as_array().map_or(0, Vec::len);
        if count("add") != expected || count("remove") != expected || count("unresolved") != 0 {
            bail!(
                "the plan of group {} has {} adds, {} removals, {} unresolved; expected \
                 {expected}, {expected}, 0",
                g["group_id"],
                count("add"),
                count("remove"),
                count("unresolved")
            );
        }
    }
    if groups.len() != 3 {
        bail!("the plan has {} mirror groups, not 3", groups.len());
    }
    Ok(())
}
