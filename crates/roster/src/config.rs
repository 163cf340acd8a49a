//! Typed settings, read once at start-up from the command line and the environment.

use crate::app::OperationDefaults;
use crate::cli::{DatabaseArgs, ServeArgs};
use crate::domain::full_update::Threshold;
use crate::domain::InvalidInput;
use crate::ops::EngineConfig;
use crate::relay::RelayConfig;
use crate::server::Limits;
use crate::store::Location;
use crate::webhooks::WebhookConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `roster serve` needs. Its `Debug` output never shows a password or a token.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub location: Location,
    pub limits: Limits,
    pub bootstrap_token: Option<String>,
    /// Certificate chain and private key (PEM files) when serving HTTPS.
    pub tls: Option<Tls>,
    pub engine: EngineConfig,
    pub operations: OperationDefaults,
    /// Fan-out of the change log to NATS JetStream, when configured.
    pub relay: Option<RelayConfig>,
    /// Webhook deliveries.
    pub webhooks: WebhookConfig,
}

/// Where the TLS certificate chain and key are.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("location", &self.location)
            .field("limits", &self.limits)
            .field("tls", &self.tls)
            .field("engine", &self.engine)
            .field("operations", &self.operations)
            .field("relay", &self.relay.as_ref().map(|r| &r.stream))
            .field(
                "bootstrap_token",
                &self.bootstrap_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Settings {
    pub fn from_serve_args(args: &ServeArgs) -> Result<Self, InvalidInput> {
        Ok(Self {
            listen: args.listen,
            location: location(&args.database)?,
            limits: Limits {
                body_bytes: args.body_limit,
                request_timeout: Duration::from_secs(args.request_timeout),
                upload_bytes: args.upload_limit,
                stream_lifetime: Duration::from_secs(args.stream_lifetime),
                scim_reads_per_token: args.scim_reads_per_token,
                scim_rate: crate::http::scim::rate::ScimRate::per_second(args.scim_rate_limit),
                ..Limits::default()
            },
            bootstrap_token: args.bootstrap_token.clone(),
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(Tls {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            engine: EngineConfig {
                workers: args.workers,
                lease: Duration::from_secs(args.lease_seconds),
                history_retention: args
                    .history_retention_days
                    .map(|d| Duration::from_secs(u64::from(d) * 86_400)),
                expiry_sweep: Duration::from_secs(args.expiry_sweep_seconds.max(1)),
                lifecycle: crate::domain::lifecycle::Policy {
                    threshold: args.lifecycle_threshold.max(0),
                },
                ..EngineConfig::default()
            },
            operations: OperationDefaults {
                threshold: Threshold {
                    max_removed_percent: args.deletion_threshold_percent,
                    min_group_size: args.deletion_threshold_min_members,
                },
                batch_size: args.apply_batch_size,
                retention_days: args.retention_days,
                max_wait: Duration::from_secs(args.request_timeout.saturating_sub(5).max(1)),
                lifecycle: crate::domain::lifecycle::Policy {
                    threshold: args.lifecycle_threshold.max(0),
                },
            },
            relay: args.nats_url.as_ref().map(|url| RelayConfig {
                url: url.clone(),
                stream: args.nats_stream.clone(),
                subject_prefix: args.nats_subject_prefix.clone(),
                max_age: (args.nats_max_age_days > 0)
                    .then(|| Duration::from_secs(u64::from(args.nats_max_age_days) * 86_400)),
                lease: Duration::from_secs(args.lease_seconds),
            }),
            webhooks: WebhookConfig {
                pause_after: args.webhook_pause_after,
                allow_private_networks: args.webhook_allow_private_networks,
                ..WebhookConfig::default()
            },
        })
    }

    pub fn from_database_args(args: &DatabaseArgs) -> Result<Self, InvalidInput> {
        Ok(Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            location: location(args)?,
            limits: Limits::default(),
            bootstrap_token: None,
            tls: None,
            engine: EngineConfig::default(),
            operations: OperationDefaults::default(),
            relay: None,
            webhooks: WebhookConfig::default(),
        })
    }
}

fn location(args: &DatabaseArgs) -> Result<Location, InvalidInput> {
    Location::from_settings(
        args.database_url.as_deref(),
        &args.data_dir,
        args.max_connections,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn serve(args: &[&str]) -> Settings {
        let cli = Cli::try_parse_from([&["roster", "serve"], args].concat()).expect("arguments");
        match cli.command {
            Command::Serve(args) => Settings::from_serve_args(&args).expect("settings"),
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn webhooks_deliver_only_to_public_addresses_unless_allowed() {
        assert!(!serve(&[]).webhooks.allow_private_networks);
        assert!(
            serve(&["--webhook-allow-private-networks"])
                .webhooks
                .allow_private_networks
        );
    }
}
