//! PostgreSQL only: real processes. A worker killed with SIGKILL mid-apply leaves nothing half
//! applied and its operation is taken over when the lease expires; several processes on one
//! database apply every operation exactly once.

use crate::common::fresh_postgres_database;
use crate::process::{request, start, terminate};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// Creates `n` users and a group of source `home` directly in the database; returns the group id
/// and the user ids.
async fn seed(pool: &PgPool, group: &str, n: i64) -> (String, Vec<String>) {
    let group_id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO resource (id, type, typename, source_system, identifier, created, modified) \
         VALUES (gen_random_uuid(), 2, 'group', 'home', $1, now(), now()) RETURNING id",
    )
    .bind(group)
    .fetch_one(pool)
    .await
    .unwrap();
    let users: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO resource (id, type, typename, source_system, identifier, created, modified) \
         SELECT gen_random_uuid(), 1, 'user', 'home', $1 || '-' || i, now(), now() \
         FROM generate_series(1, $2) i RETURNING id",
    )
    .bind(group)
    .bind(n)
    .fetch_all(pool)
    .await
    .unwrap();
    (
        group_id.to_string(),
        users.iter().map(ToString::to_string).collect(),
    )
}

fn ndjson(members: &[String]) -> String {
    members
        .iter()
        .map(|m| format!("{{\"member_id\":\"{m}\"}}\n"))
        .collect()
}

/// Creates a full-update of `group` through `addr`, uploads `members` and completes it.
async fn submit(addr: &str, group: &str, members: &[String]) -> i64 {
    let (status, op) = request(
        addr,
        "POST",
        "/api/v1/operations",
        &json!({"type": "full-update", "group_id": group,
                "threshold": {"max_removed_percent": 100}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 201, "{op}");
    let id = op["id"].as_i64().unwrap();
    let (status, chunk) = request(
        addr,
        "PUT",
        &format!("/api/v1/operations/{id}/chunks/0"),
        &ndjson(members),
    )
    .await;
    assert_eq!(status, 200, "{chunk}");
    let (status, _) = request(
        addr,
        "POST",
        &format!("/api/v1/operations/{id}/complete"),
        "",
    )
    .await;
    assert_eq!(status, 202);
    id
}

/// Polls the operation through `addr` until `done` says so, for at most `limit`.
async fn poll(addr: &str, id: i64, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, op) = request(addr, "GET", &format!("/api/v1/operations/{id}"), "").await;
        if done(&op) {
            return op;
        }
        assert!(Instant::now() < deadline, "operation {id} stayed {op}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn count(pool: &PgPool, sql: &str, id: i64) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn killed_worker_leaves_nothing_half_applied_and_its_operation_is_resumed() {
    let (_admin, _name, url) = fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--database-url",
        url.as_str(),
        "--lease-seconds",
        "2",
        "--workers",
        "1",
    ];
    let (first, addr) = start(dir.path(), &args).await;
    let pool = PgPool::connect(&url).await.unwrap();
    let (group, members) = seed(&pool, "big", 300_000).await;

    let id = submit(&addr, &group, &members).await;
    poll(&addr, id, Duration::from_secs(60), |op| {
        op["phase"] == "applying"
    })
    .await;
    let mut first = first;
    first.kill().await.unwrap();
    first.wait().await.unwrap();

    // The killed worker's transaction rolled back: the group is untouched, the claim remains.
    let state: (String, Option<String>) =
        sqlx::query_as("SELECT status, phase FROM operation WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, ("running".to_owned(), Some("applying".to_owned())));
    let group_uuid = uuid::Uuid::parse_str(&group).unwrap();
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM group_member WHERE group_id = $1 AND NOT removed")
            .bind(group_uuid)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(active, 0, "nothing of the group was half applied");

    let (second, addr) = start(dir.path(), &args).await;
    let op = poll(&addr, id, Duration::from_secs(240), |op| {
        op["status"] != "running"
    })
    .await;
    assert_eq!(op["status"], "complete", "{op}");
    assert_eq!(op["counts"]["added"], 300_000);
    assert_eq!(
        count(
            &pool,
            "SELECT attempts::bigint FROM operation WHERE id = $1",
            id
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM change WHERE operation_id = $1",
            id
        )
        .await,
        300_000,
        "every change is logged once"
    );
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM group_member WHERE group_id = $1 AND NOT removed")
            .bind(group_uuid)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(active, 300_000);
    terminate(second).await;
}

#[tokio::test]
async fn several_processes_apply_each_operation_once_and_one_writer_per_group() {
    let (_admin, _name, url) = fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--database-url", url.as_str(), "--workers", "2"];
    let (a, addr_a) = start(dir.path(), &args).await;
    let (b, addr_b) = start(dir.path(), &args).await;
    let pool = PgPool::connect(&url).await.unwrap();

    let mut groups = Vec::new();
    for i in 0..6 {
        groups.push(seed(&pool, &format!("g{i}"), 3_000).await);
    }
    // Two full-updates of one group, both queued at once: the older first, the newer second.
    let (shared, people) = seed(&pool, "shared", 2_000).await;
    let older = submit(&addr_a, &shared, &people[..1_500]).await;
    let newer = submit(&addr_b, &shared, &people[500..]).await;
    let mut ops = Vec::new();
    for (i, (group, members)) in groups.iter().enumerate() {
        let addr = if i % 2 == 0 { &addr_a } else { &addr_b };
        ops.push(submit(addr, group, members).await);
    }
    for id in &ops {
        let op = poll(&addr_a, *id, Duration::from_secs(120), |op| {
            op["status"] != "running"
        })
        .await;
        assert_eq!(op["status"], "complete", "{op}");
        assert_eq!(op["counts"]["added"], 3_000);
        assert_eq!(
            count(
                &pool,
                "SELECT attempts::bigint FROM operation WHERE id = $1",
                *id
            )
            .await,
            1,
            "claimed by exactly one worker"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM change WHERE operation_id = $1",
                *id
            )
            .await,
            3_000
        );
    }
    for id in [older, newer] {
        poll(&addr_b, id, Duration::from_secs(120), |op| {
            op["status"] != "running"
        })
        .await;
    }
    // Whatever order the two applied in, the group ends as the newer snapshot says.
    let shared_uuid = uuid::Uuid::parse_str(&shared).unwrap();
    let mut active: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT member_id FROM group_member WHERE group_id = $1 AND NOT removed",
    )
    .bind(shared_uuid)
    .fetch_all(&pool)
    .await
    .unwrap();
    active.sort();
    let mut expected: Vec<uuid::Uuid> = people[500..]
        .iter()
        .map(|p| uuid::Uuid::parse_str(p).unwrap())
        .collect();
    expected.sort();
    assert!(
        active == expected,
        "the shared group holds {} members, not the newer snapshot's {}",
        active.len(),
        expected.len()
    );
    terminate(a).await;
    terminate(b).await;
}
