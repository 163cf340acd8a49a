//! S9, SCIM on a large group: 1,000 member PATCHes (an add, then the remove of the same member)
//! one after another on a group of `n` members, as Entra ID sends them; and the lookup of that
//! group by `displayName` without its members, as Entra ID and Okta do before every push.

use crate::reads::{summarise, Load};
use anyhow::{bail, Context, Result};
use serde_json::json;
use sqlx::PgPool;
use std::time::Instant;
use uuid::Uuid;

const SOURCE: &str = "scim-bench";
const GROUP_NAME: &str = "Engineering S9";
/// PATCHes measured (half adds, half removes).
pub const PATCHES: usize = 1000;
/// Lookups measured.
pub const LOOKUPS: usize = 200;

/// The seeded group and the users its PATCHes add and remove.
pub struct Seeded {
    pub group: Uuid,
    spare: Vec<Uuid>,
}

/// Seeds `n` users of the SCIM source in one group, and the spare users, straight in the
/// database.
pub async fn seed(pool: &PgPool, n: usize) -> Result<Seeded> {
    let mut tx = pool.begin().await?;
    let group: Uuid = sqlx::query_scalar(
        "INSERT INTO resource (id, type, typename, source_system, identifier, displayname, \
         created, modified) VALUES (gen_random_uuid(), 2, 'group', $1, 'engineering-s9', $2, \
         now(), now()) RETURNING id",
    )
    .bind(SOURCE)
    .bind(GROUP_NAME)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "CREATE TEMP TABLE scim_user ON COMMIT DROP AS SELECT i, gen_random_uuid() AS id \
         FROM generate_series(1, $1::int) i",
    )
    .bind(i32::try_from(n + PATCHES / 2)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO resource (id, type, typename, source_system, identifier, created, modified) \
         SELECT id, 1, 'user', $1, 'scim-user-' || i || '@example.com', now(), now() \
         FROM scim_user",
    )
    .bind(SOURCE)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO group_member (source, group_id, member_id, created_timestamp) \
         SELECT $1, $2, id, now() FROM scim_user WHERE i <= $3",
    )
    .bind(SOURCE)
    .bind(group)
    .bind(i32::try_from(n)?)
    .execute(&mut *tx)
    .await?;
    let spare: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM scim_user WHERE i > $1 ORDER BY i")
        .bind(i32::try_from(n)?)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    for table in ["resource", "group_member"] {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
            .execute(pool)
            .await?;
    }
    Ok(Seeded { group, spare })
}

/// A SCIM token bound to the benchmark's source, made through the API with the admin token.
async fn scim_token(http: &reqwest::Client, base: &str, admin: &str) -> Result<String> {
    let body = json!({"name": "bench-scim", "scopes": ["scim"], "source_system": SOURCE});
    let response = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await?;
    if !status.is_success() {
        bail!("creating the SCIM token answered {status}: {answer}");
    }
    Ok(answer["secret"].as_str().context("secret")?.to_owned())
}

/// Sends one request and checks its status; returns how long it took.
async fn timed(request: reqwest::RequestBuilder, expected: u16) -> Result<f64> {
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    if status.as_u16() != expected {
        bail!("SCIM answered {status}, not {expected}: {text}");
    }
    Ok(elapsed)
}

/// What S9 measured.
pub struct Measured {
    pub patch: Load,
    pub lookup: Load,
}

/// Runs the PATCHes and the lookups; checks that the group ends as large as it started.
pub async fn run(
    pool: &PgPool,
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    seeded: &Seeded,
    n: usize,
) -> Result<Measured> {
    let token = scim_token(http, base, admin).await?;
    let group_url = format!("{base}/scim/v2/{SOURCE}/Groups/{}", seeded.group);
    let mut latencies = Vec::with_capacity(PATCHES);
    let started = Instant::now();
    for member in &seeded.spare {
        let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Add", "path": "members", "value": [{"value": member}]}]});
        let remove = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Remove", "path": format!("members[value eq \"{member}\"]")}]});
        for body in [add, remove] {
            let request = http.patch(&group_url).bearer_auth(&token).json(&body);
            latencies.push(timed(request, 200).await?);
        }
    }
    let patch = summarise(latencies, started.elapsed());
    let members: i64 =
        sqlx::query_scalar("SELECT count(*) FROM group_member WHERE group_id = $1 AND NOT removed")
            .bind(seeded.group)
            .fetch_one(pool)
            .await?;
    if members != i64::try_from(n)? {
        bail!("after the PATCHes the group has {members} members, not {n}");
    }
    let filter = format!("displayName eq \"{GROUP_NAME}\"");
    let mut latencies = Vec::with_capacity(LOOKUPS);
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        let request = http
            .get(format!("{base}/scim/v2/{SOURCE}/Groups"))
            .query(&[
                ("filter", filter.as_str()),
                ("excludedAttributes", "members"),
            ])
            .bearer_auth(&token);
        latencies.push(timed(request, 200).await?);
    }
    let lookup = summarise(latencies, started.elapsed());
    Ok(Measured { patch, lookup })
}

/// The table rows of S9.
pub fn report(measured: &Measured, n: usize) -> String {
    let row = |what: String, load: &Load, target: &str, met: Option<bool>| {
        format!(
            "| {what} | {:.0} | {:.2} | {:.2} | {target} | {} |\n",
            load.per_second,
            load.p50_ms,
            load.p99_ms,
            met.map_or("", |m| if m { "yes" } else { "no" })
        )
    };
    let mut out = String::from(
        "| S9 SCIM, one client, one request at a time | req/s | p50 ms | p99 ms | target | met |\n\
         |---|---|---|---|---|---|\n",
    );
    out.push_str(&row(
        format!(
            "{PATCHES} member PATCHes (add, then remove, one member each) on a {n}-member group"
        ),
        &measured.patch,
        "p99 < 10 ms",
        Some(measured.patch.p99_ms < 10.0),
    ));
    out.push_str(&row(
        format!("{LOOKUPS} `GET /Groups?filter=displayName eq …&excludedAttributes=members`"),
        &measured.lookup,
        "",
        None,
    ));
    out
}
