//! Operations: create one (full-update, partial-update, delete, reconcile, purge), upload a
//! full-update's chunks and complete it, preview, cancel, approve or reject it, and wait for it.

use super::{resources, App, AppError, Caller};
use crate::domain::full_update::{
    LineError, MemberLine, PreviewAction, PreviewEntry, Threshold, ThresholdOverride,
};
use crate::domain::operation::{
    FullUpdateParams, Gc, OnError, Operation, OperationPhase, OperationType, Scope, Target,
};
use crate::domain::operation_request::{
    ChangeAction, NewFullUpdate, NewOperation, NewPartialUpdate, NewPurge, NewReconcile,
};
use crate::domain::page::{ListKind, Page, PageRequest};
use crate::domain::resource::{Resource, ResourceType};
use crate::domain::resource_sync::{ResourceLine, ResourcePreviewEntry, ResourceScope};
use crate::domain::token::Scope as TokenScope;
use crate::domain::{OperationId, ResourceId};
use crate::ops::upload::{self, LineErrors, UploadBody, UploadLine};
use crate::store::{ChunkReceipt, FullUpdateDraft, MembershipEdit, StagedBatch, StoreError};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// Creates an operation. A full-update starts uploading (unless its lines came with it and it is
/// completed at once); the others apply at once.
pub async fn create(
    app: App<'_>,
    caller: &Caller,
    request: NewOperation,
    wait: Option<u64>,
) -> Result<Operation, AppError> {
    let op = match request {
        NewOperation::FullUpdate(request) => full_update(app, caller, request, wait).await,
        NewOperation::PartialUpdate(request) => partial_update(app, caller, request).await,
        NewOperation::Delete(request) => {
            let deletion = resources::delete(app, caller, request.resource_id).await?;
            deletion.operation.ok_or_else(|| {
                AppError::Conflict(format!(
                    "resource {} is deleted already",
                    request.resource_id
                ))
            })
        }
        NewOperation::Reconcile(request) => reconcile(app, caller, request).await,
        NewOperation::Purge(request) => purge(app, caller, request).await,
    }?;
    if op.ty != OperationType::FullUpdate {
        // A full-update is counted by the worker that applies it.
        crate::telemetry::operation_ended(&op);
    }
    Ok(op)
}

/// An operation, unless the caller's reads are bound to another source than the operation's
/// (one that spans sources has none).
pub async fn readable(
    app: App<'_>,
    caller: &Caller,
    id: OperationId,
) -> Result<Operation, AppError> {
    let op = app.store.get_operation(id).await?;
    let what = format!("operation {id} is not of it");
    caller.check_read(op.source_system.as_deref().unwrap_or_default(), &what)?;
    Ok(op)
}

/// A readable operation, once it has finished or `wait` seconds have passed.
pub async fn get(
    app: App<'_>,
    caller: &Caller,
    id: OperationId,
    wait: Option<u64>,
) -> Result<Operation, AppError> {
    let op = readable(app, caller, id).await?;
    waited(app, op, wait).await
}

/// An operation the caller may change: one of the source its token is bound to, if any.
async fn writable(app: App<'_>, caller: &Caller, id: OperationId) -> Result<Operation, AppError> {
    let op = app.store.get_operation(id).await?;
    caller.check_source(op.source_system.as_deref().unwrap_or_default())?;
    Ok(op)
}

/// The scope of a full-update or reconcile, checked against the token's binding.
async fn scope(
    app: App<'_>,
    caller: &Caller,
    group_id: Option<ResourceId>,
    source_system: Option<String>,
) -> Result<(Scope, String), AppError> {
    let (scope, source) = match (group_id, source_system) {
        (Some(id), None) => {
            let group = app.store.get_resource(id).await?;
            if group.ty != ResourceType::Group || group.deleted {
                return Err(invalid(format!("resource {id} is not a live group")));
            }
            (Scope::Group(id), group.source_system)
        }
        (None, Some(source)) if !source.trim().is_empty() => {
            (Scope::Source(source.clone()), source)
        }
        _ => {
            return Err(invalid(
                "name the scope: exactly one of group_id and source_system",
            ))
        }
    };
    caller.check_source(&source)?;
    Ok((scope, source))
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::Invalid(crate::domain::InvalidInput::new(message))
}

/// The deletion threshold of an operation: the server's, or the request's. A connector's token
/// may only tighten it; loosening it (a higher share, a larger minimum group) needs `admin`, so a
/// broken or malicious connector cannot switch off the safety that holds its own removals.
pub fn threshold(
    base: Threshold,
    caller: &Caller,
    requested: Option<ThresholdOverride>,
) -> Result<Threshold, AppError> {
    let Some(requested) = requested.map(|r| r.over(base)) else {
        return Ok(base);
    };
    requested.validate()?;
    if requested.loosens(&base) && !caller.principal.has(TokenScope::Admin) {
        return Err(AppError::Forbidden(format!(
            "token {:?} may only tighten the deletion threshold (at most {}% removed, applied \
             from {} members); loosening it needs an admin token",
            caller.principal.name, base.max_removed_percent, base.min_group_size
        )));
    }
    Ok(requested)
}

/// Creates a full-update: checks the request, stages the lines it carries as chunk 0 and, with
/// `complete`, queues it (waiting up to `wait` seconds). Lines that cannot be staged cancel the
/// operation, so no orphan upload is left behind.
pub async fn full_update(
    app: App<'_>,
    caller: &Caller,
    request: NewFullUpdate,
    wait: Option<u64>,
) -> Result<Operation, AppError> {
    check_target_fields(&request)?;
    let (scope, source_system) =
        scope(app, caller, request.group_id, request.source_system).await?;
    let threshold = threshold(app.settings.threshold, caller, request.threshold)?;
    let batch_size = request.batch_size.unwrap_or(app.settings.batch_size);
    if batch_size < 1 {
        return Err(invalid("batch_size must be at least 1"));
    }
    let inline = match request.target {
        Target::Memberships => request.members.is_some(),
        Target::Resources => request.resources.is_some(),
    };
    if request.complete && !inline {
        return Err(invalid(
            "`complete` needs the lines in the request (`members`, or `resources`); upload \
             chunks and then complete the operation otherwise",
        ));
    }
    let params = FullUpdateParams {
        on_error: request.on_error,
        threshold,
        gc: request.gc,
        batch_size,
        bound_source: caller.principal.source_system.clone(),
        approved: false,
        create_missing: request.create_missing,
        resource_type: request.resource_type,
        resource_subtype: request.resource_subtype,
    };
    let resource_scope = ResourceScope {
        source_system: source_system.clone(),
        ty: request.resource_type,
        subtype: request.resource_subtype,
        partial: false,
    };
    let source_scope = matches!(scope, Scope::Source(_));
    let members = request
        .members
        .map(|lines| stage_inline(lines, &source_scope, request.on_error))
        .transpose()?;
    let resources = request
        .resources
        .map(|lines| stage_inline(lines, &resource_scope, request.on_error))
        .transpose()?;
    let draft = FullUpdateDraft {
        target: request.target,
        description: request.description,
        scope,
        source_system,
        params,
    };
    let op = app
        .store
        .create_full_update(&caller.actor(), &draft)
        .await?;
    let staged = match (members, resources) {
        (Some(batch), _) => {
            let lines = Box::pin(futures_util::stream::iter([Ok(batch)]));
            app.store.stage_chunk(op.id, 0, lines).await
        }
        (_, Some(batch)) => {
            let lines = Box::pin(futures_util::stream::iter([Ok(batch)]));
            app.store.stage_resource_chunk(op.id, 0, lines).await
        }
        (None, None) => return Ok(op),
    };
    if let Err(e) = staged {
        // Leave no orphan upload behind.
        let _ = app.store.decide(&caller.actor(), op.id, false).await;
        return Err(e.into());
    }
    if request.complete {
        return complete(app, caller, op.id, wait).await;
    }
    Ok(op)
}

/// Refuses the fields that belong to the other target.
fn check_target_fields(request: &NewFullUpdate) -> Result<(), AppError> {
    let misplaced = match request.target {
        Target::Memberships => [
            ("resources", request.resources.is_some()),
            ("resource_type", request.resource_type.is_some()),
            ("resource_subtype", request.resource_subtype.is_some()),
        ],
        Target::Resources => [
            ("members", request.members.is_some()),
            ("group_id", request.group_id.is_some()),
            ("create_missing", request.create_missing),
        ],
    };
    if let Some((field, _)) = misplaced.iter().find(|(_, given)| *given) {
        return Err(invalid(format!(
            "{field} does not apply to a full-update of {}",
            request.target.name()
        )));
    }
    if request.target == Target::Resources && request.gc == Gc::Defer {
        return Err(invalid(
            "gc: defer applies to membership full-updates; a full-update of resources deletes \
             in its apply",
        ));
    }
    if let (Some(ty), Some(subtype)) = (request.resource_type, request.resource_subtype) {
        subtype.check_fits(ty)?;
    }
    Ok(())
}

/// Checks the lines given in a create call, like the lines of chunk 0.
fn stage_inline<L: UploadLine>(
    lines: Vec<L>,
    context: &L::Context,
    on_error: OnError,
) -> Result<StagedBatch<L::Staged>, AppError> {
    let mut batch = StagedBatch::default();
    for (index, line) in lines.into_iter().enumerate() {
        let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
        match line.stage(number, context) {
            Ok(line) => batch.lines.push(line),
            Err(e) => batch.rejected.push(LineError {
                chunk: 0,
                line: number,
                reason: e.0,
            }),
        }
    }
    if on_error == OnError::Fail && !batch.rejected.is_empty() {
        let count = batch.rejected.len();
        batch.rejected.truncate(upload::MAX_REPORTED_ERRORS);
        return Err(AppError::InvalidLines(
            format!("{count} line(s) could not be read; nothing was created"),
            batch.rejected,
        ));
    }
    Ok(batch)
}

/// A partial-update: membership adds and removes, or (`target: resources`) upserts and deletes
/// of one source system's resources, applied at once.
pub async fn partial_update(
    app: App<'_>,
    caller: &Caller,
    request: NewPartialUpdate,
) -> Result<Operation, AppError> {
    if request.target == Target::Resources {
        return resource_changes(app, caller, request).await;
    }
    if !request.resources.is_empty() || request.source_system.is_some() {
        return Err(invalid(
            "resources and source_system belong to a partial-update with \"target\": \
             \"resources\"; memberships are listed in changes",
        ));
    }
    if request.changes.is_empty() {
        return Err(invalid("changes must list at least one add or remove"));
    }
    let edits = request
        .changes
        .iter()
        .enumerate()
        .map(|(index, change)| {
            let line = change
                .member_line()
                .stage(0, false)
                .map_err(|e| invalid(format!("changes[{index}]: {}", e.0)))?;
            Ok(MembershipEdit {
                group_id: change.group_id,
                member: line.member,
                member_type: line.member_type,
                action: match change.action {
                    ChangeAction::Add => PreviewAction::Add,
                    ChangeAction::Remove => PreviewAction::Remove,
                },
                member_name: line.member_name,
                contributing: line.contributing,
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    Ok(app
        .store
        .apply_partial_update(
            &caller.actor(),
            request.description,
            &edits,
            caller.principal.source_system.as_deref(),
        )
        .await?)
}

/// A partial-update of resources: upserts and deletes of one source system's resources.
async fn resource_changes(
    app: App<'_>,
    caller: &Caller,
    request: NewPartialUpdate,
) -> Result<Operation, AppError> {
    if !request.changes.is_empty() {
        return Err(invalid(
            "a partial-update of resources lists them in resources, not changes",
        ));
    }
    let source_system = request
        .source_system
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| invalid("a partial-update of resources needs its source_system"))?;
    if request.resources.is_empty() {
        return Err(invalid("resources must list at least one resource"));
    }
    caller.check_source(&source_system)?;
    let scope = ResourceScope {
        source_system,
        ty: None,
        subtype: None,
        partial: true,
    };
    let batch = stage_inline(request.resources, &scope, OnError::Fail)?;
    Ok(app
        .store
        .apply_resource_changes(
            &caller.actor(),
            request.description,
            &scope,
            &batch.lines,
            &app.settings.lifecycle,
        )
        .await?)
}

/// Ends the memberships of a group or source that no full-update confirmed since, past the
/// same deletion threshold.
pub async fn reconcile(
    app: App<'_>,
    caller: &Caller,
    request: NewReconcile,
) -> Result<Operation, AppError> {
    let (scope, _) = scope(app, caller, request.group_id, request.source_system).await?;
    let threshold = threshold(app.settings.threshold, caller, request.threshold)?;
    Ok(app
        .store
        .reconcile(&caller.actor(), request.description, &scope, &threshold)
        .await?)
}

/// Deletes for good what was soft-deleted before the cutoff: an admin's decision.
pub async fn purge(
    app: App<'_>,
    caller: &Caller,
    request: NewPurge,
) -> Result<Operation, AppError> {
    if !caller.principal.has(TokenScope::Admin) {
        return Err(AppError::Forbidden(format!(
            "token {:?} lacks the scope \"admin\" that a purge needs",
            caller.principal.name
        )));
    }
    let before = request.cutoff(app.settings.retention_days, chrono::Utc::now())?;
    Ok(app
        .store
        .purge(&caller.actor(), request.description, before, 5_000)
        .await?)
}

/// What a chunk upload stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkResult {
    operation_id: OperationId,
    chunk: i32,
    /// Lines stored in the staging area.
    staged: i64,
    /// Lines skipped (with `on_error: skip`).
    rejected: i64,
    /// The first skipped lines, with why.
    rejections: Vec<LineError>,
}

/// Stages chunk `n` of an uploading full-update, read from `body` (NDJSON, at most `limit`
/// bytes). Sending chunk n again replaces it.
pub async fn upload_chunk(
    app: App<'_>,
    caller: &Caller,
    (id, n): (OperationId, u32),
    body: UploadBody,
    limit: usize,
) -> Result<ChunkResult, AppError> {
    let chunk = i32::try_from(n)
        .map_err(|_| AppError::Unreadable(format!("chunk number {n} is too large")))?;
    let op = app.store.get_operation(id).await?;
    if op.ty != OperationType::FullUpdate {
        return Err(AppError::Conflict(format!(
            "operation {id} is a {}; only full-updates take chunks",
            op.ty.name()
        )));
    }
    caller.check_source(op.source_system.as_deref().unwrap_or_default())?;
    let params: FullUpdateParams = serde_json::from_value(op.params.clone())
        .map_err(|e| AppError::Internal(format!("operation {id} params: {e}")))?;
    let errors = LineErrors::default();
    let format = upload::ChunkFormat {
        chunk,
        on_error: params.on_error,
        limit,
    };
    let staged = match op.target {
        Target::Memberships => {
            let lines =
                upload::lines::<MemberLine>(body, format, op.group_id.is_none(), errors.clone());
            app.store.stage_chunk(id, chunk, lines).await
        }
        Target::Resources => {
            let scope = ResourceScope {
                source_system: op.source_system.clone().unwrap_or_default(),
                ty: params.resource_type,
                subtype: params.resource_subtype,
                partial: false,
            };
            let lines = upload::lines::<ResourceLine>(body, format, scope, errors.clone());
            app.store.stage_resource_chunk(id, chunk, lines).await
        }
    };
    match staged {
        Ok(ChunkReceipt { staged, rejected }) => Ok(ChunkResult {
            operation_id: id,
            chunk,
            staged,
            rejected,
            rejections: errors.take().0,
        }),
        Err(StoreError::Invalid(message)) if errors.too_large() => {
            Err(AppError::TooLarge(message.0))
        }
        Err(StoreError::Invalid(message)) => {
            let (lines, _) = errors.take();
            Err(AppError::InvalidLines(message.0, lines))
        }
        Err(e) => Err(e.into()),
    }
}

/// Ends the upload of a full-update the caller may change: queues it for a worker, and waits
/// for it if asked.
pub async fn complete_upload(
    app: App<'_>,
    caller: &Caller,
    id: OperationId,
    wait: Option<u64>,
) -> Result<Operation, AppError> {
    writable(app, caller, id).await?;
    complete(app, caller, id, wait).await
}

/// Queues an uploading full-update for a worker, and waits for it if asked.
async fn complete(
    app: App<'_>,
    caller: &Caller,
    id: OperationId,
    wait: Option<u64>,
) -> Result<Operation, AppError> {
    let op = app.store.queue_operation(&caller.actor(), id).await?;
    app.engine.wake();
    waited(app, op, wait).await
}

/// The operation once it has finished, or as it is after `wait` seconds (at most the server's
/// longest wait).
async fn waited(app: App<'_>, op: Operation, wait: Option<u64>) -> Result<Operation, AppError> {
    match wait {
        Some(secs) if secs > 0 => {
            let timeout = Duration::from_secs(secs).min(app.settings.max_wait);
            Ok(app.engine.wait_for(op.id, timeout).await?)
        }
        _ => Ok(op),
    }
}

/// One planned change: of a membership, or (in a full-update of resources) of a resource.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PreviewItem {
    Membership(PreviewEntry),
    Resource(ResourcePreviewEntry),
    /// An account a deactivate, activate or expire operation changes (or, pending, would).
    Account(Resource),
}

/// A page of a preview; the first page also carries the totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewPage {
    pub items: Vec<PreviewItem>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next: Option<String>,
    /// Memberships (or resources) the operation would add or re-activate (first page only).
    pub to_add: Option<i64>,
    /// Memberships the operation would end, or resources it would delete (first page only).
    pub to_remove: Option<i64>,
}

/// A page of what an operation not yet applied would change: memberships in (group, member)
/// order; in a full-update of resources, the resources it would delete in id order, or the lines
/// that would create or restore one; in a lifecycle operation, its accounts.
pub async fn preview(
    app: App<'_>,
    caller: &Caller,
    id: OperationId,
    action: Option<PreviewAction>,
    (limit, cursor): (Option<u32>, Option<&str>),
) -> Result<PreviewPage, AppError> {
    let op = readable(app, caller, id).await?;
    if op.ty.is_lifecycle() {
        let page = page_request(limit, cursor)?;
        return lifecycle_preview(app, &op, &page).await;
    }
    let page = page_request(limit, cursor)?;
    let totals = match page.after {
        None => Some(app.store.preview_totals(id).await?),
        Some(_) => None,
    };
    let action = action.unwrap_or(PreviewAction::Remove);
    let (items, next) = match op.target {
        Target::Memberships => {
            let rows = app.store.preview(id, Some(action), &page).await?;
            let page = Page::from_rows(rows, page.limit, ListKind::Preview, |e| {
                format!("{}:{}", e.group_id, e.member_id)
            });
            let items = page.items.into_iter().map(PreviewItem::Membership);
            (items.collect(), page.next)
        }
        Target::Resources => {
            let rows = app.store.preview_resources(id, action, &page).await?;
            let page = Page::from_rows(rows, page.limit, ListKind::Preview, |e| {
                match (e.chunk, e.line, e.resource_id) {
                    (Some(chunk), Some(line), _) => format!("{chunk}:{line}"),
                    (_, _, Some(id)) => id.to_string(),
                    _ => String::new(),
                }
            });
            let items = page.items.into_iter().map(PreviewItem::Resource);
            (items.collect(), page.next)
        }
    };
    Ok(PreviewPage {
        items,
        next,
        to_add: totals.map(|t| t.0),
        to_remove: totals.map(|t| t.1),
    })
}

fn page_request<K: std::str::FromStr>(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<PageRequest<K>, AppError> {
    PageRequest::parse(ListKind::Preview, limit, cursor).map_err(|e| AppError::Unreadable(e.0))
}

/// The accounts of a lifecycle operation, in id order; the totals count what it changes (or,
/// pending, would change): `to_add` activations, `to_remove` deactivations.
async fn lifecycle_preview(
    app: App<'_>,
    op: &Operation,
    page: &PageRequest<uuid::Uuid>,
) -> Result<PreviewPage, AppError> {
    let first = page.after.is_none();
    let rows = app.store.lifecycle_targets(op.id, page).await?;
    let page = Page::from_rows(rows, page.limit, ListKind::Preview, |r| r.id);
    let activates = op.ty == OperationType::Activate;
    let count = first.then_some(op.counts.updated);
    Ok(PreviewPage {
        items: page.items.into_iter().map(PreviewItem::Account).collect(),
        next: page.next,
        to_add: if activates { count } else { first.then_some(0) },
        to_remove: if activates { first.then_some(0) } else { count },
    })
}

/// Cancels a full-update whose upload is not complete: it fails and changes nothing. A pending
/// one is not the uploader's to drop; an admin rejects it.
pub async fn cancel(app: App<'_>, caller: &Caller, id: OperationId) -> Result<Operation, AppError> {
    let op = writable(app, caller, id).await?;
    if op.phase != Some(OperationPhase::Uploading) {
        return Err(AppError::NotUploading(id));
    }
    decided(app.store.decide(&caller.actor(), id, false).await?)
}

/// A decided operation, counted when it ended (a rejected or cancelled one fails).
fn decided(op: Operation) -> Result<Operation, AppError> {
    crate::telemetry::operation_ended(&op);
    Ok(op)
}

/// Approves a pending operation: it is queued again, to be applied past the deletion threshold.
pub async fn approve(
    app: App<'_>,
    caller: &Caller,
    id: OperationId,
    wait: Option<u64>,
) -> Result<Operation, AppError> {
    let op = app.store.decide(&caller.actor(), id, true).await?;
    app.engine.wake();
    waited(app, op, wait).await
}

/// Rejects a pending operation (or abandons an upload): it fails and changes nothing.
pub async fn reject(app: App<'_>, caller: &Caller, id: OperationId) -> Result<Operation, AppError> {
    decided(app.store.decide(&caller.actor(), id, false).await?)
}

/// A page of the upload lines of an operation that could not be used.
pub async fn rejections(
    app: App<'_>,
    caller: &Caller,
    id: OperationId,
    page: &PageRequest<String>,
) -> Result<Vec<LineError>, AppError> {
    if caller.read_source().is_some() {
        readable(app, caller, id).await?;
    }
    Ok(app.store.rejections(id, page).await?)
}
