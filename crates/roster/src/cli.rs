//! Command-line interface: flags, each with a `ROSTER_*` environment variable.

use crate::domain::operation_request::MAX_RETENTION_DAYS;
use crate::domain::token::{ReadScope, Scope};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "roster",
    version,
    about = "Stores and vends group memberships imported from many directories.",
    long_about = "Stores and vends group memberships imported from many directories \
                  (Entra ID, Active Directory, LDAP, Workday, Cognito).\n\n\
                  Without --database-url, roster keeps its data in an embedded SQLite database \
                  under --data-dir; with a postgres:// URL it uses PostgreSQL."
)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "ROSTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Run a full-update of a group or source system from an NDJSON or CSV file, through a
    /// running roster's API.
    Import(ImportArgs),
    /// Manage API tokens directly in the database (works while no server runs).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["group", "source"])))]
pub struct ImportArgs {
    /// The member list: NDJSON (one member a line, as the chunk API takes them) or CSV with a
    /// header row naming the same fields (member_id, source_system, identifier, external_id,
    /// type, member_name, contributing; group_id or group for a source system). With
    /// `--resources`, the resource list (external_id, identifier, type, subtype, displayname,
    /// description, notes, tags separated by `;`, active, expires_at).
    pub file: PathBuf,
    /// The file lists the resources (accounts, groups) of `--source`, not memberships: a
    /// full-update of resources, which deletes the source's resources the file leaves out.
    #[arg(long, requires = "source", conflicts_with = "group")]
    pub resources: bool,
    /// With `--resources`: the file covers only resources of this type (user, group, …).
    #[arg(long, requires = "resources")]
    pub resource_type: Option<String>,
    /// The group whose complete member list the file is.
    #[arg(long)]
    pub group: Option<uuid::Uuid>,
    /// The source system whose complete group memberships the file is.
    #[arg(long)]
    pub source: Option<String>,
    /// The roster server.
    #[arg(long, env = "ROSTER_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An API token with the write scope.
    #[arg(long, env = "ROSTER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The file's format (by default from its extension: .csv is CSV, anything else NDJSON).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Lines per uploaded chunk.
    #[arg(long, default_value_t = 100_000)]
    pub chunk_lines: usize,
    /// Skip lines roster cannot use (and report them) instead of failing the import.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Upload and show what would be added and removed, then cancel: nothing changes.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the apply.
    #[arg(long, default_value_t = 600)]
    pub wait: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FileFormat {
    Ndjson,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown only this once).
    Create(TokenCreateArgs),
    /// List tokens (never their secrets).
    List(DatabaseArgs),
    /// Revoke a token by id or name.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// A name that says who uses the token, e.g. "entra-foo-connector".
    #[arg(long)]
    pub name: String,
    /// A scope the token gets: read, write, admin or scim. Repeat for several.
    #[arg(long = "scope", required = true, value_parser = parse_scope)]
    pub scopes: Vec<Scope>,
    /// Bind the token to one source system: it may then write only that source's data.
    #[arg(long)]
    pub source: Option<String>,
    /// What a token bound with --source reads: all (every source's data, the default) or bound
    /// (only its source's).
    #[arg(long, default_value = "all", value_parser = parse_read_scope)]
    pub read_scope: ReadScope,
    /// When the token expires: an RFC 3339 time, or a span from now such as 90d or 12h.
    #[arg(long, value_parser = parse_expiry)]
    pub expires: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id or name.
    pub token: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

fn parse_read_scope(value: &str) -> Result<ReadScope, String> {
    ReadScope::from_name(value).ok_or_else(|| format!("{value:?} is not all or bound"))
}

fn parse_scope(value: &str) -> Result<Scope, String> {
    Scope::from_name(value)
        .ok_or_else(|| format!("{value:?} is not a scope; use read, write, admin or scim"))
}

/// A number of days to keep something: at most a hundred years.
fn retention_days() -> clap::builder::RangedU64ValueParser<u32> {
    clap::builder::RangedU64ValueParser::new().range(..=u64::from(MAX_RETENTION_DAYS))
}

/// An RFC 3339 time, or `<n>d` / `<n>h` from now.
fn parse_expiry(value: &str) -> Result<DateTime<Utc>, String> {
    if DateTime::parse_from_rfc3339(value).is_ok() {
        return crate::domain::time::parse(value);
    }
    let (number, unit) = value.split_at(value.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{value:?} is neither an RFC 3339 time nor a span like 90d or 12h"))?;
    let span = match unit {
        "d" => chrono::Duration::try_days(n),
        "h" => chrono::Duration::try_hours(n),
        _ => None,
    }
    .ok_or_else(|| format!("{value:?}: use a number of days (90d) or hours (12h)"))?;
    let at = Utc::now()
        .checked_add_signed(span)
        .ok_or_else(|| format!("{value:?} is too far from now"))?;
    crate::domain::time::check(at).map_err(|e| e.to_string())
}

/// Where roster keeps its data.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (postgres://user:password@host/db) or sqlite://PATH. Without it roster uses
    /// the embedded SQLite database in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory of the embedded SQLite database (created if missing).
    #[arg(long, env = "ROSTER_DATA_DIR", default_value = "./roster-data")]
    pub data_dir: PathBuf,

    /// Most PostgreSQL connections roster opens: a quarter of them (at least one) serve reads by
    /// key, the rest everything else (at least one).
    #[arg(long, env = "ROSTER_MAX_CONNECTIONS", default_value_t = 16)]
    pub max_connections: u32,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ROSTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ROSTER_BODY_LIMIT", default_value_t = 2 * 1024 * 1024)]
    pub body_limit: usize,

    /// Longest a request may take, in seconds, before roster answers 408.
    #[arg(long, env = "ROSTER_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,

    /// Longest an event stream (`/api/v1/changes/stream`) stays open, in seconds; the client then
    /// reconnects with Last-Event-ID and authenticates again.
    #[arg(long, env = "ROSTER_STREAM_LIFETIME", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stream_lifetime: u64,

    /// Largest accepted chunk upload of a full-update, in bytes (uploads stream to the database).
    #[arg(long, env = "ROSTER_UPLOAD_LIMIT", default_value_t = 1024 * 1024 * 1024)]
    pub upload_limit: usize,

    /// SCIM requests a second each token may send (in bursts of as many); more answer 429 with
    /// Retry-After. 0: no limit.
    #[arg(long, env = "ROSTER_SCIM_RATE_LIMIT", default_value_t = crate::server::DEFAULT_SCIM_RATE)]
    pub scim_rate_limit: u32,

    /// SCIM lists and searches one token may run at once; more answer 429 with Retry-After.
    #[arg(long, env = "ROSTER_SCIM_READS_PER_TOKEN", default_value_t = crate::http::scim::rate::DEFAULT_READS_PER_TOKEN, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub scim_reads_per_token: usize,

    /// A full-update that would remove more than this share (in percent) of a group's active
    /// members waits for approval.
    #[arg(
        long,
        env = "ROSTER_DELETION_THRESHOLD_PERCENT",
        default_value_t = 20.0
    )]
    pub deletion_threshold_percent: f64,

    /// The percentage threshold applies to groups with at least this many active members.
    #[arg(
        long,
        env = "ROSTER_DELETION_THRESHOLD_MIN_MEMBERS",
        default_value_t = 100
    )]
    pub deletion_threshold_min_members: i64,

    /// Changed memberships per apply transaction (a group is never split across transactions).
    #[arg(long, env = "ROSTER_APPLY_BATCH_SIZE", default_value_t = 10_000)]
    pub apply_batch_size: i64,

    /// A purge removes what ended at least this many days ago (at most 36500).
    #[arg(
        long,
        env = "ROSTER_RETENTION_DAYS",
        default_value_t = 90,
        value_parser = retention_days()
    )]
    pub retention_days: u32,

    /// A deactivation (an action, an HR termination) of more accounts than this waits for an
    /// admin's approval.
    #[arg(long, env = "ROSTER_LIFECYCLE_THRESHOLD", default_value_t = 50)]
    pub lifecycle_threshold: i64,

    /// How often the expiry sweeper looks for accounts whose expires_at passed.
    #[arg(long, env = "ROSTER_EXPIRY_SWEEP_SECONDS", default_value_t = 60)]
    pub expiry_sweep_seconds: u64,

    /// Keep the change log (the feed's history, point-in-time answers) this many days; a feed
    /// cursor older than that answers 410 Gone (at most 36500). Default: forever.
    #[arg(long, env = "ROSTER_HISTORY_RETENTION_DAYS", value_parser = retention_days())]
    pub history_retention_days: Option<u32>,

    /// Publish every change to this NATS server's JetStream (e.g. nats://127.0.0.1:4222). One
    /// process relays at a time; see docs/changes.md.
    #[arg(long, env = "ROSTER_NATS_URL")]
    pub nats_url: Option<String>,

    /// The JetStream stream changes are published to (created when missing).
    #[arg(long, env = "ROSTER_NATS_STREAM", default_value = "ROSTER")]
    pub nats_stream: String,

    /// The first token of the subjects: `<prefix>.<kind>.<source system token>` (see
    /// docs/changes.md).
    #[arg(long, env = "ROSTER_NATS_SUBJECT_PREFIX", default_value = "roster")]
    pub nats_subject_prefix: String,

    /// Days the stream keeps a message (0: forever) when roster creates the stream.
    #[arg(long, env = "ROSTER_NATS_MAX_AGE_DAYS", default_value_t = 7)]
    pub nats_max_age_days: u32,

    /// A webhook subscription pauses after this many failed deliveries in a row.
    #[arg(long, env = "ROSTER_WEBHOOK_PAUSE_AFTER", default_value_t = 10)]
    pub webhook_pause_after: i32,

    /// Deliver webhooks to loopback, private (RFC 1918, fc00::/7), link-local, CGNAT and other
    /// non-public addresses too. By default roster refuses them, checking the addresses it
    /// connects to (after DNS resolution), and connects to receivers without a proxy.
    #[arg(
        long,
        env = "ROSTER_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_allow_private_networks: bool,

    /// Operation workers in this process.
    #[arg(long, env = "ROSTER_WORKERS", default_value_t = 2)]
    pub workers: usize,

    /// Seconds a worker's claim on an operation lasts without renewal; after a crash another
    /// worker takes the operation over once it expires.
    #[arg(long, env = "ROSTER_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,

    /// PEM certificate chain: serve HTTPS (with --tls-key) instead of plain HTTP.
    #[arg(long, env = "ROSTER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "ROSTER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The admin token to create on first start (at least 32 characters), for automation. Without
    /// it, roster generates one and prints it once.
    #[arg(long, env = "ROSTER_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_are_at_most_a_hundred_years() {
        let serve = |flag: &str, days: &str| Cli::try_parse_from(["roster", "serve", flag, days]);
        for flag in ["--retention-days", "--history-retention-days"] {
            assert!(serve(flag, "36500").is_ok(), "{flag}");
            assert!(serve(flag, "36501").is_err(), "{flag}");
            assert!(serve(flag, "4294967295").is_err(), "{flag}");
        }
    }
}
