//! The roster server under measurement: the real binary, started on a free loopback port, its
//! peak memory read from /proc.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
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
    pub async fn start(binary: &PathBuf, database_url: &str) -> Result<Self> {
        let mut child = Command::new(binary)
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(["--database-url", database_url])
            .env("ROSTER_BOOTSTRAP_TOKEN", TOKEN)
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
