//! Memberships: single adds and removals as partial-update operations, member and group lists.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::StatusCode;
use serde_json::json;

on_both_backends!(
    adding_a_member_records_a_partial_update_operation,
    re_adding_confirms_or_updates_without_duplicating,
    removing_soft_deletes_and_re_adding_reactivates,
    removing_a_non_member_is_404_and_changes_nothing,
    members_must_join_live_groups,
    groups_nest,
    member_list_pages_filters_and_hides_removed,
    groups_of_a_member_are_listed,
);

fn members_path(group: &str, member: &str) -> String {
    format!("/api/v1/groups/{group}/members/{member}")
}

async fn adding_a_member_records_a_partial_update_operation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "a").await;
    let group = app.group("home", "eng").await;
    let reply = app
        .put(
            &members_path(&group, &user),
            Some(json!({"member_name": "A", "contributing": true})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["removed"], false);
    assert_eq!(reply.json["contributing"], true);
    assert_eq!(reply.json["member_name"], "A");
    assert_eq!(reply.json["source"], "home");
    let op = reply.json["last_operation_id"].as_i64().unwrap();
    let operation = app.get(&format!("/api/v1/operations/{op}")).await;
    assert_eq!(operation.json["type"], "partial-update");
    assert_eq!(operation.json["status"], "complete");
    assert_eq!(operation.json["group_id"], group);
    assert_eq!(operation.json["counts"]["added"], 1);
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM group_member WHERE group_id = $1 AND member_id = $2 AND NOT removed",
            &[&group, &user]
        )
        .await,
        1
    );
    assert_eq!(
        app.scalar(
            "SELECT last_operation_id FROM group_member WHERE group_id = $1",
            &[&group]
        )
        .await,
        op
    );
}

async fn re_adding_confirms_or_updates_without_duplicating(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "a").await;
    let group = app.group("home", "eng").await;
    let first = app
        .put(
            &members_path(&group, &user),
            Some(json!({"member_name": "A"})),
        )
        .await;
    let again = app.put(&members_path(&group, &user), None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(
        again.json["member_name"], "A",
        "omitted fields keep their value"
    );
    assert!(
        again.json["last_operation_id"].as_i64() > first.json["last_operation_id"].as_i64(),
        "a confirmation is newer knowledge"
    );
    let updated = app
        .put(
            &members_path(&group, &user),
            Some(json!({"contributing": false})),
        )
        .await;
    assert_eq!(updated.json["contributing"], false);
    assert_eq!(
        app.scalar("SELECT count(*) FROM group_member", &[]).await,
        1
    );
    let op = app
        .get(&format!(
            "/api/v1/operations/{}",
            again.json["last_operation_id"]
        ))
        .await;
    assert_eq!(op.json["counts"]["unchanged"], 1);
    assert_eq!(op.json["counts"]["added"], 0);
}

async fn removing_soft_deletes_and_re_adding_reactivates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "a").await;
    let group = app.group("home", "eng").await;
    app.put(&members_path(&group, &user), None).await;
    let removed = app.delete(&members_path(&group, &user)).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    assert_eq!(removed.json["removed"], true);
    assert!(removed.json["removed_timestamp"].is_string());
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM group_member WHERE removed AND removed_timestamp IS NOT NULL",
            &[]
        )
        .await,
        1,
        "the row is kept, marked removed"
    );
    let detail = app.get(&members_path(&group, &user)).await;
    assert_eq!(detail.json["removed"], true);

    let back = app.put(&members_path(&group, &user), None).await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.json["removed"], false);
    assert_eq!(back.json["removed_timestamp"], json!(null));
    assert_eq!(
        back.json["id"], removed.json["id"],
        "the same row is re-activated"
    );
    let op = app
        .get(&format!(
            "/api/v1/operations/{}",
            back.json["last_operation_id"]
        ))
        .await;
    assert_eq!(op.json["counts"]["reactivated"], 1);
}

async fn removing_a_non_member_is_404_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "a").await;
    let group = app.group("home", "eng").await;
    let before = app.fingerprint().await;
    app.delete(&members_path(&group, &user))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not a member");
    app.get(&members_path(&group, &user))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not a member");
    assert_eq!(app.fingerprint().await, before, "no operation was recorded");
}

async fn members_must_join_live_groups(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "a").await;
    let other = app.user("home", "b").await;
    let group = app.group("home", "eng").await;
    let gone = app.user("home", "gone").await;
    app.delete(&format!("/api/v1/resources/{gone}")).await;
    let before = app.fingerprint().await;
    app.put(&members_path(&user, &other), None)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "not a group");
    app.put(&members_path(&group, &group), None)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "itself");
    app.put(&members_path(&group, &gone), None)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "deleted");
    let unknown = uuid::Uuid::now_v7().to_string();
    app.put(&members_path(&group, &unknown), None)
        .await
        .assert_problem(StatusCode::NOT_FOUND, &unknown);
    app.put(&members_path(&unknown, &user), None)
        .await
        .assert_problem(StatusCode::NOT_FOUND, &unknown);
    app.put(&members_path(&group, &user), Some(json!({"bogus": 1})))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "bogus");
    assert_eq!(app.fingerprint().await, before);
}

async fn groups_nest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let outer = app.group("home", "all-staff").await;
    let inner = app.group("home", "eng").await;
    let reply = app.put(&members_path(&outer, &inner), None).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let members = app
        .get(&format!("/api/v1/groups/{outer}/members?type=group"))
        .await;
    assert_eq!(members.json["items"][0]["member_id"], inner);
}

async fn member_list_pages_filters_and_hides_removed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.group("home", "eng").await;
    let mut users = Vec::new();
    for i in 0..9 {
        let u = app.user("home", &format!("u{i}")).await;
        app.put(&members_path(&group, &u), None).await;
        users.push(u);
    }
    let sub = app.group("home", "sub").await;
    app.put(&members_path(&group, &sub), None).await;
    app.delete(&members_path(&group, &users[3])).await;

    let mut seen = Vec::new();
    let mut path = format!("/api/v1/groups/{group}/members?limit=4&type=user");
    loop {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        for m in reply.json["items"].as_array().unwrap() {
            assert_eq!(m["removed"], false);
            seen.push(m["member_id"].as_str().unwrap().to_owned());
        }
        match reply.json["next"].as_str() {
            Some(c) => {
                path = format!("/api/v1/groups/{group}/members?limit=4&type=user&cursor={c}")
            }
            None => break,
        }
    }
    let mut expected: Vec<String> = users
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, u)| u.clone())
        .collect();
    expected.sort();
    assert_eq!(seen, expected);

    let all = app
        .get(&format!(
            "/api/v1/groups/{group}/members?include_removed=true&limit=1000"
        ))
        .await;
    assert_eq!(all.json["items"].as_array().unwrap().len(), 10);
    let unknown = uuid::Uuid::now_v7();
    app.get(&format!("/api/v1/groups/{unknown}/members"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, &unknown.to_string());
}

async fn groups_of_a_member_are_listed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "a").await;
    let mut groups = Vec::new();
    for i in 0..3 {
        let g = app.group("home", &format!("g{i}")).await;
        app.put(&members_path(&g, &user), None).await;
        groups.push(g);
    }
    app.delete(&members_path(&groups[1], &user)).await;
    let reply = app.get(&format!("/api/v1/resources/{user}/groups")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let got: Vec<&str> = reply.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["group_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![groups[0].as_str(), groups[2].as_str()]);
    let with_removed = app
        .get(&format!(
            "/api/v1/resources/{user}/groups?include_removed=true&limit=2"
        ))
        .await;
    assert_eq!(with_removed.json["items"].as_array().unwrap().len(), 2);
    assert!(with_removed.json["next"].is_string());
}
