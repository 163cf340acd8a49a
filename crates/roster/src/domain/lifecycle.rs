//! Identity lifecycle: roster acting on people. Global actions reach every account of an identity
//! (an HR termination), cohort-local ones one persona's accounts (a rename); contractors'
//! accounts expire. Each action is one operation over the accounts one root resolution finds.

use super::operation::Operation;
use super::resource::{check_optional_key, ResourcePatch};
use super::{InvalidInput, ResourceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The reason roster records when a lifecycle authority's record ends an identity.
pub const HR_TERMINATED: &str = "hr-terminated";
/// The reason the expiry sweeper records.
pub const EXPIRED: &str = "expired";
/// Accounts one deactivation may change before it waits for approval.
pub const DEFAULT_THRESHOLD: i64 = 50;

/// How far an action reaches from the resource it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionScope {
    /// Every account under the root prime: the person.
    Identity,
    /// The accounts of the resource's cohort prime: one persona.
    Cohort,
    /// The account alone.
    Account,
}

impl ActionScope {
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Cohort => "cohort",
            Self::Account => "account",
        }
    }
}

/// Body of `POST /api/v1/resources/{id}/actions/activate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub scope: ActionScope,
    /// Why, if you say.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Body of `POST /api/v1/resources/{id}/actions/deactivate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeactivateRequest {
    pub scope: ActionScope,
    /// Why: kept on each deactivated account (`deactivation_reason`) and named by sync plans.
    #[serde(default)]
    #[schema(required = true, nullable = false)]
    pub reason: Option<String>,
}

impl From<DeactivateRequest> for ActionRequest {
    fn from(request: DeactivateRequest) -> Self {
        Self {
            scope: request.scope,
            reason: request.reason,
        }
    }
}

/// An action to carry out; kept as the operation's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub resource_id: ResourceId,
    pub scope: ActionScope,
    /// The state the accounts end in.
    pub active: bool,
    pub reason: Option<String>,
}

impl Action {
    /// The action a request asks for on resource `id`: `active` is where the accounts end.
    pub fn from_request(
        id: ResourceId,
        request: ActionRequest,
        active: bool,
    ) -> Result<Self, InvalidInput> {
        let reason = request.reason;
        check_optional_key("reason", reason.as_deref())?;
        if !active && reason.is_none() {
            return Err(InvalidInput::new(
                "reason is required to deactivate: say why (it is kept on each account and \
                 named by sync plans)",
            ));
        }
        Ok(Self {
            resource_id: id,
            scope: request.scope,
            active,
            reason,
        })
    }
}

/// Settings of the lifecycle rules that come from the server's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A deactivation of more accounts than this waits for approval.
    pub threshold: i64,
}

impl Policy {
    /// Why an action that would set `planned` accounts to `active` waits for approval, if it
    /// does: a deactivation of more accounts than the threshold.
    pub fn hold_reason(&self, active: bool, planned: usize) -> Option<String> {
        (!active && i64::try_from(planned).unwrap_or(i64::MAX) > self.threshold).then(|| {
            format!(
                "would deactivate {planned} accounts, more than the threshold of {}: the \
                 operation's preview lists them; an admin approves or rejects",
                self.threshold
            )
        })
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

/// What an action did (or, pending, would do).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionResult {
    pub operation: Operation,
    /// The accounts it changed; while pending, the accounts it would change.
    pub accounts: Vec<ResourceId>,
}

/// Body of `PUT /api/v1/sources/{source_system}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRequest {
    /// The source is an HR system: when one of its records linked under a root prime is
    /// soft-deleted or deactivated, roster deactivates the whole identity (`hr-terminated`).
    pub lifecycle_authority: bool,
}

/// What roster knows about a source system.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Source {
    pub source_system: String,
    pub lifecycle_authority: bool,
    /// When the settings last changed; null for a source never configured.
    pub modified: Option<DateTime<Utc>>,
}

/// `propagate` of `PATCH /api/v1/resources/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Propagate {
    /// Every account of the resource's cohort.
    Cohort,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PatchParams {
    /// `cohort`: apply the persona attributes to every account of the cohort, as one operation.
    #[param(inline)]
    pub propagate: Option<Propagate>,
}

/// Refuses a patch to propagate that names more than persona attributes.
pub fn check_persona_patch(patch: &ResourcePatch) -> Result<(), InvalidInput> {
    // Taken apart whole, so that a new attribute cannot propagate before it is classed here.
    let ResourcePatch {
        subtype,
        identifier,
        external_id,
        displayname: _,
        description: _,
        notes: _,
        tags: _,
        active,
        expires_at,
    } = patch;
    let account_only = [
        ("subtype", subtype.is_some()),
        ("identifier", identifier.is_some()),
        ("external_id", external_id.is_some()),
        ("active", active.is_some()),
        ("expires_at", expires_at.is_some()),
    ];
    let named: Vec<&str> = account_only
        .iter()
        .filter(|(_, given)| *given)
        .map(|(name, _)| *name)
        .collect();
    if !named.is_empty() {
        return Err(InvalidInput::new(format!(
            "propagate=cohort carries the persona attributes displayname, description, notes and \
             tags; {} belong to one account (patch it without propagate, or use the activate and \
             deactivate actions)",
            named.join(", ")
        )));
    }
    Ok(())
}

/// What a propagated patch did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Propagation {
    /// The patched account as it is now.
    pub resource: super::resource::Resource,
    pub operation: Operation,
    /// The cohort's accounts the patch changed.
    pub accounts: Vec<ResourceId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_deactivation_past_the_threshold_is_held() {
        let policy = Policy { threshold: 50 };
        assert_eq!(policy.hold_reason(false, 50), None);
        let reason = policy.hold_reason(false, 51).expect("held");
        assert!(reason.contains("51") && reason.contains("50"), "{reason}");
        assert_eq!(policy.hold_reason(true, 10_000), None);
    }

    #[test]
    fn deactivation_needs_a_reason_activation_does_not() {
        let id = ResourceId::generate();
        let ask = |reason: Option<&str>| ActionRequest {
            scope: ActionScope::Identity,
            reason: reason.map(str::to_owned),
        };
        assert!(Action::from_request(id, ask(None), false).is_err());
        assert!(Action::from_request(id, ask(Some("  ")), false).is_err());
        assert!(Action::from_request(id, ask(Some("left")), false).is_ok());
        assert!(Action::from_request(id, ask(None), true).is_ok());
    }

    #[test]
    fn only_persona_attributes_propagate() {
        let persona: ResourcePatch =
            serde_json::from_str(r#"{"displayname": "Sean", "tags": ["a"]}"#).unwrap();
        assert!(check_persona_patch(&persona).is_ok());
        let account: ResourcePatch =
            serde_json::from_str(r#"{"displayname": "Sean", "identifier": "x"}"#).unwrap();
        let err = check_persona_patch(&account).unwrap_err();
        assert!(err.0.contains("identifier"), "{err}");
    }
}
