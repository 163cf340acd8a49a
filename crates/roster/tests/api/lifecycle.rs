//! Identity lifecycle: the Sean scenario of docs/cohorts.md (a cohort-local rename, an HR
//! termination that deactivates the identity and empties the mirrors of its guests, a restore that
//! re-activates nothing), the expiry sweeper (once, also with two server processes), the approval
//! threshold, and bad input.

use crate::changes::{drain_all, read};
use crate::cohorts::{add, entries, link, plan, prime, resource, sean, Sean};
use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;

on_both_backends!(
    the_sean_lifecycle_scenario,
    an_expired_contractor_is_deactivated_once_by_the_sweeper,
    a_deactivation_past_the_threshold_waits_for_approval,
    actions_refuse_bad_input_and_change_nothing,
    an_hr_sync_that_deactivates_a_record_terminates_the_identity,
    a_patch_that_deactivates_an_hr_record_terminates_the_identity,
    a_reason_with_quotes_and_backslashes_is_stored_as_written,
);

fn ids(values: &Value) -> BTreeSet<String> {
    values
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect()
}

/// The changes of `kind` made by operation `op`, from the whole feed.
async fn changes_of(app: &TestApp, kind: &str, op: i64) -> Vec<Value> {
    let (items, _) = drain_all(app, None, &format!("&kind={kind}")).await;
    items
        .into_iter()
        .filter(|c| c["operation_id"] == op)
        .collect()
}

fn resources_of(changes: &[Value]) -> BTreeSet<String> {
    changes
        .iter()
        .map(|c| c["resource_id"].as_str().expect("resource_id").to_owned())
        .collect()
}

/// Sean's organisation with Sean 2 also in home/Engineering and his guests in the mirrors.
async fn organisation(app: &TestApp) -> Sean {
    let s = sean(app, true).await;
    let [home, in_foo, in_bar] = &s.groups;
    add(app, home, &s.accounts[1][0]).await;
    add(app, in_foo, &s.accounts[1][1]).await;
    add(app, in_bar, &s.accounts[1][2]).await;
    assert_eq!(plan(app, &s.unified).await, vec![]);
    s
}

/// Marks the Workday source as the identity-lifecycle authority.
async fn workday_is_the_authority(app: &TestApp) {
    let reply = app
        .put(
            "/api/v1/sources/workday",
            Some(json!({"lifecycle_authority": true})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["lifecycle_authority"], true);
}

/// The newest entry of a resource's history.
async fn last_change(app: &TestApp, id: &str) -> Value {
    let history = app.get(&format!("/api/v1/resources/{id}/history")).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text);
    history.json["items"]
        .as_array()
        .and_then(|items| items.last())
        .cloned()
        .expect("history")
}

async fn inactive(app: &TestApp, reason: &str) -> i64 {
    app.scalar(
        &format!(
            "SELECT count(*) FROM resource WHERE type = 1 AND NOT active \
             AND deactivation_reason = '{reason}'"
        ),
        &[],
    )
    .await
}

async fn the_sean_lifecycle_scenario(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = organisation(&app).await;
    let [home, in_foo, in_bar] = &s.groups;
    let all: BTreeSet<String> = s.accounts.iter().flatten().cloned().collect();
    let sean1: BTreeSet<String> = s.accounts[0].iter().cloned().collect();

    // A cohort-local rename reaches Sean 1's three accounts and nobody else's.
    let reply = app
        .patch(
            &format!("/api/v1/resources/{}?propagate=cohort", s.accounts[0][0]),
            json!({"displayname": "Sean Murphy"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["operation"]["type"], "propagate");
    assert_eq!(reply.json["operation"]["counts"]["updated"], 3);
    assert_eq!(reply.json["resource"]["displayname"], "Sean Murphy");
    assert_eq!(ids(&reply.json["accounts"]), sean1);
    let renamed = app
        .scalar(
            "SELECT count(*) FROM resource WHERE displayname = 'Sean Murphy'",
            &[],
        )
        .await;
    assert_eq!(renamed, 3);
    for id in &sean1 {
        let name = app
            .text("SELECT displayname FROM resource WHERE id = $1", &[id])
            .await;
        assert_eq!(name.as_deref(), Some("Sean Murphy"));
    }
    let op = reply.json["operation"]["id"].as_i64().expect("op");
    let updated = changes_of(&app, "resource.updated", op).await;
    assert_eq!(updated.len(), 3);
    assert_eq!(resources_of(&updated), sean1);

    // The Workday record is the lifecycle authority: deleting it terminates the identity.
    workday_is_the_authority(&app).await;
    let reply = app
        .delete(&format!("/api/v1/resources/{}", s.workday))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(inactive(&app, "hr-terminated").await, 9);
    let (deactivated, _) = drain_all(&app, None, "&kind=resource.deactivated").await;
    assert_eq!(deactivated.len(), 9);
    assert_eq!(resources_of(&deactivated), all);
    let op = deactivated[0]["operation_id"].as_i64().expect("op");
    assert!(deactivated.iter().all(|c| c["operation_id"] == op));
    let operation = app.get(&format!("/api/v1/operations/{op}")).await;
    assert_eq!(operation.json["type"], "deactivate");
    assert_eq!(operation.json["status"], "complete");
    assert_eq!(operation.json["counts"]["updated"], 9);
    let listed = app
        .get(&format!("/api/v1/operations/{op}/preview?limit=100"))
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let listed: BTreeSet<String> = listed.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(listed, all);

    // The plan removes both Seans' guests from the mirrors, naming the termination.
    let expected = entries(&[
        (in_foo, "remove", &s.accounts[0][1]),
        (in_bar, "remove", &s.accounts[0][2]),
        (in_foo, "remove", &s.accounts[1][1]),
        (in_bar, "remove", &s.accounts[1][2]),
    ]);
    assert_eq!(plan(&app, &s.unified).await, expected);
    let reply = app
        .get(&format!("/api/v1/unified-groups/{}/plan", s.unified))
        .await;
    for group in reply.json["groups"].as_array().expect("groups") {
        for entry in group["remove"].as_array().expect("remove") {
            let reason = entry["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("hr-terminated"), "{reason}");
        }
    }

    // The memberships stay, marked inactive, and filter.
    let members = app.get(&format!("/api/v1/groups/{home}/members")).await;
    let items = members.json["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|m| m["active"] == false));
    let active = app
        .get(&format!("/api/v1/groups/{home}/members?active=true"))
        .await;
    assert_eq!(active.json["items"].as_array().map(Vec::len), Some(0));
    let gone = app
        .get(&format!("/api/v1/groups/{home}/members?active=false"))
        .await;
    assert_eq!(gone.json["items"].as_array().map(Vec::len), Some(2));

    // Restoring the record re-activates nothing; a person does, identity-wide.
    let reply = app
        .post(
            &format!("/api/v1/resources/{}/restore", s.workday),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(inactive(&app, "hr-terminated").await, 9);
    let reply = app
        .post(
            &format!("/api/v1/resources/{}/actions/activate", s.root),
            json!({"scope": "identity"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(ids(&reply.json["accounts"]), all);
    let op = reply.json["operation"]["id"].as_i64().expect("op");
    assert_eq!(changes_of(&app, "resource.activated", op).await.len(), 9);
    let still = app
        .scalar(
            "SELECT count(*) FROM resource WHERE NOT active OR deactivation_reason IS NOT NULL",
            &[],
        )
        .await;
    assert_eq!(still, 0);
    assert_eq!(plan(&app, &s.unified).await, vec![]);

    // A cohort deactivation reaches one persona only.
    let reply = app
        .post(
            &format!("/api/v1/resources/{}/actions/deactivate", s.accounts[1][1]),
            json!({"scope": "cohort", "reason": "second account retired"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let sean2: BTreeSet<String> = s.accounts[1].iter().cloned().collect();
    assert_eq!(ids(&reply.json["accounts"]), sean2);
    assert_eq!(inactive(&app, "second account retired").await, 3);
    let expected = entries(&[
        (in_foo, "remove", &s.accounts[1][1]),
        (in_bar, "remove", &s.accounts[1][2]),
    ]);
    assert_eq!(plan(&app, &s.unified).await, expected);
}

/// Waits (by the feed's long poll, not by sleeping) until `n` changes of `query` were read.
async fn wait_for(app: &TestApp, query: &str, n: usize) -> (Vec<Value>, String) {
    let caught = async {
        let (mut all, mut next) = read(app, None, query).await;
        while all.len() < n {
            let (mut items, later) = read(app, Some(&next), &format!("{query}&wait=1")).await;
            all.append(&mut items);
            next = later;
        }
        (all, next)
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), caught)
        .await
        .expect("the changes arrived within a minute")
}

async fn an_expired_contractor_is_deactivated_once_by_the_sweeper(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut body = resource("home", "temp@home", "user", Some("contractor"));
    body["expires_at"] = json!("2020-01-01T00:00:00Z");
    let contractor = app.create(body).await;
    let mut later = resource("home", "later@home", "user", Some("contractor"));
    later["expires_at"] = json!("2999-01-01T00:00:00Z");
    let staying = app.create(later).await;
    let (changes, next) = wait_for(&app, "&kind=resource.deactivated", 1).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["resource_id"], contractor.as_str());
    let op = changes[0]["operation_id"].as_i64().expect("op");
    let operation = app.get(&format!("/api/v1/operations/{op}")).await;
    assert_eq!(operation.json["type"], "expire");
    assert_eq!(operation.json["counts"]["updated"], 1);
    let account = app.get(&format!("/api/v1/resources/{contractor}")).await;
    assert_eq!(account.json["active"], false);
    assert_eq!(account.json["deactivation_reason"], "expired");
    let other = app.get(&format!("/api/v1/resources/{staying}")).await;
    assert_eq!(other.json["active"], true);
    let listed = app
        .get("/api/v1/resources?expires_before=2030-01-01T00:00:00Z&active=false")
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let listed: Vec<&str> = listed.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(listed, vec![contractor.as_str()]);
    // Later sweeps find nothing due: the next sweep's long poll sees no new deactivation.
    let (more, _) = read(&app, Some(&next), "&kind=resource.deactivated&wait=1").await;
    assert!(more.is_empty(), "{more:?}");
    let sweeps = app
        .scalar("SELECT count(*) FROM operation WHERE type = 'expire'", &[])
        .await;
    assert_eq!(sweeps, 1);
}

/// Two `roster serve` processes sweep the same PostgreSQL: every due account is deactivated
/// exactly once.
#[tokio::test]
async fn postgres_two_processes_expire_each_account_once() {
    use crate::process::{request, start};
    let (_admin, _name, url) = crate::common::fresh_postgres_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--database-url", &url, "--expiry-sweep-seconds", "1"];
    let (a, first) = start(dir.path(), &args).await;
    let (b, second) = start(dir.path(), &args).await;
    let mut due = BTreeSet::new();
    for i in 0..6 {
        let body = json!({"type": "user", "subtype": "contractor", "source_system": "home",
            "identifier": format!("c{i}@home"), "expires_at": "2020-01-01T00:00:00Z"});
        let addr = if i % 2 == 0 { &first } else { &second };
        let (status, created) = request(addr, "POST", "/api/v1/resources", &body.to_string()).await;
        assert_eq!(status, 201, "{created}");
        due.insert(created["id"].as_str().expect("id").to_owned());
    }
    let mut seen: Vec<String> = Vec::new();
    let mut after = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < due.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired within a minute"
        );
        let path = format!("/api/v1/changes?kind=resource.deactivated&wait=2{after}");
        let (status, page) = request(&first, "GET", &path, "").await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["resource_id"].as_str().expect("id").to_owned());
        }
        after = format!("&after={}", page["next"].as_str().expect("next"));
    }
    // Both processes sweep every second; two more seconds of the long poll bring nothing new.
    let path = format!("/api/v1/changes?kind=resource.deactivated&wait=2{after}");
    let (_, page) = request(&second, "GET", &path, "").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "an account was deactivated twice");
    assert_eq!(unique, due);
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let (sweeps, empty, total): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE updated = 0), coalesce(sum(updated), 0)::bigint \
         FROM operation WHERE type = 'expire'",
    )
    .fetch_one(&pool)
    .await
    .expect("expire operations");
    assert!(sweeps >= 1);
    assert_eq!(
        empty, 0,
        "a sweep that found nothing due recorded an operation"
    );
    assert_eq!(total, 6, "the sweeps' counts add up to the accounts");
    pool.close().await;
    drop((a, b));
}

async fn a_deactivation_past_the_threshold_waits_for_approval(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = prime(&app, "big-root").await;
    let mut accounts = BTreeSet::new();
    for i in 0..60 {
        let id = app
            .create(resource(
                "home",
                &format!("u{i}@home"),
                "user",
                Some("native"),
            ))
            .await;
        link(&app, &id, &root).await;
        accounts.insert(id);
    }
    let before = app.fingerprint().await;
    let reply = app
        .post(
            &format!("/api/v1/resources/{root}/actions/deactivate"),
            json!({"scope": "identity", "reason": "left the company"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json["operation"]["status"], "pending");
    assert_eq!(ids(&reply.json["accounts"]), accounts);
    assert_eq!(inactive(&app, "left the company").await, 0);
    let op = reply.json["operation"]["id"].as_i64().expect("op");
    assert_eq!(changes_of(&app, "resource.deactivated", op).await.len(), 0);
    assert_ne!(
        before,
        app.fingerprint().await,
        "the pending operation is recorded"
    );
    let preview = app
        .get(&format!("/api/v1/operations/{op}/preview?limit=1000"))
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    assert_eq!(preview.json["to_remove"], 60);
    assert_eq!(preview.json["items"].as_array().map(Vec::len), Some(60));
    let reply = app
        .post(
            &format!("/api/v1/operations/{op}/approve?wait=20"),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["status"], "complete");
    assert_eq!(reply.json["counts"]["updated"], 60);
    assert_eq!(inactive(&app, "left the company").await, 60);
    let changes = changes_of(&app, "resource.deactivated", op).await;
    assert_eq!(resources_of(&changes), accounts);

    // A rejected one changes nothing.
    let reply = app
        .post(
            &format!("/api/v1/resources/{root}/actions/activate"),
            json!({"scope": "identity"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "activation has no threshold");
    let reply = app
        .post(
            &format!("/api/v1/resources/{root}/actions/deactivate"),
            json!({"scope": "identity", "reason": "again"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json["operation"]["status"], "pending");
    let op = reply.json["operation"]["id"].as_i64().expect("op");
    let reply = app
        .post(&format!("/api/v1/operations/{op}/reject"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(inactive(&app, "again").await, 0);
}

async fn a_reason_with_quotes_and_backslashes_is_stored_as_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = prime(&app, "quoted-root").await;
    let account = app
        .create(resource("home", "obrien@home", "user", Some("native")))
        .await;
    link(&app, &account, &root).await;
    let reason = r"O'Brien left \ 'x'); DROP TABLE resource; -- \' $1 ?";
    let reply = app
        .post(
            &format!("/api/v1/resources/{root}/actions/deactivate"),
            json!({"scope": "identity", "reason": reason}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["operation"]["status"], "complete");
    let stored = app
        .text(
            "SELECT deactivation_reason FROM resource WHERE id = $1",
            &[&account],
        )
        .await;
    assert_eq!(stored.as_deref(), Some(reason));
    let op = reply.json["operation"]["id"].as_i64().expect("op");
    let operation = app.get(&format!("/api/v1/operations/{op}")).await;
    assert_eq!(operation.status, StatusCode::OK, "{}", operation.text);
    let description = operation.json["description"].as_str().expect("description");
    assert!(
        description.ends_with(&format!(": {reason}")),
        "{description}"
    );
    assert_eq!(operation.json["params"]["reason"], reason);
    assert_eq!(changes_of(&app, "resource.deactivated", op).await.len(), 1);
    let last = last_change(&app, &account).await;
    assert_eq!(last["changes"]["deactivation_reason"]["new"], reason);
}

async fn actions_refuse_bad_input_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = organisation(&app).await;
    let account = &s.accounts[0][0];
    let unlinked = app.user("home", "loner@home").await;
    let bound = app
        .token(
            "home-connector",
            &[roster::domain::token::Scope::Write],
            Some("home"),
        )
        .await;
    let before = app.fingerprint().await;
    let deactivate = |id: &str| format!("/api/v1/resources/{id}/actions/deactivate");
    app.post(&deactivate(account), json!({"scope": "identity"}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "reason is required");
    let reply = app
        .post(
            &deactivate(account),
            json!({"scope": "galaxy", "reason": "x"}),
        )
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    assert_eq!(reply.content_type, "application/problem+json");
    app.post(
        &deactivate(&s.root),
        json!({"scope": "account", "reason": "x"}),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "scope account");
    let missing = uuid::Uuid::now_v7().to_string();
    app.post(
        &deactivate(&missing),
        json!({"scope": "identity", "reason": "x"}),
    )
    .await
    .assert_problem(StatusCode::NOT_FOUND, &missing);
    app.patch(
        &format!("/api/v1/resources/{account}?propagate=cohort"),
        json!({"identifier": "new@home"}),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "identifier");
    app.patch(
        &format!("/api/v1/resources/{unlinked}?propagate=cohort"),
        json!({"displayname": "Lone"}),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "not an account linked to a cohort");
    let reply = app
        .patch(
            &format!("/api/v1/resources/{account}?propagate=everyone"),
            json!({"displayname": "x"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let reply = app
        .call_as(
            Some(&bound),
            axum::http::Method::POST,
            &deactivate(account),
            Some(json!({"scope": "identity", "reason": "x"})),
        )
        .await;
    reply.assert_problem(StatusCode::FORBIDDEN, "bound");
    let reply = app
        .put(
            "/api/v1/sources/workday",
            Some(json!({"lifecycle_authority": "yes"})),
        )
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    assert_eq!(before, app.fingerprint().await);
    let source = app.get("/api/v1/sources/workday").await;
    assert_eq!(source.json["lifecycle_authority"], false);
    assert_eq!(source.json["modified"], Value::Null);
}

async fn partial(app: &TestApp, source: &str, lines: Value) -> Value {
    let reply = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "target": "resources", "source_system": source,
                   "resources": lines}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json
}

async fn an_hr_sync_that_deactivates_a_record_terminates_the_identity(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = organisation(&app).await;
    workday_is_the_authority(&app).await;
    // Another source's sync of its own records triggers nothing.
    partial(
        &app,
        "home",
        json!([{"identifier": "sean1@home", "type": "user", "displayname": "Sean"}]),
    )
    .await;
    assert_eq!(inactive(&app, "hr-terminated").await, 0);
    // Workday reports the worker inactive: the identity ends in the same operation's transaction.
    let op = partial(
        &app,
        "workday",
        json!([{"identifier": "W-1", "type": "worker", "active": false}]),
    )
    .await;
    assert_eq!(op["counts"]["updated"], 1, "{op}");
    assert_eq!(inactive(&app, "hr-terminated").await, 9);
    let (deactivated, _) = drain_all(&app, None, "&kind=resource.deactivated").await;
    let worker: Vec<&Value> = deactivated
        .iter()
        .filter(|c| c["resource_id"] == s.workday.as_str())
        .collect();
    assert_eq!(worker.len(), 1, "the record's own flip is a deactivation");
    assert_eq!(deactivated.len(), 10);
    // A source reporting an account active again does not undo roster's deactivation.
    partial(
        &app,
        "home",
        json!([{"identifier": "sean1@home", "type": "user", "active": true}]),
    )
    .await;
    let account = app
        .get(&format!("/api/v1/resources/{}", s.accounts[0][0]))
        .await;
    assert_eq!(account.json["active"], false);
    assert_eq!(account.json["deactivation_reason"], "hr-terminated");
    // A connector (a token bound to the account's source) cannot undo it; a person can.
    let connector = app
        .token(
            "home-connector",
            &[roster::domain::token::Scope::Write],
            Some("home"),
        )
        .await;
    let path = format!("/api/v1/resources/{}", s.accounts[0][0]);
    app.call_as(
        Some(&connector),
        axum::http::Method::PATCH,
        &path,
        Some(json!({"active": true})),
    )
    .await
    .assert_problem(StatusCode::FORBIDDEN, "deactivated by roster");
    let reply = app
        .post(
            &format!("/api/v1/resources/{}/actions/activate", s.root),
            json!({"scope": "identity"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(inactive(&app, "hr-terminated").await, 0);
    // A later report about the record, still inactive, is no new termination.
    partial(
        &app,
        "workday",
        json!([{"identifier": "W-1", "type": "worker", "active": false,
                "displayname": "Worker"}]),
    )
    .await;
    let terminations = app
        .scalar(
            "SELECT count(*) FROM operation WHERE type = 'deactivate'",
            &[],
        )
        .await;
    assert_eq!(terminations, 1);
    let still_active = app
        .scalar(
            "SELECT count(*) FROM resource WHERE type = 1 AND active",
            &[],
        )
        .await;
    assert_eq!(still_active, 9);
}

async fn a_patch_that_deactivates_an_hr_record_terminates_the_identity(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = organisation(&app).await;
    workday_is_the_authority(&app).await;
    let reply = app
        .patch(
            &format!("/api/v1/resources/{}", s.workday),
            json!({"active": false}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(inactive(&app, "hr-terminated").await, 9);
    let (changes, _) = drain_all(&app, None, "&kind=resource.deactivated").await;
    assert_eq!(changes.len(), 10, "nine accounts and the record itself");
    let last = last_change(&app, &s.accounts[2][0]).await;
    assert_eq!(last["kind"], "resource.deactivated");
    assert_eq!(last["source_system"], "home");
    assert_eq!(last["changes"]["active"]["new"], false);
    assert_eq!(
        last["changes"]["deactivation_reason"]["new"],
        "hr-terminated"
    );
    assert_eq!(last["changes"]["deactivation_reason"]["old"], Value::Null);
}
