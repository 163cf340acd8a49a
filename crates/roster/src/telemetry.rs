//! Prometheus metrics, served at `/metrics`. What roster counts as it works (requests,
//! operations, deliveries, sweeps, refusals) goes through the `metrics` facade into one
//! process-wide recorder; what it reads from the database (pending operations, the feed's head,
//! each follower's lag, the pools) is read at each scrape, so a deleted subscription leaves no
//! stale series behind and every node reports the cluster's state. docs/metrics.md lists them.

use crate::domain::operation::{Operation, OperationStatus};
use crate::store::{Gauges, Store, StoreError};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Bounds of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

/// Bounds of the histogram of full-update apply times, in seconds.
const APPLY_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 120.0, 600.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once); `None` when a program embedding roster installed
/// another first, and then `/metrics` shows only the scrape-time gauges.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("roster_operation_apply_seconds".to_owned()),
                    &APPLY_BUCKETS,
                )
                .and_then(|b| b.set_buckets(&LATENCY_BUCKETS))
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe_events();
            Some(handle)
        })
        .as_ref()
}

fn describe_events() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        "roster_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "roster_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to its headers), by method and route template"
    );
    describe_counter!(
        "roster_operations_total",
        "Operations ended on this node, by type and outcome (complete, failed, pending)"
    );
    describe_histogram!(
        "roster_operation_apply_seconds",
        Unit::Seconds,
        "Time a worker took to apply a full-update"
    );
    describe_counter!(
        "roster_operation_rows_total",
        "Rows operations changed, by type and change (added, reactivated, removed, updated)"
    );
    describe_counter!(
        "roster_webhook_deliveries_total",
        "Changes delivered to webhook receivers and acknowledged"
    );
    describe_counter!(
        "roster_webhook_delivery_failures_total",
        "Webhook deliveries that failed, by subscription"
    );
    describe_counter!(
        "roster_relay_published_total",
        "Changes the NATS relay published and JetStream acknowledged"
    );
    describe_counter!(
        "roster_relay_failures_total",
        "Times the NATS relay stopped on an error (it starts again after a pause)"
    );
    describe_counter!("roster_expiry_sweeps_total", "Expiry sweeps run");
    describe_counter!(
        "roster_expired_accounts_total",
        "Accounts the expiry sweeps deactivated"
    );
    describe_counter!(
        "roster_scim_refused_total",
        "SCIM requests refused with 429, by reason (rate, concurrent_reads)"
    );
}

/// An answered HTTP request. `route` is the matched route template (never the raw path).
pub fn request(method: &str, route: &str, status: u16, took: Duration) {
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!("roster_http_requests_total", "method" => method.clone(), "route" => route.clone(),
        "status" => status.to_string())
    .increment(1);
    histogram!("roster_http_request_duration_seconds", "method" => method, "route" => route)
        .record(took.as_secs_f64());
}

/// An operation that ended (or was held for a decision); a running one is counted when it ends.
pub fn operation_ended(op: &Operation) {
    if op.status == OperationStatus::Running {
        return;
    }
    let ty = op.ty.name();
    counter!("roster_operations_total", "type" => ty, "outcome" => op.status.name()).increment(1);
    let rows = [
        ("added", op.counts.added),
        ("reactivated", op.counts.reactivated),
        ("removed", op.counts.removed),
        ("updated", op.counts.updated),
    ];
    for (change, n) in rows {
        if let Ok(n @ 1..) = u64::try_from(n) {
            counter!("roster_operation_rows_total", "type" => ty, "change" => change).increment(n);
        }
    }
}

/// A full-update a worker applied in `took`.
pub fn applied(op: &Operation, took: Duration) {
    histogram!("roster_operation_apply_seconds").record(took.as_secs_f64());
    operation_ended(op);
}

/// `n` changes delivered to a webhook receiver.
pub fn delivered(n: u64) {
    counter!("roster_webhook_deliveries_total").increment(n);
}

/// A webhook delivery that failed.
pub fn delivery_failed(subscription: uuid::Uuid) {
    counter!("roster_webhook_delivery_failures_total", "subscription" => subscription.to_string())
        .increment(1);
}

/// `n` changes the NATS relay published.
pub fn relayed(n: u64) {
    counter!("roster_relay_published_total").increment(n);
}

/// The NATS relay stopped on an error.
pub fn relay_failed() {
    counter!("roster_relay_failures_total").increment(1);
}

/// An expiry sweep that deactivated `accounts`.
pub fn expiry_swept(accounts: i64) {
    counter!("roster_expiry_sweeps_total").increment(1);
    counter!("roster_expired_accounts_total").increment(u64::try_from(accounts).unwrap_or(0));
}

/// A SCIM request refused with 429: `rate` (the token's rate) or `concurrent_reads`.
pub fn scim_refused(reason: &'static str) {
    counter!("roster_scim_refused_total", "reason" => reason).increment(1);
}

/// The exposition: the counted metrics, then the gauges read from `store` now.
pub async fn exposition(store: &Store) -> Result<String, StoreError> {
    let gauges = store.gauges().await?;
    let mut text = install()
        .map(|handle| {
            handle.run_upkeep();
            handle.render()
        })
        .unwrap_or_default();
    text.push_str(&render_gauges(&gauges));
    Ok(text)
}

/// The gauges in the exposition format, through a recorder of their own made for this scrape.
fn render_gauges(gauges: &Gauges) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        describe_gauges();
        gauge!("roster_operations_pending").set(gauges.pending_operations as f64);
        gauge!("roster_feed_head_position").set(gauges.head as f64);
        for s in &gauges.subscriptions {
            let id = s.id.to_string();
            gauge!("roster_subscription_lag_seconds", "subscription" => id.clone())
                .set(s.lag_seconds);
            gauge!("roster_subscription_failures", "subscription" => id.clone())
                .set(s.failures as f64);
            gauge!("roster_subscription_paused", "subscription" => id)
                .set(f64::from(u8::from(s.paused)));
        }
        for r in &gauges.relays {
            gauge!("roster_relay_lag_seconds", "relay" => r.name.clone()).set(r.lag_seconds);
        }
        for p in &gauges.pools {
            let in_use = p.open.saturating_sub(p.idle);
            gauge!("roster_db_pool_connections", "pool" => p.name, "state" => "in_use")
                .set(f64::from(in_use));
            gauge!("roster_db_pool_connections", "pool" => p.name, "state" => "idle")
                .set(f64::from(p.idle));
            gauge!("roster_db_pool_max_connections", "pool" => p.name).set(f64::from(p.max));
        }
        gauge!("roster_db_pool_waiting").set(gauges.waiting as f64);
    });
    recorder.handle().render()
}

fn describe_gauges() {
    use metrics::{describe_gauge, Unit};
    describe_gauge!(
        "roster_operations_pending",
        "Operations held for an admin's decision (past the deletion threshold)"
    );
    describe_gauge!(
        "roster_feed_head_position",
        "The change feed's head: the last commit position (PostgreSQL) or change number (SQLite)"
    );
    describe_gauge!(
        "roster_subscription_lag_seconds",
        Unit::Seconds,
        "Age of the oldest change a webhook subscription has not been sent; 0 when it has all"
    );
    describe_gauge!(
        "roster_subscription_failures",
        "Failed deliveries in a row of a webhook subscription"
    );
    describe_gauge!(
        "roster_subscription_paused",
        "1 when a webhook subscription is paused after failing too often"
    );
    describe_gauge!(
        "roster_relay_lag_seconds",
        Unit::Seconds,
        "Age of the oldest change the NATS relay has not published; 0 when it has all"
    );
    describe_gauge!(
        "roster_db_pool_connections",
        "Database connections of this node, by pool and state (in_use, idle)"
    );
    describe_gauge!(
        "roster_db_pool_max_connections",
        "The most connections a pool of this node opens"
    );
    describe_gauge!(
        "roster_db_pool_waiting",
        "Callers on this node waiting for a database connection"
    );
}
