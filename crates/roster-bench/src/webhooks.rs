//! S11, webhook deliveries: `n` changes (an account load) delivered to a loopback receiver that
//! answers every request 204, then again to one that fails 10% of requests at random, each
//! through a subscription with the default batch size that starts before the load. What it
//! shows is the rate a downstream application catches up at, and what a flaky receiver costs.

use crate::server::{Server, TOKEN};
use crate::Api;
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What S11 measured.
pub struct Measured {
    pub n: usize,
    /// Changes per second to the healthy receiver.
    pub healthy: f64,
    /// Changes per second to the receiver failing 10% of requests, and its requests: all, failed.
    pub failing: f64,
    pub requests: usize,
    pub refused: usize,
}

/// A loopback receiver: counts the changes of the deliveries it accepts, and refuses one request
/// in ten at random when `failing`.
struct Receiver {
    failing: bool,
    random: AtomicU64,
    requests: AtomicUsize,
    refused: AtomicUsize,
    accepted: watch::Sender<usize>,
}

async fn hook(State(r): State<Arc<Receiver>>, body: axum::body::Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::Relaxed);
    if r.failing && r.next_random() % 10 == 0 {
        r.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(delivery) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let changes = delivery["changes"].as_array().map_or(0, Vec::len);
    r.accepted.send_modify(|n| *n += changes);
    StatusCode::NO_CONTENT
}

impl Receiver {
    /// A xorshift step: a fixed seed, so that runs fail the same requests.
    fn next_random(&self) -> u64 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        x
    }

    /// Listens on a free loopback port; returns the receiver and its URL.
    async fn start(failing: bool) -> Result<(Arc<Self>, String)> {
        let receiver = Arc::new(Self {
            failing,
            random: AtomicU64::new(0x2545_f491_4f6c_dd1d),
            requests: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            accepted: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((receiver, url))
    }
}

/// Loads `n` accounts on a fresh server over `database_url`, then delivers their changes to a
/// healthy receiver and to a failing one.
pub async fn run(binary: &Path, database_url: &str, n: usize) -> Result<Measured> {
    let server = Server::start_allowing_private_webhooks(binary, database_url).await?;
    let http = reqwest::Client::new();
    let api = Api {
        http: &http,
        base: &server.base,
    };
    let from = api.call(http.get(api.url("/api/v1/changes/head"))).await?["cursor"]
        .as_str()
        .context("head cursor")?
        .to_owned();
    api.load(n).await?;
    let (healthy, _, _) = api.deliver(&from, n, false).await?;
    let (failing, requests, refused) = api.deliver(&from, n, true).await?;
    server.stop().await?;
    Ok(Measured {
        n,
        healthy,
        failing,
        requests,
        refused,
    })
}

impl Api<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `n` accounts in one partial-update of resources per 1000: `n` changes.
    async fn load(&self, n: usize) -> Result<()> {
        for start in (0..n).step_by(1000) {
            let resources: Vec<Value> = (start..(start + 1000).min(n))
                .map(|i| json!({"type": "user", "identifier": format!("hook{i}@contoso.example")}))
                .collect();
            let body = json!({"type": "partial-update", "target": "resources",
                              "source_system": "hooks", "resources": resources});
            self.call(self.http.post(self.url("/api/v1/operations")).json(&body))
                .await?;
        }
        Ok(())
    }

    /// Subscribes a fresh receiver from `from` and waits until it accepted `n` changes; the
    /// changes per second, the requests it got and those it refused. The subscription is
    /// deleted after.
    async fn deliver(&self, from: &str, n: usize, failing: bool) -> Result<(f64, usize, usize)> {
        let (receiver, url) = Receiver::start(failing).await?;
        let mut accepted = receiver.accepted.subscribe();
        let started = Instant::now();
        let subscription = self
            .call(
                self.http
                    .post(self.url("/api/v1/subscriptions"))
                    .json(&json!({"url": url, "from": from})),
            )
            .await?;
        let id = subscription["id"].as_str().context("subscription id")?;
        let reached =
            tokio::time::timeout(Duration::from_secs(600), accepted.wait_for(|got| *got >= n))
                .await;
        let elapsed = started.elapsed();
        if reached.is_err() {
            bail!(
                "the receiver got {} of {n} changes in 10 minutes",
                *receiver.accepted.borrow()
            );
        }
        let deleted = self
            .http
            .delete(self.url(&format!("/api/v1/subscriptions/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        if !deleted.status().is_success() {
            bail!("deleting the subscription answered {}", deleted.status());
        }
        Ok((
            n as f64 / elapsed.as_secs_f64(),
            receiver.requests.load(Ordering::Relaxed),
            receiver.refused.load(Ordering::Relaxed),
        ))
    }
}

/// The table of S11.
pub fn report(m: &Measured) -> String {
    let share = m.failing / m.healthy;
    format!(
        "| S11 webhooks: {n} changes to a loopback receiver (batches of 100) | changes/s | target \
         | met |\n|---|---|---|---|\n\
         | healthy receiver (always 204) | {:.0} | ≥ 10,000 | {} |\n\
         | receiver failing 10% of requests at random ({} of {} refused) | {:.0} ({:.0}% of \
         healthy) | ≥ 50% of healthy | {} |\n",
        m.healthy,
        if m.healthy >= 10_000.0 { "yes" } else { "no" },
        m.refused,
        m.requests,
        m.failing,
        share * 100.0,
        if share >= 0.5 { "yes" } else { "no" },
        n = m.n,
    )
}
