//! Identity lifecycle: deactivate or activate the accounts of an identity, a cohort or one
//! account; the rule that a source may not undo roster's deactivation; a source's settings.

use super::{resources, App, AppError, Caller};
use crate::domain::lifecycle::{
    Action, ActionRequest, ActionResult, ActionScope, Source, SourceRequest,
};
use crate::domain::resource::Resource;
use crate::domain::ResourceId;

/// Deactivates (`active` false) or activates the accounts of the scope starting at `id`, as one
/// operation. A source-bound token acts on one account of its source only, and may not
/// re-activate one roster deactivated.
pub async fn act(
    app: App<'_>,
    caller: &Caller,
    id: ResourceId,
    request: ActionRequest,
    active: bool,
) -> Result<ActionResult, AppError> {
    if request.scope == ActionScope::Account {
        resources::check_owner(app, caller, id).await?;
        if active {
            check_reactivation(app, caller, id).await?;
        }
    } else {
        caller.check_unbound("an identity or cohort action")?;
    }
    let action = Action::from_request(id, request, active)?;
    let (operation, accounts) = app
        .store
        .act(&caller.actor(), &action, &app.settings.lifecycle)
        .await?;
    crate::telemetry::operation_ended(&operation);
    Ok(ActionResult {
        operation,
        accounts,
    })
}

/// Refuses a source-bound token the activation of account `id` if roster deactivated it.
pub async fn check_reactivation(
    app: App<'_>,
    caller: &Caller,
    id: ResourceId,
) -> Result<(), AppError> {
    if caller.principal.source_system.is_none() {
        return Ok(());
    }
    refuse_reactivation(caller, &app.store.get_resource(id).await?)
}

/// Refuses a source-bound token the activation of an account roster deactivated (an HR
/// termination, an expiry, an action): a person decides that, with a token bound to no source.
pub fn refuse_reactivation(caller: &Caller, account: &Resource) -> Result<(), AppError> {
    if caller.principal.source_system.is_none() {
        return Ok(());
    }
    match &account.deactivation_reason {
        Some(reason) if !account.active => Err(AppError::Forbidden(format!(
            "account {} was deactivated by roster ({reason}); a token bound to a source system \
             cannot activate it: a person does, with a token bound to none",
            account.id
        ))),
        _ => Ok(()),
    }
}

/// Stores a source system's settings; marking a lifecycle authority spans sources, so it needs a
/// token bound to none.
pub async fn put_source(
    app: App<'_>,
    caller: &Caller,
    source_system: &str,
    request: &SourceRequest,
) -> Result<Source, AppError> {
    caller.check_unbound("marking a lifecycle authority")?;
    crate::domain::resource::check_optional_key("source_system", Some(source_system))?;
    Ok(app
        .store
        .put_source(&caller.actor(), source_system, request)
        .await?)
}
