//! Command-line interface: flags, each with a `ROSTER_*` environment variable.

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

    /// Most PostgreSQL connections roster opens.
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

    #[command(flatten)]
    pub database: DatabaseArgs,
}
