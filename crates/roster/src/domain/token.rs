//! API tokens: random bearer secrets stored only as a SHA-256 hash, with scopes, an optional
//! source-system binding and an optional expiry.

use super::InvalidInput;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

/// What a token may do. `admin` includes every other scope; the others are independent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every GET.
    Read,
    /// Resources, memberships and operations.
    Write,
    /// Tokens, the audit trail, approving pending operations, purge.
    Admin,
    /// The SCIM endpoints.
    Scim,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Self::Read, Self::Write, Self::Admin, Self::Scim];

    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
            Self::Scim => "scim",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What a token bound to a source system reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadScope {
    /// Every source's data: the default, and what every token read before the option existed.
    #[default]
    All,
    /// Only the data of its own source system; needs a `source_system`.
    Bound,
}

impl ReadScope {
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Bound => "bound",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::All, Self::Bound]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Token {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// When set, the token may write only this source system's data.
    pub source_system: Option<String>,
    /// `bound`: the token also reads only its source system's data; `all`: every source's.
    pub read_scope: ReadScope,
    pub expires_at: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A request to create a token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A key of at most 200 characters.
    #[schema(max_length = 200)]
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub source_system: Option<String>,
    /// `all` (the default) reads every source's data; `bound` only that of `source_system`.
    #[serde(default)]
    pub read_scope: ReadScope,
    #[serde(default, deserialize_with = "super::time::optional")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

impl NewToken {
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), InvalidInput> {
        super::resource::check_key("name", &self.name)?;
        if self.name.chars().count() > MAX_NAME_CHARS {
            return Err(InvalidInput::new(format!(
                "name must be at most {MAX_NAME_CHARS} characters"
            )));
        }
        if self.scopes.is_empty() {
            return Err(InvalidInput::new(
                "scopes must name at least one of read, write, admin, scim",
            ));
        }
        if let Some(source) = &self.source_system {
            super::resource::check_key("source_system", source)?;
            if self.scopes.contains(&Scope::Admin) {
                return Err(InvalidInput::new(
                    "an admin token cannot be bound to a source system: admin acts across \
                     sources (tokens, approvals, subscriptions, purge); bind a token of the \
                     read, write or scim scopes instead",
                ));
            }
        }
        if self.read_scope == ReadScope::Bound && self.source_system.is_none() {
            return Err(InvalidInput::new(
                "read_scope \"bound\" limits reads to the token's source system: it needs a \
                 source_system",
            ));
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(InvalidInput::new("expires_at must be in the future"));
        }
        Ok(())
    }
}

impl NewToken {
    /// What the audit trail records of a new token: everything that limits it, never a secret.
    pub fn audit_detail(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "scopes": self.scopes,
            "source_system": self.source_system,
            "read_scope": self.read_scope,
            "expires_at": self.expires_at,
        })
    }
}

/// A token secret as shown once to its creator.
pub struct Secret(String);

/// The prefix of every roster token, so secret scanners can recognise leaked ones.
pub const SECRET_PREFIX: &str = "roster_";
/// Shortest secret accepted from `ROSTER_BOOTSTRAP_TOKEN`.
pub const MIN_SECRET_LEN: usize = 32;

impl Secret {
    /// A new secret: 256 random bits from the operating system.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(format!(
            "{SECRET_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// A secret chosen by an operator (for automation); it must be long enough to resist guessing.
    pub fn chosen(value: String) -> Result<Self, InvalidInput> {
        if value.len() < MIN_SECRET_LEN
            || value.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidInput::new(format!(
                "a chosen token must be at least {MIN_SECRET_LEN} characters without spaces"
            )));
        }
        Ok(Self(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

/// The SHA-256 of a secret: what the database stores. A fast hash is right for 256-bit random
/// secrets, which no dictionary holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretHash(pub Vec<u8>);

impl SecretHash {
    pub fn of(presented: &str) -> Self {
        Self(Sha256::digest(presented.as_bytes()).to_vec())
    }

    /// Compares in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        self.0.ct_eq(stored).into()
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub token_id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub source_system: Option<String>,
    pub read_scope: ReadScope,
}

impl Principal {
    /// Whether the token grants `scope`. `admin` includes every scope, and is granted only to a
    /// token bound to no source: a bound token holding it (created before roster refused such
    /// tokens) gets its other scopes only.
    pub fn has(&self, scope: Scope) -> bool {
        let admin = self.scopes.contains(&Scope::Admin) && self.source_system.is_none();
        admin || (scope != Scope::Admin && self.scopes.contains(&scope))
    }

    /// Whether the token may write data of `source_system`.
    pub fn check_source(&self, source_system: &str) -> Result<(), String> {
        match &self.source_system {
            Some(bound) if bound != source_system => Err(format!(
                "token {:?} is bound to source system {bound:?} and may not change data of source system {source_system:?}",
                self.name
            )),
            _ => Ok(()),
        }
    }

    /// Whether a token bound to `bound` (or to none) may change a membership between `group`
    /// and `member`: both ends must be data of its source system.
    pub fn check_membership_sources(
        bound: Option<&str>,
        group: &super::resource::Resource,
        member: &super::resource::Resource,
    ) -> Result<(), String> {
        let Some(bound) = bound else { return Ok(()) };
        for (what, source) in [
            ("group", &group.source_system),
            ("member", &member.source_system),
        ] {
            if source != bound {
                return Err(format!(
                    "the token is bound to source system {bound:?} and may not change memberships \
                     with a {what} of source system {source:?}"
                ));
            }
        }
        Ok(())
    }

    /// The one source system whose data the token reads: its binding when its reads are bound
    /// (`read_scope: bound`); none when it reads every source. Every read that could show
    /// another source's data asks this.
    pub fn read_source(&self) -> Option<&str> {
        match self.read_scope {
            ReadScope::Bound => self.source_system.as_deref(),
            ReadScope::All => None,
        }
    }

    /// Why a read is refused: `what` is outside the token's read binding.
    pub fn read_refusal(&self, what: &str) -> String {
        format!(
            "token {:?} is bound to source system {:?} for reads too (read_scope \"bound\"), and \
             {what}",
            self.name,
            self.read_source().unwrap_or_default()
        )
    }
}

/// Who is writing, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub token_id: Option<Uuid>,
    pub token_name: String,
    pub request_id: Option<String>,
}

impl Actor {
    /// The actor of writes made by roster itself or from its command line.
    pub fn system(name: &str) -> Self {
        Self {
            token_id: None,
            token_name: name.to_owned(),
            request_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_long_random_and_prefixed() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert!(a.expose().len() >= 40);
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn a_bound_token_changes_memberships_within_its_source_only() {
        let of = |source: &str| crate::domain::resource::Resource {
            source_system: source.into(),
            ..crate::domain::resource::tests::sample()
        };
        let (home, away) = (of("home"), of("away"));
        assert!(Principal::check_membership_sources(None, &home, &away).is_ok());
        assert!(Principal::check_membership_sources(Some("home"), &home, &home).is_ok());
        let err = Principal::check_membership_sources(Some("home"), &home, &away).unwrap_err();
        assert!(err.contains("member of source system \"away\""), "{err}");
        let err = Principal::check_membership_sources(Some("home"), &away, &home).unwrap_err();
        assert!(err.contains("group of source system \"away\""), "{err}");
    }

    #[test]
    fn hash_matches_only_its_secret() {
        let s = Secret::generate().unwrap();
        assert!(s.hash().matches(&SecretHash::of(s.expose()).0));
        assert!(!s.hash().matches(&SecretHash::of("other").0));
    }

    #[test]
    fn admin_includes_every_scope_and_others_are_independent() {
        let p = |scopes: Vec<Scope>| Principal {
            token_id: Uuid::nil(),
            name: "t".into(),
            scopes,
            source_system: None,
            read_scope: ReadScope::All,
        };
        assert!(Scope::ALL.iter().all(|s| p(vec![Scope::Admin]).has(*s)));
        assert!(!p(vec![Scope::Write]).has(Scope::Read));
        assert!(!p(vec![Scope::Read]).has(Scope::Write));
    }

    #[test]
    fn a_bound_token_is_never_admin() {
        let bound = Principal {
            token_id: Uuid::nil(),
            name: "t".into(),
            scopes: vec![Scope::Admin, Scope::Read],
            source_system: Some("foo".into()),
            read_scope: ReadScope::All,
        };
        assert!(!bound.has(Scope::Admin));
        assert!(!bound.has(Scope::Write));
        assert!(bound.has(Scope::Read));
        let new = NewToken {
            name: "t".into(),
            scopes: vec![Scope::Admin],
            source_system: Some("foo".into()),
            read_scope: ReadScope::All,
            expires_at: None,
        };
        assert!(new.validate(Utc::now()).is_err());
    }

    #[test]
    fn bound_tokens_write_only_their_source() {
        let p = Principal {
            token_id: Uuid::nil(),
            name: "foo-connector".into(),
            scopes: vec![Scope::Write],
            source_system: Some("foo".into()),
            read_scope: ReadScope::All,
        };
        assert!(p.check_source("foo").is_ok());
        let err = p.check_source("bar").unwrap_err();
        assert!(err.contains("\"foo\"") && err.contains("\"bar\""));
    }

    #[test]
    fn only_a_token_whose_reads_are_bound_has_a_read_source() {
        let p = |source: Option<&str>, read_scope| Principal {
            token_id: Uuid::nil(),
            name: "t".into(),
            scopes: vec![Scope::Read],
            source_system: source.map(str::to_owned),
            read_scope,
        };
        assert_eq!(p(Some("foo"), ReadScope::Bound).read_source(), Some("foo"));
        assert_eq!(p(Some("foo"), ReadScope::All).read_source(), None);
        assert_eq!(p(None, ReadScope::Bound).read_source(), None);
        let new = |source: Option<&str>| NewToken {
            name: "t".into(),
            scopes: vec![Scope::Read],
            source_system: source.map(str::to_owned),
            read_scope: ReadScope::Bound,
            expires_at: None,
        };
        assert!(new(None).validate(Utc::now()).is_err());
        assert!(new(Some("foo")).validate(Utc::now()).is_ok());
    }

    #[test]
    fn chosen_secrets_must_be_long() {
        assert!(Secret::chosen("short".into()).is_err());
        assert!(Secret::chosen("x".repeat(32)).is_ok());
    }
}
