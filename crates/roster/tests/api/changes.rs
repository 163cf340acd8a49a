//! The change feed: a follower sees every committed change once, in order, while writers run; a
//! late-committing transaction is never skipped; export then follow converges; no-op writes
//! record nothing; point-in-time membership; filters, formats, SSE resume, history and 410.

use crate::common::{Backend, Db, TestApp};
use crate::on_both_backends;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use roster::domain::feed::Cursor;
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use tower::ServiceExt;
use uuid::Uuid;

on_both_backends!(
    a_follower_sees_every_change_once_while_writers_run,
    an_export_then_the_feed_converges_while_writes_continue,
    no_op_writes_record_nothing_and_churn_records_exactly_the_difference,
    members_as_of_answer_for_each_interval,
    the_feed_filters_formats_and_refuses_bad_input,
    a_cursor_older_than_the_history_is_gone,
    pages_smaller_than_a_transaction_read_every_change_once_in_order,
    the_stream_resumes_from_last_event_id,
    a_resource_history_lists_its_changes,
    a_paged_list_then_the_feed_converges,
);

/// One read of the feed: its items and `next`.
pub async fn read(app: &TestApp, after: Option<&str>, query: &str) -> (Vec<Value>, String) {
    let after = after.map(|c| format!("&after={c}")).unwrap_or_default();
    let reply = app
        .get(&format!("/api/v1/changes?limit=1000{after}{query}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let items = reply.json["items"].as_array().expect("items").clone();
    let next = reply.json["next"].as_str().expect("next").to_owned();
    (items, next)
}

/// Reads the feed until it has nothing more; returns everything read and the last `next`.
async fn drain(app: &TestApp, after: Option<&str>, query: &str) -> (Vec<Value>, String) {
    let mut all = Vec::new();
    let (mut items, mut next) = read(app, after, query).await;
    while !items.is_empty() {
        all.append(&mut items);
        (items, next) = read(app, Some(&next), query).await;
    }
    (all, next)
}

/// Reads the feed until it has passed every change committed before this call (the long poll
/// waits for a change still being committed rather than the test sleeping).
pub async fn drain_all(app: &TestApp, after: Option<&str>, query: &str) -> (Vec<Value>, String) {
    let target = Cursor::decode(&head(app).await).expect("head cursor");
    let caught_up = async {
        let (mut all, mut next) = drain(app, after, query).await;
        while !Cursor::decode(&next).expect("cursor").covers(&target) {
            let (mut items, later) = read(app, Some(&next), &format!("{query}&wait=1")).await;
            all.append(&mut items);
            next = later;
        }
        (all, next)
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), caught_up)
        .await
        .expect("the feed caught up with its head within two minutes")
}

/// Applies membership changes to a set of (group, member).
fn apply(state: &mut BTreeSet<(String, String)>, items: &[Value]) {
    for item in items {
        let key = || {
            (
                item["group_id"].as_str().unwrap_or_default().to_owned(),
                item["member_id"].as_str().unwrap_or_default().to_owned(),
            )
        };
        match item["kind"].as_str() {
            Some("membership.added") => {
                state.insert(key());
            }
            Some("membership.removed") => {
                state.remove(&key());
            }
            _ => {}
        }
    }
}

/// Every active member of a group, through the API, page by page.
async fn all_members(app: &TestApp, group: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let reply = app
            .get(&format!(
                "/api/v1/groups/{group}/members?limit=1000{cursor}"
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        for m in reply.json["items"].as_array().expect("items") {
            out.insert((
                group.to_owned(),
                m["member_id"].as_str().expect("id").to_owned(),
            ));
        }
        match reply.json["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return out,
        }
    }
}

async fn head(app: &TestApp) -> String {
    let reply = app.get("/api/v1/changes/head").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json["cursor"].as_str().expect("cursor").to_owned()
}

fn kinds(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|i| i["kind"].as_str().unwrap_or_default())
        .collect()
}

async fn a_follower_sees_every_change_once_while_writers_run(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (g1, g2) = (app.group("hr", "a").await, app.group("hr", "b").await);
    let mut users = Vec::new();
    for i in 0..30 {
        users.push(app.user("hr", &format!("u{i}")).await);
    }
    let start = head(&app).await;
    let done = Cell::new(false);
    let writers = async {
        let singles = async {
            for i in 0..30 {
                let r = app
                    .put(&format!("/api/v1/groups/{g1}/members/{}", users[i]), None)
                    .await;
                assert!(r.status.is_success(), "{}", r.text);
                if i % 3 == 2 {
                    let gone = format!("/api/v1/groups/{g1}/members/{}", users[i - 1]);
                    assert!(app.delete(&gone).await.status.is_success());
                }
            }
        };
        let snapshots = async {
            for round in 0..3 {
                let members: Vec<&str> = users
                    .iter()
                    .skip(round * 5)
                    .take(15)
                    .map(String::as_str)
                    .collect();
                let done = app.full_update(&g2, &members).await;
                assert_eq!(done["status"], "complete", "{done}");
            }
        };
        let edits = async {
            for (i, u) in users.iter().enumerate().take(10) {
                let r = app
                    .patch(
                        &format!("/api/v1/resources/{u}"),
                        json!({"displayname": format!("n{i}")}),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            }
        };
        tokio::join!(singles, snapshots, edits);
        done.set(true);
    };
    let follower = async {
        let mut seen = Vec::new();
        let mut cursor = start.clone();
        while !done.get() {
            let (mut items, next) = read(&app, Some(&cursor), "&format=full").await;
            seen.append(&mut items);
            cursor = next;
            tokio::task::yield_now().await;
        }
        let (mut rest, _) = drain_all(&app, Some(&cursor), "&format=full").await;
        seen.append(&mut rest);
        seen
    };
    let ((), seen) = tokio::join!(writers, follower);

    let positions: HashSet<(u64, i64)> = seen
        .iter()
        .map(|i| {
            let c = Cursor::decode(i["cursor"].as_str().expect("cursor")).expect("a cursor");
            (c.tx, c.seq)
        })
        .collect();
    assert_eq!(positions.len(), seen.len(), "a position was seen twice");
    let total = app.scalar("SELECT count(*) FROM change", &[]).await;
    let (everything, _) = drain_all(&app, None, "").await;
    assert_eq!(
        everything.len() as i64,
        total,
        "the feed from the start holds every row"
    );
    let before = everything.len() - seen.len();
    assert_eq!(
        kinds(&everything[before..]),
        kinds(&seen),
        "the follower read the log's tail in the log's order"
    );
    let mut state = BTreeSet::new();
    apply(&mut state, &everything);
    let mut expected = all_members(&app, &g1).await;
    expected.extend(all_members(&app, &g2).await);
    assert_eq!(
        state, expected,
        "the rebuilt memberships equal the database's"
    );
    let mut names = BTreeMap::new();
    for item in seen.iter().filter(|i| i["kind"] == "resource.updated") {
        names.insert(
            item["resource_id"].as_str().unwrap_or_default().to_owned(),
            item["changes"]["displayname"]["new"].clone(),
        );
    }
    assert_eq!(names.len(), 10);
    for (id, name) in names {
        let stored = app.get(&format!("/api/v1/resources/{id}")).await;
        assert_eq!(stored.json["displayname"], name);
    }
}

async fn a_transaction_that_commits_late_is_never_skipped() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (group, other) = (app.group("hr", "a").await, app.group("hr", "b").await);
    let (late, early) = (app.user("hr", "late").await, app.user("hr", "early").await);
    let Db::Postgres(pool) = &app.db else {
        unreachable!("a PostgreSQL test")
    };
    let (_, cursor) = drain_all(&app, None, "").await;
    let id = |s: &str| s.parse::<Uuid>().expect("uuid");

    // A transaction takes its sequence number first and stays open …
    let mut held = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO group_member (source, group_id, member_id, created_timestamp) \
         VALUES ('hr', $1, $2, now())",
    )
    .bind(id(&group))
    .bind(id(&late))
    .execute(&mut *held)
    .await
    .expect("membership");
    sqlx::query(
        "INSERT INTO change (at, kind, group_id, member_id, source_system) \
         VALUES (now(), 6, $1, $2, 'hr')",
    )
    .bind(id(&group))
    .bind(id(&late))
    .execute(&mut *held)
    .await
    .expect("change");
    // … while a later one commits (in another group: the held one locks its group's row).
    let r = app
        .put(&format!("/api/v1/groups/{other}/members/{early}"), None)
        .await;
    assert!(r.status.is_success(), "{}", r.text);

    // The follower gets the committed change at once; the open transaction is not skipped …
    let (while_open, cursor) = drain_all(&app, Some(&cursor), "").await;
    let members = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|i| i["member_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(members(&while_open), vec![early.clone()]);
    // … it commits as roster's writers do, stamping its commit position.
    sqlx::query(roster::store::COMMIT_STAMP)
        .execute(&mut *held)
        .await
        .expect("stamp");
    held.commit().await.expect("commit");
    let late_seq = app
        .scalar("SELECT max(seq) FROM change WHERE member_id = $1", &[&late])
        .await;
    let early_seq = app
        .scalar(
            "SELECT max(seq) FROM change WHERE member_id = $1",
            &[&early],
        )
        .await;
    assert!(
        late_seq < early_seq,
        "the held transaction took the smaller sequence number: a reader of `seq > last` would \
         have skipped it"
    );
    let (after_commit, _) = drain_all(&app, Some(&cursor), "").await;
    assert_eq!(
        members(&after_commit),
        vec![late.clone()],
        "in commit order"
    );
}

#[tokio::test]
async fn postgres_a_transaction_that_commits_late_is_never_skipped() {
    a_transaction_that_commits_late_is_never_skipped().await
}

/// A new group `name` whose full-update creates `n` members, `{prefix}0`, `{prefix}1`, … (in one
/// transaction) and adds them (in another).
async fn new_group(app: &TestApp, name: &str, prefix: &str, n: usize) -> String {
    let group = app.group("hr", name).await;
    let lines: String = (0..n)
        .map(|i| format!("{{\"source_system\": \"hr\", \"identifier\": \"{prefix}{i}\"}}\n"))
        .collect();
    let reply = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "group_id": group, "create_missing": true}),
        )
        .await;
    let op = reply.json["id"].as_i64().expect("id");
    assert_eq!(app.chunk(op, 0, &lines).await.status, StatusCode::OK);
    let done = app.complete(op).await;
    assert_eq!(done["counts"]["added"], n, "{done}");
    group
}

async fn an_export_then_the_feed_converges_while_writes_continue(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = new_group(&app, "big", "u", 100_000).await;
    let mut extra = Vec::new();
    for i in 0..40 {
        extra.push(app.user("hr", &format!("x{i}")).await);
    }
    let members = all_members(&app, &group).await;
    let some: Vec<String> = members.iter().take(40).map(|(_, m)| m.clone()).collect();
    let path = format!("/api/v1/export?group_id={group}");
    let export = app.get(&path);
    let writes = async {
        for (new, old) in extra.iter().zip(&some) {
            app.put(&format!("/api/v1/groups/{group}/members/{new}"), None)
                .await;
            app.delete(&format!("/api/v1/groups/{group}/members/{old}"))
                .await;
        }
    };
    let (export, ()) = tokio::join!(export, writes);
    assert_eq!(export.status, StatusCode::OK, "{}", export.text);
    assert_eq!(export.content_type, "application/x-ndjson");
    let lines: Vec<Value> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect();
    let (last, body) = lines.split_last().expect("lines");
    let cursor = last["cursor"]
        .as_str()
        .expect("the export ends with its cursor");
    assert_eq!(body[0]["resource"]["id"], json!(group));
    let mut state: BTreeSet<(String, String)> = body
        .iter()
        .filter_map(|l| l.get("membership"))
        .map(|m| {
            (
                group.clone(),
                m["member_id"].as_str().expect("member").to_owned(),
            )
        })
        .collect();
    let exported = state.clone();
    let (follow, _) = drain_all(&app, Some(cursor), &format!("&group_id={group}")).await;
    // Exactly what the export did not see: every addition is new to it, every removal was in it.
    for item in &follow {
        let key = (
            group.clone(),
            item["member_id"].as_str().unwrap_or_default().to_owned(),
        );
        match item["kind"].as_str() {
            Some("membership.added") => assert!(!exported.contains(&key), "repeated: {item}"),
            Some("membership.removed") => assert!(exported.contains(&key), "repeated: {item}"),
            _ => {}
        }
    }
    apply(&mut state, &follow);
    assert_eq!(state, all_members(&app, &group).await);
}

async fn no_op_writes_record_nothing_and_churn_records_exactly_the_difference(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = new_group(&app, "big", "u", 100_000).await;
    let user = app.user("hr", "someone").await;
    app.patch(
        &format!("/api/v1/resources/{user}"),
        json!({"displayname": "S"}),
    )
    .await;
    let start = head(&app).await;

    let same = app
        .patch(
            &format!("/api/v1/resources/{user}"),
            json!({"displayname": "S"}),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text);
    let keep: String = (0..100_000)
        .map(|i| format!("{{\"source_system\": \"hr\", \"identifier\": \"u{i}\"}}\n"))
        .collect();
    let op = app.start_full_update(&group).await;
    assert_eq!(app.chunk(op, 0, &keep).await.status, StatusCode::OK);
    let confirmed = app.complete(op).await;
    assert_eq!(confirmed["status"], "complete", "{confirmed}");
    assert_eq!(
        drain_all(&app, Some(&start), "").await.0,
        Vec::<Value>::new()
    );

    // 1% churn: the first thousand leave, a thousand new accounts join.
    let churn: String = (1_000..101_000)
        .map(|i| format!("{{\"source_system\": \"hr\", \"identifier\": \"u{i}\"}}\n"))
        .collect();
    let reply = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "group_id": group, "create_missing": true}),
        )
        .await;
    let op = reply.json["id"].as_i64().expect("id");
    assert_eq!(app.chunk(op, 0, &churn).await.status, StatusCode::OK);
    let churned = app.complete(op).await;
    assert_eq!(churned["status"], "complete", "{churned}");
    let (changes, _) = drain_all(&app, Some(&start), "").await;
    let mut counts = BTreeMap::new();
    for kind in kinds(&changes) {
        *counts.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([
            ("membership.added", 1000),
            ("membership.removed", 1000),
            ("resource.created", 1000)
        ])
    );
}

async fn members_as_of_answer_for_each_interval(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.group("hr", "a").await;
    let (member, other) = (app.user("hr", "m").await, app.user("hr", "o").await);
    let path = format!("/api/v1/groups/{group}/members/{member}");
    let before = chrono::Utc::now();
    app.put(&format!("/api/v1/groups/{group}/members/{other}"), None)
        .await;
    app.put(&path, None).await;
    let added = chrono::Utc::now();
    app.delete(&path).await;
    let removed = chrono::Utc::now();
    app.put(&path, None).await;
    let readded = chrono::Utc::now();

    let at = |t: chrono::DateTime<chrono::Utc>| {
        let app = &app;
        let group = group.clone();
        async move {
            let t = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let reply = app
                .get(&format!(
                    "/api/v1/groups/{group}/members?as_of={}",
                    t.replace('+', "%2B")
                ))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            let mut ids: Vec<String> = reply.json["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|m| m["member_id"].as_str().expect("id").to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![member.clone(), other.clone()];
    both.sort();
    assert_eq!(at(before).await, Vec::<String>::new());
    assert_eq!(at(added).await, both);
    assert_eq!(at(removed).await, vec![other.clone()]);
    assert_eq!(at(readded).await, both);
    let mixed = app
        .get(&format!(
            "/api/v1/groups/{group}/members?as_of=2026-01-01T00:00:00Z&include_removed=true"
        ))
        .await;
    mixed.assert_problem(StatusCode::BAD_REQUEST, "as_of");
}

async fn the_feed_filters_formats_and_refuses_bad_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (hr, it) = (app.group("hr", "a").await, app.group("it", "b").await);
    let (u1, u2) = (app.user("hr", "u1").await, app.user("it", "u2").await);
    app.put(&format!("/api/v1/groups/{hr}/members/{u1}"), None)
        .await;
    app.put(&format!("/api/v1/groups/{it}/members/{u2}"), None)
        .await;
    app.delete(&format!("/api/v1/groups/{it}/members/{u2}"))
        .await;

    let (removed, _) = drain_all(&app, None, "&kind=membership.removed").await;
    assert_eq!(kinds(&removed), vec!["membership.removed"]);
    assert_eq!(removed[0]["member_id"], json!(u2));
    let (of_it, _) = drain_all(&app, None, "&source_system=it").await;
    assert_eq!(
        kinds(&of_it),
        vec![
            "resource.created",
            "resource.created",
            "membership.added",
            "membership.removed"
        ]
    );
    let (of_group, _) = drain_all(&app, None, &format!("&group_id={hr}")).await;
    assert_eq!(
        kinds(&of_group),
        vec!["resource.created", "membership.added"]
    );

    let (full, _) = drain_all(&app, None, &format!("&group_id={hr}&format=full")).await;
    assert_eq!(full[0]["record"]["identifier"], "a");
    assert_eq!(full[1]["record"]["member_id"], json!(u1));
    let (scim, _) = drain_all(&app, None, &format!("&group_id={hr}&format=scim")).await;
    let created = &scim[0]["events"]["urn:ietf:params:scim:event:prov:create:full"];
    assert_eq!(created["data"]["id"], json!(hr), "{}", scim[0]);
    assert_eq!(scim[1]["sub_id"]["uri"], format!("/Groups/{hr}"));
    let patch = &scim[1]["events"]["urn:ietf:params:scim:event:prov:patch:full"];
    assert_eq!(patch["data"]["Operations"][0]["op"], "add", "{}", scim[1]);
    assert_eq!(
        patch["data"]["Operations"][0]["value"][0]["value"],
        json!(u1)
    );
    assert!(scim[1]["txn"].is_string() && scim[1]["iat"].is_i64());

    // A source's export: its resources, its groups' active memberships, then the cursor.
    app.put(&format!("/api/v1/groups/{hr}/members/{u2}"), None)
        .await;
    let export = app.get("/api/v1/export?source_system=hr").await;
    let lines: Vec<Value> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect();
    let ids: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l.get("resource"))
        .map(|r| &r["id"])
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "the hr group and u1, not it's resources: {}",
        export.text
    );
    assert!(ids.contains(&&json!(hr)) && ids.contains(&&json!(u1)));
    let members: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l.get("membership"))
        .map(|m| &m["member_id"])
        .collect();
    assert_eq!(members.len(), 2, "u1, and u2 of it in an hr group");
    assert!(lines.last().and_then(|l| l.get("cursor")).is_some());
    let before = app.fingerprint().await;
    for (query, needle) in [
        ("after=nonsense", "not a change-feed cursor"),
        ("kind=membership.exploded", "not a change kind"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("format=xml", "format"),
        ("color=blue", "color"),
    ] {
        let reply = app.get(&format!("/api/v1/changes?{query}")).await;
        reply.assert_problem(StatusCode::BAD_REQUEST, needle);
    }
    let both = app
        .get(&format!("/api/v1/export?source_system=hr&group_id={hr}"))
        .await;
    both.assert_problem(StatusCode::BAD_REQUEST, "exactly one");
    assert_eq!(app.fingerprint().await, before);
}

async fn a_cursor_older_than_the_history_is_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.user("hr", "u1").await;
    let (_, old) = drain_all(&app, None, "").await;
    app.user("hr", "u2").await;
    let trimmed = app
        .store
        .trim_history(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("trim");
    assert_eq!(trimmed, 2);
    assert_eq!(app.scalar("SELECT count(*) FROM change", &[]).await, 0);
    let reply = app.get(&format!("/api/v1/changes?after={old}")).await;
    reply.assert_problem(StatusCode::GONE, "GET /api/v1/export");
    let fresh = head(&app).await;
    let u3 = app.user("hr", "u3").await;
    let (items, _) = drain_all(&app, Some(&fresh), "").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["resource_id"], json!(u3));
}

/// Reads the whole feed (with `query`) `limit` changes at a time, until a page neither has a
/// change nor moves `next` (a filtered page may have none and still move it past transactions
/// with nothing that matches); returns the changes. Each `next` is past the one before, and
/// unfiltered, every page but the last is full.
async fn pages_of(app: &TestApp, limit: usize, query: &str) -> Vec<Value> {
    let (mut all, mut pages, mut after) = (Vec::new(), Vec::new(), None::<Cursor>);
    for _ in 0..64 {
        let from = after
            .map(|c| format!("&after={}", c.encode()))
            .unwrap_or_default();
        let reply = app
            .get(&format!("/api/v1/changes?limit={limit}{from}{query}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let items = reply.json["items"].as_array().expect("items").clone();
        let next = Cursor::decode(reply.json["next"].as_str().expect("next")).expect("cursor");
        if items.is_empty() && after == Some(next) {
            if query.is_empty() {
                let short = pages.iter().rev().skip(1).find(|n| **n != limit);
                assert_eq!(short, None, "a short page before the last: {pages:?}");
            }
            return all;
        }
        assert!(after.is_none_or(|a| a < next), "next did not advance");
        assert!(
            items.len() <= limit,
            "a page of {} for {limit}",
            items.len()
        );
        if items.len() == limit {
            assert_eq!(items[limit - 1]["cursor"], json!(next.encode()));
        }
        if !items.is_empty() {
            pages.push(items.len());
        }
        after = Some(next);
        all.extend(items);
    }
    panic!("the feed did not end within 64 pages of {limit}");
}

async fn pages_smaller_than_a_transaction_read_every_change_once_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    new_group(&app, "big", "big", 7).await;
    let cut = chrono::Utc::now();
    app.user("hr", "solo").await;
    new_group(&app, "other", "other", 5).await;
    app.user("hr", "last").await;
    let (whole, _) = drain_all(&app, None, "").await;
    let cursors: Vec<Cursor> = whole
        .iter()
        .map(|i| Cursor::decode(i["cursor"].as_str().expect("cursor")).expect("cursor"))
        .collect();
    if backend == Backend::Postgres {
        // Each group, then its members created in one transaction and added in another; each
        // transaction has its commit position.
        let mut sizes: Vec<usize> = Vec::new();
        for (i, cursor) in cursors.iter().enumerate() {
            match sizes.last_mut() {
                Some(size) if cursors[i - 1].tx == cursor.tx => *size += 1,
                _ => sizes.push(1),
            }
        }
        assert_eq!(sizes, [1, 7, 7, 1, 1, 5, 5, 1]);
    }
    assert_eq!(whole.len(), 28);
    for limit in [1, 2, 3, 4, 6, 14] {
        let paged = pages_of(&app, limit, "").await;
        assert_eq!(paged, whole, "limit {limit}");
    }
    // A filter that leaves pages short inside a transaction, and windows with nothing at all.
    for (query, kind) in [
        ("&kind=membership.added", "membership.added"),
        ("&kind=resource.created", "resource.created"),
    ] {
        let expected: Vec<&Value> = whole.iter().filter(|i| i["kind"] == kind).collect();
        for limit in [1, 3] {
            let paged = pages_of(&app, limit, query).await;
            assert_eq!(
                paged.iter().collect::<Vec<_>>(),
                expected,
                "{query} by {limit}"
            );
        }
    }
    // Trimming the first three transactions: a cursor inside them is gone, not moved past what
    // was deleted; a cursor after them reads the rest.
    app.store.trim_history(cut).await.expect("trim");
    for inside in [1, 7, 13] {
        let reply = app
            .get(&format!(
                "/api/v1/changes?limit=2&after={}",
                cursors[inside].encode()
            ))
            .await;
        reply.assert_problem(StatusCode::GONE, "GET /api/v1/export");
    }
    let (rest, _) = drain(&app, Some(&cursors[15].encode()), "").await;
    assert_eq!(rest, whole[16..]);
}

/// Reads `n` events of a Server-Sent Events response, then hangs up.
pub async fn events(
    app: &TestApp,
    path: &str,
    last_event_id: Option<&str>,
    n: usize,
) -> Vec<(String, Value)> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", app.admin));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = app
        .router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("router is infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    let mut body = response.into_body();
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} events",
            out.len()
        );
        let frame = body
            .frame()
            .await
            .expect("a frame")
            .expect("a readable frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(id), Some(data)) = (field("id"), field("data")) {
                out.push((id, serde_json::from_str(&data).expect("event data")));
            }
        }
    }
    // A frame carries a batch of events: those past the `n`th are not read.
    out.truncate(n);
    out
}

async fn the_stream_resumes_from_last_event_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let start = head(&app).await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(app.user("hr", &format!("u{i}")).await);
    }
    let first = events(
        &app,
        &format!("/api/v1/changes/stream?after={start}"),
        None,
        2,
    )
    .await;
    let ids: Vec<&Value> = first.iter().map(|(_, e)| &e["resource_id"]).collect();
    assert_eq!(ids, vec![&json!(users[0]), &json!(users[1])]);
    // A reconnecting EventSource repeats its URL and adds Last-Event-ID: the header wins.
    let path = format!("/api/v1/changes/stream?after={start}");
    let resumed = events(&app, &path, Some(&first[1].0), 2).await;
    let ids: Vec<&Value> = resumed.iter().map(|(_, e)| &e["resource_id"]).collect();
    assert_eq!(ids, vec![&json!(users[2]), &json!(users[3])]);
    // A change made while a stream is open arrives on it.
    let path = format!("/api/v1/changes/stream?after={}", resumed[1].0);
    let (live, late) = tokio::join!(events(&app, &path, None, 1), app.user("hr", "u4"));
    assert_eq!(live[0].1["resource_id"], json!(late));
}

async fn a_resource_history_lists_its_changes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.group("hr", "a").await;
    let user = app.user("hr", "u").await;
    app.patch(
        &format!("/api/v1/resources/{user}"),
        json!({"displayname": "U"}),
    )
    .await;
    app.put(&format!("/api/v1/groups/{group}/members/{user}"), None)
        .await;
    app.delete(&format!("/api/v1/groups/{group}/members/{user}"))
        .await;
    let reply = app
        .get(&format!("/api/v1/resources/{user}/history?limit=3"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        kinds(reply.json["items"].as_array().expect("items")),
        vec!["resource.created", "resource.updated", "membership.added"]
    );
    assert_eq!(reply.json["items"][1]["changes"]["displayname"]["new"], "U");
    let next = reply.json["next"].as_str().expect("a next page");
    let rest = app
        .get(&format!("/api/v1/resources/{user}/history?cursor={next}"))
        .await;
    assert_eq!(
        kinds(rest.json["items"].as_array().expect("items")),
        vec!["membership.removed"]
    );
    assert_eq!(rest.json["next"], Value::Null);
}

async fn a_paged_list_then_the_feed_converges(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = new_group(&app, "big", "u", 2_500).await;
    let mut extra = Vec::new();
    for i in 0..3 {
        extra.push(app.user("hr", &format!("x{i}")).await);
    }
    let first = app
        .get(&format!("/api/v1/groups/{group}/members?limit=1000"))
        .await;
    let as_of = first.json["as_of"]
        .as_str()
        .expect("as_of on the first page")
        .to_owned();
    let mut state: BTreeSet<(String, String)> = BTreeSet::new();
    let mut page = first.json;
    let mut round = 0;
    loop {
        for m in page["items"].as_array().expect("items") {
            state.insert((
                group.clone(),
                m["member_id"].as_str().expect("id").to_owned(),
            ));
        }
        // Writes land while the client pages: one joins, one (already listed) leaves.
        if let Some(new) = extra.get(round) {
            app.put(&format!("/api/v1/groups/{group}/members/{new}"), None)
                .await;
            let (_, listed) = state.iter().nth(round).expect("listed").clone();
            app.delete(&format!("/api/v1/groups/{group}/members/{listed}"))
                .await;
        }
        round += 1;
        let Some(next) = page["next"].as_str() else {
            break;
        };
        let reply = app
            .get(&format!(
                "/api/v1/groups/{group}/members?limit=1000&cursor={next}"
            ))
            .await;
        assert!(
            reply.json.get("as_of").is_none(),
            "only the first page has as_of"
        );
        page = reply.json;
    }
    let (follow, _) = drain_all(&app, Some(&as_of), &format!("&group_id={group}")).await;
    apply(&mut state, &follow);
    assert_eq!(state, all_members(&app, &group).await);
}
