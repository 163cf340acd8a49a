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
pub async fn start(dir: &std::path::Path, extra: &[&str]) -> (Child, String) {
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

/// A minimal HTTP/1.1 exchange as the admin, so the test needs no HTTP client crate.
pub async fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    exchange(addr, ADMIN, method, path, body).await
}

async fn request_as(addr: &str, token: &str, method: &str, path: &str) -> (u16, Value) {
    exchange(addr, token, method, path, "").await
}

async fn exchange(addr: &str, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\n\
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

pub async fn terminate(mut child: Child) {
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
async fn the_embedded_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(dir.path(), &[]).await;
    let (status, _) = request(&addr, "GET", "/readyz", "").await;
    assert_eq!(status, 200);
    terminate(child).await;
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let data = dir.path().join("roster-data");
    assert_eq!(mode(data.clone()), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(path.clone()), 0o600, "{}", path.display());
    }
}

#[tokio::test]
async fn unreadable_tls_files_stop_the_start_before_a_token_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--tls-cert",
            "missing-cert.pem",
            "--tls-key",
            "missing-key.pem",
        ])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("ROSTER_BOOTSTRAP_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing-cert.pem"), "{err}");
    assert!(!err.contains("roster_"), "no token is printed: {err}");
    assert!(
        !dir.path().join("roster-data").exists(),
        "no database is created"
    );
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

#[tokio::test]
async fn first_start_prints_an_admin_token_once_and_it_works() {
    let dir = tempfile::tempdir().unwrap();
    let spawn = || {
        Command::new(BIN)
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("ROSTER_BOOTSTRAP_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start roster")
    };
    let mut child = spawn();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut token = None;
    while let Some(line) = err.next_line().await.unwrap() {
        if let Some(t) = line.trim().strip_prefix("roster_") {
            token = Some(format!("roster_{t}"));
            break;
        }
    }
    let token = token.expect("the admin token is printed on first start");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    while let Some(line) = out.next_line().await.unwrap() {
        assert!(!line.contains(&token), "the token never reaches the log");
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            if let Some(a) = event["fields"]["listen"].as_str() {
                addr = Some(a.to_owned());
                break;
            }
        }
    }
    let addr = addr.expect("listening");
    let (status, body) = request_as(&addr, &token, "GET", "/api/v1/tokens").await;
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["name"], "bootstrap-admin");
    assert_eq!(body["items"][0]["scopes"], serde_json::json!(["admin"]));
    terminate(child).await;

    // A second start on the same database creates and prints nothing.
    let mut child = spawn();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = out.next_line().await.unwrap() {
        if line.contains("listen") {
            break;
        }
    }
    terminate(child).await;
    let mut printed = String::new();
    while let Ok(Some(line)) = err.next_line().await {
        printed.push_str(&line);
    }
    assert!(!printed.contains("roster_"), "{printed}");
}

#[tokio::test]
async fn token_commands_create_list_and_revoke_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/roster.db", dir.path().display());
    let run = |args: Vec<&'static str>| {
        let url = url.clone();
        async move {
            let out = Command::new(BIN)
                .args(&args)
                .args(["--database-url", &url])
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (ok, out, err) = run(vec![
        "token",
        "create",
        "--name",
        "entra-foo",
        "--scope",
        "read",
        "--scope",
        "write",
        "--source",
        "foo",
        "--expires",
        "90d",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("entra-foo") && out.contains("source=foo") && out.contains("expires"));
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown only now): "))
        .expect("secret printed")
        .to_owned();
    assert!(secret.starts_with("roster_"));
    let (ok, listed, _) = run(vec!["token", "list"]).await;
    assert!(ok);
    assert!(listed.contains("entra-foo") && listed.contains("scopes=read,write"));
    assert!(!listed.contains(&secret));
    let (ok, revoked, _) = run(vec!["token", "revoke", "entra-foo"]).await;
    assert!(ok);
    assert!(revoked.contains("revoked"));
    let (ok, _, err) = run(vec!["token", "create", "--name", "x", "--scope", "root"]).await;
    assert!(!ok);
    assert!(err.contains("not a scope"), "{err}");
}

#[tokio::test]
async fn serves_https_when_given_a_certificate_and_key() {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let cert = format!("{fixtures}/tls-cert.pem");
    let key = format!("{fixtures}/tls-key.pem");
    let (child, addr) = start(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]).await;

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cert).unwrap())
        .unwrap();
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    let config = ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the served certificate");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    tls.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{raw}"
    );

    // Plain HTTP on the same port is not served.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw).await;
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));
    terminate(child).await;
}

/// Runs `roster import` against a server; returns the exit code and what it printed.
async fn import(addr: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(BIN)
        .arg("import")
        .args(args)
        .args(["--server", &format!("http://{addr}")])
        .env("ROSTER_TOKEN", ADMIN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn import_runs_a_full_update_from_ndjson_and_csv_files_and_dry_runs_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(dir.path(), &[]).await;
    let mut users = Vec::new();
    for i in 0..5 {
        let (_, user) = request(
            &addr,
            "POST",
            "/api/v1/resources",
            &format!(r#"{{"type":"user","source_system":"home","identifier":"u{i}"}}"#),
        )
        .await;
        users.push(user["id"].as_str().unwrap().to_owned());
    }
    let (_, group) = request(
        &addr,
        "POST",
        "/api/v1/resources",
        r#"{"type":"group","source_system":"home","identifier":"eng"}"#,
    )
    .await;
    let group = group["id"].as_str().unwrap().to_owned();

    let ndjson = dir.path().join("members.ndjson");
    let lines: String = users[..3]
        .iter()
        .map(|u| format!("{{\"member_id\": \"{u}\"}}\n\n"))
        .collect();
    std::fs::write(&ndjson, lines).unwrap();
    let (code, op, err) = import(
        &addr,
        &[
            ndjson.to_str().unwrap(),
            "--group",
            &group,
            "--chunk-lines",
            "2",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(op["status"], "complete");
    assert_eq!(op["counts"]["added"], 3);
    let chunks = op["id"].as_i64().unwrap();
    let (_, listed) = request(&addr, "GET", &format!("/api/v1/groups/{group}/members"), "").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);

    // CSV by source keys; a dry run of it previews and changes nothing.
    let csv = dir.path().join("members.csv");
    std::fs::write(
        &csv,
        "source_system,identifier,member_name\nhome,u0,Zero\nhome,u3,Three\nhome,u4,\n",
    )
    .unwrap();
    let (code, dry, err) = import(
        &addr,
        &[csv.to_str().unwrap(), "--group", &group, "--dry-run"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(dry["preview"]["to_add"], 2, "{dry}");
    assert_eq!(dry["preview"]["to_remove"], 2, "{dry}");
    assert_eq!(dry["status"], "failed", "the dry run was cancelled");
    let (_, listed) = request(&addr, "GET", &format!("/api/v1/groups/{group}/members"), "").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        3,
        "nothing changed"
    );

    let (code, op, err) = import(&addr, &[csv.to_str().unwrap(), "--group", &group]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(op["counts"]["added"], 2, "{op}");
    assert_eq!(op["counts"]["removed"], 2);
    assert!(op["id"].as_i64().unwrap() > chunks);

    // A file with a bad line is refused with its line number, and the operation is cancelled.
    std::fs::write(&ndjson, "{\"member_id\": \"not-a-uuid\"}\n").unwrap();
    let (code, _, err) = import(&addr, &[ndjson.to_str().unwrap(), "--group", &group]).await;
    assert_eq!(code, 1);
    assert!(err.contains("line 1"), "{err}");
    terminate(child).await;
}

#[tokio::test]
async fn import_loads_a_sources_accounts_from_csv_and_dry_runs_a_resync() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(dir.path(), &[]).await;
    let csv = dir.path().join("accounts.csv");
    std::fs::write(
        &csv,
        "external_id,identifier,subtype,displayname,tags,active\n\
         e1,ann@foo,native,Ann,staff;eu,true\n\
         e2,bob@foo,native,Bob,,false\n\
         e3,cy@foo,guest,,,\n",
    )
    .unwrap();
    let file = csv.to_str().unwrap();
    let args = [
        file,
        "--resources",
        "--source",
        "foo",
        "--resource-type",
        "user",
    ];
    let (code, op, err) = import(&addr, &args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(op["target"], "resources", "{op}");
    assert_eq!(op["counts"]["added"], 3, "{op}");
    let (_, ann) = request(
        &addr,
        "GET",
        "/api/v1/resources/lookup?source_system=foo&external_id=e1",
        "",
    )
    .await;
    assert_eq!(ann["tags"], serde_json::json!(["staff", "eu"]));
    assert_eq!(ann["subtype"], "native");
    let (_, bob) = request(
        &addr,
        "GET",
        "/api/v1/resources/lookup?source_system=foo&identifier=bob@foo",
        "",
    )
    .await;
    assert_eq!(bob["active"], false);

    // A resync without Bob, as a dry run: one deletion previewed, nothing changed.
    std::fs::write(&csv, "external_id,identifier\ne1,ann@foo\ne3,cy@foo\n").unwrap();
    let (code, dry, err) = import(&addr, &[&args[..], &["--dry-run"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(dry["preview"]["to_remove"], 1, "{dry}");
    assert_eq!(dry["preview"]["first_removes"][0]["external_id"], "e2");
    let (status, _) = request(
        &addr,
        "GET",
        "/api/v1/resources/lookup?source_system=foo&external_id=e2",
        "",
    )
    .await;
    assert_eq!(status, 200, "the dry run deleted nothing");
    terminate(child).await;
}
