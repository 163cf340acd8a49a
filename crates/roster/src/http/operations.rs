//! `/api/v1/operations`: create operations, upload full-update chunks, complete, preview, approve
//! or reject them, and read them back.

use super::auth::Caller;
use super::resources::check_owner;
use super::{Json, Path, Query};
use crate::domain::full_update::{
    LineError, MemberLine, PreviewAction, PreviewEntry, Threshold, ThresholdOverride,
};
use crate::domain::operation::{
    FullUpdateParams, OnError, Operation, OperationFilter, OperationStatus, OperationType, Scope,
};
use crate::domain::operation::{Gc, Target};
use crate::domain::operation_request::{
    ChangeAction, NewFullUpdate, NewOperation, NewPartialUpdate, NewPurge, NewReconcile,
};
use crate::domain::page::{ListKind, Page};
use crate::domain::resource::ResourceType;
use crate::domain::resource_sync::{ResourceLine, ResourcePreviewEntry, ResourceScope};
use crate::domain::token::Scope as TokenScope;
use crate::domain::{OperationId, ResourceId};
use crate::error::{ApiError, Problem};
use crate::ops::upload::{self, LineErrors, UploadLine};
use crate::server::AppState;
use crate::store::{FullUpdateDraft, MembershipEdit, StagedBatch, StoreError};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_operations, create_operation))
        .routes(routes!(get_operation, cancel_operation))
        .routes(routes!(complete_operation))
        .routes(routes!(preview_operation))
        .routes(routes!(approve_operation))
        .routes(routes!(reject_operation))
        .routes(routes!(list_rejections))
}

/// The chunk upload route, which has its own body limit and timeout.
pub fn upload_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upload_chunk))
}

/// Operation settings of this server.
#[derive(Debug, Clone, Copy)]
pub struct OperationDefaults {
    pub threshold: Threshold,
    pub batch_size: i64,
    pub retention_days: u32,
    /// The longest a call waits for an operation (`?wait=`); kept below the request timeout, so
    /// a long apply answers 202 and the client polls.
    pub max_wait: Duration,
    /// Identity lifecycle: the deactivation threshold.
    pub lifecycle: crate::domain::lifecycle::Policy,
}

impl Default for OperationDefaults {
    fn default() -> Self {
        Self {
            threshold: Threshold::default(),
            batch_size: crate::domain::operation::default_batch_size(),
            retention_days: 90,
            max_wait: Duration::from_secs(25),
            lifecycle: crate::domain::lifecycle::Policy::default(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    #[serde(rename = "type")]
    #[param(rename = "type")]
    ty: Option<OperationType>,
    status: Option<OperationStatus>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The `next` value of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Wait up to this many seconds for the operation to finish before answering (at most the
    /// server's limit, a little under its request timeout; 202 means it is still running).
    wait: Option<u64>,
}

/// List operations, newest first.
#[utoipa::path(get, path = "/api/v1/operations", tag = "operations", security(("bearer" = ["read"])),
    params(ListParams),
    responses((status = 200, description = "A page of operations (of the token's source only, when its reads are bound)", body = Page<Operation>),
              (status = 400, description = "A bad filter or cursor", body = Problem)))]
async fn list_operations(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Page<Operation>>, ApiError> {
    let page = super::page_request(ListKind::Operations, p.limit, p.cursor.as_deref())?;
    let filter = OperationFilter {
        ty: p.ty,
        status: p.status,
        source_system: caller.read_source().map(str::to_owned),
    };
    let rows = state.store.list_operations(&filter, &page).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        page.limit,
        ListKind::Operations,
        |o| o.id.0,
    )))
}

/// Get one operation: status, phase, scope, counts and reason. With `wait`, a running operation
/// is answered once it finishes (or when the wait ends, still running).
#[utoipa::path(get, path = "/api/v1/operations/{id}", tag = "operations", security(("bearer" = ["read"])),
    params(("id" = i64, Path, description = "Operation id"), WaitParams),
    responses((status = 200, description = "The operation", body = Operation),
              (status = 403, description = "An operation of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No such operation", body = Problem)))]
async fn get_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(wait): Query<WaitParams>,
) -> Result<axum::Json<Operation>, ApiError> {
    let op = readable_operation(&state, &caller, id).await?;
    Ok(axum::Json(waited(&state, op, wait.wait).await?))
}

/// An operation, unless the caller's reads are bound to another source than the operation's
/// (one that spans sources has none).
async fn readable_operation(
    state: &AppState,
    caller: &Caller,
    id: OperationId,
) -> Result<Operation, ApiError> {
    let op = state.store.get_operation(id).await?;
    let what = format!("operation {id} is not of it");
    caller.check_read(op.source_system.as_deref().unwrap_or_default(), &what)?;
    Ok(op)
}

/// Create an operation. A full-update starts `running`/`uploading`: upload its chunks, then
/// complete it. Partial-updates, deletes, reconciles and purges (admin) apply at once.
#[utoipa::path(post, path = "/api/v1/operations", tag = "operations", security(("bearer" = ["write"])),
    params(WaitParams),
    request_body = NewOperation,
    responses((status = 201, description = "Created (and, but for a full-update, applied)", body = Operation),
              (status = 400, description = "Unreadable member lines, listed in `errors`", body = Problem),
              (status = 403, description = "Outside the token's source binding, or a purge without admin", body = Problem),
              (status = 409, description = "The resource to delete is deleted already", body = Problem),
              (status = 422, description = "A value breaks a rule", body = Problem)))]
async fn create_operation(
    State(state): State<AppState>,
    caller: Caller,
    Query(wait): Query<WaitParams>,
    Json(request): Json<NewOperation>,
) -> Result<impl IntoResponse, ApiError> {
    let op = match request {
        NewOperation::FullUpdate(request) => {
            create_full_update(&state, &caller, request, wait.wait).await?
        }
        NewOperation::PartialUpdate(request) => partial_update(&state, &caller, request).await?,
        NewOperation::Delete(request) => {
            check_owner(&state, &caller, request.resource_id).await?;
            let deletion = state
                .store
                .delete_resource(
                    &caller.actor(),
                    request.resource_id,
                    &state.operations.lifecycle,
                )
                .await?;
            deletion.operation.ok_or_else(|| {
                ApiError::Conflict(format!(
                    "resource {} is deleted already",
                    request.resource_id
                ))
            })?
        }
        NewOperation::Reconcile(request) => reconcile(&state, &caller, request).await?,
        NewOperation::Purge(request) => purge(&state, &caller, request).await?,
    };
    Ok((StatusCode::CREATED, axum::Json(op)))
}

/// The scope of a full-update or reconcile, checked against the token's binding.
async fn scope(
    state: &AppState,
    caller: &Caller,
    group_id: Option<ResourceId>,
    source_system: Option<String>,
) -> Result<(Scope, String), ApiError> {
    let (scope, source) = match (group_id, source_system) {
        (Some(id), None) => {
            let group = state.store.get_resource(id).await?;
            if group.ty != ResourceType::Group || group.deleted {
                return Err(ApiError::Unprocessable(format!(
                    "resource {id} is not a live group"
                )));
            }
            (Scope::Group(id), group.source_system)
        }
        (None, Some(source)) if !source.trim().is_empty() => {
            (Scope::Source(source.clone()), source)
        }
        _ => {
            return Err(ApiError::Unprocessable(
                "name the scope: exactly one of group_id and source_system".to_owned(),
            ))
        }
    };
    caller.check_source(&source)?;
    Ok((scope, source))
}

/// The deletion threshold of an operation: the server's, or the request's. A connector's token
/// may only tighten it; loosening it (a higher share, a larger minimum group) needs `admin`, so a
/// broken or malicious connector cannot switch off the safety that holds its own removals.
fn threshold(
    state: &AppState,
    caller: &Caller,
    requested: Option<ThresholdOverride>,
) -> Result<Threshold, ApiError> {
    let base = state.operations.threshold;
    let Some(requested) = requested.map(|r| r.over(base)) else {
        return Ok(base);
    };
    requested.validate()?;
    if requested.loosens(&base) && !caller.principal.has(TokenScope::Admin) {
        return Err(ApiError::Forbidden(format!(
            "token {:?} may only tighten the deletion threshold (at most {}% removed, applied \
             from {} members); loosening it needs an admin token",
            caller.principal.name, base.max_removed_percent, base.min_group_size
        )));
    }
    Ok(requested)
}

pub(crate) async fn create_full_update(
    state: &AppState,
    caller: &Caller,
    request: NewFullUpdate,
    wait: Option<u64>,
) -> Result<Operation, ApiError> {
    check_target_fields(&request)?;
    let (scope, source_system) =
        scope(state, caller, request.group_id, request.source_system).await?;
    let threshold = threshold(state, caller, request.threshold)?;
    let batch_size = request.batch_size.unwrap_or(state.operations.batch_size);
    if batch_size < 1 {
        return Err(ApiError::Unprocessable(
            "batch_size must be at least 1".to_owned(),
        ));
    }
    let inline = match request.target {
        Target::Memberships => request.members.is_some(),
        Target::Resources => request.resources.is_some(),
    };
    if request.complete && !inline {
        return Err(ApiError::Unprocessable(
            "`complete` needs the lines in the request (`members`, or `resources`); upload \
             chunks and then POST …/complete otherwise"
                .to_owned(),
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
    let mut op = state
        .store
        .create_full_update(&caller.actor(), &draft)
        .await?;
    let staged = match (members, resources) {
        (Some(batch), _) => Some(
            state
                .store
                .stage_chunk(op.id, 0, Box::pin(futures_util::stream::iter([Ok(batch)])))
                .await,
        ),
        (_, Some(batch)) => Some(
            state
                .store
                .stage_resource_chunk(op.id, 0, Box::pin(futures_util::stream::iter([Ok(batch)])))
                .await,
        ),
        (None, None) => None,
    };
    if let Some(staged) = staged {
        if let Err(e) = staged {
            // Leave no orphan upload behind.
            let _ = state.store.decide(&caller.actor(), op.id, false).await;
            return Err(e.into());
        }
        if request.complete {
            op = complete(state, caller, op.id, wait).await?;
        }
    }
    Ok(op)
}

/// Refuses the fields that belong to the other target.
fn check_target_fields(request: &NewFullUpdate) -> Result<(), ApiError> {
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
        return Err(ApiError::Unprocessable(format!(
            "{field} does not apply to a full-update of {}",
            request.target.name()
        )));
    }
    if request.target == Target::Resources && request.gc == Gc::Defer {
        return Err(ApiError::Unprocessable(
            "gc: defer applies to membership full-updates; a full-update of resources deletes \
             in its apply"
                .to_owned(),
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
) -> Result<StagedBatch<L::Staged>, ApiError> {
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
        return Err(ApiError::InvalidLines(
            format!("{count} line(s) could not be read; nothing was created"),
            batch.rejected,
        ));
    }
    Ok(batch)
}

async fn partial_update(
    state: &AppState,
    caller: &Caller,
    request: NewPartialUpdate,
) -> Result<Operation, ApiError> {
    if request.target == Target::Resources {
        return resource_changes(state, caller, request).await;
    }
    if !request.resources.is_empty() || request.source_system.is_some() {
        return Err(ApiError::Unprocessable(
            "resources and source_system belong to a partial-update with \"target\": \
             \"resources\"; memberships are listed in changes"
                .to_owned(),
        ));
    }
    if request.changes.is_empty() {
        return Err(ApiError::Unprocessable(
            "changes must list at least one add or remove".to_owned(),
        ));
    }
    let edits = request
        .changes
        .iter()
        .enumerate()
        .map(|(index, change)| {
            let line = change
                .member_line()
                .stage(0, false)
                .map_err(|e| ApiError::Unprocessable(format!("changes[{index}]: {}", e.0)))?;
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
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(state
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
    state: &AppState,
    caller: &Caller,
    request: NewPartialUpdate,
) -> Result<Operation, ApiError> {
    if !request.changes.is_empty() {
        return Err(ApiError::Unprocessable(
            "a partial-update of resources lists them in resources, not changes".to_owned(),
        ));
    }
    let source_system = request
        .source_system
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            ApiError::Unprocessable(
                "a partial-update of resources needs its source_system".to_owned(),
            )
        })?;
    if request.resources.is_empty() {
        return Err(ApiError::Unprocessable(
            "resources must list at least one resource".to_owned(),
        ));
    }
    caller.check_source(&source_system)?;
    let scope = ResourceScope {
        source_system,
        ty: None,
        subtype: None,
        partial: true,
    };
    let batch = stage_inline(request.resources, &scope, OnError::Fail)?;
    Ok(state
        .store
        .apply_resource_changes(
            &caller.actor(),
            request.description,
            &scope,
            &batch.lines,
            &state.operations.lifecycle,
        )
        .await?)
}

async fn reconcile(
    state: &AppState,
    caller: &Caller,
    request: NewReconcile,
) -> Result<Operation, ApiError> {
    let (scope, _) = scope(state, caller, request.group_id, request.source_system).await?;
    let threshold = threshold(state, caller, request.threshold)?;
    Ok(state
        .store
        .reconcile(&caller.actor(), request.description, &scope, &threshold)
        .await?)
}

async fn purge(
    state: &AppState,
    caller: &Caller,
    request: NewPurge,
) -> Result<Operation, ApiError> {
    if !caller.principal.has(TokenScope::Admin) {
        return Err(ApiError::Forbidden(format!(
            "token {:?} lacks the scope \"admin\" that a purge needs",
            caller.principal.name
        )));
    }
    let before = request.cutoff(state.operations.retention_days, chrono::Utc::now())?;
    Ok(state
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

/// Upload chunk `n` of a full-update: NDJSON, one member a line (`{"member_id": …}`,
/// `{"source_system": …, "identifier": …}` or `{"source_system": …, "external_id": …}`, with
/// optional `member_name`, `contributing`, `type`; and `group_id` or `group` in a full-update of a
/// source system). Sending chunk n again replaces it.
#[utoipa::path(put, path = "/api/v1/operations/{id}/chunks/{n}", tag = "operations", security(("bearer" = ["write"])),
    params(("id" = i64, Path, description = "Operation id"), ("n" = u32, Path, description = "Chunk number")),
    request_body(content = String, content_type = "application/x-ndjson"),
    responses((status = 200, description = "Stored", body = ChunkResult),
              (status = 400, description = "Unreadable lines (listed in `errors`); nothing of the chunk was stored", body = Problem),
              (status = 409, description = "The operation no longer takes chunks", body = Problem)))]
async fn upload_chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, n)): Path<(OperationId, u32)>,
    body: Body,
) -> Result<axum::Json<ChunkResult>, ApiError> {
    let chunk = i32::try_from(n)
        .map_err(|_| ApiError::BadRequest(format!("chunk number {n} is too large")))?;
    let op = state.store.get_operation(id).await?;
    if op.ty != OperationType::FullUpdate {
        return Err(ApiError::Conflict(format!(
            "operation {id} is a {}; only full-updates take chunks",
            op.ty.name()
        )));
    }
    caller.check_source(op.source_system.as_deref().unwrap_or_default())?;
    let params: FullUpdateParams = serde_json::from_value(op.params.clone())
        .map_err(|e| ApiError::Internal(format!("operation {id} params: {e}")))?;
    let errors = LineErrors::default();
    let format = upload::ChunkFormat {
        chunk,
        on_error: params.on_error,
        limit: state.limits.upload_bytes,
    };
    let staged = match op.target {
        Target::Memberships => {
            let lines =
                upload::lines::<MemberLine>(body, format, op.group_id.is_none(), errors.clone());
            state.store.stage_chunk(id, chunk, lines).await
        }
        Target::Resources => {
            let scope = ResourceScope {
                source_system: op.source_system.clone().unwrap_or_default(),
                ty: params.resource_type,
                subtype: params.resource_subtype,
                partial: false,
            };
            let lines = upload::lines::<ResourceLine>(body, format, scope, errors.clone());
            state.store.stage_resource_chunk(id, chunk, lines).await
        }
    };
    match staged {
        Ok(receipt) => Ok(axum::Json(ChunkResult {
            operation_id: id,
            chunk,
            staged: receipt.staged,
            rejected: receipt.rejected,
            rejections: errors.take().0,
        })),
        Err(StoreError::Invalid(message)) if errors.too_large() => {
            Err(ApiError::PayloadTooLarge(message.0))
        }
        Err(StoreError::Invalid(message)) => {
            let (lines, _) = errors.take();
            Err(ApiError::InvalidLines(message.0, lines))
        }
        Err(e) => Err(e.into()),
    }
}

/// Queues an uploading full-update for a worker, and waits for it if asked.
async fn complete(
    state: &AppState,
    caller: &Caller,
    id: OperationId,
    wait: Option<u64>,
) -> Result<Operation, ApiError> {
    let op = state.store.queue_operation(&caller.actor(), id).await?;
    state.engine.wake();
    waited(state, op, wait).await
}

async fn waited(state: &AppState, op: Operation, wait: Option<u64>) -> Result<Operation, ApiError> {
    match wait {
        Some(secs) if secs > 0 => {
            let timeout = Duration::from_secs(secs).min(state.operations.max_wait);
            Ok(state.engine.wait_for(op.id, timeout).await?)
        }
        _ => Ok(op),
    }
}

/// 202 while the operation is still running, 200 once it has finished.
fn accepted(op: Operation) -> impl IntoResponse {
    let status = if op.status == OperationStatus::Running {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(op))
}

/// End the upload of a full-update: a worker computes the diff and applies it (or holds it
/// `pending` past the deletion threshold). `wait` blocks until then.
#[utoipa::path(post, path = "/api/v1/operations/{id}/complete", tag = "operations", security(("bearer" = ["write"])),
    params(("id" = i64, Path, description = "Operation id"), WaitParams),
    responses((status = 202, description = "Queued or applying", body = Operation),
              (status = 200, description = "Finished within `wait`", body = Operation),
              (status = 409, description = "Not an uploading full-update", body = Problem)))]
async fn complete_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(wait): Query<WaitParams>,
) -> Result<impl IntoResponse, ApiError> {
    let op = state.store.get_operation(id).await?;
    caller.check_source(op.source_system.as_deref().unwrap_or_default())?;
    Ok(accepted(complete(&state, &caller, id, wait.wait).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewParams {
    /// `remove` (the default) or `add`.
    action: Option<PreviewAction>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The `next` value of the previous page.
    cursor: Option<String>,
}

/// One planned change: of a membership, or (in a full-update of resources) of a resource.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PreviewItem {
    Membership(PreviewEntry),
    Resource(ResourcePreviewEntry),
    /// An account a deactivate, activate or expire operation changes (or, pending, would).
    Account(crate::domain::resource::Resource),
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

/// What a full-update not yet applied would remove (or add): memberships in (group, member)
/// order; in a full-update of resources, the resources it would delete in id order, or the lines
/// that would create or restore one. Works before `complete` too, for a dry run.
#[utoipa::path(get, path = "/api/v1/operations/{id}/preview", tag = "operations", security(("bearer" = ["read"])),
    params(("id" = i64, Path, description = "Operation id"), PreviewParams),
    responses((status = 200, description = "A page of planned changes", body = PreviewPage),
              (status = 403, description = "An operation of another source system than the token's reads are bound to", body = Problem),
              (status = 409, description = "Not a full-update waiting to be applied", body = Problem)))]
async fn preview_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(p): Query<PreviewParams>,
) -> Result<axum::Json<PreviewPage>, ApiError> {
    let op = readable_operation(&state, &caller, id).await?;
    if op.ty.is_lifecycle() {
        return Ok(axum::Json(lifecycle_preview(&state, &op, &p).await?));
    }
    let page = super::page_request(ListKind::Preview, p.limit, p.cursor.as_deref())?;
    let totals = match page.after {
        None => Some(state.store.preview_totals(id).await?),
        Some(_) => None,
    };
    let action = p.action.unwrap_or(PreviewAction::Remove);
    let (items, next) = match op.target {
        Target::Memberships => {
            let rows = state.store.preview(id, Some(action), &page).await?;
            let page = Page::from_rows(rows, page.limit, ListKind::Preview, |e| {
                format!("{}:{}", e.group_id, e.member_id)
            });
            let items = page.items.into_iter().map(PreviewItem::Membership);
            (items.collect(), page.next)
        }
        Target::Resources => {
            let rows = state.store.preview_resources(id, action, &page).await?;
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
    Ok(axum::Json(PreviewPage {
        items,
        next,
        to_add: totals.map(|t| t.0),
        to_remove: totals.map(|t| t.1),
    }))
}

/// The accounts of a lifecycle operation, in id order; the totals count what it changes (or,
/// pending, would change): `to_add` activations, `to_remove` deactivations.
async fn lifecycle_preview(
    state: &AppState,
    op: &Operation,
    p: &PreviewParams,
) -> Result<PreviewPage, ApiError> {
    let page = super::page_request(ListKind::Preview, p.limit, p.cursor.as_deref())?;
    let first = page.after.is_none();
    let rows = state.store.lifecycle_targets(op.id, &page).await?;
    let page = Page::from_rows(rows, page.limit, ListKind::Preview, |r| r.id);
    let activates = op.ty == crate::domain::operation::OperationType::Activate;
    let count = first.then_some(op.counts.updated);
    Ok(PreviewPage {
        items: page.items.into_iter().map(PreviewItem::Account).collect(),
        next: page.next,
        to_add: if activates { count } else { first.then_some(0) },
        to_remove: if activates { first.then_some(0) } else { count },
    })
}

/// Cancel a full-update whose upload is not complete (say, after a dry run): it fails and
/// changes nothing.
#[utoipa::path(delete, path = "/api/v1/operations/{id}", tag = "operations", security(("bearer" = ["write"])),
    params(("id" = i64, Path, description = "Operation id")),
    responses((status = 200, description = "Failed, as cancelled", body = Operation),
              (status = 409, description = "Not an unfinished upload", body = Problem)))]
async fn cancel_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
) -> Result<axum::Json<Operation>, ApiError> {
    let op = state.store.get_operation(id).await?;
    caller.check_source(op.source_system.as_deref().unwrap_or_default())?;
    if op.phase != Some(crate::domain::operation::OperationPhase::Uploading) {
        return Err(ApiError::Conflict(format!(
            "operation {id} is not uploading; a pending operation is rejected by an admin with \
             POST /api/v1/operations/{id}/reject"
        )));
    }
    Ok(axum::Json(
        state.store.decide(&caller.actor(), id, false).await?,
    ))
}

/// Approve a pending operation: it is applied although it passes the deletion threshold.
#[utoipa::path(post, path = "/api/v1/operations/{id}/approve", tag = "operations", security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "Operation id"), WaitParams),
    responses((status = 202, description = "Queued again", body = Operation),
              (status = 200, description = "Applied within `wait`", body = Operation),
              (status = 409, description = "Not pending", body = Problem)))]
async fn approve_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(wait): Query<WaitParams>,
) -> Result<impl IntoResponse, ApiError> {
    let op = state.store.decide(&caller.actor(), id, true).await?;
    state.engine.wake();
    Ok(accepted(waited(&state, op, wait.wait).await?))
}

/// Reject a pending operation (or abandon an upload): it fails and changes nothing.
#[utoipa::path(post, path = "/api/v1/operations/{id}/reject", tag = "operations", security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "Operation id")),
    responses((status = 200, description = "Failed, as rejected", body = Operation),
              (status = 409, description = "Neither pending nor uploading", body = Problem)))]
async fn reject_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
) -> Result<axum::Json<Operation>, ApiError> {
    Ok(axum::Json(
        state.store.decide(&caller.actor(), id, false).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The `next` value of the previous page.
    cursor: Option<String>,
}

/// The upload lines of an operation that could not be used, with their chunk, line and reason.
#[utoipa::path(get, path = "/api/v1/operations/{id}/rejections", tag = "operations", security(("bearer" = ["read"])),
    params(("id" = i64, Path, description = "Operation id"), PageParams),
    responses((status = 200, description = "A page of rejected lines", body = Page<LineError>),
              (status = 403, description = "An operation of another source system than the token's reads are bound to", body = Problem),
              (status = 404, description = "No such operation", body = Problem)))]
async fn list_rejections(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(p): Query<PageParams>,
) -> Result<axum::Json<Page<LineError>>, ApiError> {
    let page = super::page_request(ListKind::Rejections, p.limit, p.cursor.as_deref())?;
    if caller.read_source().is_some() {
        readable_operation(&state, &caller, id).await?;
    }
    let rows = state.store.rejections(id, &page).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        page.limit,
        ListKind::Rejections,
        |e| format!("{}:{}", e.chunk, e.line),
    )))
}
