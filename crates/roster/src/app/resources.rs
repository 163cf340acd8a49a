//! Resources: create, update, propagate to a cohort, soft-delete and restore, each checked
//! against the caller's source binding.

use super::{lifecycle, App, AppError, Caller};
use crate::domain::lifecycle::Propagation;
use crate::domain::resource::{NewResource, Resource, ResourcePatch};
use crate::domain::ResourceId;
use crate::store::Deletion;

/// Creates a resource of a source the caller may write.
pub async fn create(
    app: App<'_>,
    caller: &Caller,
    new: &NewResource,
) -> Result<Resource, AppError> {
    new.validate()?;
    caller.check_source(&new.source_system)?;
    Ok(app.store.create_resource(&caller.actor(), new).await?)
}

/// Updates some attributes of a resource the caller may write; a source-bound token may not
/// re-activate an account roster deactivated.
pub async fn update(
    app: App<'_>,
    caller: &Caller,
    id: ResourceId,
    patch: &ResourcePatch,
) -> Result<Resource, AppError> {
    check_owner(app, caller, id).await?;
    if patch.active == Some(true) {
        lifecycle::check_reactivation(app, caller, id).await?;
    }
    let policy = &app.settings.lifecycle;
    Ok(app
        .store
        .update_resource(&caller.actor(), id, patch, policy)
        .await?)
}

/// Applies the persona attributes of a patch to every account of the account's cohort, as one
/// operation; that spans sources, so it needs a token bound to none.
pub async fn propagate(
    app: App<'_>,
    caller: &Caller,
    id: ResourceId,
    patch: &ResourcePatch,
) -> Result<Propagation, AppError> {
    caller.check_unbound("propagating to a cohort")?;
    Ok(app.store.propagate(&caller.actor(), id, patch).await?)
}

/// Soft-deletes a resource the caller may write and ends its memberships, as one operation.
pub async fn delete(app: App<'_>, caller: &Caller, id: ResourceId) -> Result<Deletion, AppError> {
    check_owner(app, caller, id).await?;
    let policy = &app.settings.lifecycle;
    Ok(app
        .store
        .delete_resource(&caller.actor(), id, policy)
        .await?)
}

/// Restores a soft-deleted resource the caller may write.
pub async fn restore(app: App<'_>, caller: &Caller, id: ResourceId) -> Result<Resource, AppError> {
    check_owner(app, caller, id).await?;
    Ok(app.store.restore_resource(&caller.actor(), id).await?)
}

/// Refuses a write to a resource of another source than the caller's token is bound to.
pub async fn check_owner(app: App<'_>, caller: &Caller, id: ResourceId) -> Result<(), AppError> {
    if caller.principal.source_system.is_some() {
        let resource = app.store.get_resource(id).await?;
        caller.check_source(&resource.source_system)?;
    }
    Ok(())
}

/// Refuses a read of a resource of another source than the caller's reads are bound to.
pub async fn check_readable(app: App<'_>, caller: &Caller, id: ResourceId) -> Result<(), AppError> {
    if caller.read_source().is_some() {
        let resource = app.store.get_resource(id).await?;
        caller.check_read(&resource.source_system, &another_source(id))?;
    }
    Ok(())
}

/// A resource the caller may read.
pub async fn readable(app: App<'_>, caller: &Caller, id: ResourceId) -> Result<Resource, AppError> {
    let resource = app.store.get_resource(id).await?;
    caller.check_read(&resource.source_system, &another_source(id))?;
    Ok(resource)
}

/// What a refused read of resource `id` names: not which source it is of.
fn another_source(id: ResourceId) -> String {
    format!("resource {id} is of another source system")
}
