//! SCIM writes: the same rules as the REST API's (a source-bound token may not re-activate an
//! account roster deactivated), and SCIM's own: a push of all of a group's members is a
//! full-update of the group, held past the deletion threshold, except that emptying a small
//! group is an edit.

use super::{lifecycle, operations, App, AppError, Caller};
use crate::domain::full_update::MemberLine;
use crate::domain::operation::{OperationStatus, Target};
use crate::domain::operation_request::NewFullUpdate;
use crate::domain::scim::{MemberEdit, ScimRecord, ScimWrite};
use crate::domain::ResourceId;
use std::collections::HashSet;

/// How long a replace of all members waits for its full-update before answering.
const REPLACE_WAIT_SECONDS: u64 = 25;

/// Creates a user or group (with its members) of the write's source.
pub async fn create(
    app: App<'_>,
    caller: &Caller,
    write: &ScimWrite,
    members: &[ResourceId],
) -> Result<ScimRecord, AppError> {
    caller.check_source(&write.source_system)?;
    Ok(app
        .store
        .scim_create(&caller.actor(), write, members)
        .await?)
}

/// Creates users and groups (without members) in one transaction, each refused on its own (a
/// Bulk's run of creates); an error of the whole means none was created.
pub async fn create_all(
    app: App<'_>,
    caller: &Caller,
    writes: &[ScimWrite],
) -> Result<Vec<Result<ScimRecord, AppError>>, AppError> {
    for write in writes {
        caller.check_source(&write.source_system)?;
    }
    let created = app.store.scim_create_all(&caller.actor(), writes).await?;
    Ok(created
        .into_iter()
        .map(|c| c.map_err(AppError::from))
        .collect())
}

/// Replaces a record's attributes and, when `members` are given, all of a group's members. A
/// push of the members that is held (or fails) answers before any attribute is written.
pub async fn replace(
    app: App<'_>,
    caller: &Caller,
    record: &ScimRecord,
    write: &ScimWrite,
    members: Option<Vec<ResourceId>>,
) -> Result<(), AppError> {
    caller.check_source(&record.resource.source_system)?;
    if let Some(members) = members {
        replace_members(app, caller, record, members).await?;
    }
    write_record(app, caller, record, write, &MemberEdit::default()).await
}

/// What a PATCH of a group asks for.
#[derive(Debug, Default)]
pub struct GroupPatch {
    /// All of the group's members, replaced.
    pub replace: Option<Vec<ResourceId>>,
    /// The group's attributes after the patch, when it changes any.
    pub attributes: Option<ScimWrite>,
    /// Members added and removed.
    pub edit: MemberEdit,
    /// Whether the client asked for the record's version to be checked (`If-Match`).
    pub versioned: bool,
}

/// Applies a PATCH of a group: the replace of its members first (a held one answers before
/// anything else is written), then its attributes and member edits.
pub async fn patch_group(
    app: App<'_>,
    caller: &Caller,
    record: &ScimRecord,
    patch: GroupPatch,
) -> Result<(), AppError> {
    caller.check_source(&record.resource.source_system)?;
    if let Some(members) = patch.replace {
        replace_members(app, caller, record, members).await?;
    }
    if let Some(write) = &patch.attributes {
        return write_record(app, caller, record, write, &patch.edit).await;
    }
    if patch.edit.is_empty() {
        return Ok(());
    }
    // Member edits commute, so they are checked against a version only when asked to be.
    let expected = patch.versioned.then_some(record.resource.modified);
    let group = &record.resource;
    Ok(app
        .store
        .scim_edit_members(
            &caller.actor(),
            &group.source_system,
            group.id,
            &patch.edit,
            expected,
        )
        .await?)
}

/// Writes new attributes over a stored record (and edits a group's members), unless it changed
/// since it was read. A source-bound token may not re-activate an account roster deactivated.
pub async fn write_record(
    app: App<'_>,
    caller: &Caller,
    record: &ScimRecord,
    write: &ScimWrite,
    edit: &MemberEdit,
) -> Result<(), AppError> {
    caller.check_source(&record.resource.source_system)?;
    if write.active == Some(true) {
        lifecycle::refuse_reactivation(caller, &record.resource)?;
    }
    Ok(app
        .store
        .scim_replace(
            &caller.actor(),
            record.resource.id,
            write,
            edit,
            Some(record.resource.modified),
            &app.settings.lifecycle,
        )
        .await?)
}

/// Soft-deletes a user or group and ends its memberships.
pub async fn delete(app: App<'_>, caller: &Caller, record: &ScimRecord) -> Result<(), AppError> {
    caller.check_source(&record.resource.source_system)?;
    app.store
        .delete_resource(&caller.actor(), record.resource.id, &app.settings.lifecycle)
        .await?;
    Ok(())
}

/// A full push of a group's members: a full-update of the group, with its deletion threshold.
/// The members the group's document does not list (of other sources) are not the client's to
/// replace: the full-update confirms them. Anything but an applied full-update is an error.
async fn replace_members(
    app: App<'_>,
    caller: &Caller,
    group: &ScimRecord,
    members: Vec<ResourceId>,
) -> Result<(), AppError> {
    let (source, id) = (&group.resource.source_system, group.resource.id);
    if members.is_empty() {
        // Emptying a group below the threshold's size is an explicit edit, not a broken push:
        // it removes the members one edit names. A larger group goes through the full-update,
        // and its threshold holds it.
        let small = app.settings.threshold.min_group_size;
        let current = app.store.scim_members(id, small).await?;
        if (current.len() as i64) < small {
            let edit = MemberEdit {
                add: Vec::new(),
                remove: current.into_iter().map(|(member, _, _)| member).collect(),
            };
            app.store
                .scim_edit_members(&caller.actor(), source, id, &edit, None)
                .await?;
            return Ok(());
        }
    }
    app.store.scim_check_members(source, id, &members).await?;
    let named: HashSet<&ResourceId> = members.iter().collect();
    let hidden = app.store.scim_hidden_members(id).await?;
    let lines = members
        .iter()
        .chain(hidden.iter().filter(|h| !named.contains(h)))
        .map(|member| MemberLine {
            member_id: Some(*member),
            ..MemberLine::default()
        })
        .collect();
    let request = NewFullUpdate {
        target: Target::Memberships,
        description: Some("SCIM replace of members".to_owned()),
        group_id: Some(id),
        members: Some(lines),
        complete: true,
        ..NewFullUpdate::default()
    };
    let op = operations::full_update(app, caller, request, Some(REPLACE_WAIT_SECONDS)).await?;
    match op.status {
        OperationStatus::Complete => Ok(()),
        _ => Err(AppError::MembersNotReplaced(Box::new(op))),
    }
}
