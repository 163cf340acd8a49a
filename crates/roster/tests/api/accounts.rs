//! Account sync: full-updates and partial-updates of a source's resources, renames by external
//! id, newer knowledge winning, and members created on demand.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::StatusCode;
use serde_json::{json, Value};

on_both_backends!(
    a_hundred_thousand_accounts_load_and_resync_with_churn,
    a_rename_by_external_id_keeps_the_resource_and_its_memberships,
    an_empty_snapshot_is_held_and_deletes_nothing,
    a_held_snapshot_applies_its_changes_once_approved,
    a_newer_partial_update_is_not_undone_by_an_older_snapshot,
    partial_updates_of_resources_upsert_and_delete_in_one_transaction,
    lines_that_cannot_apply_are_rejected_with_their_numbers,
    missing_members_are_created_only_when_asked,
    a_scoped_full_update_leaves_other_types_alone,
    skipped_lines_keep_their_resources_and_keys_stay_unique,
);

/// Starts a full-update of the resources of `source` with extra parameters.
async fn start(app: &TestApp, source: &str, extra: Value) -> i64 {
    let mut body = json!({"type": "full-update", "target": "resources", "source_system": source});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let reply = app.post("/api/v1/operations", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["target"], "resources");
    reply.json["id"].as_i64().expect("id")
}

/// Uploads `lines` (NDJSON values) in chunks of `per_chunk`, completes and waits.
async fn sync(app: &TestApp, op: i64, lines: &[Value], per_chunk: usize) -> Value {
    for (n, chunk) in lines.chunks(per_chunk.max(1)).enumerate() {
        let body: String = chunk.iter().map(|l| format!("{l}\n")).collect();
        let reply = app.chunk(op, n as u32, &body).await;
        assert_eq!(reply.status, StatusCode::OK, "chunk {n}: {}", reply.text);
    }
    app.complete(op).await
}

fn account(i: usize, name: &str) -> Value {
    json!({"external_id": format!("obj-{i}"), "identifier": format!("{name}{i}@home.example"),
           "type": "user", "subtype": "native", "displayname": format!("Person {i}")})
}

async fn id_of(app: &TestApp, source: &str, external_id: &str) -> String {
    let reply = app
        .get(&format!(
            "/api/v1/resources/lookup?source_system={source}&external_id={external_id}"
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json["id"].as_str().expect("id").to_owned()
}

async fn a_hundred_thousand_accounts_load_and_resync_with_churn(backend: Backend) {
    const N: usize = 100_000;
    let app = TestApp::spawn(backend).await;
    let lines: Vec<Value> = (0..N).map(|i| account(i, "user")).collect();
    let op = start(&app, "home", json!({})).await;
    let loaded = sync(&app, op, &lines, 25_000).await;
    assert_eq!(loaded["status"], "complete", "{loaded}");
    assert_eq!(loaded["counts"]["added"], N);
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE source_system = 'home' AND NOT deleted",
            &[]
        )
        .await,
        N as i64
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM change WHERE kind = 1", &[])
            .await,
        N as i64
    );

    // Ten accounts that will be deleted and ten that stay are members of a group.
    let group = app.group("home", "engineering").await;
    let mut kept = Vec::new();
    for i in (0..10).chain(50_000..50_010) {
        let member = id_of(&app, "home", &format!("obj-{i}")).await;
        let reply = app
            .put(&format!("/api/v1/groups/{group}/members/{member}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        if i >= 50_000 {
            kept.push(member);
        }
    }
    kept.sort();

    // 1% deleted (0..1000), 1% renamed (1000..2000), 1% with a new display name (2000..3000).
    let resync: Vec<Value> = (1000..N)
        .map(|i| match i {
            1000..=1999 => account(i, "renamed"),
            2000..=2999 => {
                let mut line = account(i, "user");
                line["displayname"] = json!(format!("Changed {i}"));
                line
            }
            _ => account(i, "user"),
        })
        .collect();
    // Users only: the group of the source is not part of this snapshot.
    let op = start(&app, "home", json!({"resource_type": "user"})).await;
    let done = sync(&app, op, &resync, 30_000).await;
    assert_eq!(done["status"], "complete", "{done}");
    let counts = &done["counts"];
    assert_eq!(counts["added"], 0);
    assert_eq!(counts["removed"], 1000);
    assert_eq!(counts["updated"], 2000);
    assert_eq!(counts["unchanged"], N - 3000);
    assert_eq!(counts["rejected"], 0);

    // Only the changed rows were written.
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE NOT deleted AND type = 1 AND modified <> created",
            &[]
        )
        .await,
        2000
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM resource WHERE deleted", &[])
            .await,
        1000
    );
    let renamed = id_of(&app, "home", "obj-1500").await;
    let resource = app.get(&format!("/api/v1/resources/{renamed}")).await;
    assert_eq!(resource.json["identifier"], "renamed1500@home.example");
    let changes = |kind: i64| {
        format!("SELECT count(*) FROM change WHERE kind = {kind} AND operation_id = {op}")
    };
    assert_eq!(app.scalar(&changes(2), &[]).await, 2000);
    assert_eq!(app.scalar(&changes(3), &[]).await, 1000);
    // The deleted accounts' memberships ended, as a change each; the others stay.
    assert_eq!(app.scalar(&changes(7), &[]).await, 10);
    assert_eq!(app.members(&group).await, kept);
}

async fn a_rename_by_external_id_keeps_the_resource_and_its_memberships(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let op = start(&app, "entra", json!({"resource_type": "user"})).await;
    let first =
        json!({"external_id": "6f1c", "identifier": "sean@home.example", "displayname": "Sean"});
    assert_eq!(sync(&app, op, &[first], 10).await["status"], "complete");
    let sean = id_of(&app, "entra", "6f1c").await;
    let group = app.group("entra", "eng").await;
    app.put(&format!("/api/v1/groups/{group}/members/{sean}"), None)
        .await;

    let op = start(&app, "entra", json!({"resource_type": "user"})).await;
    let renamed = json!({"external_id": "6f1c", "identifier": "sean.b@home.example"});
    let done = sync(&app, op, &[renamed], 10).await;
    assert_eq!(done["counts"]["updated"], 1, "{done}");
    assert_eq!(done["counts"]["removed"], 0);
    assert_eq!(id_of(&app, "entra", "6f1c").await, sean);
    let resource = app.get(&format!("/api/v1/resources/{sean}")).await;
    assert_eq!(resource.json["identifier"], "sean.b@home.example");
    // Left out of the line: kept.
    assert_eq!(resource.json["displayname"], "Sean");
    assert_eq!(app.members(&group).await, vec![sean.clone()]);
    let writes = |kind: &str| {
        format!(
            "SELECT count(*) FROM change WHERE resource_id = $1 AND operation_id = {op} AND {kind}"
        )
    };
    assert_eq!(app.scalar(&writes("kind = 2"), &[&sean]).await, 1);
    assert_eq!(app.scalar(&writes("kind <> 2"), &[&sean]).await, 0);
    let attrs = app
        .text(
            &format!(
                "SELECT CAST(attrs AS TEXT) FROM change WHERE resource_id = $1 \
                 AND operation_id = {op}"
            ),
            &[&sean],
        )
        .await
        .unwrap_or_default();
    let attrs: Value = serde_json::from_str(&attrs).expect("attrs");
    assert_eq!(
        attrs,
        json!({"identifier": {"old": "sean@home.example", "new": "sean.b@home.example"}})
    );
}

async fn an_empty_snapshot_is_held_and_deletes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let op = start(&app, "ad", json!({})).await;
    let lines: Vec<Value> = (0..3).map(|i| account(i, "u")).collect();
    sync(&app, op, &lines, 10).await;
    let before = app.fingerprint().await;

    let op = start(&app, "ad", json!({})).await;
    let held = app.complete(op).await;
    assert_eq!(held["status"], "pending", "{held}");
    assert!(held["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("empty"));
    assert_eq!(held["counts"]["removed"], 3);
    if backend == Backend::Postgres {
        // The lines of a held operation survive a crash: they stay in their logged table, the
        // apply's unlogged copy of them is gone.
        let persistence = app
            .text(
                &format!(
                    "SELECT relpersistence::text FROM pg_class WHERE relname = 'staging_{op}'"
                ),
                &[],
            )
            .await;
        assert_eq!(persistence.as_deref(), Some("p"));
    }
    let preview = app
        .get(&format!("/api/v1/operations/{op}/preview?limit=2"))
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    assert_eq!(preview.json["to_remove"], 3);
    assert_eq!(preview.json["items"].as_array().map(Vec::len), Some(2));
    let next = preview.json["next"].as_str().expect("a second page");
    let rest = app
        .get(&format!(
            "/api/v1/operations/{op}/preview?limit=2&cursor={next}"
        ))
        .await;
    assert_eq!(rest.json["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.scalar("SELECT count(*) FROM resource WHERE deleted", &[])
            .await,
        0
    );
    let rejected = app
        .post(&format!("/api/v1/operations/{op}/reject"), json!({}))
        .await;
    assert_eq!(rejected.json["status"], "failed");
    // Holding and rejecting changed no resource or membership.
    let after = app.fingerprint().await;
    assert_eq!(
        before.split(";operation").next(),
        after.split(";operation").next()
    );
}

async fn a_held_snapshot_applies_its_changes_once_approved(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let op = start(&app, "ad", json!({})).await;
    let lines: Vec<Value> = (0..10).map(|i| account(i, "u")).collect();
    sync(&app, op, &lines, 10).await;

    // Two of ten kept, one of them retitled: eight removals pass the threshold.
    let mut retitled = account(1, "u");
    retitled["displayname"] = json!("Retitled 1");
    let op = start(&app, "ad", json!({"threshold": {"min_group_size": 1}})).await;
    let held = sync(&app, op, &[account(0, "u"), retitled], 10).await;
    assert_eq!(held["status"], "pending", "{held}");
    assert_eq!(held["counts"]["removed"], 8);
    let preview = app
        .get(&format!("/api/v1/operations/{op}/preview?limit=100"))
        .await;
    assert_eq!(preview.json["to_remove"], 8, "{}", preview.text);

    let approved = app
        .post(
            &format!("/api/v1/operations/{op}/approve?wait=20"),
            json!({}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    assert_eq!(approved.json["status"], "complete", "{}", approved.text);
    assert_eq!(approved.json["counts"]["removed"], 8);
    assert_eq!(approved.json["counts"]["updated"], 1);
    assert_eq!(approved.json["counts"]["unchanged"], 1);
    let live = "SELECT count(*) FROM resource WHERE source_system = 'ad' AND NOT deleted";
    assert_eq!(app.scalar(live, &[]).await, 2);
    let id = id_of(&app, "ad", "obj-1").await;
    assert_eq!(
        app.text("SELECT displayname FROM resource WHERE id = $1", &[&id])
            .await
            .as_deref(),
        Some("Retitled 1")
    );
    let updates = "SELECT count(*) FROM change WHERE resource_id = $1 AND kind = 2";
    assert_eq!(app.scalar(updates, &[&id]).await, 1);
}

async fn a_newer_partial_update_is_not_undone_by_an_older_snapshot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let op = start(&app, "ad", json!({})).await;
    let lines: Vec<Value> = (0..3).map(|i| account(i, "u")).collect();
    sync(&app, op, &lines, 10).await;

    // The snapshot is read (and its operation created) before the partial-update.
    let snapshot = start(&app, "ad", json!({})).await;
    let stale: Vec<Value> = (0..2)
        .map(|i| {
            let mut line = account(i, "u");
            line["displayname"] = json!("From the snapshot");
            line
        })
        .collect();
    let reply = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "target": "resources", "source_system": "ad",
                   "resources": [{"external_id": "obj-0", "type": "user", "displayname": "Newer"},
                                 {"external_id": "obj-9", "identifier": "new@home.example",
                                  "type": "user"}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["counts"]["updated"], 1);
    assert_eq!(reply.json["counts"]["added"], 1);

    let done = sync(&app, snapshot, &stale, 10).await;
    assert_eq!(done["status"], "complete", "{done}");
    // obj-0 was written after the snapshot began: it keeps the newer name; obj-1 takes the
    // snapshot's; obj-2 (left out) is deleted; obj-9 (created after the snapshot) stays.
    assert_eq!(done["counts"]["updated"], 1);
    assert_eq!(done["counts"]["removed"], 1);
    let name = |ext: &'static str| {
        let app = &app;
        async move {
            let id = id_of(app, "ad", ext).await;
            app.get(&format!("/api/v1/resources/{id}")).await.json["displayname"].clone()
        }
    };
    assert_eq!(name("obj-0").await, "Newer");
    assert_eq!(name("obj-1").await, "From the snapshot");
    assert_eq!(name("obj-9").await, Value::Null);
    let deleted = app
        .get("/api/v1/resources/lookup?source_system=ad&external_id=obj-2")
        .await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND, "{}", deleted.text);
}

async fn partial_updates_of_resources_upsert_and_delete_in_one_transaction(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let partial = |resources: Value| {
        json!({"type": "partial-update", "target": "resources", "source_system": "okta",
               "resources": resources})
    };
    let reply = app
        .post(
            "/api/v1/operations",
            partial(json!([
                {"external_id": "a", "identifier": "a@x", "type": "user", "tags": ["hr"]},
                {"external_id": "b", "identifier": "b@x", "type": "user"}
            ])),
        )
        .await;
    assert_eq!(reply.json["counts"]["added"], 2, "{}", reply.text);
    let a = id_of(&app, "okta", "a").await;
    let group = app.group("okta", "staff").await;
    app.put(&format!("/api/v1/groups/{group}/members/{a}"), None)
        .await;

    let reply = app
        .post(
            "/api/v1/operations",
            partial(json!([
                {"external_id": "a", "type": "user", "action": "delete"},
                {"external_id": "b", "type": "user", "tags": ["contractor"]}
            ])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["counts"]["removed"], 1);
    assert_eq!(reply.json["counts"]["updated"], 1);
    assert_eq!(app.members(&group).await, Vec::<String>::new());
    let b = id_of(&app, "okta", "b").await;
    assert_eq!(
        app.get(&format!("/api/v1/resources/{b}")).await.json["tags"],
        json!(["contractor"])
    );

    // Coming back restores the same resource.
    let reply = app
        .post(
            "/api/v1/operations",
            partial(json!([{"external_id": "a", "identifier": "a@x", "type": "user"}])),
        )
        .await;
    assert_eq!(reply.json["counts"]["reactivated"], 1, "{}", reply.text);
    assert_eq!(id_of(&app, "okta", "a").await, a);

    // One bad line refuses the whole request and changes nothing.
    let before = app.fingerprint().await;
    let reply = app
        .post(
            "/api/v1/operations",
            partial(json!([
                {"external_id": "c", "identifier": "c@x", "type": "user"},
                {"external_id": "d", "identifier": "b@x", "type": "user"}
            ])),
        )
        .await;
    reply.assert_problem(StatusCode::BAD_REQUEST, "cannot apply");
    assert_eq!(reply.json["errors"][0]["line"], 2, "{}", reply.text);
    assert_eq!(app.fingerprint().await, before);
}

async fn lines_that_cannot_apply_are_rejected_with_their_numbers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let op = start(&app, "ad", json!({})).await;
    let reply = app
        .chunk(
            op,
            0,
            "{\"identifier\": \"a\", \"type\": \"user\"}\n{\"identifier\": \"b\"}\nnot json\n",
        )
        .await;
    reply.assert_problem(StatusCode::BAD_REQUEST, "2 line(s)");
    let lines: Vec<i64> = reply.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(lines, vec![2, 3]);

    // Lines that only stored data can judge fail the operation, listed with their numbers.
    let lines = [
        json!({"external_id": "x1", "identifier": "same", "type": "user"}),
        json!({"external_id": "x2", "identifier": "same", "type": "user"}),
        json!({"external_id": "x3", "identifier": "ok", "type": "user"}),
        json!({"external_id": "x3", "identifier": "ok", "type": "user"}),
    ];
    let done = sync(&app, op, &lines, 10).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["counts"]["rejected"], 3);
    let rejections = app
        .get(&format!("/api/v1/operations/{op}/rejections"))
        .await;
    let numbers: Vec<i64> = rejections.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["line"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(app.scalar("SELECT count(*) FROM resource", &[]).await, 0);

    let misplaced = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "target": "resources", "source_system": "ad",
                   "gc": "defer"}),
        )
        .await;
    misplaced.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "gc: defer");
    let wrong_fit = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "target": "resources", "source_system": "ad",
                   "resource_type": "user", "resource_subtype": "unified"}),
        )
        .await;
    wrong_fit.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unified");
}

async fn missing_members_are_created_only_when_asked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.group("ldap", "admins").await;
    app.user("ldap", "known").await;
    let lines = "{\"source_system\": \"ldap\", \"identifier\": \"known\"}\n\
                 {\"source_system\": \"ldap\", \"identifier\": \"stranger\"}\n\
                 {\"source_system\": \"ldap\", \"external_id\": \"dev-7\", \"type\": \"device\"}\n";

    let op = app.start_full_update(&group).await;
    app.chunk(op, 0, lines).await;
    let refused = app.complete(op).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    let rejections = app
        .get(&format!("/api/v1/operations/{op}/rejections"))
        .await;
    let numbers: Vec<i64> = rejections.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["line"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(numbers, vec![2, 3]);
    assert_eq!(app.scalar("SELECT count(*) FROM resource", &[]).await, 2);

    let reply = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "group_id": group, "create_missing": true}),
        )
        .await;
    let op = reply.json["id"].as_i64().expect("id");
    app.chunk(op, 0, lines).await;
    let done = app.complete(op).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["counts"]["added"], 3);
    assert_eq!(app.members(&group).await.len(), 3);
    let stranger = app
        .get("/api/v1/resources/lookup?source_system=ldap&identifier=stranger")
        .await;
    assert_eq!(stranger.json["type"], "user", "{}", stranger.text);
    let device = app
        .get("/api/v1/resources/lookup?source_system=ldap&external_id=dev-7")
        .await;
    assert_eq!(device.json["type"], "device", "{}", device.text);
    assert_eq!(device.json["identifier"], Value::Null);
    assert_eq!(
        app.scalar(
            &format!("SELECT count(*) FROM change WHERE kind = 1 AND operation_id = {op}"),
            &[]
        )
        .await,
        2
    );
}

async fn a_scoped_full_update_leaves_other_types_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let guests = json!({"resource_type": "user", "resource_subtype": "guest"});
    let group = app.group("foo", "eng").await;
    let native = app.user("foo", "native@foo").await;
    let op = start(&app, "foo", guests.clone()).await;
    let lines = [json!({"identifier": "g1"}), json!({"identifier": "g2"})];
    let done = sync(&app, op, &lines, 10).await;
    assert_eq!(done["counts"]["added"], 2, "{done}");
    let g1 = app
        .get("/api/v1/resources/lookup?source_system=foo&identifier=g1")
        .await;
    assert_eq!(g1.json["subtype"], "guest");

    let op = start(&app, "foo", guests).await;
    let done = sync(&app, op, &[json!({"identifier": "g2"})], 10).await;
    assert_eq!(done["counts"]["removed"], 1, "{done}");
    for id in [&group, &native] {
        let r = app.get(&format!("/api/v1/resources/{id}")).await;
        assert_eq!(r.json["deleted"], false, "{}", r.text);
    }
}

async fn skipped_lines_keep_their_resources_and_keys_stay_unique(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let op = start(&app, "ad", json!({"resource_type": "user"})).await;
    let lines = [
        json!({"external_id": "e1", "identifier": "a"}),
        json!({"external_id": "e2", "identifier": "b"}),
    ];
    sync(&app, op, &lines, 10).await;
    let (a, b) = (id_of(&app, "ad", "e1").await, id_of(&app, "ad", "e2").await);

    // Two renames to one identifier are skipped: both accounts stay as they were, not deleted.
    let op = start(
        &app,
        "ad",
        json!({"resource_type": "user", "on_error": "skip"}),
    )
    .await;
    let lines = [
        json!({"external_id": "e1", "identifier": "c"}),
        json!({"external_id": "e2", "identifier": "c"}),
        json!({"external_id": "e3", "identifier": "d"}),
    ];
    let done = sync(&app, op, &lines, 10).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["counts"]["rejected"], 2);
    assert_eq!(done["counts"]["added"], 1);
    assert_eq!(done["counts"]["removed"], 0);
    for (id, identifier) in [(&a, "a"), (&b, "b")] {
        let r = app.get(&format!("/api/v1/resources/{id}")).await;
        assert_eq!(r.json["deleted"], false, "{}", r.text);
        assert_eq!(r.json["identifier"], identifier);
    }

    // Two lines that would give one external id to two resources are refused, not a 500.
    app.user("ad", "x").await;
    app.user("ad", "y").await;
    let reply = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "target": "resources", "source_system": "ad",
                   "resources": [{"external_id": "e9", "identifier": "x", "type": "user"},
                                 {"external_id": "e9", "identifier": "y", "type": "user"},
                                 {"external_id": "e1", "identifier": "y", "type": "user"}]}),
        )
        .await;
    reply.assert_problem(StatusCode::BAD_REQUEST, "cannot apply");
    let numbers: Vec<i64> = reply.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3], "{}", reply.text);

    // Restoring carries the attributes it changes on the change record.
    let reply = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "target": "resources", "source_system": "ad",
                   "resources": [{"external_id": "e1", "type": "user", "action": "delete"}]}),
        )
        .await;
    assert_eq!(reply.json["counts"]["removed"], 1, "{}", reply.text);
    let reply = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "target": "resources", "source_system": "ad",
                   "resources": [{"external_id": "e1", "type": "user", "displayname": "Back"}]}),
        )
        .await;
    assert_eq!(reply.json["counts"]["reactivated"], 1, "{}", reply.text);
    let op = reply.json["id"].as_i64().expect("id");
    let attrs = app
        .text(
            &format!(
                "SELECT CAST(attrs AS TEXT) FROM change WHERE kind = 4 AND operation_id = {op}"
            ),
            &[],
        )
        .await
        .unwrap_or_default();
    let attrs: Value = serde_json::from_str(&attrs).expect("attrs");
    assert_eq!(attrs, json!({"displayname": {"old": null, "new": "Back"}}));
}
