//! S5: reads under 64 concurrent connections for a fixed time, through roster's HTTP API and, as
//! the floor, the same queries straight from pgbench.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const CONNECTIONS: usize = 64;

/// The three read queries.
#[derive(Debug, Clone, Copy)]
pub enum Read {
    /// A 1000-member page of the large group, starting at a random member.
    MemberPage,
    /// The groups of a member.
    GroupsOfMember,
    /// Whether a member is in the group.
    MembershipCheck,
}

impl Read {
    pub const ALL: [Read; 3] = [
        Self::MemberPage,
        Self::GroupsOfMember,
        Self::MembershipCheck,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::MemberPage => "1000-member page of the large group",
            Self::GroupsOfMember => "groups of a member",
            Self::MembershipCheck => "single membership check",
        }
    }

    fn path(self, group: Uuid, member: Uuid) -> String {
        match self {
            // The cursor of the member list is base64url("m:" + member id): the benchmark starts
            // pages at random members the way a client continues after one.
            Self::MemberPage => format!(
                "/api/v1/groups/{group}/members?limit=1000&cursor={}",
                member_cursor(member)
            ),
            Self::GroupsOfMember => format!("/api/v1/resources/{member}/groups"),
            Self::MembershipCheck => format!("/api/v1/groups/{group}/members/{member}"),
        }
    }

    /// The pgbench script that runs the same query straight on the database.
    fn pgbench_script(self) -> &'static str {
        match self {
            Self::MemberPage => {
                "\\set n random(1, :scale)\n\
                 SELECT m.id, m.group_id, m.member_id, m.source, m.member_name, m.removed, \
                 m.contributing, m.last_operation_id, m.created_timestamp, m.removed_timestamp, \
                 (SELECT a.active FROM resource a WHERE a.id = m.member_id) \
                 FROM group_member m WHERE m.group_id = (SELECT id FROM bench_group) AND m.member_id > \
                 (SELECT id FROM bench_member WHERE n = :n) AND NOT m.removed \
                 ORDER BY m.member_id LIMIT 1001;\n"
            }
            Self::GroupsOfMember => {
                "\\set n random(1, :scale)\n\
                 SELECT m.id, m.group_id, m.member_id, m.source, m.member_name, m.removed, \
                 m.contributing, m.last_operation_id, m.created_timestamp, m.removed_timestamp, \
                 (SELECT a.active FROM resource a WHERE a.id = m.member_id) \
                 FROM group_member m WHERE m.member_id = (SELECT id FROM bench_member WHERE n = :n) \
                 AND NOT m.removed ORDER BY m.group_id LIMIT 101;\n"
            }
            Self::MembershipCheck => {
                "\\set n random(1, :scale)\n\
                 SELECT m.id, m.group_id, m.member_id, m.source, m.member_name, m.removed, \
                 m.contributing, m.last_operation_id, m.created_timestamp, m.removed_timestamp \
                 FROM group_member m WHERE m.group_id = (SELECT id FROM bench_group) AND m.member_id = \
                 (SELECT id FROM bench_member WHERE n = :n);\n"
            }
        }
    }
}

fn member_cursor(member: Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("m:{member}"))
}

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub fn summarise(mut latencies: Vec<f64>, elapsed: Duration) -> Load {
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Load {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

/// How many rounds each side of a read runs, taking turns.
pub const ROUNDS: u32 = 3;

/// Rounds of equal length as one run: their mean rate, and the median of their p50s and of
/// their p99s.
pub fn combine(rounds: &[Load]) -> Load {
    let median = |pick: fn(&Load) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Load {
        per_second: rounds.iter().map(|r| r.per_second).sum::<f64>() / rounds.len().max(1) as f64,
        p50_ms: median(|r| r.p50_ms),
        p99_ms: median(|r| r.p99_ms),
    }
}

/// How many of the members the load against roster picks its requests from (at random): enough
/// that the pages and groups it reads are spread over the whole group, few enough that wrk's
/// threads load them in a moment.
const SAMPLED_PATHS: usize = 100_000;

/// wrk's script: requests a random path of the list with the bearer token, and prints what the
/// run measured as one JSON line.
const WRK_SCRIPT: &str = r#"
local paths = {}
for line in io.lines(os.getenv("ROSTER_BENCH_PATHS")) do paths[#paths + 1] = line end
wrk.headers["Authorization"] = "Bearer " .. os.getenv("ROSTER_BENCH_TOKEN")
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
function init(args)
  math.randomseed(seed * 7919)
end
function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"failed":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

/// What wrk's script prints.
#[derive(serde::Deserialize)]
struct WrkRun {
    requests: u64,
    duration_us: u64,
    p50_us: u64,
    p99_us: u64,
    failed: u64,
    socket_errors: u64,
}

/// Runs `read` against roster from 64 concurrent connections for `duration`, with wrk: a load
/// generator written in C like pgbench, so that the client's own cost weighs on the two sides
/// alike (a Rust client built on reqwest took more than a core of this machine's two).
pub async fn roster(
    base: &str,
    token: &str,
    read: Read,
    group: Uuid,
    members: &[Uuid],
    duration: Duration,
    dir: &Path,
) -> Result<Load> {
    let step = (members.len() / SAMPLED_PATHS).max(1);
    let paths: String = members
        .iter()
        .step_by(step)
        .map(|member| format!("{}\n", read.path(group, *member)))
        .collect();
    let (paths_file, script) = (dir.join("paths.txt"), dir.join("read.lua"));
    std::fs::write(&paths_file, paths)?;
    std::fs::write(&script, WRK_SCRIPT)?;
    let out = tokio::process::Command::new("wrk")
        .args(["-t", "2", "-c", &CONNECTIONS.to_string()])
        .args(["-d", &format!("{}s", duration.as_secs().max(1))])
        .args(["--timeout", "10s", "-s", script.to_str().context("path")?])
        .arg(base)
        .env("ROSTER_BENCH_PATHS", &paths_file)
        .env("ROSTER_BENCH_TOKEN", token)
        .output()
        .await
        .context("running wrk (the Debian package wrk)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run: WrkRun = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .with_context(|| format!("wrk printed no summary: {stdout}"))?;
    if run.failed > 0 || run.socket_errors > 0 || run.requests == 0 {
        bail!(
            "{}: {} of {} requests failed, {} socket errors",
            read.name(),
            run.failed,
            run.requests,
            run.socket_errors
        );
    }
    Ok(Load {
        per_second: run.requests as f64 / (run.duration_us as f64 / 1e6),
        p50_ms: run.p50_us as f64 / 1000.0,
        p99_ms: run.p99_us as f64 / 1000.0,
    })
}

/// Runs the same query with pgbench from 64 connections for `duration`.
pub async fn pgbench(
    database_url: &str,
    read: Read,
    scale: usize,
    duration: Duration,
    dir: &Path,
) -> Result<Load> {
    let script = dir.join("read.sql");
    std::fs::write(&script, read.pgbench_script())?;
    let logs = dir.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-c", &CONNECTIONS.to_string(), "-j", "2"])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .args(["-f", script.to_str().context("path")?])
        .args(["-D", &format!("scale={scale}")])
        .args([
            "-l",
            "--log-prefix",
            logs.join("pgbench").to_str().context("path")?,
        ])
        .arg(database_url)
        .output()
        .await
        .context("running pgbench (PostgreSQL's client package)")?;
    if !out.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let per_second = pgbench_rate(&String::from_utf8_lossy(&out.stdout))?;
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(&logs)? {
        for line in std::fs::read_to_string(entry?.path())?.lines() {
            // client_id transaction_no time(us) script_no time_epoch time_us
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<f64>().ok())
            {
                latencies.push(us / 1000.0);
            }
        }
    }
    if latencies.is_empty() {
        bail!("pgbench logged no transactions");
    }
    Ok(Load {
        per_second,
        ..summarise(latencies, Duration::from_secs(1))
    })
}

/// pgbench's own rate (`tps = … (without initial connection time)`): over the time it ran the
/// script, as wrk's is, not counting its start, its 64 connections and its logs.
fn pgbench_rate(stdout: &str) -> Result<f64> {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .context("pgbench printed no rate (`tps = …`)")
}

/// One encoding of the 1000-member page: its size and time.
pub struct Encoded {
    pub encoding: &'static str,
    pub bytes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The 1000-member page of `group` fetched 200 times in a row by one client in each encoding,
/// from the same random members; the size as sent and the time to receive it whole.
pub async fn compression(
    base: &str,
    token: &str,
    group: Uuid,
    members: &[Uuid],
) -> Result<Vec<Encoded>> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for encoding in ["identity", "gzip", "zstd"] {
        let mut latencies = Vec::with_capacity(200);
        let mut bytes = 0;
        for i in 0..200 {
            let member = members[(i * 7919) % members.len()];
            let started = Instant::now();
            let response = http
                .get(format!("{base}{}", Read::MemberPage.path(group, member)))
                .bearer_auth(token)
                .header("accept-encoding", encoding)
                .send()
                .await?;
            let sent = response
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("identity")
                .to_owned();
            let body = response.bytes().await?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            if sent != encoding {
                bail!("asked for {encoding}, got {sent}");
            }
            bytes = body.len();
        }
        let load = summarise(latencies, Duration::from_secs(1));
        out.push(Encoded {
            encoding,
            bytes,
            p50_ms: load.p50_ms,
            p99_ms: load.p99_ms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_matches_base64url_without_padding() {
        let id = Uuid::nil();
        // base64url("m:00000000-0000-0000-0000-000000000000")
        assert_eq!(
            member_cursor(id),
            "bTowMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDA"
        );
    }

    #[test]
    fn the_floor_rate_is_pgbench_own() {
        let stdout = "number of transactions actually processed: 26590\n\
                      latency average = 12.034 ms\n\
                      initial connection time = 61.502 ms\n\
                      tps = 5318.094512 (without initial connection time)\n";
        assert_eq!(pgbench_rate(stdout).expect("a rate"), 5318.094512);
        assert!(pgbench_rate("pgbench: error\n").is_err());
    }

    #[test]
    fn rounds_combine_to_their_mean_rate_and_median_latencies() {
        let load = |per_second, p50_ms, p99_ms| Load {
            per_second,
            p50_ms,
            p99_ms,
        };
        let combined = combine(&[
            load(100.0, 5.0, 30.0),
            load(130.0, 4.0, 10.0),
            load(70.0, 6.0, 20.0),
        ]);
        assert_eq!(combined.per_second, 100.0);
        assert_eq!(combined.p50_ms, 5.0);
        assert_eq!(combined.p99_ms, 20.0);
    }
}
