//! `/metrics`: Prometheus text that a real parser reads, counters that move under load, gauges
//! read from the database, and the token it needs.
//!
//! Counters are process-wide and other tests run beside these, so a counter is checked to have
//! grown by at least what the test did; the gauges come from the test's own database and are
//! checked exactly.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::{Method, StatusCode};
use prometheus_parse::{Scrape, Value as Sample};
use roster::domain::token::Scope;
use serde_json::json;
use std::time::Duration;

on_both_backends!(
    metrics_are_prometheus_text_whose_counters_move_under_load,
    metrics_gauges_show_pending_work_the_feed_followers_and_the_pool,
    metrics_need_a_token_whose_reads_span_every_source,
);

/// The parsed exposition, read with the admin token.
async fn scrape(app: &TestApp) -> Scrape {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        reply.content_type
    );
    Scrape::parse(reply.text.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition")
}

/// The value now of the sample `name` whose labels include `labels`.
pub(crate) async fn current(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(app).await, name, labels)
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none: a counter
/// not yet incremented is not shown).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            Sample::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Sample::Summary(_) => 0.0,
        })
        .sum()
}

async fn metrics_are_prometheus_text_whose_counters_move_under_load(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = [
        ("method", "POST"),
        ("route", "/api/v1/resources"),
        ("status", "201"),
    ];
    let timed = [("method", "POST"), ("route", "/api/v1/resources")];
    let edits = [("type", "partial-update"), ("outcome", "complete")];
    let added = [("type", "partial-update"), ("change", "added")];
    let before = scrape(&app).await;

    let group = app.group("home", "g").await;
    let mut users = Vec::new();
    for i in 0..20 {
        users.push(app.user("home", &format!("u{i}")).await);
    }
    app.add_members(&group, &users).await;
    app.get("/api/v1/no-such-route").await;
    let after = scrape(&app).await;

    let grew = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert!(grew("roster_http_requests_total", &created) >= 21.0);
    assert!(grew("roster_http_request_duration_seconds_count", &timed) >= 21.0);
    assert!(grew("roster_operations_total", &edits) >= 1.0);
    assert!(grew("roster_operation_rows_total", &added) >= 20.0);
    // A path no route matches is counted under one label, never under its own.
    assert!(grew("roster_http_requests_total", &[("route", "unmatched")]) >= 1.0);
    assert!(!after
        .samples
        .iter()
        .any(|s| s.labels.get("route") == Some("/api/v1/no-such-route")));
    // The expiry sweeper runs every 100 ms in tests.
    let sweeps = value(&before, "roster_expiry_sweeps_total", &[]);
    for _ in 0..100 {
        if value(&scrape(&app).await, "roster_expiry_sweeps_total", &[]) > sweeps {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no expiry sweep was counted");
}

async fn metrics_gauges_show_pending_work_the_feed_followers_and_the_pool(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.group("home", "g").await;
    let user = app.user("home", "u").await;
    app.put(&format!("/api/v1/groups/{group}/members/{user}"), None)
        .await;
    let first = scrape(&app).await;
    assert_eq!(value(&first, "roster_operations_pending", &[]), 0.0);
    let head = value(&first, "roster_feed_head_position", &[]);
    assert!(head > 0.0, "the feed holds the writes: {head}");
    assert!(value(&first, "roster_db_pool_max_connections", &[]) >= 1.0);

    // A full-update that would empty the group is held for a decision.
    let held = app
        .post(
            "/api/v1/operations?wait=30",
            json!({"type": "full-update", "group_id": group, "members": [], "complete": true}),
        )
        .await;
    assert_eq!(held.json["status"], "pending", "{}", held.text);
    app.user("home", "later").await;
    // A subscription whose receiver never answers falls behind and fails.
    let subscription = app
        .post(
            "/api/v1/subscriptions",
            json!({"url": "http://127.0.0.1:9/hook", "from": "start"}),
        )
        .await;
    assert_eq!(
        subscription.status,
        StatusCode::CREATED,
        "{}",
        subscription.text
    );
    let id = subscription.json["id"].as_str().expect("id").to_owned();
    let of_it = [("subscription", id.as_str())];
    for _ in 0..600 {
        let now = scrape(&app).await;
        if value(&now, "roster_subscription_failures", &of_it) >= 1.0 {
            assert_eq!(value(&now, "roster_operations_pending", &[]), 1.0);
            assert!(value(&now, "roster_feed_head_position", &[]) > head);
            assert!(value(&now, "roster_subscription_lag_seconds", &of_it) >= 0.0);
            assert!(value(&now, "roster_webhook_delivery_failures_total", &of_it) >= 1.0);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the failing subscription's failures never showed");
}

async fn metrics_need_a_token_whose_reads_span_every_source(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let anonymous = app.call_as(None, Method::GET, "/metrics", None).await;
    anonymous.assert_problem(StatusCode::UNAUTHORIZED, "");
    let reader = app.token("scraper", &[Scope::Read], None).await;
    let read = app
        .call_as(Some(&reader), Method::GET, "/metrics", None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(read.text.contains("roster_feed_head_position"));
    let bound = app
        .post(
            "/api/v1/tokens",
            json!({"name": "bound-reader", "scopes": ["read"], "source_system": "home",
                   "read_scope": "bound"}),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED, "{}", bound.text);
    let secret = bound.json["secret"].as_str().expect("secret");
    let refused = app
        .call_as(Some(secret), Method::GET, "/metrics", None)
        .await;
    refused.assert_problem(StatusCode::FORBIDDEN, "spans source systems");
    let writer = app.token("writer", &[Scope::Write], None).await;
    let wrong_scope = app
        .call_as(Some(&writer), Method::GET, "/metrics", None)
        .await;
    wrong_scope.assert_problem(StatusCode::FORBIDDEN, "read");
}
