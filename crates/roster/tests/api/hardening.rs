//! Hardening against a hostile or broken connector: what a `write` or `scim` token bound to its own
//! source can do must stay within that source and must never break the feed for anyone else.

use crate::changes::events;
use crate::common::{Backend, Db, TestApp};
use crate::on_both_backends;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::Router;
use roster::domain::token::Scope;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

on_both_backends!(
    a_change_that_cannot_be_rendered_never_stops_a_reader,
    a_scim_document_nested_too_deep_is_refused_and_the_feed_reads_on,
);

const SCIM_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Arrays nested `depth` deep around one string.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("x"), |inner, _| json!([inner]))
}

/// Overwrites the attribute values of the newest change with `attrs` (written as text), as a
/// change stored before roster bounded document depth would hold them.
async fn overwrite_newest_change_attrs(app: &TestApp, attrs: &str) {
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
    let foo = app
        .get(&format!(
            "/api/v1/changes?after={start}&source_system=foo&limit=100"
        ))
        .await;
    assert_eq!(foo.status, StatusCode::OK, "{}", foo.text);
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
                        "urn:example:custom": {"x": nested(126)}});
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
                        "Operations": [{"op": "add", "path": "nickName", "value": nested(126)}]})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::BAD_REQUEST, "{}", patch.text);
    assert_eq!(app.fingerprint().await, before);
    let feed = app.get("/api/v1/changes?limit=100").await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.text);
}
