//! The operations engine's rules, each on both backends: set-based diffs with O(changes) writes,
//! newer knowledge wins, the deletion-safety threshold, idempotent chunks, whole groups per
//! transaction, and the other operation types.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

on_both_backends!(
    full_update_adds_reactivates_and_removes_with_exact_counts,
    full_update_does_not_rewrite_confirmed_memberships,
    newer_partial_update_wins_over_an_older_full_update,
    older_partial_update_loses_to_a_newer_full_update,
    older_full_update_applied_after_a_newer_one_is_superseded,
    large_removal_waits_for_approval_and_changes_nothing,
    rejected_pending_operation_changes_nothing,
    empty_snapshot_of_a_non_empty_group_is_always_held,
    threshold_can_be_set_per_call,
    chunks_are_idempotent,
    members_named_by_identifier_and_external_id,
    unreadable_lines_refuse_the_chunk_with_line_numbers,
    unresolvable_lines_fail_the_operation_unless_skipped,
    source_scoped_full_update_covers_every_group_of_the_source,
    readers_see_a_group_before_or_after_an_apply_never_between,
    partial_update_applies_all_changes_or_none,
    partial_removal_of_a_non_member_leaves_a_tombstone,
    delete_operation_ends_memberships,
    reconcile_ends_what_a_deferred_full_update_did_not_confirm,
    purge_hard_deletes_what_ended_before_the_retention,
    chunks_and_complete_are_refused_once_the_upload_ended,
    a_snapshot_of_only_unusable_lines_is_held_like_an_empty_one,
    reconcile_past_the_threshold_is_refused_and_changes_nothing,
    chunk_over_the_upload_limit_is_413_and_stores_nothing,
    abandoned_uploads_fail,
    preview_changes_nothing,
);

async fn users(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(app.user("home", &format!("user{i}")).await);
    }
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    v.sort();
    v
}

async fn changes_of(app: &TestApp, op: i64, kind: i64) -> i64 {
    app.scalar(
        &format!("SELECT count(*) FROM change WHERE operation_id = {op} AND kind = {kind}"),
        &[],
    )
    .await
}

const ADDED: i64 = 6;
const REMOVED: i64 = 7;

async fn full_update_adds_reactivates_and_removes_with_exact_counts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 4).await;
    let (a, b, c, d) = (&u[0], &u[1], &u[2], &u[3]);
    let g = app.group("home", "eng").await;
    for m in [a, b, c] {
        app.put(&format!("/api/v1/groups/{g}/members/{m}"), None)
            .await;
    }
    app.delete(&format!("/api/v1/groups/{g}/members/{c}")).await;

    let op = app.full_update(&g, &[b, c, d]).await;
    assert_eq!(op["status"], "complete", "{op}");
    assert_eq!(op["type"], "full-update");
    assert_eq!(
        op["counts"],
        json!({"added": 1, "reactivated": 1, "removed": 1, "updated": 0, "unchanged": 1, "rejected": 0})
    );
    assert_eq!(app.members(&g).await, sorted(&[b, c, d]));
    let id = op["id"].as_i64().unwrap();
    assert_eq!(changes_of(&app, id, ADDED).await, 2);
    assert_eq!(changes_of(&app, id, REMOVED).await, 1);
    let ended = app.get(&format!("/api/v1/groups/{g}/members/{a}")).await;
    assert_eq!(ended.json["removed"], true);
    assert_eq!(ended.json["last_operation_id"], id);
}

async fn full_update_does_not_rewrite_confirmed_memberships(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let g = app.group("home", "eng").await;
    let first = app.full_update(&g, &[&u[0], &u[1]]).await;
    let second = app.full_update(&g, &[&u[0], &u[1], &u[2]]).await;
    assert_eq!(second["counts"]["added"], 1);
    assert_eq!(second["counts"]["unchanged"], 2);
    let (f1, f2) = (
        first["id"].as_i64().unwrap(),
        second["id"].as_i64().unwrap(),
    );
    assert_eq!(
        app.scalar(
            &format!(
                "SELECT count(*) FROM group_member WHERE group_id = $1 AND last_operation_id = {f1}"
            ),
            &[&g]
        )
        .await,
        2,
        "confirmed rows keep the operation that wrote them"
    );
    assert_eq!(
        app.scalar(
            &format!("SELECT count(*) FROM change WHERE operation_id = {f2}"),
            &[]
        )
        .await,
        1,
        "only the new membership is a change"
    );
    assert_eq!(
        app.scalar(
            "SELECT operation_id FROM group_sync WHERE group_id = $1",
            &[&g]
        )
        .await,
        f2,
        "the group records its last completed full-update"
    );
}

async fn newer_partial_update_wins_over_an_older_full_update(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let (a, b, c) = (&u[0], &u[1], &u[2]);
    let g = app.group("home", "eng").await;
    // F starts with snapshot {A, B}.
    let f = app.start_full_update(&g).await;
    let lines = format!("{{\"member_id\": \"{a}\"}}\n{{\"member_id\": \"{b}\"}}\n");
    app.chunk(f, 0, &lines).await;
    // A partial-update, newer than F, adds C and removes B.
    let p = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "changes": [
                {"group_id": g, "member_id": c, "action": "add"},
                {"group_id": g, "member_id": b, "action": "remove"}]}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.text);
    let done = app.complete(f).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(app.members(&g).await, sorted(&[a, c]));
}

async fn older_partial_update_loses_to_a_newer_full_update(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let (a, b, c) = (&u[0], &u[1], &u[2]);
    let g = app.group("home", "eng").await;
    app.post(
        "/api/v1/operations",
        json!({"type": "partial-update", "changes": [
            {"group_id": g, "member_id": c, "action": "add"},
            {"group_id": g, "member_id": b, "action": "remove"}]}),
    )
    .await;
    let done = app.full_update(&g, &[a, b]).await;
    assert_eq!(done["status"], "complete");
    assert_eq!(app.members(&g).await, sorted(&[a, b]));
}

async fn older_full_update_applied_after_a_newer_one_is_superseded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 2).await;
    let g = app.group("home", "eng").await;
    let older = app.start_full_update(&g).await;
    app.chunk(older, 0, &format!("{{\"member_id\": \"{}\"}}\n", u[0]))
        .await;
    let newer = app.full_update(&g, &[&u[1]]).await;
    assert_eq!(newer["status"], "complete");
    let late = app.complete(older).await;
    assert_eq!(late["status"], "failed", "{late}");
    assert!(late["reason"].as_str().unwrap().contains("superseded"));
    assert_eq!(app.members(&g).await, sorted(&[&u[1]]));
}

/// A group of `n` members added by one full-update; returns the group and the members.
async fn group_of(app: &TestApp, n: usize) -> (String, Vec<String>) {
    let u = users(app, n).await;
    let g = app.group("home", "big").await;
    let refs: Vec<&str> = u.iter().map(String::as_str).collect();
    let op = app.full_update(&g, &refs).await;
    assert_eq!(op["status"], "complete", "{op}");
    (g, u)
}

async fn large_removal_waits_for_approval_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (g, u) = group_of(&app, 100).await;
    let keep: Vec<&str> = u[..70].iter().map(String::as_str).collect();
    let op = app.full_update(&g, &keep).await;
    assert_eq!(op["status"], "pending", "{op}");
    assert!(
        op["reason"].as_str().unwrap().contains("30 of the 100"),
        "{op}"
    );
    let id = op["id"].as_i64().unwrap();
    assert_eq!(app.members(&g).await.len(), 100, "nothing changed");
    assert_eq!(changes_of(&app, id, REMOVED).await, 0);
    assert_eq!(
        app.scalar("SELECT count(*) FROM group_member WHERE removed", &[])
            .await,
        0
    );

    // The preview lists exactly the 30 removals, in pages.
    let mut removals = Vec::new();
    let mut path = format!("/api/v1/operations/{id}/preview?limit=20");
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        for e in page.json["items"].as_array().unwrap() {
            assert_eq!(e["action"], "remove");
            removals.push(e["member_id"].as_str().unwrap().to_owned());
        }
        match page.json["next"].as_str() {
            Some(c) => path = format!("/api/v1/operations/{id}/preview?limit=20&cursor={c}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = u[70..].to_vec();
    expected.sort();
    assert_eq!(removals, expected);
    let adds = app
        .get(&format!("/api/v1/operations/{id}/preview?action=add"))
        .await;
    assert_eq!(adds.json["items"].as_array().unwrap().len(), 0);

    let approved = app
        .call(
            Method::POST,
            &format!("/api/v1/operations/{id}/approve?wait=60"),
            None,
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    assert_eq!(approved.json["status"], "complete");
    assert_eq!(approved.json["counts"]["removed"], 30);
    let mut kept: Vec<String> = keep.iter().map(|s| (*s).to_owned()).collect();
    kept.sort();
    assert_eq!(app.members(&g).await, kept);
    assert_eq!(changes_of(&app, id, REMOVED).await, 30);
    let audit = app
        .get(&format!("/api/v1/audit?target=operation/{id}"))
        .await;
    assert!(audit.text.contains("operation.approve"), "{}", audit.text);
}

async fn rejected_pending_operation_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (g, u) = group_of(&app, 100).await;
    let keep: Vec<&str> = u[..50].iter().map(String::as_str).collect();
    let op = app.full_update(&g, &keep).await;
    assert_eq!(op["status"], "pending");
    let id = op["id"].as_i64().unwrap();
    let rejected = app
        .call(
            Method::POST,
            &format!("/api/v1/operations/{id}/reject"),
            None,
        )
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.text);
    assert_eq!(rejected.json["status"], "failed");
    assert!(rejected.json["reason"]
        .as_str()
        .unwrap()
        .contains("rejected"));
    assert_eq!(app.members(&g).await.len(), 100);
    app.call(
        Method::POST,
        &format!("/api/v1/operations/{id}/approve"),
        None,
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "not pending");
}

async fn empty_snapshot_of_a_non_empty_group_is_always_held(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let g = app.group("home", "small").await;
    app.full_update(&g, &[&u[0], &u[1], &u[2]]).await;
    let op = app.full_update(&g, &[]).await;
    assert_eq!(op["status"], "pending", "{op}");
    assert!(op["reason"].as_str().unwrap().contains("empty"));
    assert_eq!(app.members(&g).await.len(), 3);
}

async fn threshold_can_be_set_per_call(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 4).await;
    let g = app.group("home", "eng").await;
    app.full_update(&g, &[&u[0], &u[1], &u[2], &u[3]]).await;
    let strict = app
        .post(
            "/api/v1/operations?wait=60",
            json!({"type": "full-update", "group_id": g, "complete": true,
                   "threshold": {"max_removed_percent": 10, "min_group_size": 0},
                   "members": [{"member_id": u[0]}, {"member_id": u[1]}, {"member_id": u[2]}]}),
        )
        .await;
    assert_eq!(strict.json["status"], "pending", "{}", strict.text);
    app.post(
        "/api/v1/operations",
        json!({"type": "full-update", "group_id": g, "threshold": {"max_removed_percent": 150}}),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "between 0 and 100");
}

async fn chunks_are_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let g = app.group("home", "eng").await;
    let op = app.start_full_update(&g).await;
    let line = |m: &String| format!("{{\"member_id\": \"{m}\"}}\n");
    let first = app.chunk(op, 0, &(line(&u[0]) + &line(&u[1]))).await;
    assert_eq!(first.json["staged"], 2);
    for _ in 0..3 {
        let again = app.chunk(op, 1, &line(&u[2])).await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        assert_eq!(again.json["staged"], 1);
    }
    // A re-sent chunk replaces the earlier one, it is not added to it.
    app.chunk(op, 0, &(line(&u[0]) + &line(&u[1]))).await;
    let done = app.complete(op).await;
    assert_eq!(done["counts"]["added"], 3, "{done}");
    assert_eq!(
        app.scalar("SELECT count(*) FROM group_member", &[]).await,
        3
    );
}

async fn members_named_by_identifier_and_external_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.user("home", "a@home.com").await;
    let b = app
        .create(json!({"type": "user", "source_system": "home", "external_id": "oid-b"}))
        .await;
    let g = app.group("home", "eng").await;
    let op = app.start_full_update(&g).await;
    let lines = "{\"source_system\": \"home\", \"identifier\": \"a@home.com\", \"member_name\": \"A\"}\n\
                 {\"source_system\": \"home\", \"external_id\": \"oid-b\", \"contributing\": true}\n";
    let staged = app.chunk(op, 0, lines).await;
    assert_eq!(staged.json["staged"], 2, "{}", staged.text);
    let done = app.complete(op).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(app.members(&g).await, sorted(&[&a, &b]));
    let ma = app.get(&format!("/api/v1/groups/{g}/members/{a}")).await;
    assert_eq!(ma.json["member_name"], "A");
    let mb = app.get(&format!("/api/v1/groups/{g}/members/{b}")).await;
    assert_eq!(mb.json["contributing"], true);
    // A later snapshot that renames the member updates the row in place.
    let op = app.start_full_update(&g).await;
    let lines = format!(
        "{{\"member_id\": \"{a}\", \"member_name\": \"Alice\"}}\n{{\"member_id\": \"{b}\"}}\n"
    );
    app.chunk(op, 0, &lines).await;
    let done = app.complete(op).await;
    assert_eq!(done["counts"]["updated"], 1, "{done}");
    assert_eq!(done["counts"]["unchanged"], 1, "{done}");
    let ma = app.get(&format!("/api/v1/groups/{g}/members/{a}")).await;
    assert_eq!(ma.json["member_name"], "Alice");
}

async fn unreadable_lines_refuse_the_chunk_with_line_numbers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.user("home", "a").await;
    let g = app.group("home", "eng").await;
    let op = app.start_full_update(&g).await;
    let lines = format!(
        "{{\"member_id\": \"{a}\"}}\nnot json\n{{\"member_id\": \"{a}\", \"colour\": 1}}\n{{}}\n"
    );
    let reply = app.chunk(op, 0, &lines).await;
    reply.assert_problem(StatusCode::BAD_REQUEST, "3 line(s)");
    let errors = reply.json["errors"].as_array().unwrap();
    let numbers: Vec<i64> = errors.iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(numbers, vec![2, 3, 4]);
    assert!(errors[1]["reason"].as_str().unwrap().contains("colour"));
    assert_eq!(
        app.scalar("SELECT count(*) FROM operation_chunk", &[])
            .await,
        0,
        "nothing of the chunk was stored"
    );
    // The fixed chunk goes in.
    let fixed = app
        .chunk(op, 0, &format!("{{\"member_id\": \"{a}\"}}\n"))
        .await;
    assert_eq!(fixed.status, StatusCode::OK);
}

async fn unresolvable_lines_fail_the_operation_unless_skipped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.user("home", "a").await;
    let g = app.group("home", "eng").await;
    let unknown = uuid::Uuid::now_v7();
    let lines = format!(
        "{{\"member_id\": \"{a}\"}}\n{{\"source_system\": \"home\", \"identifier\": \"nobody\"}}\n\
         {{\"member_id\": \"{unknown}\"}}\n{{\"member_id\": \"{g}\"}}\n"
    );
    let op = app.start_full_update(&g).await;
    app.chunk(op, 0, &lines).await;
    let failed = app.complete(op).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["counts"]["rejected"], 3);
    assert!(failed["reason"].as_str().unwrap().contains("rejections"));
    assert!(app.members(&g).await.is_empty(), "nothing was applied");
    let rejections = app
        .get(&format!("/api/v1/operations/{op}/rejections"))
        .await;
    let lines: Vec<i64> = rejections.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4]);
    assert!(rejections.text.contains("itself"));

    let skipping = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "group_id": g, "on_error": "skip"}),
        )
        .await;
    let op = skipping.json["id"].as_i64().unwrap();
    let lines = format!("{{\"member_id\": \"{a}\"}}\nbroken\n{{\"member_id\": \"{unknown}\"}}\n");
    let chunk = app.chunk(op, 0, &lines).await;
    assert_eq!(chunk.status, StatusCode::OK, "{}", chunk.text);
    assert_eq!(chunk.json["rejected"], 1);
    assert_eq!(chunk.json["rejections"][0]["line"], 2);
    let done = app.complete(op).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["counts"]["rejected"], 2);
    assert_eq!(done["counts"]["added"], 1);
    assert_eq!(app.members(&g).await, vec![a]);
}

async fn source_scoped_full_update_covers_every_group_of_the_source(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let g1 = app.group("foo", "eng").await;
    let g2 = app.group("foo", "ops").await;
    let other = app.group("bar", "eng").await;
    app.put(&format!("/api/v1/groups/{g2}/members/{}", u[2]), None)
        .await;
    app.put(&format!("/api/v1/groups/{other}/members/{}", u[2]), None)
        .await;
    let created = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "source_system": "foo"}),
        )
        .await;
    let op = created.json["id"].as_i64().unwrap();
    let lines = format!(
        "{{\"group_id\": \"{g1}\", \"member_id\": \"{}\"}}\n\
         {{\"group\": \"eng\", \"member_id\": \"{}\"}}\n\
         {{\"group\": \"ops\", \"member_id\": \"{}\"}}\n",
        u[0], u[1], u[2]
    );
    let staged = app.chunk(op, 0, &lines).await;
    assert_eq!(staged.json["staged"], 3, "{}", staged.text);
    let done = app.complete(op).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["counts"]["added"], 2);
    assert_eq!(done["counts"]["unchanged"], 1);
    assert_eq!(app.members(&g1).await, sorted(&[&u[0], &u[1]]));
    assert_eq!(app.members(&g2).await, sorted(&[&u[2]]));
    assert_eq!(
        app.members(&other).await,
        sorted(&[&u[2]]),
        "bar is out of scope"
    );
    // A line without its group is refused in a source scope.
    let created = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "source_system": "foo"}),
        )
        .await;
    let op = created.json["id"].as_i64().unwrap();
    app.chunk(op, 0, &format!("{{\"member_id\": \"{}\"}}\n", u[0]))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "1 line(s)");
}

async fn readers_see_a_group_before_or_after_an_apply_never_between(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let n = 400;
    let u = users(&app, n).await;
    let g = app.group("home", "eng").await;
    let first: Vec<&str> = u[..n / 2].iter().map(String::as_str).collect();
    app.full_update(&g, &first).await;
    // The second snapshot swaps in the other half in batches of 10 rows: still one transaction
    // for the group, so a reader sees 200 members of the first half or of the second.
    let created = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "group_id": g, "batch_size": 10,
                   "threshold": {"max_removed_percent": 100, "min_group_size": 0}}),
        )
        .await;
    let op = created.json["id"].as_i64().unwrap();
    let lines: String = u[n / 2..]
        .iter()
        .map(|m| format!("{{\"member_id\": \"{m}\"}}\n"))
        .collect();
    app.chunk(op, 0, &lines).await;
    app.call(
        Method::POST,
        &format!("/api/v1/operations/{op}/complete"),
        None,
    )
    .await;
    let first_half: Vec<String> = {
        let mut v: Vec<String> = u[..n / 2].to_vec();
        v.sort();
        v
    };
    let second_half: Vec<String> = {
        let mut v: Vec<String> = u[n / 2..].to_vec();
        v.sort();
        v
    };
    let mut seen_after = false;
    for _ in 0..10_000 {
        let members = app
            .get(&format!("/api/v1/groups/{g}/members?limit=1000"))
            .await;
        let mut ids: Vec<String> = members.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["member_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        assert!(
            ids == first_half || ids == second_half,
            "a reader saw {} members mixed from both snapshots",
            ids.len()
        );
        let op = app.get(&format!("/api/v1/operations/{op}")).await;
        if op.json["status"] != "running" {
            assert_eq!(op.json["status"], "complete", "{}", op.text);
            seen_after = true;
            break;
        }
    }
    assert!(seen_after, "the apply finished");
    assert_eq!(app.members(&g).await, second_half);
}

async fn partial_update_applies_all_changes_or_none(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let g = app.group("home", "eng").await;
    let h = app.group("home", "ops").await;
    let before = app.fingerprint().await;
    let bad = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "changes": [
                {"group_id": g, "member_id": u[0], "action": "add"},
                {"group_id": u[1], "member_id": u[2], "action": "add"}]}),
        )
        .await;
    bad.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "changes[1]");
    assert_eq!(
        app.fingerprint().await,
        before,
        "the first change was rolled back"
    );
    let good = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "description": "helpdesk ticket 42", "changes": [
                {"group_id": g, "member_id": u[0], "action": "add"},
                {"group_id": h, "source_system": "home", "identifier": "user1", "action": "add",
                 "member_name": "User One"},
                {"group_id": g, "member_id": u[2], "action": "add"}]}),
        )
        .await;
    assert_eq!(good.status, StatusCode::CREATED, "{}", good.text);
    assert_eq!(good.json["type"], "partial-update");
    assert_eq!(good.json["counts"]["added"], 3);
    assert_eq!(good.json["description"], "helpdesk ticket 42");
    assert_eq!(app.members(&g).await, sorted(&[&u[0], &u[2]]));
    assert_eq!(app.members(&h).await, sorted(&[&u[1]]));
    let id = good.json["id"].as_i64().unwrap();
    assert_eq!(changes_of(&app, id, ADDED).await, 3);
}

async fn partial_removal_of_a_non_member_leaves_a_tombstone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 1).await;
    let g = app.group("home", "eng").await;
    let f = app.start_full_update(&g).await;
    app.chunk(f, 0, &format!("{{\"member_id\": \"{}\"}}\n", u[0]))
        .await;
    let p = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "changes": [
                {"group_id": g, "member_id": u[0], "action": "remove"}]}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.text);
    assert_eq!(p.json["counts"]["removed"], 0, "nothing active was removed");
    let id = p.json["id"].as_i64().unwrap();
    assert_eq!(changes_of(&app, id, REMOVED).await, 0);
    // The older full-update does not add what the newer partial-update removed.
    let done = app.complete(f).await;
    assert_eq!(done["status"], "complete");
    assert!(app.members(&g).await.is_empty());
}

async fn delete_operation_ends_memberships(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 2).await;
    let g = app.group("home", "eng").await;
    app.full_update(&g, &[&u[0], &u[1]]).await;
    let del = app
        .post(
            "/api/v1/operations",
            json!({"type": "delete", "resource_id": g}),
        )
        .await;
    assert_eq!(del.status, StatusCode::CREATED, "{}", del.text);
    assert_eq!(del.json["type"], "delete");
    assert_eq!(del.json["counts"]["removed"], 2);
    assert_eq!(
        app.scalar("SELECT count(*) FROM group_member WHERE NOT removed", &[])
            .await,
        0
    );
    app.post(
        "/api/v1/operations",
        json!({"type": "delete", "resource_id": g}),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "deleted already");
}

async fn reconcile_ends_what_a_deferred_full_update_did_not_confirm(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let g = app.group("home", "eng").await;
    app.full_update(&g, &[&u[0], &u[1], &u[2]]).await;
    let deferred = app
        .post(
            "/api/v1/operations?wait=60",
            json!({"type": "full-update", "group_id": g, "gc": "defer", "complete": true,
                   "members": [{"member_id": u[0]}]}),
        )
        .await;
    assert_eq!(deferred.json["status"], "complete", "{}", deferred.text);
    assert_eq!(deferred.json["counts"]["removed"], 0);
    assert_eq!(app.members(&g).await.len(), 3, "removals deferred");
    let reconcile = app
        .post(
            "/api/v1/operations",
            json!({"type": "reconcile", "group_id": g}),
        )
        .await;
    assert_eq!(reconcile.status, StatusCode::CREATED, "{}", reconcile.text);
    assert_eq!(reconcile.json["type"], "reconcile");
    assert_eq!(reconcile.json["counts"]["removed"], 2);
    assert_eq!(app.members(&g).await, sorted(&[&u[0]]));
    let id = reconcile.json["id"].as_i64().unwrap();
    assert_eq!(changes_of(&app, id, REMOVED).await, 2);
}

async fn purge_hard_deletes_what_ended_before_the_retention(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let g = app.group("home", "eng").await;
    app.full_update(&g, &[&u[0], &u[1]]).await;
    app.delete(&format!("/api/v1/groups/{g}/members/{}", u[0]))
        .await;
    app.delete(&format!("/api/v1/resources/{}", u[2])).await;
    let writer = app
        .token("writer", &[roster::domain::token::Scope::Write], None)
        .await;
    app.call_as(
        Some(&writer),
        Method::POST,
        "/api/v1/operations",
        Some(json!({"type": "purge", "retention_days": 0})),
    )
    .await
    .assert_problem(StatusCode::FORBIDDEN, "admin");
    // A retention of 90 days keeps everything that ended just now.
    let kept = app
        .post("/api/v1/operations", json!({"type": "purge"}))
        .await;
    assert_eq!(kept.status, StatusCode::CREATED, "{}", kept.text);
    assert_eq!(kept.json["counts"]["removed"], 0);
    let purged = app
        .post(
            "/api/v1/operations",
            json!({"type": "purge", "retention_days": 0}),
        )
        .await;
    assert_eq!(purged.json["type"], "purge");
    assert_eq!(purged.json["counts"]["removed"], 1);
    assert!(
        purged.json["reason"]
            .as_str()
            .unwrap()
            .contains("1 deleted resource"),
        "{}",
        purged.text
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM group_member", &[]).await,
        1
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM resource WHERE id = $1", &[&u[2]])
            .await,
        0
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM change WHERE kind = 5 AND resource_id = $1",
            &[&u[2]]
        )
        .await,
        1,
        "the purge is on the change log"
    );
}

async fn chunks_and_complete_are_refused_once_the_upload_ended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 1).await;
    let g = app.group("home", "eng").await;
    let done = app.full_update(&g, &[&u[0]]).await;
    let id = done["id"].as_i64().unwrap();
    app.chunk(id, 1, &format!("{{\"member_id\": \"{}\"}}\n", u[0]))
        .await
        .assert_problem(StatusCode::CONFLICT, "uploading");
    app.call(
        Method::POST,
        &format!("/api/v1/operations/{id}/complete"),
        None,
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "uploading");
    app.chunk(999_999, 0, "")
        .await
        .assert_problem(StatusCode::NOT_FOUND, "999999");
    let value: Value = app.get(&format!("/api/v1/operations/{id}")).await.json;
    assert_eq!(value["phase"], Value::Null);
}

async fn a_snapshot_of_only_unusable_lines_is_held_like_an_empty_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let u = users(&app, 3).await;
    let g = app.group("home", "small").await;
    app.full_update(&g, &[&u[0], &u[1], &u[2]]).await;
    let created = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "group_id": g, "on_error": "skip"}),
        )
        .await;
    let op = created.json["id"].as_i64().unwrap();
    let lines = "{\"source_system\": \"elsewhere\", \"identifier\": \"a\"}\n\
                 {\"source_system\": \"elsewhere\", \"identifier\": \"b\"}\n";
    app.chunk(op, 0, lines).await;
    let done = app.complete(op).await;
    assert_eq!(done["status"], "pending", "{done}");
    assert!(done["reason"].as_str().unwrap().contains("empty"), "{done}");
    assert_eq!(app.members(&g).await.len(), 3, "nothing was removed");
}

async fn reconcile_past_the_threshold_is_refused_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (g, u) = group_of(&app, 100).await;
    let half: Vec<serde_json::Value> = u[..50].iter().map(|m| json!({"member_id": m})).collect();
    let deferred = app
        .post(
            "/api/v1/operations?wait=60",
            json!({"type": "full-update", "group_id": g, "gc": "defer", "complete": true,
                   "members": half}),
        )
        .await;
    assert_eq!(deferred.json["status"], "complete", "{}", deferred.text);
    let before = app.fingerprint().await;
    app.post(
        "/api/v1/operations",
        json!({"type": "reconcile", "group_id": g}),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "50 of the 100");
    assert_eq!(
        app.fingerprint().await,
        before,
        "the refused reconcile left no trace"
    );
    let allowed = app
        .post(
            "/api/v1/operations",
            json!({"type": "reconcile", "group_id": g,
                   "threshold": {"max_removed_percent": 60}}),
        )
        .await;
    assert_eq!(allowed.status, StatusCode::CREATED, "{}", allowed.text);
    assert_eq!(allowed.json["counts"]["removed"], 50);
    assert_eq!(app.members(&g).await.len(), 50);
}

async fn chunk_over_the_upload_limit_is_413_and_stores_nothing(backend: Backend) {
    let limits = roster::server::Limits {
        upload_bytes: 1_000,
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(backend, limits).await;
    let u = users(&app, 30).await;
    let g = app.group("home", "eng").await;
    let op = app.start_full_update(&g).await;
    let lines: String = u
        .iter()
        .map(|m| format!("{{\"member_id\": \"{m}\"}}\n"))
        .collect();
    assert!(lines.len() > 1_000);
    app.chunk(op, 0, &lines)
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "more chunks");
    assert_eq!(
        app.scalar("SELECT count(*) FROM operation_chunk", &[])
            .await,
        0
    );
    let small: String = u[..5]
        .iter()
        .map(|m| format!("{{\"member_id\": \"{m}\"}}\n"))
        .collect();
    assert_eq!(app.chunk(op, 0, &small).await.status, StatusCode::OK);
}

async fn abandoned_uploads_fail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let g = app.group("home", "eng").await;
    let op = app.start_full_update(&g).await;
    // The sweeper runs once a minute with "24 hours ago"; here it is asked about the future.
    let failed = app
        .store
        .fail_abandoned(chrono::Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(failed, 1);
    let reply = app.get(&format!("/api/v1/operations/{op}")).await;
    assert_eq!(reply.json["status"], "failed");
    assert!(reply.json["reason"].as_str().unwrap().contains("abandoned"));
    app.chunk(op, 0, "")
        .await
        .assert_problem(StatusCode::CONFLICT, "uploading");
}

async fn preview_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.user("home", "a").await;
    let g = app.group("home", "eng").await;
    let op = app.start_full_update(&g).await;
    let lines = format!(
        "{{\"member_id\": \"{a}\"}}\n{{\"source_system\": \"home\", \"identifier\": \"nobody\"}}\n"
    );
    app.chunk(op, 0, &lines).await;
    let reader = app
        .token("reader", &[roster::domain::token::Scope::Read], None)
        .await;
    let preview = app
        .call_as(
            Some(&reader),
            Method::GET,
            &format!("/api/v1/operations/{op}/preview?action=add"),
            None,
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    assert_eq!(preview.json["to_add"], 1);
    let rejections = app
        .get(&format!("/api/v1/operations/{op}/rejections"))
        .await;
    assert_eq!(
        rejections.json["items"].as_array().unwrap().len(),
        0,
        "a preview records nothing"
    );
    let done = app.complete(op).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["counts"]["rejected"], 1);
}
