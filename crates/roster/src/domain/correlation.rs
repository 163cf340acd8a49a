//! Correlation: rules that propose cohort links from attributes, and the situation each account
//! ends in when a rule runs (as midPoint names them).

use super::{InvalidInput, ResourceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// How an identifier is normalised before it is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// Compare identifiers case-insensitively.
    Lowercase,
    /// An Entra B2B guest's UPN `alias_home.com#EXT#@tenant.onmicrosoft.com` becomes
    /// `alias@home.com` (then lowercase); other identifiers are only lowercased.
    EntraB2b,
}

impl Normalize {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lowercase => "lowercase",
            Self::EntraB2b => "entra-b2b",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Lowercase, Self::EntraB2b]
            .into_iter()
            .find(|n| n.name() == name)
    }

    pub fn apply(self, identifier: &str) -> String {
        let lower = identifier.to_lowercase();
        if self == Self::Lowercase {
            return lower;
        }
        let Some(at) = lower.find("#ext#") else {
            return lower;
        };
        let local = &lower[..at];
        match local.rfind('_') {
            Some(underscore) => format!("{}@{}", &local[..underscore], &local[underscore + 1..]),
            None => local.to_owned(),
        }
    }
}

/// A stored rule: accounts of `source_system` whose normalised identifier equals the lowercased
/// identifier of exactly one account of `target_source_system` join that account's cohort.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CorrelationRule {
    pub id: uuid::Uuid,
    pub name: String,
    pub source_system: String,
    pub target_source_system: String,
    pub normalize: Normalize,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// Body of `POST /api/v1/correlation/rules` and `PUT …/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    pub name: String,
    /// The accounts to correlate (say, a tenant's guests).
    pub source_system: String,
    /// Where their home accounts are.
    pub target_source_system: String,
    pub normalize: Normalize,
}

impl RuleRequest {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        for (field, value) in [
            ("name", &self.name),
            ("source_system", &self.source_system),
            ("target_source_system", &self.target_source_system),
        ] {
            super::resource::check_key(field, value)?;
        }
        if self.source_system == self.target_source_system {
            return Err(InvalidInput::new(
                "source_system and target_source_system must differ",
            ));
        }
        Ok(())
    }
}

/// Body of `POST /api/v1/correlation/runs`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub rule_id: uuid::Uuid,
}

/// Where a correlation run left an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Situation {
    /// Exactly one candidate: linked to its cohort.
    Linked,
    /// No candidate.
    Unmatched,
    /// Two or more candidates: never linked automatically; a person decides.
    Disputed,
    /// Linked already (or linked or unlinked by hand, which wins over rules): left alone.
    AlreadyLinked,
}

impl Situation {
    pub const ALL: [Situation; 4] = [
        Self::Linked,
        Self::Unmatched,
        Self::Disputed,
        Self::AlreadyLinked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Linked => "linked",
            Self::Unmatched => "unmatched",
            Self::Disputed => "disputed",
            Self::AlreadyLinked => "already-linked",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One account's outcome in a correlation run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CorrelationCase {
    pub operation_id: i64,
    pub account_id: ResourceId,
    pub situation: Situation,
    /// The cohort prime the account is linked to, if any.
    pub prime_id: Option<ResourceId>,
    /// The target accounts that matched.
    pub candidates: Vec<ResourceId>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CaseParams {
    /// Only this situation (say `disputed` or `unmatched`).
    pub situation: Option<Situation>,
    /// The run (default: the latest correlation run).
    pub operation_id: Option<i64>,
}

/// An account to correlate: id, identifier, cohort prime, pinned by hand.
pub type Account = (uuid::Uuid, Option<String>, Option<uuid::Uuid>, bool);
/// A target account: id, identifier, cohort prime, pinned by hand.
pub type Target = (uuid::Uuid, Option<String>, Option<uuid::Uuid>, bool);

/// What a run decides for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub account: uuid::Uuid,
    pub situation: Situation,
    /// For `Linked`: the target account whose cohort the account joins.
    pub target: Option<uuid::Uuid>,
    pub candidates: Vec<uuid::Uuid>,
}

/// Decides each account's situation under `normalize`, against the target accounts.
pub fn decide(normalize: Normalize, accounts: &[Account], targets: &[Target]) -> Vec<Decision> {
    let mut by_key: HashMap<String, Vec<uuid::Uuid>> = HashMap::new();
    for (id, identifier, _, _) in targets {
        if let Some(identifier) = identifier {
            by_key
                .entry(identifier.to_lowercase())
                .or_default()
                .push(*id);
        }
    }
    accounts
        .iter()
        .map(|(id, identifier, prime, pinned)| {
            let candidates = identifier
                .as_deref()
                .and_then(|i| by_key.get(&normalize.apply(i)))
                .cloned()
                .unwrap_or_default();
            let situation = match (prime.is_some() || *pinned, candidates.len()) {
                (true, _) => Situation::AlreadyLinked,
                (false, 0) => Situation::Unmatched,
                (false, 1) => Situation::Linked,
                (false, _) => Situation::Disputed,
            };
            Decision {
                account: *id,
                situation,
                target: (situation == Situation::Linked).then(|| candidates[0]),
                candidates,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_b2b_guests_normalise_to_their_home_upn() {
        let n = Normalize::EntraB2b;
        assert_eq!(
            n.apply("Sean.One_home.com#EXT#@foo.onmicrosoft.com"),
            "sean.one@home.com"
        );
        assert_eq!(
            n.apply("first_last_home.com#EXT#@foo"),
            "first_last@home.com"
        );
        assert_eq!(n.apply("Native@Home.com"), "native@home.com");
        assert_eq!(Normalize::Lowercase.apply("A_b#EXT#@x"), "a_b#ext#@x");
    }

    #[test]
    fn two_candidates_dispute_and_linked_accounts_stay() {
        let (g1, g2, g3, h1, h2) = (
            uuid::Uuid::from_u128(1),
            uuid::Uuid::from_u128(2),
            uuid::Uuid::from_u128(3),
            uuid::Uuid::from_u128(11),
            uuid::Uuid::from_u128(12),
        );
        let accounts = vec![
            (g1, Some("a_home#EXT#@foo".to_owned()), None, false),
            (g2, Some("b_home#EXT#@foo".to_owned()), None, false),
            (g3, Some("a_home#EXT#@foo".to_owned()), Some(h1), false),
        ];
        let targets = vec![
            (h1, Some("A@home".to_owned()), None, false),
            (h2, Some("a@HOME".to_owned()), None, false),
        ];
        let d = decide(Normalize::EntraB2b, &accounts, &targets);
        assert_eq!(d[0].situation, Situation::Disputed);
        assert_eq!(d[0].target, None);
        assert_eq!(d[1].situation, Situation::Unmatched);
        assert_eq!(d[2].situation, Situation::AlreadyLinked);
    }
}
