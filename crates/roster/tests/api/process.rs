//! The `roster` binary itself: `serve` with no configuration creates the embedded SQLite database
//! in WAL mode, `--database-url postgres://…` serves the same API on PostgreSQL, SIGTERM stops it
//! gracefully, and `migrate` applies migrations.

use crate::common::fresh_postgres_database;
use serde_json::Value;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_roster");

/// The admin token the servers of these tests are bootstrapped with.
const ADMIN: &str = "test-admin-token-0123456789abcdefghijklmnop";

/// Starts `roster serve` on a free port and returns the child and its address, read from its log.
async fn start(dir: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("ROSTER_BOOTSTRAP_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start roster");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    while let Some(line) = lines.next_line().await.expect("read log") {
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(addr) = event["fields"]["listen"].as_str() {
            let addr = addr.to_owned();
            // Keep draining the log so the server never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, addr);
        }
    }
    panic!("roster exited before it listened");
}

/// A minimal HTTP/1.1 exchange, so the test needs no HTTP client crate.
async fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let status = raw[9..12].parse().expect("status code");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn terminate(mut child: Child) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().await.expect("wait");
    assert!(exit.success(), "roster exits cleanly on SIGTERM: {exit}");
}

#[tokio::test]
async fn serve_without_configuration_uses_embedded_sqlite_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(dir.path(), &[]).await;
    let (status, ready) = request(&addr, "GET", "/readyz", "").await;
    assert_eq!(status, 200);
    assert_eq!(ready["backend"], "sqlite");
    let (status, created) = request(
        &addr,
        "POST",
        "/api/v1/resources",
        r#"{"type":"user","source_system":"home","identifier":"a"}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    terminate(child).await;

    let db = dir.path().join("roster-data/roster.db");
    assert!(db.exists(), "the default database file is created");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM resource")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "the write survived the restart");
}

#[tokio::test]
async fn serve_with_a_postgres_url_runs_the_same_api() {
    let (_admin, _name, url) = fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let migrate = Command::new(BIN)
        .args(["migrate", "--database-url", &url])
        .output()
        .await
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    assert!(String::from_utf8_lossy(&migrate.stdout).contains("postgres database is up to date"));
    let (child, addr) = start(dir.path(), &["--database-url", &url]).await;
    let (status, ready) = request(&addr, "GET", "/readyz", "").await;
    assert_eq!(status, 200);
    assert_eq!(ready["backend"], "postgres");
    let (status, _) = request(
        &addr,
        "POST",
        "/api/v1/resources",
        r#"{"type":"group","source_system":"home","identifier":"g"}"#,
    )
    .await;
    assert_eq!(status, 201);
    terminate(child).await;
    assert!(
        !dir.path().join("roster-data").exists(),
        "no SQLite database is created when PostgreSQL is configured"
    );
}

#[tokio::test]
async fn unsupported_database_url_is_refused_with_a_clear_message() {
    let out = Command::new(BIN)
        .args([
            "migrate",
            "--database-url",
            "mysql://root:secret@localhost/x",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not supported"), "{err}");
    assert!(
        !err.contains("secret"),
        "the password is never printed: {err}"
    );
}
