//! Webhook subscriptions against loopback receivers: a receiver that fails the first attempts
//! gets every event in order once it recovers, signatures verify, a receiver that keeps failing
//! pauses its subscription with the reason visible and resume restarts it, deliveries carry up
//! to the subscription's batch size, a receiver that fails at random (sometimes after it took the
//! delivery) gets every change at least once and in order, and `scim` deliveries are RFC 8935
//! signed security events, one per request.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

on_both_backends!(
    a_receiver_that_fails_at_first_gets_every_event_in_order,
    deliveries_carry_up_to_the_batch_size_in_order,
    a_receiver_failing_at_random_gets_every_change_at_least_once_in_order,
    a_failing_receiver_pauses_its_subscription_until_resumed,
    scim_deliveries_are_signed_security_events,
    subscriptions_refuse_bad_input,
    webhook_error_bodies_are_read_only_up_to_a_kibibyte,
    webhooks_to_non_public_addresses_are_refused_at_delivery,
    subscription_urls_with_credentials_are_refused,
);

/// A loopback receiver: answers 503 to its first `fail_first` requests (or to all while
/// `failing`, or at random once `random` holds a seed), then `accept`; keeps what it accepted.
/// `accepted` counts the changes it accepted (a JSON delivery carries several).
struct Receiver {
    url: String,
    fail_first: AtomicUsize,
    failing: AtomicBool,
    random: Mutex<Option<u64>>,
    accept: StatusCode,
    received: Mutex<Vec<(HeaderMap, String)>>,
    attempts: watch::Sender<usize>,
    accepted: watch::Sender<usize>,
}

/// What a receiver failing at random does with a request.
#[derive(PartialEq)]
enum Outcome {
    Accept,
    /// Refuses it (503) without keeping it.
    Refuse,
    /// Keeps it but answers 500, as a receiver does whose answer is lost: roster sends it again.
    KeepAndFail,
}

impl Receiver {
    async fn start(fail_first: usize, accept: StatusCode) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let receiver = Arc::new(Self {
            url,
            fail_first: AtomicUsize::new(fail_first),
            failing: AtomicBool::new(false),
            random: Mutex::new(None),
            accept,
            received: Mutex::new(Vec::new()),
            attempts: watch::channel(0).0,
            accepted: watch::channel(0).0,
        });
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    /// Waits (up to 30 s) until `watch` reaches `n`.
    async fn until(watch: &watch::Sender<usize>, n: usize) {
        let mut rx = watch.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| *c >= n)).await;
        assert!(reached.is_ok(), "only {} of {n}", *watch.borrow());
    }

    fn bodies(&self) -> Vec<(HeaderMap, String)> {
        self.received.lock().expect("lock").clone()
    }

    /// The changes of the JSON deliveries received, in the order received.
    fn changes(&self) -> Vec<Value> {
        self.bodies()
            .iter()
            .flat_map(|(_, body)| delivered(body))
            .collect()
    }

    /// The next outcome of a receiver failing at random: 1 in 10 requests refused, 1 in 20 kept
    /// and failed (a fixed-seed xorshift, so a run can be repeated).
    fn next_outcome(&self) -> Outcome {
        let mut random = self.random.lock().expect("lock");
        let Some(state) = random.as_mut() else {
            return Outcome::Accept;
        };
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        match *state % 20 {
            0 | 1 => Outcome::Refuse,
            2 => Outcome::KeepAndFail,
            _ => Outcome::Accept,
        }
    }
}

/// The changes of one JSON delivery (`{"changes": [...]}`).
fn delivered(body: &str) -> Vec<Value> {
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    body["changes"].as_array().expect("changes").clone()
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    r.attempts.send_modify(|n| *n += 1);
    let first = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let outcome = r.next_outcome();
    if first || r.failing.load(Ordering::SeqCst) || outcome == Outcome::Refuse {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let changes = if body.starts_with('{') {
        delivered(&body).len()
    } else {
        1
    };
    r.received.lock().expect("lock").push((headers, body));
    if outcome == Outcome::KeepAndFail {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.accepted.send_modify(|n| *n += changes);
    r.accept
}

/// Checks a delivery's `Roster-Signature` against `secret`, and that another secret fails.
fn assert_signed(secret: &str, headers: &HeaderMap, body: &str) {
    let header = headers["roster-signature"].to_str().expect("signature");
    let at: i64 = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .expect("a timestamp");
    assert_eq!(header, roster::webhooks::signature(secret, at, body));
    assert_ne!(
        header,
        roster::webhooks::signature("another secret", at, body)
    );
}

async fn subscribe(app: &TestApp, body: Value) -> (String, String, String) {
    let reply = app.post("/api/v1/subscriptions", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json["id"].as_str().expect("id").to_owned();
    let secret = reply.json["secret"].as_str().expect("secret").to_owned();
    let cursor = reply.json["cursor"].as_str().expect("cursor").to_owned();
    (id, secret, cursor)
}

/// A group, four accounts added to it and one removed: ten changes.
async fn ten_changes(app: &TestApp) {
    let group = app.group("hr", "staff").await;
    let mut users = Vec::new();
    for i in 0..4 {
        let user = app.user("hr", &format!("u{i}")).await;
        app.put(&format!("/api/v1/groups/{group}/members/{user}"), None)
            .await;
        users.push(user);
    }
    app.delete(&format!("/api/v1/groups/{group}/members/{}", users[0]))
        .await;
}

/// The feed's changes after `cursor`, as a webhook of `format` gets them.
async fn feed(app: &TestApp, cursor: &str, format: &str) -> Vec<Value> {
    let reply = app
        .get(&format!(
            "/api/v1/changes?after={cursor}&limit=1000&format={format}"
        ))
        .await;
    reply.json["items"].as_array().expect("items").clone()
}

/// Polls a subscription (up to 30 s) until `done` holds.
async fn until_subscription(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let reply = app.get(&format!("/api/v1/subscriptions/{id}")).await;
        if done(&reply.json) {
            return reply.json;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("subscription {id} never reached the state asked for");
}

async fn a_receiver_that_fails_at_first_gets_every_event_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start(3, StatusCode::OK).await;
    let (id, secret, cursor) =
        subscribe(&app, json!({"url": receiver.url, "format": "full"})).await;
    ten_changes(&app).await;
    Receiver::until(&receiver.accepted, 10).await;
    let expected = feed(&app, &cursor, "full").await;
    assert_eq!(expected.len(), 10);
    let got = receiver.bodies();
    // Cursor and kind identify each change (`record` is the state at delivery time).
    let key = |v: &Value| (v["cursor"].clone(), v["kind"].clone(), v["changes"].clone());
    let changes: Vec<_> = receiver.changes().iter().map(key).collect();
    let want: Vec<_> = expected.iter().map(key).collect();
    assert_eq!(changes, want, "every change once, in order, in full form");
    for (headers, body) in &got {
        assert_signed(&secret, headers, body);
        assert!(headers.get("roster-event-id").is_none());
    }
    // The three refusals were tried again at once, within the round.
    assert_eq!(
        *receiver.attempts.borrow(),
        3 + got.len(),
        "three refusals, then the deliveries"
    );
    let state = until_subscription(&app, &id, |s| s["pending"] == 0).await;
    assert_eq!(state["delivered"], 10, "{state}");
    assert_eq!(state["failures"], 0);
    assert_eq!(state["status"], "active");
    assert_eq!(state["last_error"], Value::Null);
}

/// The feed's head cursor now.
async fn head(app: &TestApp) -> String {
    let reply = app.get("/api/v1/changes/head").await;
    reply.json["cursor"].as_str().expect("cursor").to_owned()
}

async fn deliveries_carry_up_to_the_batch_size_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start(0, StatusCode::NO_CONTENT).await;
    let from = head(&app).await;
    ten_changes(&app).await;
    let body = json!({"url": receiver.url, "from": from, "batch_size": 3});
    let (id, secret, _) = subscribe(&app, body).await;
    Receiver::until(&receiver.accepted, 10).await;
    let got = receiver.bodies();
    let sizes: Vec<usize> = got.iter().map(|(_, b)| delivered(b).len()).collect();
    assert_eq!(
        sizes,
        vec![3, 3, 3, 1],
        "ten waiting changes in batches of three"
    );
    for (headers, body) in &got {
        assert_signed(&secret, headers, body);
    }
    let cursors: Vec<Value> = receiver
        .changes()
        .iter()
        .map(|c| c["cursor"].clone())
        .collect();
    let want: Vec<Value> = feed(&app, &from, "notice")
        .await
        .iter()
        .map(|c| c["cursor"].clone())
        .collect();
    assert_eq!(cursors, want);
    let state = until_subscription(&app, &id, |s| s["delivered"] == 10).await;
    assert_eq!(state["batch_size"], 3);
    assert_eq!(
        app.scalar("SELECT delivered FROM subscription", &[]).await,
        10
    );
}

async fn a_receiver_failing_at_random_gets_every_change_at_least_once_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start(0, StatusCode::OK).await;
    *receiver.random.lock().expect("lock") = Some(0x9e37_79b9_7f4a_7c15);
    let from = head(&app).await;
    let body = json!({"url": receiver.url, "from": from, "batch_size": 4});
    let (_, secret, _) = subscribe(&app, body).await;
    let group = app.group("hr", "staff").await;
    let mut users = Vec::new();
    for i in 0..60 {
        users.push(app.user("hr", &format!("u{i}")).await);
    }
    app.add_members(&group, &users).await;
    // A group, 60 users and 60 memberships.
    Receiver::until(&receiver.accepted, 121).await;
    let want: Vec<Value> = feed(&app, &from, "notice")
        .await
        .iter()
        .map(|c| c["cursor"].clone())
        .collect();
    assert_eq!(want.len(), 121);
    let got = receiver.bodies();
    let mut seen: Vec<Value> = Vec::new();
    for (headers, body) in &got {
        assert_signed(&secret, headers, body);
        let cursors: Vec<Value> = delivered(body)
            .iter()
            .map(|c| c["cursor"].clone())
            .collect();
        // Each delivery is a run of the feed in order, starting at or before the first change
        // not yet received: a redelivery repeats, it never skips.
        let start = want
            .iter()
            .position(|c| *c == cursors[0])
            .expect("a change of the feed");
        assert_eq!(
            cursors,
            want[start..start + cursors.len()],
            "a run of the feed"
        );
        assert!(start <= seen.len(), "a delivery skipped changes");
        for cursor in cursors {
            if !seen.contains(&cursor) {
                seen.push(cursor);
            }
        }
    }
    assert_eq!(seen, want, "every change, in order");
    let refusals = *receiver.attempts.borrow() - got.len();
    let repeats = got.iter().map(|(_, b)| delivered(b).len()).sum::<usize>() - want.len();
    assert!(
        refusals > 0 && repeats > 0,
        "the receiver did fail: {refusals} {repeats}"
    );
}

async fn a_failing_receiver_pauses_its_subscription_until_resumed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start(0, StatusCode::NO_CONTENT).await;
    receiver.failing.store(true, Ordering::SeqCst);
    let (id, _, cursor) = subscribe(&app, json!({"url": receiver.url})).await;
    ten_changes(&app).await;
    // (`pending` counts what the feed can serve: PostgreSQL's fence may lag a moment.)
    let paused =
        until_subscription(&app, &id, |s| s["status"] == "paused" && s["pending"] == 10).await;
    assert_eq!(paused["failures"], 4, "{paused}");
    assert_eq!(paused["delivered"], 0);
    let error = paused["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("503"), "{error}");
    assert_eq!(
        *receiver.attempts.borrow(),
        20,
        "four rounds of an attempt and four quick retries, then none after the pause"
    );

    receiver.failing.store(false, Ordering::SeqCst);
    let resumed = app
        .post(&format!("/api/v1/subscriptions/{id}/resume"), json!({}))
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text);
    assert_eq!(resumed.json["status"], "active");
    Receiver::until(&receiver.accepted, 10).await;
    let got: Vec<String> = receiver
        .changes()
        .iter()
        .map(|c| c["cursor"].to_string())
        .collect();
    let want: Vec<String> = feed(&app, &cursor, "notice")
        .await
        .iter()
        .map(|i| i["cursor"].to_string())
        .collect();
    assert_eq!(got, want);
    let audit = app
        .get(&format!("/api/v1/audit?target=subscription/{id}"))
        .await;
    let actions: Vec<&str> = audit.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, vec!["subscription.resume", "subscription.create"]);
}

async fn scim_deliveries_are_signed_security_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = Receiver::start(0, StatusCode::ACCEPTED).await;
    let (_, secret, _) = subscribe(&app, json!({"url": receiver.url, "format": "scim"})).await;
    let group = app.group("hr", "staff").await;
    let user = app.user("hr", "u").await;
    app.put(&format!("/api/v1/groups/{group}/members/{user}"), None)
        .await;
    Receiver::until(&receiver.accepted, 3).await;
    let got = receiver.bodies();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.set_audience(&[receiver.url.as_str()]);
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let claims: Vec<Value> = got
        .iter()
        .map(|(headers, body)| {
            assert_eq!(headers["content-type"], "application/secevent+jwt");
            assert!(
                headers.get("roster-event-id").is_some(),
                "one event per request"
            );
            jsonwebtoken::decode::<Value>(body, &key, &validation)
                .expect("a JWT signed with the secret")
                .claims
        })
        .collect();
    let event = |i: usize, uri: &str| {
        claims[i]["events"][format!("urn:ietf:params:scim:event:prov:{uri}")].clone()
    };
    assert_eq!(event(0, "create:full")["data"]["id"], json!(group));
    assert_eq!(event(1, "create:full")["data"]["userName"], "u");
    assert_eq!(claims[1]["sub_id"]["uri"], format!("/Users/{user}"));
    let patch = event(2, "patch:full");
    assert_eq!(
        patch["data"]["Operations"][0]["value"][0]["value"],
        json!(user)
    );
    let forged = jsonwebtoken::DecodingKey::from_secret(b"not the secret");
    assert!(jsonwebtoken::decode::<Value>(&got[0].1, &forged, &validation).is_err());
}

async fn subscriptions_refuse_bad_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.fingerprint().await;
    for (body, needle) in [
        (json!({"url": "ftp://example.com/x"}), "http:// or https://"),
        (json!({"url": "not a url"}), "not a URL"),
        (
            json!({"url": "http://127.0.0.1:9/h", "kinds": ["membership.exploded"]}),
            "not a change kind",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "from": "garbage"}),
            "not a change-feed cursor",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "batch_size": 0}),
            "must be 1 to 1000",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "batch_size": 1001}),
            "must be 1 to 1000",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "format": "scim", "batch_size": 10}),
            "one security event per request",
        ),
    ] {
        let reply = app.post("/api/v1/subscriptions", body).await;
        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, needle);
    }
    let unknown = app
        .post(
            "/api/v1/subscriptions",
            json!({"url": "http://x", "colour": 1}),
        )
        .await;
    unknown.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "colour");
    assert_eq!(app.fingerprint().await, before);
    let missing = uuid::Uuid::now_v7();
    let reply = app.get(&format!("/api/v1/subscriptions/{missing}")).await;
    reply.assert_problem(StatusCode::NOT_FOUND, "no subscription");
    let reply = app
        .post(
            &format!("/api/v1/subscriptions/{missing}/resume"),
            json!({}),
        )
        .await;
    reply.assert_problem(StatusCode::NOT_FOUND, "no subscription");
    let (id, _, _) = subscribe(&app, json!({"url": "http://127.0.0.1:9/h"})).await;
    let active = app
        .post(&format!("/api/v1/subscriptions/{id}/resume"), json!({}))
        .await;
    assert_eq!(active.json["status"], "active", "{}", active.text);
    let moved = app
        .post(
            &format!("/api/v1/subscriptions/{id}/resume"),
            json!({"from": "start"}),
        )
        .await;
    moved.assert_problem(StatusCode::CONFLICT, "only while paused");
    let listed = app.get("/api/v1/subscriptions").await;
    assert_eq!(listed.json["items"][0]["id"], json!(id));
    assert!(
        listed.json["items"][0].get("secret").is_none(),
        "the secret is shown once only"
    );
    assert_eq!(
        app.delete(&format!("/api/v1/subscriptions/{id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM subscription", &[]).await,
        0
    );
}

/// The size of the error body the flooding receiver offers: far more than roster should read.
const FLOOD_BYTES: u64 = 64 * 1024 * 1024;

/// A raw receiver that answers every request `500` with a [`FLOOD_BYTES`] body, streamed, and
/// records for each connection how many body bytes it could send before roster closed it.
struct Flood {
    url: String,
    sent: watch::Sender<Vec<u64>>,
}

/// The start of the flooding body: control characters, a bidirectional override and markup,
/// then `x` to the end.
const FLOOD_HEAD: &[u8] = "boom\x1b[31m\r\n\t\u{202e}<b>".as_bytes();

impl Flood {
    async fn start() -> Arc<Self> {
        // A small send buffer (inherited by accepted connections), so that what the receiver
        // could write is close to what roster read.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_send_buffer_size(64 * 1024).expect("send buffer");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let listener = socket.listen(16).expect("listen");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let flood = Arc::new(Self {
            url,
            sent: watch::channel(Vec::new()).0,
        });
        let server = flood.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let sent = flood_one(stream).await;
                    server.sent.send_modify(|all| all.push(sent));
                });
            }
        });
        flood
    }
}

/// Reads one request, answers 500 with the flood, and returns the body bytes written before the
/// peer closed the connection (or all of them).
async fn flood_one(mut stream: TcpStream) -> u64 {
    if !read_request(&mut stream).await {
        return 0;
    }
    let head = format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n\
         content-length: {FLOOD_BYTES}\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let mut chunk = vec![b'x'; 64 * 1024];
    chunk[..FLOOD_HEAD.len()].copy_from_slice(FLOOD_HEAD);
    let mut sent = 0u64;
    while sent < FLOOD_BYTES {
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len() as u64;
        chunk[..FLOOD_HEAD.len()].fill(b'x');
    }
    sent
}

/// Reads an HTTP/1.1 request: its head and a `content-length` body. False if the peer left.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    true
}

async fn webhook_error_bodies_are_read_only_up_to_a_kibibyte(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let flood = Flood::start().await;
    let (id, _, _) = subscribe(&app, json!({"url": flood.url})).await;
    app.user("hr", "u").await;
    let paused = until_subscription(&app, &id, |s| s["status"] == "paused").await;
    assert_eq!(paused["failures"], 4, "{paused}");
    // Each attempt's connection is closed by roster; wait until the receiver saw every one end.
    let mut sent = flood.sent.subscribe();
    let ended =
        tokio::time::timeout(Duration::from_secs(30), sent.wait_for(|s| s.len() >= 4)).await;
    assert!(
        ended.is_ok(),
        "roster left a connection open: {:?}",
        *flood.sent.borrow()
    );
    // What the receiver could write bounds what roster read from above: roster's kibibyte plus
    // what the sockets' buffers held (some 200 KiB here), far below the body's 64 MiB.
    for bytes in flood.sent.borrow().iter() {
        assert!(
            *bytes <= 4 * 1024 * 1024,
            "roster took {bytes} of {FLOOD_BYTES} bytes of an error body"
        );
    }
    let error = paused["last_error"]
        .as_str()
        .expect("last_error")
        .to_owned();
    let stored = app
        .text("SELECT last_error FROM subscription", &[])
        .await
        .expect("a stored error");
    assert_eq!(stored, error);
    assert!(
        error.starts_with("the receiver answered 500 Internal Server Error: boom [31m <b>xxx"),
        "{error}"
    );
    assert!(error.ends_with('…'), "{error}");
    assert!(error.chars().count() <= 200, "a short excerpt: {error}");
    assert!(
        !error.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "no control characters: {error:?}"
    );
}

/// A listener that counts the connections made to it, and answers none.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, connections)
}

async fn webhooks_to_non_public_addresses_are_refused_at_delivery(backend: Backend) {
    let app = TestApp::spawn_with_webhooks(
        backend,
        roster::webhooks::WebhookConfig {
            allow_private_networks: false,
            ..crate::common::test_webhooks()
        },
    )
    .await;
    let (port, connections) = counting_listener().await;
    // An IP literal (checked before sending), an IPv4-mapped IPv6 literal, and a name that
    // resolves to loopback (checked by the resolver).
    let literal = subscribe(
        &app,
        json!({"url": format!("http://127.0.0.1:{port}/hook")}),
    )
    .await;
    let mapped = subscribe(
        &app,
        json!({"url": format!("http://[::ffff:127.0.0.1]:{port}/hook")}),
    )
    .await;
    let name = subscribe(
        &app,
        json!({"url": format!("http://localhost:{port}/hook")}),
    )
    .await;
    app.user("hr", "u").await;
    let setting = "unless --webhook-allow-private-networks is set";
    for ((id, _, _), reason) in [
        (
            &literal,
            "the receiver's address 127.0.0.1 is in a denied range (loopback)",
        ),
        (
            &mapped,
            "the receiver's address ::ffff:127.0.0.1 is in a denied range (loopback)",
        ),
        (
            &name,
            "the receiver's host localhost resolves only to addresses in denied ranges: ",
        ),
    ] {
        // Refusals are ordinary failures: retried with backoff, then paused.
        let paused = until_subscription(&app, id, |s| s["status"] == "paused").await;
        assert_eq!(paused["failures"], 4, "{paused}");
        assert_eq!(paused["delivered"], 0);
        let error = paused["last_error"].as_str().unwrap_or_default();
        assert!(error.starts_with(reason), "{error}");
        assert!(
            error.contains("(loopback)") && error.ends_with(setting),
            "{error}"
        );
    }
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM subscription WHERE status = 'paused' AND failures = 4",
            &[]
        )
        .await,
        3
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "roster never connected to a denied address"
    );
}

async fn subscription_urls_with_credentials_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.fingerprint().await;
    for url in [
        "https://hook-user:s3cr3t-pass@hooks.example/roster",
        "https://hook-user@hooks.example/roster",
        "https://:s3cr3t-pass@hooks.example/roster",
    ] {
        let reply = app
            .post("/api/v1/subscriptions", json!({ "url": url }))
            .await;
        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "user name or password");
        assert!(
            !reply.text.contains("s3cr3t") && !reply.text.contains("hook-user"),
            "the refusal repeats no credential: {}",
            reply.text
        );
    }
    assert_eq!(
        app.fingerprint().await,
        before,
        "no audit row, nothing else"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM subscription", &[]).await,
        0
    );
}
