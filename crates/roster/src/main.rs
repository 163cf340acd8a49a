//! `roster`: parse the command line, configure logging, run the chosen command.

use anyhow::Context;
use clap::Parser;
use roster::cli::{Cli, Command, LogFormat};
use roster::config::Settings;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: a request allocates and frees many small buffers
/// from whichever worker thread polls it, which glibc's malloc serves at about an eighth of the
/// server's CPU under load (a profile of 64 connections reading memberships).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::from_serve_args(&args)?;
            roster::server::serve(&settings).await?;
        }
        Command::Migrate(args) => {
            let settings = Settings::from_database_args(&args)?;
            let backend = roster::server::migrate(&settings)
                .await
                .with_context(|| format!("migrating {:?}", settings.location))?;
            println!("{backend} database is up to date");
        }
        Command::Token(command) => roster::commands::token(command).await?,
        Command::Import(args) => {
            let outcome = roster::import::run(args).await?;
            println!("{}", serde_json::to_string_pretty(&outcome.operation)?);
            std::process::exit(outcome.exit_code());
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
