//! S10, SCIM provisioning as Entra ID and Okta do it for a new tenant: `n` users of one source
//! created through SCIM, one `POST /Users` at a time and then in Bulks of 1000, on a fresh
//! server of each backend. What it shows is whether a create costs the same at the end of the
//! load as at its start: the first and the last tenth are reported side by side.

use crate::reads::{summarise, Load};
use crate::server::{Server, TOKEN};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// Creates per Bulk request, the most roster accepts in one.
pub const BULK: usize = 1000;
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// What S10 measured on one backend.
pub struct Measured {
    pub backend: &'static str,
    /// Users created one POST at a time (and, in another source, by Bulk).
    pub n: usize,
    /// Each POST of the first and of the last tenth, in ms.
    pub single_first: Load,
    pub single_last: Load,
    /// Each Bulk of the first and of the last tenth, in ms per Bulk.
    pub bulk_first: Load,
    pub bulk_last: Load,
    /// One more Bulk of [`BULK`] creates into the source that holds `n` users, in seconds.
    pub bulk_at_n: f64,
}

/// The backend a server of S10 runs on.
pub enum Backend<'a> {
    Postgres(&'a str),
    Sqlite(&'a Path),
}

/// Starts a fresh server on `backend` and creates `n` users of one source one POST at a time,
/// then `n` of another source in Bulks, then one more Bulk into the first.
pub async fn run(binary: &Path, backend: Backend<'_>, n: usize) -> Result<Measured> {
    let (name, server) = match backend {
        Backend::Postgres(url) => ("PostgreSQL", Server::start(binary, url).await?),
        Backend::Sqlite(dir) => ("SQLite", Server::start_embedded(binary, dir).await?),
    };
    let http = reqwest::Client::new();
    let client = Client {
        http: &http,
        base: &server.base,
    };
    let single = client.token("s10-single").await?;
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        client.create(&single, &user("single", i)).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (single_first, single_last) = tenths(&latencies);
    let bulk = client.token("s10-bulk").await?;
    let mut latencies = Vec::with_capacity(n.div_ceil(BULK));
    for start in (0..n).step_by(BULK) {
        let started = Instant::now();
        client
            .bulk(&bulk, "bulk", start..(start + BULK).min(n))
            .await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (bulk_first, bulk_last) = tenths(&latencies);
    let started = Instant::now();
    client.bulk(&single, "single", n..n + BULK).await?;
    let bulk_at_n = started.elapsed().as_secs_f64();
    server.stop().await?;
    Ok(Measured {
        backend: name,
        n,
        single_first,
        single_last,
        bulk_first,
        bulk_last,
        bulk_at_n,
    })
}

/// The first and the last tenth of `latencies` (in their order), each summarised.
fn tenths(latencies: &[f64]) -> (Load, Load) {
    let tenth = (latencies.len() / 10).max(1);
    let load = |part: &[f64]| {
        let total = std::time::Duration::from_secs_f64(part.iter().sum::<f64>() / 1000.0);
        summarise(part.to_vec(), total)
    };
    (
        load(&latencies[..tenth]),
        load(&latencies[latencies.len() - tenth..]),
    )
}

fn user(prefix: &str, i: usize) -> Value {
    json!({"schemas": [USER_SCHEMA], "userName": format!("{prefix}-{i}@example.com"),
           "displayName": format!("User {i}"), "active": true})
}

struct Client<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
}

impl Client<'_> {
    /// A SCIM token bound to `source`, made through the API with the admin token.
    async fn token(&self, source: &str) -> Result<(String, String)> {
        let body = json!({"name": source, "scopes": ["scim"], "source_system": source});
        let response = self
            .http
            .post(format!("{}/api/v1/tokens", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        if !status.is_success() {
            bail!("creating the SCIM token answered {status}: {answer}");
        }
        let secret = answer["secret"].as_str().context("secret")?.to_owned();
        Ok((source.to_owned(), secret))
    }

    async fn create(&self, (source, token): &(String, String), body: &Value) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/scim/v2/{source}/Users", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if status.as_u16() != 201 {
            bail!("POST /Users answered {status}: {text}");
        }
        Ok(())
    }

    /// One Bulk of the users numbered `range`; every operation must answer 201.
    async fn bulk(
        &self,
        (source, token): &(String, String),
        prefix: &str,
        range: std::ops::Range<usize>,
    ) -> Result<()> {
        let operations: Vec<Value> = range
            .map(|i| {
                json!({"method": "POST", "path": "/Users", "bulkId": i.to_string(),
                             "data": user(prefix, i)})
            })
            .collect();
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                          "Operations": operations});
        let response = self
            .http
            .post(format!("{}/scim/v2/{source}/Bulk", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        let created = answer["Operations"]
            .as_array()
            .map_or(0, |ops| ops.iter().filter(|o| o["status"] == "201").count());
        if status.as_u16() != 200 || created != operations.len() {
            let failed = answer["Operations"]
                .as_array()
                .and_then(|ops| ops.iter().find(|o| o["status"] != "201"));
            bail!(
                "a Bulk of {} created {created} ({status}); the first that failed: {}",
                operations.len(),
                failed.unwrap_or(&answer)
            );
        }
        Ok(())
    }
}

/// The table of S10, one row per backend and way of creating.
pub fn report(measured: &[Measured]) -> String {
    let mut out = String::from(
        "| S10 SCIM provisioning, one client | backend | first 10%: p50 / p99 ms | last 10%: \
         p50 / p99 ms | last ÷ first (p50) | target | met |\n|---|---|---|---|---|---|---|\n",
    );
    for m in measured {
        let ratio = |first: &Load, last: &Load| last.p50_ms / first.p50_ms;
        let single = ratio(&m.single_first, &m.single_last);
        let bulk = ratio(&m.bulk_first, &m.bulk_last);
        let pair = |l: &Load| format!("{:.2} / {:.2}", l.p50_ms, l.p99_ms);
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "| {n} `POST /Users`, one at a time | {b} | {} | {} | {single:.2} | ≤ 1.2 | {} |\n\
                 | {n} users in `POST /Bulk`s of {BULK} (ms per Bulk) | {b} | {} | {} | {bulk:.2} \
                 | ≤ 1.2 | {} |\n\
                 | one `POST /Bulk` of {BULK} into a source of {n} users | {b} | | {:.2} s | | \
                 ≤ 0.6 s | {} |\n",
                pair(&m.single_first),
                pair(&m.single_last),
                yes(single <= 1.2),
                pair(&m.bulk_first),
                pair(&m.bulk_last),
                yes(bulk <= 1.2),
                m.bulk_at_n,
                yes(m.bulk_at_n <= 0.6),
                n = m.n,
                b = m.backend,
            ),
        );
    }
    out
}

fn yes(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "no"
    }
}
