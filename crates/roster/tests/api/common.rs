//! The test harness: the real router on a fresh database of either backend, driven over HTTP
//! with `oneshot`, plus direct SQL access so tests can check the rows.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use roster::app::OperationDefaults;
use roster::domain::token::{Actor, NewToken, ReadScope, Scope, Secret};
use roster::ops::{Engine, EngineConfig};
use roster::server::{router, Limits, Services};
use roster::store::{self, Location, Store};
use roster::webhooks::{Deliverer, WebhookConfig};
use serde_json::{json, Value};
use sqlx::{PgPool, SqlitePool};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use uuid::Uuid;

pub use crate::scratch::{fresh_postgres_database, Backend, Scratch};

/// Direct access to the test's database, for checking rows.
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub struct TestApp {
    pub router: Router,
    pub store: Arc<Store>,
    pub db: Db,
    /// The secret of an admin token, sent with every request unless a test says otherwise.
    pub admin: String,
    _scratch: Scratch,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Limits::default()).await
    }

    pub async fn spawn_with(backend: Backend, limits: Limits) -> Self {
        Self::spawn_configured(backend, limits, test_webhooks()).await
    }

    /// The app with these webhook settings (e.g. the deny-list of private addresses on).
    pub async fn spawn_with_webhooks(backend: Backend, hooks: WebhookConfig) -> Self {
        Self::spawn_configured(backend, Limits::default(), hooks).await
    }

    async fn spawn_configured(backend: Backend, limits: Limits, hooks: WebhookConfig) -> Self {
        let scratch = Scratch::new(backend).await;
        let location = scratch.location.clone();
        let store = store::open(&location).await.expect("open store");
        let db = match &location {
            Location::Sqlite { path } => Db::Sqlite(
                SqlitePool::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .expect("open sqlite for checks"),
            ),
            Location::Postgres { url, .. } => Db::Postgres(
                PgPool::connect(url)
                    .await
                    .expect("open postgres for checks"),
            ),
        };
        let admin = Secret::generate().expect("randomness");
        store
            .bootstrap_token("test-admin", &admin.hash())
            .await
            .expect("admin token");
        let engine = Engine::new(
            store.clone(),
            EngineConfig {
                poll: Duration::from_millis(50),
                expiry_sweep: Duration::from_millis(100),
                ..EngineConfig::default()
            },
        );
        engine.start();
        Deliverer::new(store.clone(), hooks, "test-deliverer".to_owned())
            .expect("webhook client")
            .start();
        let services = Services {
            store: store.clone(),
            engine,
            limits,
            operations: OperationDefaults::default(),
            tls: false,
        };
        Self {
            router: router(services),
            store,
            db,
            admin: admin.expose().to_owned(),
            _scratch: scratch,
        }
    }

    /// Creates a token with these scopes (and optional binding) and returns its secret.
    pub async fn token(&self, name: &str, scopes: &[Scope], source: Option<&str>) -> String {
        let secret = Secret::generate().expect("randomness");
        let new = NewToken {
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            source_system: source.map(str::to_owned),
            read_scope: ReadScope::All,
            expires_at: None,
        };
        self.store
            .create_token(&Actor::system("test"), &new, &secret.hash())
            .await
            .expect("create token");
        secret.expose().to_owned()
    }

    /// Sends a request as the holder of `token` (none: no Authorization header).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(json) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json.to_string())),
            None => request.body(Body::empty()),
        };
        self.send_raw(request.expect("request")).await
    }

    /// Opens `path` (a GET) as the holder of `token` and returns the response with its body
    /// unread, for a stream to be read as it comes.
    pub async fn open(&self, token: &str, path: &str) -> axum::response::Response {
        self.router
            .clone()
            .oneshot(get_request(token, path))
            .await
            .expect("router is infallible")
    }

    /// Sends a request with an optional JSON body, as the admin.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let admin = self.admin.clone();
        self.call_as(Some(&admin), method, path, body).await
    }

    /// Sends a prepared request; adds the admin token when it carries no Authorization header.
    pub async fn send(&self, mut request: Request<Body>) -> Reply {
        if !request.headers().contains_key(header::AUTHORIZATION) {
            let value = format!("Bearer {}", self.admin).parse().expect("header");
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        self.send_raw(request).await
    }

    /// Sends a prepared request exactly as it is.
    pub async fn send_raw(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let www_authenticate = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let header_text = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header_text(header::LOCATION);
        let retry_after = header_text(header::RETRY_AFTER);
        // An event stream does not end: its body is read by the tests that follow it.
        let bytes = if content_type.starts_with("text/event-stream") {
            Default::default()
        } else {
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
        };
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            www_authenticate,
            content_type,
            location,
            retry_after,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            json,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Option<Value>) -> Reply {
        self.call(Method::PUT, path, body).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a resource and returns its id, failing the test if roster refuses.
    pub async fn create(&self, body: Value) -> String {
        let reply = self.post("/api/v1/resources", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "create: {}", reply.text);
        reply.json["id"].as_str().expect("id").to_owned()
    }

    pub async fn user(&self, source: &str, identifier: &str) -> String {
        self.create(serde_json::json!({
            "type": "user", "subtype": "native", "source_system": source, "identifier": identifier
        }))
        .await
    }

    /// Sends an NDJSON chunk of a full-update.
    pub async fn chunk(&self, op: i64, n: u32, lines: &str) -> Reply {
        let request = Request::builder()
            .method(Method::PUT)
            .uri(format!("/api/v1/operations/{op}/chunks/{n}"))
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Body::from(lines.to_owned()))
            .expect("request");
        self.send(request).await
    }

    /// Creates a full-update of `group` with `members` (ids) as its snapshot, completes it and
    /// waits for the outcome.
    pub async fn full_update(&self, group: &str, members: &[&str]) -> Value {
        let op = self.start_full_update(group).await;
        let lines: String = members
            .iter()
            .map(|m| format!("{{\"member_id\": \"{m}\"}}\n"))
            .collect();
        let reply = self.chunk(op, 0, &lines).await;
        assert_eq!(reply.status, StatusCode::OK, "chunk: {}", reply.text);
        self.complete(op).await
    }

    /// Creates an uploading full-update of `group` and returns its id.
    /// Adds `members` to `group` in one partial-update, which must succeed.
    pub async fn add_members(&self, group: &str, members: &[String]) -> Reply {
        let changes: Vec<Value> = members
            .iter()
            .map(|m| json!({"action": "add", "group_id": group, "member_id": m}))
            .collect();
        let op = self
            .post(
                "/api/v1/operations",
                json!({"type": "partial-update", "changes": changes}),
            )
            .await;
        assert_eq!(op.status, StatusCode::CREATED, "{}", op.text);
        op
    }

    pub async fn start_full_update(&self, group: &str) -> i64 {
        let reply = self
            .post(
                "/api/v1/operations",
                serde_json::json!({"type": "full-update", "group_id": group}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "create: {}", reply.text);
        reply.json["id"].as_i64().expect("operation id")
    }

    /// Completes an operation and waits until it is applied, held or failed.
    pub async fn complete(&self, op: i64) -> Value {
        let reply = self
            .call(
                Method::POST,
                &format!("/api/v1/operations/{op}/complete?wait=60"),
                None,
            )
            .await;
        assert!(reply.status.is_success(), "complete: {}", reply.text);
        self.finished(op, reply.json).await
    }

    /// Waits (the server's `wait`, a few times) until an operation is no longer running.
    pub async fn finished(&self, op: i64, mut current: Value) -> Value {
        for _ in 0..10 {
            if current["status"] != "running" {
                return current;
            }
            current = self
                .get(&format!("/api/v1/operations/{op}?wait=60"))
                .await
                .json;
        }
        panic!("operation {op} still runs after ten waits: {current}");
    }

    /// The ids of the active members of a group, sorted.
    pub async fn members(&self, group: &str) -> Vec<String> {
        let reply = self
            .get(&format!("/api/v1/groups/{group}/members?limit=1000"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let mut ids: Vec<String> = reply.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["member_id"].as_str().expect("member id").to_owned())
            .collect();
        ids.sort();
        ids
    }

    pub async fn group(&self, source: &str, identifier: &str) -> String {
        self.create(serde_json::json!({
            "type": "group", "source_system": source, "identifier": identifier
        }))
        .await
    }

    /// Runs a query returning one integer (a count, a flag) with uuid parameters, on either backend.
    pub async fn scalar(&self, sql: &str, ids: &[&str]) -> i64 {
        let ids: Vec<Uuid> = ids.iter().map(|s| s.parse().expect("uuid")).collect();
        match &self.db {
            Db::Sqlite(pool) => {
                let mut q = sqlx::query_scalar::<_, i64>(sql);
                for id in &ids {
                    q = q.bind(id);
                }
                q.fetch_one(pool).await.expect("scalar query")
            }
            Db::Postgres(pool) => {
                let mut q = sqlx::query_scalar::<_, i64>(sql);
                for id in &ids {
                    q = q.bind(id);
                }
                q.fetch_one(pool).await.expect("scalar query")
            }
        }
    }

    /// Runs a query returning one text value with uuid parameters, on either backend.
    pub async fn text(&self, sql: &str, ids: &[&str]) -> Option<String> {
        let ids: Vec<Uuid> = ids.iter().map(|s| s.parse().expect("uuid")).collect();
        match &self.db {
            Db::Sqlite(pool) => {
                let mut q = sqlx::query_scalar::<_, Option<String>>(sql);
                for id in &ids {
                    q = q.bind(id);
                }
                q.fetch_one(pool).await.expect("text query")
            }
            Db::Postgres(pool) => {
                let mut q = sqlx::query_scalar::<_, Option<String>>(sql);
                for id in &ids {
                    q = q.bind(id);
                }
                q.fetch_one(pool).await.expect("text query")
            }
        }
    }

    /// A snapshot of every table's rows as text, to prove that a refused request changed nothing.
    pub async fn fingerprint(&self) -> String {
        let mut out = String::new();
        for table in ["resource", "group_member", "change", "operation", "audit"] {
            let n = self
                .scalar(&format!("SELECT count(*) FROM {table}"), &[])
                .await;
            let modified = self
                .text(
                    &format!(
                        "SELECT CAST(max({}) AS TEXT) FROM {table}",
                        match table {
                            "resource" => "modified",
                            "group_member" => "coalesce(removed_timestamp, created_timestamp)",
                            "audit" | "change" => "at",
                            _ => "modified",
                        }
                    ),
                    &[],
                )
                .await;
            out.push_str(&format!("{table}:{n}:{modified:?};"));
        }
        out
    }
}

/// Quick webhook retries for tests. The tests' receivers listen on 127.0.0.1, so private
/// addresses are allowed.
pub fn test_webhooks() -> WebhookConfig {
    WebhookConfig {
        poll: Duration::from_millis(20),
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        pause_after: 4,
        allow_private_networks: true,
        ..WebhookConfig::default()
    }
}

/// A GET of `path` as the holder of `token`, ready to send.
pub fn get_request(token: &str, path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub www_authenticate: Option<String>,
    pub content_type: String,
    pub location: Option<String>,
    pub retry_after: Option<String>,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Asserts that this is a problem document with `status` whose detail mentions `needle`.
    pub fn assert_problem(&self, status: StatusCode, needle: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.content_type, "application/problem+json");
        assert_eq!(self.json["status"], status.as_u16());
        let detail = self.json["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "detail {detail:?} does not mention {needle:?}"
        );
    }
}
