//! The NATS JetStream relay against a real `nats-server -js` (scripts/with-nats starts one): every
//! change is in the stream once and in order, re-running from an older position adds nothing, a
//! relay process killed mid-stream with SIGKILL loses nothing once restarted, and no two source
//! systems share a subject.

use crate::common::{fresh_postgres_database, Backend, TestApp};
use crate::on_both_backends;
use crate::process;
use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use roster::domain::feed::Cursor;
use roster::relay::{Relay, RelayConfig};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

on_both_backends!(
    every_change_reaches_jetstream_once_and_in_order,
    sources_never_share_a_subject_and_a_header_names_each_exactly,
    a_change_that_cannot_be_rendered_does_not_stop_the_relay,
);

/// The NATS server the tests use; the README's test command sets it.
fn nats_url() -> String {
    std::env::var("ROSTER_TEST_NATS_URL").unwrap_or_else(|_| {
        panic!(
            "ROSTER_TEST_NATS_URL is not set: run the tests with ./scripts/test, which starts \
             nats-server -js, or point it at a NATS server with JetStream"
        )
    })
}

/// A stream and subject prefix of this test's own.
fn config() -> RelayConfig {
    let name = format!("t{}", Uuid::now_v7().simple());
    RelayConfig {
        url: nats_url(),
        stream: name.to_uppercase(),
        subject_prefix: name,
        max_age: Some(Duration::from_secs(3600)),
        lease: Duration::from_secs(2),
    }
}

async fn context() -> jetstream::Context {
    let client = async_nats::connect(nats_url())
        .await
        .expect("connect to NATS");
    jetstream::new(client)
}

/// How many messages the stream holds (zero while it does not exist yet).
async fn count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits (watching the stream, up to a minute) until it holds `n` messages.
async fn until_count(js: &jetstream::Context, stream: &str, n: u64) {
    for _ in 0..600 {
        if count(js, stream).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "stream {stream} never held {n} messages: {}",
        count(js, stream).await
    );
}

/// Every message of the stream, in order: its `Nats-Msg-Id`, subject and `Roster-Source-System`.
async fn messages(js: &jetstream::Context, stream: &str) -> Vec<(String, String, Option<String>)> {
    messages_on(js, stream, "").await
}

/// The messages of the stream on subjects that match `filter` (every one when empty).
async fn messages_on(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Vec<(String, String, Option<String>)> {
    let stream = js.get_stream(stream).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(format!("reader{}", Uuid::now_v7().simple())),
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .expect("durable pull consumer");
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        let before = out.len();
        while let Some(message) = batch.next().await {
            let message = message.expect("message");
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            let id = header("Nats-Msg-Id").unwrap_or_default();
            let source = header("Roster-Source-System");
            out.push((id, message.subject.to_string(), source));
            message.ack().await.expect("ack");
        }
        if out.len() == before {
            return out;
        }
    }
}

/// The cursor of every change in the database, in feed order (as the relay publishes them).
async fn feed_ids(app: &TestApp) -> Vec<String> {
    let (items, _) = crate::changes::drain_all(app, None, "").await;
    items
        .iter()
        .map(|i| i["cursor"].as_str().expect("cursor").to_owned())
        .collect()
}

async fn every_change_reaches_jetstream_once_and_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let config = config();
    let relay = Relay::new(app.store.clone(), config.clone(), "relay-a".to_owned()).start();
    let group = app.group("corp.example", "staff").await;
    for i in 0..20 {
        let user = app.user("corp.example", &format!("u{i}")).await;
        app.put(&format!("/api/v1/groups/{group}/members/{user}"), None)
            .await;
    }
    let expected = feed_ids(&app).await;
    assert_eq!(expected.len(), 41);
    let js = context().await;
    until_count(&js, &config.stream, 41).await;
    let got = messages(&js, &config.stream).await;
    let ids: Vec<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(ids, want, "every change once, in feed order");
    assert_eq!(
        got[1].1,
        format!("{}.resource.created.corp_2Eexample", config.subject_prefix)
    );
    assert_eq!(
        got[2].1,
        format!("{}.membership.added.corp_2Eexample", config.subject_prefix)
    );
    assert_eq!(got[1].2.as_deref(), Some("corp.example"));

    // Run the relay again from the start of the log: it skips what the stream already holds
    // (and JetStream would drop a repeat), so the stream still holds each change once.
    relay.abort();
    let position = app
        .text("SELECT position FROM relay WHERE name = 'nats'", &[])
        .await;
    assert!(Cursor::decode(&position.expect("a stored position")).is_ok());
    reset_relay(&app).await;
    let again = Relay::new(app.store.clone(), config.clone(), "relay-b".to_owned()).start();
    app.user("corp.example", "late").await;
    until_count(&js, &config.stream, 42).await;
    let got = messages(&js, &config.stream).await;
    assert_eq!(
        got.len(),
        42,
        "the re-run from the start published no duplicate"
    );
    assert_eq!(
        got[41].0,
        feed_ids(&app).await[41],
        "the new change follows, once"
    );
    again.abort();
    js.delete_stream(&config.stream)
        .await
        .expect("delete the test's stream");
}

async fn sources_never_share_a_subject_and_a_header_names_each_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let config = config();
    let relay = Relay::new(app.store.clone(), config.clone(), "relay-a".to_owned()).start();
    // Sources that the old encoding (`.`, white space → `_`) put on one subject.
    let sources = ["a.b", "a_b", "a b", "é-1"];
    for source in sources {
        app.user(source, "u").await;
    }
    let js = context().await;
    until_count(&js, &config.stream, 4).await;
    let got = messages(&js, &config.stream).await;
    let prefix = &config.subject_prefix;
    let subjects: Vec<&str> = got.iter().map(|(_, subject, _)| subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            format!("{prefix}.resource.created.a_2Eb"),
            format!("{prefix}.resource.created.a_5Fb"),
            format!("{prefix}.resource.created.a_20b"),
            format!("{prefix}.resource.created._C3_A9-1"),
        ]
    );
    let headers: Vec<Option<&str>> = got.iter().map(|(_, _, h)| h.as_deref()).collect();
    assert_eq!(headers, sources.map(Some));

    // A consumer of one source filters on its token, as docs/changes.md describes.
    let only = messages_on(&js, &config.stream, &format!("{prefix}.*.*.a_2Eb")).await;
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0].2.as_deref(), Some("a.b"));
    relay.abort();
    js.delete_stream(&config.stream)
        .await
        .expect("delete the test's stream");
}

/// Moves the relay back to the start of the log and frees its lease.
async fn reset_relay(app: &TestApp) {
    let sql = "UPDATE relay SET position = '', holder = 'nobody', until = '2000-01-01T00:00:00Z' \
               WHERE name = 'nats'";
    match &app.db {
        crate::common::Db::Sqlite(pool) => {
            sqlx::query(sql).execute(pool).await.expect("reset");
        }
        crate::common::Db::Postgres(pool) => {
            sqlx::query(sql).execute(pool).await.expect("reset");
        }
    }
}

#[tokio::test]
async fn postgres_a_relay_killed_mid_stream_loses_nothing() {
    let (_admin, _name, url) = fresh_postgres_database().await;
    let config = config();
    let dir = tempfile::tempdir().expect("dir");
    let args = [
        "--database-url",
        url.as_str(),
        "--nats-url",
        config.url.as_str(),
        "--nats-stream",
        config.stream.as_str(),
        "--nats-subject-prefix",
        config.subject_prefix.as_str(),
        "--lease-seconds",
        "2",
    ];
    let (first, addr) = process::start(dir.path(), &args).await;
    let (status, group) = process::request(
        &addr,
        "POST",
        "/api/v1/resources",
        r#"{"type": "group", "source_system": "hr", "identifier": "all"}"#,
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group = group["id"].as_str().expect("id").to_owned();
    let (status, op) = process::request(
        &addr,
        "POST",
        "/api/v1/operations",
        &json!({"type": "full-update", "group_id": group, "create_missing": true}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{op}");
    let op = op["id"].as_i64().expect("op");
    let lines: String = (0..30_000)
        .map(|i| format!("{{\"source_system\": \"hr\", \"identifier\": \"u{i}\"}}\n"))
        .collect();
    let path = format!("/api/v1/operations/{op}/chunks/0");
    let (status, chunk) = process::request(&addr, "PUT", &path, &lines).await;
    assert_eq!(status, 200, "{chunk}");
    let (status, mut done) = process::request(
        &addr,
        "POST",
        &format!("/api/v1/operations/{op}/complete?wait=20"),
        "",
    )
    .await;
    assert!(status == 200 || status == 202, "{done}");
    while done["status"] == "running" {
        let path = format!("/api/v1/operations/{op}?wait=20");
        done = process::request(&addr, "GET", &path, "").await.1;
    }
    assert_eq!(done["status"], "complete", "{done}");

    // 60,001 changes: kill the relaying process once some, not all, are in the stream.
    let js = context().await;
    let total = 60_001;
    until_count(&js, &config.stream, 1).await;
    let published = count(&js, &config.stream).await;
    assert!(
        published < total,
        "the relay finished before it could be killed"
    );
    let mut first = first;
    first.kill().await.expect("SIGKILL");

    let (second, _) = process::start(dir.path(), &args).await;
    until_count(&js, &config.stream, total).await;
    let got = messages(&js, &config.stream).await;
    let unique: std::collections::HashSet<&str> =
        got.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(got.len() as u64, total, "nothing lost, nothing twice");
    assert_eq!(unique.len() as u64, total);
    process::terminate(second).await;
    js.delete_stream(&config.stream)
        .await
        .expect("delete the test's stream");
}

async fn a_change_that_cannot_be_rendered_does_not_stop_the_relay(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "victim").await;
    let patched = app
        .patch(
            &format!("/api/v1/resources/{user}"),
            serde_json::json!({"displayname": "V"}),
        )
        .await;
    assert!(patched.status.is_success(), "{}", patched.text);
    let deep =
        serde_json::json!({"displayname": {"old": null, "new": crate::hardening::nested(200)}});
    crate::hardening::overwrite_newest_change_attrs(&app, &deep.to_string()).await;
    app.user("home", "after").await;
    let config = config();
    let relay = Relay::new(app.store.clone(), config.clone(), "relay-a".to_owned()).start();
    let js = context().await;
    until_count(&js, &config.stream, 3).await;
    let ids: Vec<String> = messages(&js, &config.stream)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(
        ids,
        feed_ids(&app).await,
        "every change, the unrenderable one too"
    );
    relay.abort();
    js.delete_stream(&config.stream)
        .await
        .expect("delete the test's stream");
}
