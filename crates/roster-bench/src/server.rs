//! The roster server under measurement: the real binary, started on a free loopback port, its
//! peak memory read from /proc.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The admin token the benchmark's server is bootstrapped with.
pub const TOKEN: &str = "roster-bench-admin-token-0123456789abcdef";

pub struct Server {
    child: Child,
    pub base: String,
}

/// The `roster` binary of the same build profile as this benchmark, built first if needed.
pub fn binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("the benchmark binary has no directory")?;
    let release = dir.ends_with("release");
    let mut build = std::process::Command::new("cargo");
    // The workspace's binaries, so that features unify as in `cargo build --workspace`.
    build.args(["build", "--workspace", "--bins"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("building roster")?;
    if !status.success() {
        bail!("building roster failed");
    }
    Ok(dir.join("roster"))
}

impl Server {
    /// A server on the PostgreSQL database at `database_url`.
    pub async fn start(binary: &Path, database_url: &str) -> Result<Self> {
        let mut command = Self::serve(binary);
        command.args(["--database-url", database_url]);
        Self::spawn(command).await
    }

    /// A server on `database_url` that delivers webhooks to loopback receivers.
    pub async fn start_allowing_private_webhooks(
        binary: &Path,
        database_url: &str,
    ) -> Result<Self> {
        let mut command = Self::serve(binary);
        command
            .args(["--database-url", database_url])
            .arg("--webhook-allow-private-networks");
        Self::spawn(command).await
    }

    /// A server on the embedded SQLite database in `data_dir`.
    pub async fn start_embedded(binary: &Path, data_dir: &Path) -> Result<Self> {
        let mut command = Self::serve(binary);
        command
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("DATABASE_URL");
        Self::spawn(command).await
    }

    /// `roster serve` on a free loopback port, bootstrapped with [`TOKEN`].
    fn serve(binary: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            // The SCIM rate per token is a guard for production; the benchmark measures speed.
            .args(["--scim-rate-limit", "0"])
            .env("ROSTER_BOOTSTRAP_TOKEN", TOKEN);
        command
    }

    async fn spawn(mut command: Command) -> Result<Self> {
        let mut child = command
            .env("RUST_LOG", "roster=info,tower_http=warn,sqlx=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting roster")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        while let Some(line) = lines.next_line().await? {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(addr) = event["fields"]["listen"].as_str() {
                let base = format!("http://{addr}");
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Ok(Self { child, base });
            }
        }
        bail!("roster exited before it listened")
    }

    /// The peak resident set size of the server so far, in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> Result<f64> {
        let pid = self.child.id().context("the server exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc")?;
        Ok(kib / 1024.0)
    }

    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
