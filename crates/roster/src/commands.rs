//! The commands besides `serve`: token management straight on the database.

use crate::cli::{TokenCommand, TokenCreateArgs};
use crate::config::Settings;
use crate::domain::page::PageRequest;
use crate::domain::token::{Actor, NewToken, Secret, Token};
use crate::store::{self, Store, StoreError};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// The actor recorded in the audit trail for tokens managed from the command line.
const CLI_ACTOR: &str = "roster-cli";

pub async fn token(command: TokenCommand) -> Result<(), CommandError> {
    match command {
        TokenCommand::Create(args) => create(args).await,
        TokenCommand::List(database) => {
            let store = open(&Settings::from_database_args(&database)).await?;
            list(store.as_ref()).await
        }
        TokenCommand::Revoke(args) => {
            let store = open(&Settings::from_database_args(&args.database)).await?;
            let token = store.find_token(&args.token).await?;
            let token = store
                .revoke_token(&Actor::system(CLI_ACTOR), token.id)
                .await?;
            println!("revoked {}", describe(&token));
            Ok(())
        }
    }
}

async fn open(
    settings: &Result<Settings, crate::domain::InvalidInput>,
) -> Result<Arc<Store>, CommandError> {
    let settings = settings
        .as_ref()
        .map_err(|e| CommandError::Invalid(e.0.clone()))?;
    Ok(store::open(&settings.location).await?)
}

async fn create(args: TokenCreateArgs) -> Result<(), CommandError> {
    let new = NewToken {
        name: args.name,
        scopes: args.scopes,
        source_system: args.source,
        read_scope: args.read_scope,
        expires_at: args.expires,
    };
    new.validate(chrono::Utc::now())
        .map_err(|e| CommandError::Invalid(e.0))?;
    let store = open(&Settings::from_database_args(&args.database)).await?;
    let secret = Secret::generate()
        .map_err(|e| CommandError::Invalid(format!("no randomness for a token: {e}")))?;
    let token = store
        .create_token(&Actor::system(CLI_ACTOR), &new, &secret.hash())
        .await?;
    println!("created {}", describe(&token));
    println!("secret (shown only now): {}", secret.expose());
    Ok(())
}

async fn list(store: &Store) -> Result<(), CommandError> {
    let mut page = PageRequest {
        after: None,
        limit: 1000,
    };
    loop {
        let tokens = store.list_tokens(&page).await?;
        for token in &tokens {
            println!("{}", describe(token));
        }
        match tokens.last() {
            Some(last) if tokens.len() as i64 >= page.fetch() => page.after = Some(last.id),
            _ => return Ok(()),
        }
    }
}

fn describe(token: &Token) -> String {
    let scopes: Vec<&str> = token.scopes.iter().map(|s| s.name()).collect();
    let state = match (token.revoked_at, token.expires_at) {
        (Some(at), _) => format!("revoked {at}"),
        (None, Some(at)) => format!("expires {at}"),
        (None, None) => "no expiry".to_owned(),
    };
    format!(
        "{} {:?} scopes={} source={} reads={} {state}",
        token.id,
        token.name,
        scopes.join(","),
        token.source_system.as_deref().unwrap_or("*"),
        token.read_scope.name(),
    )
}
