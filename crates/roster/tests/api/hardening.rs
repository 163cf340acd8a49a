//! Hardening against a hostile or broken connector: what a `write` or `scim` token bound to its own
//! source can do must stay within that source and must never break the feed for anyone else.

use crate::changes::events;
use crate::common::{get_request, Backend, Db, TestApp};
use crate::on_both_backends;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use roster::domain::token::Scope;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tower::ServiceExt;

on_both_backends!(
    a_change_that_cannot_be_rendered_never_stops_a_reader,
    a_scim_document_nested_too_deep_is_refused_and_the_feed_reads_on,
    an_admin_token_cannot_be_bound_and_a_bound_one_is_no_admin,
    only_admin_may_loosen_the_deletion_threshold,
    an_open_stream_ends_when_its_token_is_revoked,
    an_open_stream_ends_when_its_life_is_over,
    an_open_stream_ends_when_its_token_expires,
    scim_filters_with_too_many_comparisons_are_refused,
    every_way_a_resource_comes_into_being_checks_its_keys,
    refused_requests_are_logged_at_a_bounded_rate,
    a_new_tokens_audit_names_its_binding_and_expiry,
    responses_are_not_cached_or_sniffed_and_the_docs_page_is_never_framed,
    a_scim_replace_keeps_the_members_its_base_does_not_show,
    a_scim_document_cannot_grow_past_its_limit,
    answers_are_compressed_when_asked_and_event_streams_never_are,
);

const SCIM_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Arrays nested `depth` deep around one string.
pub(crate) fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("x"), |inner, _| json!([inner]))
}

/// Overwrites the attribute values of the newest change with `attrs` (written as text), as a
/// change stored before roster bounded document depth would hold them.
pub(crate) async fn overwrite_newest_change_attrs(app: &TestApp, attrs: &str) {
    match &app.db {
        Db::Sqlite(pool) => {
            sqlx::query("UPDATE change SET attrs = ?1 WHERE seq = (SELECT max(seq) FROM change)")
                .bind(attrs)
                .execute(pool)
                .await
                .expect("overwrite attrs");
        }
        Db::Postgres(pool) => {
            sqlx::query(
                "UPDATE change SET attrs = CAST($1 AS jsonb) \
                 WHERE seq = (SELECT max(seq) FROM change)",
            )
            .bind(attrs)
            .execute(pool)
            .await
            .expect("overwrite attrs");
        }
    }
}

/// A loopback webhook receiver that keeps every body it is sent and answers 204.
struct Receiver {
    url: String,
    bodies: Mutex<Vec<Value>>,
    count: watch::Sender<usize>,
}

impl Receiver {
    async fn start() -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receiver = Arc::new(Self {
            url: format!("http://{}/hook", listener.local_addr().expect("addr")),
            bodies: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let keep = receiver.clone();
        let app = Router::new().route(
            "/hook",
            post(move |body: String| async move {
                let value = serde_json::from_str(&body).unwrap_or(Value::Null);
                keep.bodies.lock().expect("lock").push(value);
                keep.count.send_modify(|n| *n += 1);
                StatusCode::NO_CONTENT
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    /// Waits (up to 30 s) until a delivered body mentions `needle`.
    async fn until_mentions(&self, needle: &str) {
        let mut rx = self.count.subscribe();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if self
                    .bodies
                    .lock()
                    .expect("lock")
                    .iter()
                    .any(|b| b.to_string().contains(needle))
                {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "no delivery mentions {needle}");
    }
}

async fn a_change_that_cannot_be_rendered_never_stops_a_reader(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start().await;
    let subscription = app
        .post(
            "/api/v1/subscriptions",
            json!({"url": receiver.url, "format": "full"}),
        )
        .await;
    assert_eq!(
        subscription.status,
        StatusCode::CREATED,
        "{}",
        subscription.text
    );
    let subscription = subscription.json["id"].as_str().expect("id").to_owned();
    let scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
    let delta = app
        .call_as(
            Some(&scim),
            Method::GET,
            "/scim/v2/foo/Users?deltaQuery",
            None,
        )
        .await;
    let delta = delta.json["nextDeltaToken"]
        .as_str()
        .expect("a delta token")
        .to_owned();
    let start = app.get("/api/v1/changes/head").await.json["cursor"]
        .as_str()
        .expect("head")
        .to_owned();
    let created = app
        .call_as(
            Some(&scim),
            Method::POST,
            "/scim/v2/foo/Users",
            Some(json!({"schemas": [SCIM_USER], "userName": "victim"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let victim = created.json["id"].as_str().expect("id").to_owned();
    let patched = app
        .call_as(
            Some(&scim),
            Method::PATCH,
            &format!("/scim/v2/foo/Users/{victim}"),
            Some(json!({"schemas": [PATCH_OP],
                        "Operations": [{"op": "replace", "path": "displayName", "value": "V"}]})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    let deep = json!({"scim": {"old": null, "new": nested(200)}}).to_string();
    overwrite_newest_change_attrs(&app, &deep).await;
    let after = app.user("bar", "after-the-deep-change").await;

    // The list: every change, the unrenderable one with a marker instead of its values.
    let list = app
        .get(&format!(
            "/api/v1/changes?after={start}&limit=100&format=full"
        ))
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let items = list.json["items"].as_array().expect("items");
    let marked: Vec<&Value> = items
        .iter()
        .filter(|c| c["changes"].get("_unrenderable").is_some())
        .collect();
    assert_eq!(marked.len(), 1, "{items:?}");
    assert_eq!(marked[0]["resource_id"], json!(victim));
    assert_eq!(items.last().expect("a change")["resource_id"], json!(after));
    // Filtered to the source, the history, the stream, the SCIM delta and the subscription.
    let of_foo = app
        .get(&format!(
            "/api/v1/changes?after={start}&source_system=foo&limit=100"
        ))
        .await;
    assert_eq!(of_foo.status, StatusCode::OK, "{}", of_foo.text);
    let history = app
        .get(&format!("/api/v1/resources/{victim}/history"))
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text);
    assert_eq!(history.json["items"].as_array().expect("items").len(), 2);
    let streamed = events(
        &app,
        &format!("/api/v1/changes/stream?after={start}"),
        None,
        3,
    )
    .await;
    assert_eq!(streamed[2].1["resource_id"], json!(after));
    let followed = app
        .call_as(
            Some(&scim),
            Method::GET,
            &format!("/scim/v2/foo/Users?deltaQuery&deltaToken={delta}"),
            None,
        )
        .await;
    assert_eq!(followed.status, StatusCode::OK, "{}", followed.text);
    assert_eq!(followed.json["Resources"][0]["id"], json!(victim));
    let read = app
        .get(&format!("/api/v1/subscriptions/{subscription}"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    // Delivery goes past it.
    receiver.until_mentions(&after).await;
}

async fn a_scim_document_nested_too_deep_is_refused_and_the_feed_reads_on(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
    let before = app.fingerprint().await;
    let attack = json!({"schemas": [SCIM_USER, "urn:example:custom"], "userName": "deep",
                        "urn:example:custom": {"x": nested(123)}});
    let refused = app
        .call_as(
            Some(&scim),
            Method::POST,
            "/scim/v2/foo/Users",
            Some(attack),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(refused.text.contains("deep"), "{}", refused.text);
    assert_eq!(app.fingerprint().await, before);
    let created = app
        .call_as(
            Some(&scim),
            Method::POST,
            "/scim/v2/foo/Users",
            Some(json!({"schemas": [SCIM_USER], "userName": "shallow"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["id"].as_str().expect("id").to_owned();
    let before = app.fingerprint().await;
    let patch = app
        .call_as(
            Some(&scim),
            Method::PATCH,
            &format!("/scim/v2/foo/Users/{id}"),
            Some(json!({"schemas": [PATCH_OP],
                        "Operations": [{"op": "add", "path": "nickName", "value": nested(120)}]})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::BAD_REQUEST, "{}", patch.text);
    assert_eq!(app.fingerprint().await, before);
    let feed = app.get("/api/v1/changes?limit=100").await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.text);
}

/// `n` users of `source` in a new group of that source, and the group.
async fn group_of(app: &TestApp, source: &str, n: usize) -> (String, Vec<String>) {
    let group = app.group(source, "staff").await;
    let mut users = Vec::new();
    for i in 0..n {
        users.push(app.user(source, &format!("u{i}")).await);
    }
    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    app.full_update(&group, &ids).await;
    (group, users)
}

async fn an_admin_token_cannot_be_bound_and_a_bound_one_is_no_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.scalar("SELECT count(*) FROM api_token", &[]).await;
    let refused = app
        .post(
            "/api/v1/tokens",
            json!({"name": "foo-admin", "scopes": ["admin"], "source_system": "foo"}),
        )
        .await;
    refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "cannot be bound");
    assert_eq!(
        app.scalar("SELECT count(*) FROM api_token", &[]).await,
        before
    );
    // A bound admin token created before roster refused them holds none of admin's powers.
    let (bar, _) = group_of(&app, "bar", 2).await;
    let held = app
        .post(
            "/api/v1/operations?wait=60",
            json!({"type": "full-update", "group_id": bar, "members": [], "complete": true}),
        )
        .await;
    assert_eq!(held.json["status"], "pending", "{}", held.text);
    let pending = held.json["id"].as_i64().expect("id");
    let bound = app
        .token("old-foo-admin", &[Scope::Admin], Some("foo"))
        .await;
    let as_bound = |method: Method, path: &str, body: Option<Value>| {
        let (bound, path) = (bound.clone(), path.to_owned());
        let app = &app;
        async move { app.call_as(Some(&bound), method, &path, body).await }
    };
    let tokens = app.scalar("SELECT count(*) FROM api_token", &[]).await;
    as_bound(
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "minted", "scopes": ["admin"]})),
    )
    .await
    .assert_problem(StatusCode::FORBIDDEN, "admin");
    for verb in ["approve", "reject"] {
        as_bound(
            Method::POST,
            &format!("/api/v1/operations/{pending}/{verb}"),
            Some(json!({"reason": "mine now"})),
        )
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin");
    }
    as_bound(
        Method::POST,
        "/api/v1/subscriptions",
        Some(json!({"url": "https://hooks.example/x", "source_system": "bar"})),
    )
    .await
    .assert_problem(StatusCode::FORBIDDEN, "admin");
    as_bound(
        Method::POST,
        "/api/v1/operations",
        Some(json!({"type": "purge", "retention_days": 0})),
    )
    .await
    .assert_problem(StatusCode::FORBIDDEN, "admin");
    assert_eq!(
        app.scalar("SELECT count(*) FROM api_token", &[]).await,
        tokens
    );
    assert_eq!(
        app.get(&format!("/api/v1/operations/{pending}")).await.json["status"],
        "pending"
    );
    assert_eq!(app.members(&bar).await.len(), 2);
    assert_eq!(
        app.scalar("SELECT count(*) FROM subscription", &[]).await,
        0
    );
}

async fn only_admin_may_loosen_the_deletion_threshold(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (group, users) = group_of(&app, "foo", 120).await;
    let connector = app
        .token("foo-connector", &[Scope::Write, Scope::Read], Some("foo"))
        .await;
    let loose = json!({"max_removed_percent": 100, "min_group_size": 0});
    let before = app.fingerprint().await;
    for body in [
        json!({"type": "full-update", "group_id": group, "complete": true,
               "members": [{"member_id": users[0]}], "threshold": loose}),
        json!({"type": "reconcile", "group_id": group, "threshold": loose}),
    ] {
        app.call_as(
            Some(&connector),
            Method::POST,
            "/api/v1/operations?wait=60",
            Some(body),
        )
        .await
        .assert_problem(StatusCode::FORBIDDEN, "only tighten");
    }
    assert_eq!(app.fingerprint().await, before);
    // Without an override the same request is held; tightening is allowed.
    let held = app
        .call_as(
            Some(&connector),
            Method::POST,
            "/api/v1/operations?wait=60",
            Some(
                json!({"type": "full-update", "group_id": group, "complete": true,
                        "members": [{"member_id": users[0]}]}),
            ),
        )
        .await;
    assert_eq!(held.json["status"], "pending", "{}", held.text);
    let tight = app
        .call_as(
            Some(&connector),
            Method::POST,
            "/api/v1/operations?wait=60",
            Some(json!({"type": "full-update", "group_id": group, "complete": true,
                        "members": users[..119].iter().map(|u| json!({"member_id": u})).collect::<Vec<_>>(),
                        "threshold": {"max_removed_percent": 0.5, "min_group_size": 10}})),
        )
        .await;
    assert_eq!(tight.json["status"], "pending", "{}", tight.text);
    assert_eq!(app.members(&group).await.len(), 120);
    // An admin may loosen it.
    let admin = app
        .post(
            "/api/v1/operations?wait=60",
            json!({"type": "full-update", "group_id": group, "complete": true,
                   "members": [{"member_id": users[0]}], "threshold": loose}),
        )
        .await;
    let admin = app
        .finished(admin.json["id"].as_i64().expect("id"), admin.json)
        .await;
    assert_eq!(admin["status"], "complete", "{admin}");
    assert_eq!(app.members(&group).await, vec![users[0].clone()]);
}

/// Opens an event stream as the holder of `token` and reads it, in a task, until the server ends
/// it (at most 60 s): the whole text it sent.
async fn read_stream_to_its_end(
    app: &TestApp,
    token: &str,
    path: &str,
) -> tokio::task::JoinHandle<String> {
    let response = app.open(token, path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    tokio::spawn(async move {
        let mut text = String::new();
        let read = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("a readable frame").into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the stream did not end; it sent {text}");
        text
    })
}

async fn an_open_stream_ends_when_its_token_is_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let reply = app
        .post(
            "/api/v1/tokens",
            json!({"name": "reader", "scopes": ["read"]}),
        )
        .await;
    let (id, secret) = (
        reply.json["token"]["id"].as_str().expect("id").to_owned(),
        reply.json["secret"].as_str().expect("secret").to_owned(),
    );
    let before = app.user("foo", "before-revocation").await;
    let stream = read_stream_to_its_end(&app, &secret, "/api/v1/changes/stream").await;
    let revoked = app.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    let text = stream.await.expect("reader");
    assert!(text.contains(&before), "{text}");
    let end = text
        .trim_end()
        .lines()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        end.contains("event: error") && end.contains("revoked"),
        "{text}"
    );
}

async fn an_open_stream_ends_when_its_life_is_over(backend: Backend) {
    let limits = roster::server::Limits {
        stream_lifetime: Duration::from_secs(1),
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(backend, limits).await;
    let reader = app.token("reader", &[Scope::Read], None).await;
    let stream = read_stream_to_its_end(&app, &reader, "/api/v1/changes/stream").await;
    let text = stream.await.expect("reader");
    assert!(
        text.contains("event: error") && text.contains("reconnect with Last-Event-ID"),
        "{text}"
    );
}

async fn scim_filters_with_too_many_comparisons_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
    let filter = vec!["userName ew \"x\""; 160].join(" or ");
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    let reply = app
        .call_as(
            Some(&scim),
            Method::GET,
            &format!("/scim/v2/foo/Users?filter={encoded}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.json["scimType"], "invalidFilter");
    assert!(reply.text.contains("160 comparisons"), "{}", reply.text);
}

/// Holds an exclusive lock on the `resource` table (so every read of it waits) until the
/// transaction is dropped.
async fn lock_resources(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let Db::Postgres(pool) = &app.db else {
        panic!("a PostgreSQL test");
    };
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE resource IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("lock");
    tx
}

/// Waits (up to 20 s) until `n` of roster's SCIM reads wait for a lock (the expiry sweep, which
/// also reads resources, waits too and is not counted).
async fn until_statements_wait(app: &TestApp, n: i64) {
    until_waiting(app, "roster%", "%FROM resource r WHERE%", n).await;
}

/// Waits (up to 20 s) until `n` statements like `query` of connections named like `name` wait for
/// a lock.
async fn until_waiting(app: &TestApp, name: &str, query: &str, n: i64) {
    let Db::Postgres(pool) = &app.db else {
        panic!("a PostgreSQL test");
    };
    let reached = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name LIKE $1 AND wait_event_type = 'Lock' AND query LIKE $2",
            )
            .bind(name)
            .bind(query)
            .fetch_one(pool)
            .await
            .expect("activity");
            if waiting == n {
                return;
            }

            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(reached.is_ok(), "never {n} statements waiting");
}

#[tokio::test]
async fn postgres_a_statement_never_outlives_its_request() {
    let limits = roster::server::Limits {
        request_timeout: Duration::from_secs(1),
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(Backend::Postgres, limits).await;
    let scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
    let lock = lock_resources(&app).await;
    let request = get_request(&scim, "/scim/v2/foo/Users");
    let reply = tokio::spawn(app.router.clone().oneshot(request));
    until_statements_wait(&app, 1).await;
    let reply = reply.await.expect("task").expect("router is infallible");
    assert_eq!(reply.status(), StatusCode::REQUEST_TIMEOUT);
    // The statement it started does not wait on while the lock is held.
    until_statements_wait(&app, 0).await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    drop(lock);
}

#[tokio::test]
async fn postgres_a_read_by_key_outlives_its_request_by_no_more_than_its_cap() {
    let limits = roster::server::Limits {
        request_timeout: Duration::from_secs(1),
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(Backend::Postgres, limits).await;
    let user = app.user("home", "u").await;
    let reader = app.token("reader", &[Scope::Read], None).await;
    let lock = lock_resources(&app).await;
    let request = get_request(&reader, &format!("/api/v1/resources/{user}"));
    let reply = app.router.clone().oneshot(request).await.expect("router");
    assert_eq!(reply.status(), StatusCode::REQUEST_TIMEOUT);
    // The read ran on the lookup pool, which its request does not cancel...
    let by_id = "%FROM resource WHERE id = $1%";
    until_waiting(&app, "roster lookups", by_id, 1).await;
    // ...and ends at the pool's cap (5 s), though the lock is still held.
    until_waiting(&app, "roster lookups", by_id, 0).await;
    drop(lock);
}

#[tokio::test]
async fn postgres_a_request_its_client_abandons_leaves_no_statement_running() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
    let lock = lock_resources(&app).await;
    let request = get_request(&scim, "/scim/v2/foo/Users");
    let abandoned = tokio::spawn(app.router.clone().oneshot(request));
    until_statements_wait(&app, 1).await;
    // The client goes away long before the request's 30 s are up.
    abandoned.abort();
    until_statements_wait(&app, 0).await;
    drop(lock);
}

#[tokio::test]
async fn postgres_one_token_runs_no_more_scim_reads_at_once_than_its_share() {
    let limits = roster::server::Limits {
        scim_reads_per_token: 1,
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(Backend::Postgres, limits).await;
    let scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
    let lock = lock_resources(&app).await;
    let request = get_request(&scim, "/scim/v2/foo/Users");
    let first = tokio::spawn(app.router.clone().oneshot(request));
    until_statements_wait(&app, 1).await;
    // More lists of the same token than the pool has connections are refused at once, so the
    // pool stays free for readiness and the feed.
    let more = (0..10).map(|_| app.call_as(Some(&scim), Method::GET, "/scim/v2/foo/Groups", None));
    for second in futures_util::future::join_all(more).await {
        assert_eq!(
            second.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            second.text
        );
        assert_eq!(second.retry_after.as_deref(), Some("1"));
    }
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    assert_eq!(app.get("/api/v1/changes/head").await.status, StatusCode::OK);
    // The lookup an identity provider makes before each push is not counted: it waits for the
    // lock like any read, and is answered.
    let lookups: Vec<_> = (0..3)
        .map(|_| {
            let filter = url::form_urlencoded::byte_serialize(b"userName eq \"ada\"");
            let path = format!("/scim/v2/foo/Users?filter={}", filter.collect::<String>());
            tokio::spawn(app.router.clone().oneshot(get_request(&scim, &path)))
        })
        .collect();
    until_statements_wait(&app, 4).await;
    drop(lock);
    let first = first.await.expect("task").expect("router is infallible");
    assert_eq!(first.status(), StatusCode::OK);
    for lookup in lookups {
        let answer = lookup.await.expect("task").expect("router is infallible");
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let again = app
        .call_as(Some(&scim), Method::GET, "/scim/v2/foo/Groups", None)
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
}

async fn every_way_a_resource_comes_into_being_checks_its_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.group("src", "staff").await;
    let long = "x".repeat(5000);
    let bad = [
        json!({"source_system": "src", "identifier": "\u{1b}[31mred"}),
        json!({"source_system": "src", "identifier": "   "}),
        json!({"source_system": "src", "identifier": long}),
        json!({"source_system": "src", "external_id": long}),
        json!({"source_system": "src\u{0}", "identifier": "nul-source"}),
        json!({"source_system": "src", "identifier": "bell\u{7}"}),
    ];
    let resources = app.scalar("SELECT count(*) FROM resource", &[]).await;
    for line in &bad {
        let reply = app
            .post(
                "/api/v1/operations?wait=60",
                json!({"type": "full-update", "group_id": group, "create_missing": true,
                       "complete": true, "members": [line]}),
            )
            .await;
        assert!(
            reply.status.is_client_error(),
            "{line}: {} {}",
            reply.status,
            reply.text
        );
        assert_eq!(
            app.scalar("SELECT count(*) FROM resource", &[]).await,
            resources,
            "{line} created an account"
        );
    }
    // Through an upload, each bad line is rejected by number; the good one is created.
    let op = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "group_id": group, "create_missing": true,
                   "on_error": "skip"}),
        )
        .await;
    let op = op.json["id"].as_i64().expect("id");
    let mut lines: String = bad.iter().map(|l| format!("{l}\n")).collect();
    lines.push_str("{\"source_system\": \"src\", \"identifier\": \"good\"}\n");
    app.chunk(op, 0, &lines).await;
    let done = app.complete(op).await;
    assert_eq!(done["counts"]["added"], 1, "{done}");
    assert_eq!(done["counts"]["rejected"], 6, "{done}");
    assert_eq!(
        app.scalar("SELECT count(*) FROM resource", &[]).await,
        resources + 1
    );
    // SCIM creates and renames follow the same rules.
    let scim = app.token("scim-src", &[Scope::Scim], Some("src")).await;
    let renamed = app
        .call_as(
            Some(&scim),
            Method::POST,
            "/scim/v2/src/Users",
            Some(json!({"schemas": [SCIM_USER], "userName": "plain"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::CREATED, "{}", renamed.text);
    let plain = renamed.json["id"].as_str().expect("id").to_owned();
    let resources = resources + 1;
    for user_name in ["\u{1b}[2Jcleared", "   "] {
        let reply = app
            .call_as(
                Some(&scim),
                Method::PATCH,
                &format!("/scim/v2/src/Users/{plain}"),
                Some(json!({"schemas": [PATCH_OP],
                            "Operations": [{"op": "replace", "path": "userName",
                                            "value": user_name}]})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    }
    assert_eq!(
        app.text(
            "SELECT identifier FROM resource WHERE identifier = 'plain'",
            &[]
        )
        .await
        .as_deref(),
        Some("plain")
    );
    for user_name in ["\u{1b}]0;title\u{7}", "   ", long.as_str()] {
        let reply = app
            .call_as(
                Some(&scim),
                Method::POST,
                "/scim/v2/src/Users",
                Some(json!({"schemas": [SCIM_USER], "userName": user_name})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    }
    assert_eq!(
        app.scalar("SELECT count(*) FROM resource", &[]).await,
        resources + 1
    );
}

/// Everything logged while it is the thread's subscriber (the test's runtime has one thread).
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("lock"))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

async fn refused_requests_are_logged_at_a_bounded_rate(backend: Backend) {
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Tracing caches each callsite's interest process-wide, and while one dispatcher is
    // registered it asks only the registering thread's: a sibling test without a subscriber
    // would cache "never" for the refusal line. A second registered dispatcher, kept for the
    // test, makes the registry ask every live dispatcher, this test's capture among them.
    let _anchor = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::WARN)
            .finish(),
    );
    tracing::callsite::rebuild_interest_cache();
    let app = TestApp::spawn(backend).await;
    let created = app
        .post(
            "/api/v1/tokens",
            json!({"name": "reader", "scopes": ["read"]}),
        )
        .await;
    let reader = created.json["secret"].as_str().expect("secret").to_owned();
    let reader_id = created.json["token"]["id"].as_str().expect("id").to_owned();
    let forbidden = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/tokens")
        .header(header::AUTHORIZATION, format!("Bearer {reader}"))
        .header("x-request-id", "req-forbidden-1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name": "x", "scopes": ["read"]}"#))
        .expect("request");
    assert_eq!(app.send_raw(forbidden).await.status, StatusCode::FORBIDDEN);
    let unauthorized = app
        .call_as(
            Some("roster_not-a-token"),
            Method::GET,
            "/api/v1/resources",
            None,
        )
        .await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let refused: Vec<String> = capture
        .lines()
        .into_iter()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("status=403")
            && refused[0].contains("route=\"/api/v1/tokens\"")
            && refused[0].contains(&reader_id)
            && refused[0].contains("req-forbidden-1"),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].contains("status=401") && refused[1].contains("/api/v1/resources"),
        "{}",
        refused[1]
    );
    // A flood is logged at a bounded rate, and the next line says how many were left out.
    for _ in 0..200 {
        app.call_as(None, Method::GET, "/api/v1/resources", None)
            .await;
    }
    let logged = capture
        .lines()
        .iter()
        .filter(|l| l.contains("request refused"))
        .count();
    assert!(logged < 100, "{logged} lines for 202 refusals");
    // Refusals go on until the rate allows a line again: it counts those left out.
    let counted = || {
        capture
            .lines()
            .iter()
            .any(|l| l.contains("left_out_before=") && !l.contains("left_out_before=0"))
    };
    let reported = tokio::time::timeout(Duration::from_secs(10), async {
        while !counted() {
            app.call_as(None, Method::GET, "/api/v1/resources", None)
                .await;
        }
    })
    .await;
    assert!(
        reported.is_ok(),
        "no line says how many refusals were left out"
    );
}

async fn a_new_tokens_audit_names_its_binding_and_expiry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let reply = app
        .post(
            "/api/v1/tokens",
            json!({"name": "foo-connector", "scopes": ["write"], "source_system": "foo",
                   "expires_at": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let detail = app
        .text(
            "SELECT CAST(detail AS TEXT) FROM audit WHERE action = 'token.create'",
            &[],
        )
        .await
        .expect("audit detail");
    let detail: Value = serde_json::from_str(&detail).expect("json");
    assert_eq!(detail["source_system"], "foo");
    assert_eq!(detail["read_scope"], "all");
    assert_eq!(detail["scopes"], json!(["write"]));
    assert!(
        detail["expires_at"]
            .as_str()
            .is_some_and(|at| at.starts_with("2030-01-01")),
        "{detail}"
    );
}

async fn responses_are_not_cached_or_sniffed_and_the_docs_page_is_never_framed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let send = |method: Method, path: &str, body: Option<Value>| {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", app.admin));
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        app.router
            .clone()
            .oneshot(request.body(body).expect("request"))
    };
    let created = send(
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "t", "scopes": ["read"]})),
    )
    .await
    .expect("router is infallible");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(created.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(created
        .headers()
        .get(header::STRICT_TRANSPORT_SECURITY)
        .is_none());
    let refused = send(Method::GET, "/api/v1/nothing-here", None)
        .await
        .expect("router is infallible");
    assert_eq!(refused.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let docs = send(Method::GET, "/docs/", None)
        .await
        .expect("router is infallible");
    assert_eq!(docs.status(), StatusCode::OK);
    let policy = docs.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("text");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(docs.headers()[header::X_FRAME_OPTIONS], "DENY");
}

async fn a_scim_replace_keeps_the_members_its_base_does_not_show(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
    let group = app.group("foo", "engineering").await;
    let (mine, other, foreign) = (
        app.user("foo", "mine").await,
        app.user("foo", "other").await,
        app.user("bar", "foreign").await,
    );
    for member in [&mine, &other, &foreign] {
        app.put(&format!("/api/v1/groups/{group}/members/{member}"), None)
            .await;
    }
    let active = |member: String| {
        let (app, group) = (&app, group.clone());
        async move {
            app.scalar(
                "SELECT count(*) FROM group_member WHERE group_id = $1 AND member_id = $2 \
                 AND NOT removed",
                &[&group, &member],
            )
            .await
        }
    };
    // A client reads the group and writes it back without `other`: a PUT, then Okta's replace.
    let read = app
        .call_as(
            Some(&scim),
            Method::GET,
            &format!("/scim/v2/foo/Groups/{group}"),
            None,
        )
        .await;
    assert_eq!(read.json["members"].as_array().expect("members").len(), 2);
    let put = app
        .call_as(
            Some(&scim),
            Method::PUT,
            &format!("/scim/v2/foo/Groups/{group}"),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                        "displayName": "engineering",
                        "members": [{"value": mine}, {"value": other}]}),
            ),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let replace = app
        .call_as(
            Some(&scim),
            Method::PATCH,
            &format!("/scim/v2/foo/Groups/{group}"),
            Some(json!({"schemas": [PATCH_OP],
                        "Operations": [{"op": "replace", "path": "members",
                                        "value": [{"value": mine}]}]})),
        )
        .await;
    assert!(replace.status.is_success(), "{}", replace.text);
    assert_eq!(active(mine.clone()).await, 1);
    assert_eq!(active(other.clone()).await, 0, "the replace ended other");
    assert_eq!(active(foreign.clone()).await, 1, "bar's member survives");
}

async fn a_scim_document_cannot_grow_past_its_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
    let created = app
        .call_as(
            Some(&scim),
            Method::POST,
            "/scim/v2/foo/Users",
            Some(json!({"schemas": [SCIM_USER], "userName": "growing"})),
        )
        .await;
    let id = created.json["id"].as_str().expect("id").to_owned();
    // Each PATCH adds 100 KiB of new values to one array: the third would pass 256 KiB.
    let mut answers = Vec::new();
    for round in 0..3 {
        let values: Vec<Value> = (0..100)
            .map(|i| json!({"value": format!("{round}-{i}-{}", "x".repeat(1000))}))
            .collect();
        let reply = app
            .call_as(
                Some(&scim),
                Method::PATCH,
                &format!("/scim/v2/foo/Users/{id}"),
                Some(json!({"schemas": [PATCH_OP],
                            "Operations": [{"op": "add", "path": "emails", "value": values}]})),
            )
            .await;
        answers.push(reply.status);
        if !reply.status.is_success() {
            assert!(reply.text.contains("the limit is"), "{}", reply.text);
        }
    }
    assert_eq!(
        answers,
        vec![StatusCode::OK, StatusCode::OK, StatusCode::BAD_REQUEST]
    );
    let stored = app
        .text(
            "SELECT CAST(scim AS TEXT) FROM resource WHERE identifier = 'growing'",
            &[],
        )
        .await
        .expect("document");
    assert!(stored.len() < 256 * 1024, "{} bytes stored", stored.len());
}

async fn an_open_stream_ends_when_its_token_expires(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let reply = app
        .post(
            "/api/v1/tokens",
            json!({"name": "short-lived", "scopes": ["read"], "expires_at": expires}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let secret = reply.json["secret"].as_str().expect("secret").to_owned();
    let stream = read_stream_to_its_end(&app, &secret, "/api/v1/changes/stream").await;
    let text = stream.await.expect("reader");
    assert!(
        text.contains("event: error") && text.contains("has expired"),
        "{text}"
    );
}

/// A GET of `path` as the admin, accepting `encoding`: the answer's status, `Content-Encoding`
/// and raw body.
async fn fetch_encoded(app: &TestApp, path: &str, encoding: &str) -> (StatusCode, String, Vec<u8>) {
    let mut request = get_request(&app.admin, path);
    request
        .headers_mut()
        .insert(header::ACCEPT_ENCODING, encoding.parse().expect("header"));
    let response = app.router.clone().oneshot(request).await.expect("router");
    let status = response.status();
    let encoded = response
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, encoded, body.to_vec())
}

async fn answers_are_compressed_when_asked_and_event_streams_never_are(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.group("home", "g").await;
    let lines: Vec<Value> = (0..200)
        .map(|i| json!({"type": "user", "identifier": format!("user{i}@contoso.example")}))
        .collect();
    let loaded = app
        .post(
            "/api/v1/operations",
            json!({"type": "partial-update", "target": "resources", "source_system": "home",
                   "resources": lines}),
        )
        .await;
    assert_eq!(loaded.status, StatusCode::CREATED, "{}", loaded.text);
    let page = "/api/v1/resources?limit=1000";
    let (status, encoded, plain) = fetch_encoded(&app, page, "identity").await;
    assert_eq!((status, encoded.as_str()), (StatusCode::OK, ""));
    let listed: Value = serde_json::from_slice(&plain).expect("JSON");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(201));

    let (_, encoded, gzipped) = fetch_encoded(&app, page, "gzip").await;
    assert_eq!(encoded, "gzip");
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gzipped[..]),
        &mut unzipped,
    )
    .expect("gzip");
    assert_eq!(unzipped, plain);
    assert!(
        gzipped.len() * 4 < plain.len(),
        "{} of {}",
        gzipped.len(),
        plain.len()
    );

    let (_, encoded, zstded) = fetch_encoded(&app, page, "zstd, gzip;q=0.5").await;
    assert_eq!(encoded, "zstd");
    assert_eq!(zstd::decode_all(&zstded[..]).expect("zstd"), plain);

    // A streamed answer (the export) is compressed to its end.
    let export = "/api/v1/export?source_system=home";
    let (_, _, plain) = fetch_encoded(&app, export, "identity").await;
    let (status, encoded, zstded) = fetch_encoded(&app, export, "zstd").await;
    assert_eq!((status, encoded.as_str()), (StatusCode::OK, "zstd"));
    assert_eq!(zstd::decode_all(&zstded[..]).expect("zstd"), plain);
    let last = plain.rsplit(|b| *b == b'\n').nth(1).unwrap_or_default();
    assert!(
        last.starts_with(b"{\"cursor\""),
        "{}",
        String::from_utf8_lossy(&plain)
    );

    // A problem document is compressed like any answer, and still a problem document.
    let (status, _, body) = fetch_encoded(&app, "/api/v1/resources?limit=0", "gzip").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.is_empty());

    // Event streams are sent as they come, never held back by a compressor.
    let mut request = get_request(&app.admin, "/api/v1/changes/stream");
    request
        .headers_mut()
        .insert(header::ACCEPT_ENCODING, "gzip".parse().expect("header"));
    let stream = app.router.clone().oneshot(request).await.expect("router");
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers().get(header::CONTENT_ENCODING).is_none());
}
