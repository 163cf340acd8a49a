//! Resources: create, read, list, look up, update, soft-delete, restore.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::StatusCode;
use serde_json::json;
use std::collections::HashSet;

on_both_backends!(
    create_stores_every_field_with_type_code_and_typename,
    get_returns_404_problem_for_unknown_id,
    identifier_is_unique_per_source_and_type_among_live_resources,
    external_id_is_unique_per_source_among_live_resources,
    patch_changes_only_named_fields_and_null_clears,
    patch_that_changes_nothing_writes_nothing,
    patch_cannot_change_type_or_source_system,
    soft_delete_ends_memberships_and_restore_keeps_them_ended,
    restore_conflicts_when_identifier_was_taken_meanwhile,
    list_filters_by_every_attribute,
    pagination_has_no_duplicates_or_gaps_while_rows_are_inserted,
    lookup_by_identifier_or_external_id,
    invalid_values_are_refused_and_change_nothing,
);

async fn create_stores_every_field_with_type_code_and_typename(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let reply = app
        .post(
            "/api/v1/resources",
            json!({
                "type": "user", "subtype": "guest", "source_system": "foo",
                "identifier": "sean_home.com#EXT#@foo.onmicrosoft.com", "external_id": "obj-1",
                "displayname": "Sean", "description": "guest of Sean", "notes": "n",
                "tags": ["b2b", "eng"], "active": false, "expires_at": "2030-01-01T00:00:00Z"
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json["id"].as_str().unwrap();
    assert_eq!(
        reply.location.as_deref(),
        Some(format!("/api/v1/resources/{id}").as_str())
    );
    assert_eq!(reply.json["type"], "user");
    assert_eq!(reply.json["subtype"], "guest");
    assert_eq!(reply.json["tags"], json!(["b2b", "eng"]));
    assert_eq!(reply.json["active"], false);
    assert_eq!(reply.json["deleted"], false);
    assert_eq!(
        app.scalar(
            "SELECT CAST(type AS BIGINT) FROM resource WHERE id = $1",
            &[id]
        )
        .await,
        1
    );
    assert_eq!(
        app.scalar(
            "SELECT CAST(subtype AS BIGINT) FROM resource WHERE id = $1",
            &[id]
        )
        .await,
        2
    );
    assert_eq!(
        app.text("SELECT typename FROM resource WHERE id = $1", &[id])
            .await
            .as_deref(),
        Some("user")
    );
    let got = app.get(&format!("/api/v1/resources/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json, reply.json, "what is read back is what was stored");
}

async fn get_returns_404_problem_for_unknown_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = uuid::Uuid::now_v7();
    app.get(&format!("/api/v1/resources/{id}"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, &id.to_string());
}

async fn identifier_is_unique_per_source_and_type_among_live_resources(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.user("home", "sean@home.com").await;
    let dup = app
        .post(
            "/api/v1/resources",
            json!({"type": "user", "source_system": "home", "identifier": "sean@home.com"}),
        )
        .await;
    dup.assert_problem(StatusCode::CONFLICT, "identifier");
    assert_eq!(
        app.scalar("SELECT count(*) FROM resource", &[]).await,
        1,
        "the refused create left no row"
    );
    // Another source, or another type, may use the same identifier.
    app.user("foo", "sean@home.com").await;
    app.group("home", "sean@home.com").await;
    // Once the first is deleted, its identifier is free again.
    app.delete(&format!("/api/v1/resources/{first}")).await;
    app.user("home", "sean@home.com").await;
    assert_eq!(app.scalar("SELECT count(*) FROM resource", &[]).await, 4);
}

async fn external_id_is_unique_per_source_among_live_resources(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create(json!({"type": "user", "source_system": "home", "external_id": "x1"}))
        .await;
    app.post(
        "/api/v1/resources",
        json!({"type": "group", "source_system": "home", "external_id": "x1"}),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "external_id");
    app.create(json!({"type": "user", "source_system": "bar", "external_id": "x1"}))
        .await;
}

async fn patch_changes_only_named_fields_and_null_clears(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .create(json!({
            "type": "user", "source_system": "home", "identifier": "a@home.com",
            "displayname": "A", "description": "keep me", "tags": ["x"]
        }))
        .await;
    let before = app.get(&format!("/api/v1/resources/{id}")).await.json;
    let reply = app
        .patch(
            &format!("/api/v1/resources/{id}"),
            json!({"displayname": "Alice", "tags": ["x", "y"], "notes": null, "identifier": null}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["displayname"], "Alice");
    assert_eq!(reply.json["description"], "keep me");
    assert_eq!(reply.json["identifier"], json!(null));
    assert_eq!(reply.json["tags"], json!(["x", "y"]));
    assert_ne!(reply.json["modified"], before["modified"]);
    assert_eq!(reply.json["created"], before["created"]);
    assert_eq!(
        app.text("SELECT displayname FROM resource WHERE id = $1", &[&id])
            .await
            .as_deref(),
        Some("Alice")
    );
    assert_eq!(
        app.text("SELECT identifier FROM resource WHERE id = $1", &[&id])
            .await,
        None
    );
}

async fn patch_that_changes_nothing_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .create(
            json!({"type": "user", "source_system": "home", "displayname": "A", "active": true}),
        )
        .await;
    let before = app
        .text(
            "SELECT CAST(modified AS TEXT) FROM resource WHERE id = $1",
            &[&id],
        )
        .await;
    let reply = app
        .patch(
            &format!("/api/v1/resources/{id}"),
            json!({"displayname": "A", "active": true}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let after = app
        .text(
            "SELECT CAST(modified AS TEXT) FROM resource WHERE id = $1",
            &[&id],
        )
        .await;
    assert_eq!(before, after, "a no-op patch must not rewrite the row");
}

async fn patch_cannot_change_type_or_source_system(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.user("home", "a@home.com").await;
    let before = app.fingerprint().await;
    for body in [json!({"type": "group"}), json!({"source_system": "bar"})] {
        let reply = app.patch(&format!("/api/v1/resources/{id}"), body).await;
        assert!(
            reply.status.is_client_error(),
            "{} {}",
            reply.status,
            reply.text
        );
        assert!(reply.json["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field"));
    }
    assert_eq!(app.fingerprint().await, before);
}

async fn soft_delete_ends_memberships_and_restore_keeps_them_ended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "a@home.com").await;
    let g1 = app.group("home", "g1").await;
    let g2 = app.group("home", "g2").await;
    for g in [&g1, &g2] {
        app.put(&format!("/api/v1/groups/{g}/members/{user}"), None)
            .await;
    }
    let reply = app.delete(&format!("/api/v1/resources/{user}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["resource"]["deleted"], true);
    assert_eq!(reply.json["operation"]["type"], "delete");
    // Deleted, the resource is gone from its address unless asked for.
    app.get(&format!("/api/v1/resources/{user}"))
        .await
        .assert_problem(StatusCode::GONE, "include_deleted=true");
    let kept = app
        .get(&format!("/api/v1/resources/{user}?include_deleted=true"))
        .await;
    assert_eq!(
        (kept.status, &kept.json["deleted"]),
        (StatusCode::OK, &json!(true))
    );
    assert_eq!(reply.json["operation"]["counts"]["removed"], 2);
    let op = reply.json["operation"]["id"].as_i64().unwrap();
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM group_member WHERE member_id = $1 AND removed AND removed_timestamp IS NOT NULL",
            &[&user]
        )
        .await,
        2
    );
    assert_eq!(
        app.scalar(
            "SELECT max(last_operation_id) FROM group_member WHERE member_id = $1",
            &[&user]
        )
        .await,
        op
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE id = $1 AND deleted AND deleted_at IS NOT NULL",
            &[&user]
        )
        .await,
        1
    );
    // Deleted resources are hidden from lists unless asked for.
    let list = app.get("/api/v1/resources?type=user").await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 0);
    let list = app
        .get("/api/v1/resources?type=user&include_deleted=true")
        .await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 1);
    // Deleting again changes nothing.
    let again = app.delete(&format!("/api/v1/resources/{user}")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["operation"], json!(null));
    assert_eq!(app.scalar("SELECT count(*) FROM operation", &[]).await, 3);

    let restored = app
        .call(
            axum::http::Method::POST,
            &format!("/api/v1/resources/{user}/restore"),
            None,
        )
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.text);
    assert_eq!(restored.json["deleted"], false);
    assert_eq!(restored.json["deleted_at"], json!(null));
    let members = app.get(&format!("/api/v1/groups/{g1}/members")).await;
    assert_eq!(
        members.json["items"].as_array().unwrap().len(),
        0,
        "memberships stay ended until a source confirms them"
    );
}

async fn restore_conflicts_when_identifier_was_taken_meanwhile(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let old = app.user("home", "a@home.com").await;
    app.delete(&format!("/api/v1/resources/{old}")).await;
    app.user("home", "a@home.com").await;
    let reply = app
        .call(
            axum::http::Method::POST,
            &format!("/api/v1/resources/{old}/restore"),
            None,
        )
        .await;
    reply.assert_problem(StatusCode::CONFLICT, "identifier");
    assert_eq!(
        app.scalar("SELECT count(*) FROM resource WHERE deleted", &[])
            .await,
        1
    );
}

async fn list_filters_by_every_attribute(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app
        .create(
            json!({"type": "user", "subtype": "native", "source_system": "home",
                       "identifier": "a", "external_id": "ea", "tags": ["eng", "x"]}),
        )
        .await;
    let b = app
        .create(
            json!({"type": "user", "subtype": "guest", "source_system": "foo",
                       "identifier": "b", "tags": ["eng"], "active": false}),
        )
        .await;
    let g = app
        .create(json!({"type": "group", "subtype": "unified", "source_system": "home", "identifier": "g"}))
        .await;
    let d = app.user("home", "d").await;
    app.delete(&format!("/api/v1/resources/{d}")).await;

    let ids = |reply: &crate::common::Reply| -> Vec<String> {
        reply.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let cases: [(&str, Vec<&String>); 10] = [
        ("", vec![&a, &b, &g]),
        ("type=user", vec![&a, &b]),
        ("type=group", vec![&g]),
        ("subtype=guest", vec![&b]),
        ("source_system=home", vec![&a, &g]),
        ("identifier=b", vec![&b]),
        ("external_id=ea", vec![&a]),
        ("tag=eng", vec![&a, &b]),
        ("active=false", vec![&b]),
        ("include_deleted=true", vec![&a, &b, &g, &d]),
    ];
    for (query, expected) in cases {
        let reply = app.get(&format!("/api/v1/resources?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
        let mut expected: Vec<String> = expected.into_iter().cloned().collect();
        expected.sort();
        assert_eq!(ids(&reply), expected, "filter {query:?}");
    }
}

async fn pagination_has_no_duplicates_or_gaps_while_rows_are_inserted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut before = HashSet::new();
    for i in 0..25 {
        before.insert(app.user("home", &format!("u{i}")).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/resources?limit=7&cursor={c}"),
            None => "/api/v1/resources?limit=7".to_owned(),
        };
        let reply = app.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        for item in reply.json["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        // Writers keep inserting while the reader pages.
        app.user("home", &format!("late{pages}")).await;
        match reply.json["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no resource appears twice");
    assert!(
        before.is_subset(&unique),
        "every resource that existed before paging began is seen"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "pages come in stable id order");
}

async fn lookup_by_identifier_or_external_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app
        .create(json!({"type": "user", "source_system": "home", "identifier": "sean@home.com", "external_id": "oid-1"}))
        .await;
    let by_id = app
        .get("/api/v1/resources/lookup?source_system=home&identifier=sean@home.com")
        .await;
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.text);
    assert_eq!(by_id.json["id"], user);
    let by_ext = app
        .get("/api/v1/resources/lookup?source_system=home&external_id=oid-1")
        .await;
    assert_eq!(by_ext.json["id"], user);
    app.get("/api/v1/resources/lookup?source_system=foo&identifier=sean@home.com")
        .await
        .assert_problem(StatusCode::NOT_FOUND, "foo");
    let group = app.group("home", "sean@home.com").await;
    app.get("/api/v1/resources/lookup?source_system=home&identifier=sean@home.com")
        .await
        .assert_problem(StatusCode::CONFLICT, "type");
    let typed = app
        .get("/api/v1/resources/lookup?source_system=home&identifier=sean@home.com&type=group")
        .await;
    assert_eq!(typed.json["id"], group);
    app.get("/api/v1/resources/lookup?source_system=home")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "exactly one");
}

async fn invalid_values_are_refused_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "a").await;
    let before = app.fingerprint().await;
    let cases = [
        (
            json!({"type": "user", "source_system": ""}),
            "source_system",
        ),
        (
            json!({"type": "user", "source_system": "   "}),
            "source_system",
        ),
        (
            json!({"type": "user", "subtype": "unified", "source_system": "home"}),
            "unified",
        ),
        (
            json!({"type": "group", "subtype": "guest", "source_system": "home"}),
            "guest",
        ),
        (json!({"type": "robot", "source_system": "home"}), "robot"),
        (json!({"source_system": "home"}), "type"),
        (
            json!({"type": "user", "source_system": "home", "identifier": "a\u{0007}b"}),
            "control",
        ),
        (
            json!({"type": "user", "source_system": "home", "tags": "notalist"}),
            "tags",
        ),
    ];
    for (body, needle) in cases {
        let reply = app.post("/api/v1/resources", body.clone()).await;
        assert!(
            reply.status == StatusCode::UNPROCESSABLE_ENTITY
                || reply.status == StatusCode::BAD_REQUEST,
            "{body}: {} {}",
            reply.status,
            reply.text
        );
        assert_eq!(reply.content_type, "application/problem+json");
        assert!(
            reply.text.contains(needle),
            "{body}: detail should mention {needle}: {}",
            reply.text
        );
    }
    app.patch(
        &format!("/api/v1/resources/{user}"),
        json!({"subtype": "unified"}),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unified");
    assert_eq!(
        app.fingerprint().await,
        before,
        "refused requests change nothing"
    );
}
