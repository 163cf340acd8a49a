//! Identity lifecycle's flows, written once for both backends over [`Tx`]: deactivating or
//! activating the accounts of an identity, a cohort or one account as one operation (held for
//! approval past the threshold), the HR trigger, the expiry sweep, cohort-local propagation and
//! the single-account patch they build on. Accounts change set-based, each with its change record
//! in the same statement (PostgreSQL) or transaction (SQLite).

use super::cohort_sync::{identities_of, identity_ids};
use super::db::Tx;
use super::query::Sql;
use super::records;
use super::resource_sql::{Dialect, Values};
use super::rows::RESOURCE_COLUMNS;
use super::ApplyOutcome;
use super::ConflictKind;
use super::{now, StoreError, StoreResult};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::{changed_attributes, ChangeKind, ChangeRecord};
use crate::domain::lifecycle::{
    check_persona_patch, Action, ActionScope, Policy, Propagation, Source, SourceRequest, EXPIRED,
    HR_TERMINATED,
};
use crate::domain::operation::{Operation, OperationCounts, OperationStatus, OperationType};
use crate::domain::page::PageRequest;
use crate::domain::resource::{Resource, ResourcePatch, ResourceType};
use crate::domain::token::Actor;
use crate::domain::{OperationId, ResourceId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Most accounts an action's answer lists while it is pending (the preview pages through all).
const LISTED: u32 = 1000;

/// Serialises everything that resolves or changes identities (links, correlation, actions).
const LINK_LOCK: &str = "roster:prime-links";

/// The ids of the resources `scope` reaches from `$12` (accounts are picked from them).
fn scope_ids(scope: ActionScope) -> String {
    let prime = ResourceType::Prime.code();
    match scope {
        ActionScope::Identity => identity_ids("$12"),
        ActionScope::Cohort => format!(
            "SELECT id FROM resource WHERE id = $12 UNION SELECT id FROM resource \
             WHERE prime_id = (SELECT CASE WHEN type = {prime} THEN id ELSE prime_id END \
             FROM resource WHERE id = $12)"
        ),
        ActionScope::Account => "SELECT id FROM resource WHERE id = $12".to_owned(),
    }
}

fn literal(active: bool) -> &'static str {
    if active {
        "true"
    } else {
        "false"
    }
}

/// The live accounts among `ids` not yet in state `active` (for a deactivation, not already
/// waiting in a pending one), as `r`.
fn candidates(ids: &str, active: bool) -> String {
    let waiting = if active {
        String::new()
    } else {
        "AND r.id NOT IN (SELECT t.resource_id FROM lifecycle_target t JOIN operation o \
         ON o.id = t.operation_id WHERE o.status = 'pending' AND o.type = 'deactivate')"
            .to_owned()
    };
    format!(
        "FROM resource r WHERE r.id IN ({ids}) AND r.type = {} AND NOT r.deleted \
         AND r.active <> {} {waiting}",
        ResourceType::User.code(),
        literal(active)
    )
}

/// Lists as targets of operation `$2` the candidates among `ids`.
fn plan_targets(ids: &str, active: bool) -> String {
    format!(
        "INSERT INTO lifecycle_target (operation_id, resource_id) SELECT $2, r.id {}",
        candidates(ids, active)
    )
}

/// Lists as targets of operation `$2` the live active accounts whose expiry passed at `$3`.
fn plan_expiry() -> String {
    format!(
        "INSERT INTO lifecycle_target (operation_id, resource_id) SELECT $2, id FROM resource \
         WHERE {}",
        due()
    )
}

/// Live active accounts whose `expires_at` passed at `$3`.
fn due() -> String {
    format!(
        "type = {} AND active AND NOT deleted AND expires_at IS NOT NULL AND expires_at <= $3",
        ResourceType::User.code()
    )
}

/// Sets the targets of `$2` still in the other state (and, for `expiring`, still expired at
/// `$3`) to `active` with `$15`, each with a `resource.deactivated` or `resource.activated`
/// change whose attrs carry `active` and, when it changes, `deactivation_reason`: a statement that
/// returns the ids it changes, and on SQLite (no data-modifying CTEs) the update that follows it.
fn flip(d: Dialect, active: bool, expiring: bool) -> (String, Option<String>) {
    let kind = if active {
        ChangeKind::ResourceActivated
    } else {
        ChangeKind::ResourceDeactivated
    }
    .code();
    let (new, old) = (literal(active), literal(!active));
    let change = "INSERT INTO change (at, kind, resource_id, source_system, operation_id, \
                  token_name, attrs)";
    match d {
        Dialect::Postgres => {
            let still = if expiring {
                "AND r.expires_at <= $3"
            } else {
                ""
            };
            (
                format!(
                    "WITH flipped AS (UPDATE resource r SET active = {new}, \
                       deactivation_reason = CAST($15 AS text), modified = $3 \
                       FROM lifecycle_target t JOIN resource o ON o.id = t.resource_id \
                       WHERE t.operation_id = $2 AND r.id = t.resource_id AND NOT r.deleted \
                         AND r.active <> {new} {still} \
                       RETURNING r.id, r.source_system, o.deactivation_reason AS old_reason) \
                     {change} SELECT $3, {kind}, id, source_system, $2, $4, \
                       jsonb_build_object('active', jsonb_build_object('old', {old}, 'new', {new})) \
                       || CASE WHEN old_reason IS NOT DISTINCT FROM CAST($15 AS text) \
                         THEN '{{}}'::jsonb ELSE jsonb_build_object('deactivation_reason', \
                         jsonb_build_object('old', old_reason, 'new', CAST($15 AS text))) END \
                     FROM flipped RETURNING resource_id"
                ),
                None,
            )
        }
        Dialect::Sqlite => {
            let still = if expiring { "AND expires_at <= $3" } else { "" };
            let which = format!(
                "id IN (SELECT resource_id FROM lifecycle_target WHERE operation_id = $2) \
                 AND NOT deleted AND active <> {new} {still}"
            );
            let flag = format!("'active', json_object('old', json('{old}'), 'new', json('{new}'))");
            (
                format!(
                    "{change} SELECT $3, {kind}, id, source_system, $2, $4, \
                     CASE WHEN deactivation_reason IS $15 THEN json_object({flag}) \
                     ELSE json_object({flag}, 'deactivation_reason', json_object('old', \
                     deactivation_reason, 'new', $15)) END FROM resource WHERE {which} \
                     RETURNING resource_id"
                ),
                Some(format!(
                    "UPDATE resource SET active = {new}, deactivation_reason = $15, \
                     modified = $3 WHERE {which}"
                )),
            )
        }
    }
}

/// Runs [`flip`]; the accounts it changed.
async fn apply(
    tx: &mut Tx,
    active: bool,
    expiring: bool,
    values: &Values,
) -> StoreResult<Vec<Uuid>> {
    let (returning, then) = flip(tx.dialect(), active, expiring);
    let rows: Vec<(Uuid,)> = tx.fetch_all(&values.sql(&returning)).await?;
    if let Some(then) = then {
        tx.execute(&values.sql(&then)).await?;
    }
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Creates an operation of `ty` (resources), running, with `params`; returns its id.
async fn new_operation(
    tx: &mut Tx,
    ty: OperationType,
    description: &str,
    params: &serde_json::Value,
    values: &Values,
) -> StoreResult<i64> {
    let ids: Vec<(i64,)> = tx
        .fetch_all(
            &values
                .sql(&format!(
                    "INSERT INTO operation (type, status, target, token_name, created, modified, \
                     description, params) VALUES ('{}', 'running', 'resources', $4, $3, $3, \
                     $17, $18) RETURNING id",
                    ty.name()
                ))
                .bind(description)
                .bind(params.clone()),
        )
        .await?;
    ids.first()
        .map(|r| r.0)
        .ok_or_else(|| StoreError::conflict(ConflictKind::State, "the operation was not created"))
}

/// Ends operation `$2`: complete, or pending with `reason`; `updated` accounts changed (or, while
/// pending, to change).
async fn settle(
    tx: &mut Tx,
    values: &Values,
    status: OperationStatus,
    updated: usize,
    reason: Option<&str>,
) -> StoreResult<Operation> {
    let completed = if status == OperationStatus::Complete {
        "$3"
    } else {
        "NULL"
    };
    tx.execute(
        &values
            .sql(&format!(
                "UPDATE operation SET status = '{}', phase = NULL, updated = {updated}, \
                 reason = $17, modified = $3, completed = {completed} WHERE id = $2",
                status.name()
            ))
            .bind(reason),
    )
    .await?;
    records::operation(tx, OperationId(values.op)).await
}

fn ids(rows: Vec<Uuid>) -> Vec<ResourceId> {
    rows.into_iter().map(ResourceId).collect()
}

/// Creates the operation of `action` and lists its targets, the candidates among `ids`; returns
/// how many (`values.op` is the operation's id from then on).
async fn start(
    tx: &mut Tx,
    action: &Action,
    description: &str,
    ids: &str,
    values: &mut Values,
) -> StoreResult<usize> {
    let ty = if action.active {
        OperationType::Activate
    } else {
        OperationType::Deactivate
    };
    values.reason = action.reason.clone().filter(|_| !action.active);
    let params = serde_json::to_value(action).unwrap_or_default();
    values.op = new_operation(tx, ty, description, &params, values).await?;
    let planned = tx
        .execute(&values.sql(&plan_targets(ids, action.active)))
        .await?;
    Ok(usize::try_from(planned).unwrap_or(usize::MAX))
}

/// Applies the listed targets of operation `$2`, or holds a deactivation of more than the
/// threshold for approval.
async fn conclude(
    tx: &mut Tx,
    active: bool,
    planned: usize,
    policy: &Policy,
    values: &Values,
) -> StoreResult<(Operation, Vec<ResourceId>)> {
    if let Some(reason) = policy.hold_reason(active, planned) {
        let op = settle(tx, values, OperationStatus::Pending, planned, Some(&reason)).await?;
        let page = PageRequest {
            after: None,
            limit: LISTED,
        };
        let mut listed = targets(tx, OperationId(values.op), &page).await?;
        listed.truncate(LISTED as usize);
        return Ok((op, listed.into_iter().map(|r| r.id).collect()));
    }
    let changed = apply(tx, active, false, values).await?;
    let op = settle(tx, values, OperationStatus::Complete, changed.len(), None).await?;
    Ok((op, ids(changed)))
}

/// Applies a lifecycle operation a person approved: its listed accounts still in the other state
/// change, in this transaction.
pub(super) async fn apply_approved(tx: &mut Tx, op: &Operation) -> StoreResult<OperationCounts> {
    let action: Action = serde_json::from_value(op.params.clone()).map_err(|e| {
        StoreError::Database(sqlx::Error::Decode(
            format!("operation {} has unreadable params: {e}", op.id).into(),
        ))
    })?;
    let mut values = Values::about(action.resource_id.0, None, now(), op.token_name.as_deref());
    values.op = op.id.0;
    values.reason = action.reason.filter(|_| !action.active);
    let changed = apply(tx, action.active, false, &values).await?;
    Ok(OperationCounts {
        updated: i64::try_from(changed.len()).unwrap_or(i64::MAX),
        ..OperationCounts::default()
    })
}

/// Deactivates, with the reason `hr-terminated` and as one operation, the identities of the
/// records `seeds` selects (a condition on `resource`): every active account under their roots
/// not already waiting in a pending deactivation. Nothing to deactivate: nothing written.
async fn terminate(
    tx: &mut Tx,
    actor: &Actor,
    seeds: &str,
    values: &mut Values,
    policy: &Policy,
) -> StoreResult<Option<Operation>> {
    let ids = identities_of(seeds);
    let remaining: Vec<(i64,)> = tx
        .fetch_all(&values.sql(&format!("SELECT count(*) {}", candidates(&ids, false))))
        .await?;
    if remaining.first().is_none_or(|r| r.0 == 0) {
        return Ok(None);
    }
    let action = Action {
        resource_id: ResourceId(values.id),
        scope: ActionScope::Identity,
        active: false,
        reason: Some(HR_TERMINATED.to_owned()),
    };
    let description = "deactivate the identities a lifecycle authority's records ended: \
                       hr-terminated";
    let planned = start(tx, &action, description, &ids, values).await?;
    let record = AuditRecord::new("resource.deactivate", target::resource(action.resource_id))
        .with_detail(serde_json::json!({
            "operation_id": values.op, "scope": "identity", "reason": HR_TERMINATED,
            "accounts": planned, "cause": values.cause,
        }));
    records::audit(tx, actor, record).await?;
    let (op, _) = conclude(tx, false, planned, policy, values).await?;
    Ok(Some(op))
}

/// Before a write to resource `id` that may end a lifecycle authority's record: takes the link
/// lock first when the resource is linked and its source is an authority, in the order every
/// identity writer takes it (link lock, then rows), so that a termination never deadlocks with a
/// link. An unlinked resource needs neither lookup: a link committed before the row is locked has
/// released the link lock, and one still in flight leaves the row unlinked, which terminates
/// nothing.
pub(super) async fn prepare(tx: &mut Tx, id: ResourceId) -> StoreResult<()> {
    let resource = records::get(tx, id).await?;
    if resource.prime_id.is_none() {
        return Ok(());
    }
    before_sync(tx, &resource.source_system).await
}

/// Before an account sync of `source_system`: the link lock, when it is an authority.
pub(super) async fn before_sync(tx: &mut Tx, source_system: &str) -> StoreResult<()> {
    if authority(tx, source_system).await? {
        records::serialize(tx, LINK_LOCK).await?;
    }
    Ok(())
}

/// When `record`, just soft-deleted while active or just deactivated, is a lifecycle
/// authority's record linked under a prime, deactivates its identity (`hr-terminated`).
pub(super) async fn hr_trigger(
    tx: &mut Tx,
    actor: &Actor,
    record: &Resource,
    policy: &Policy,
) -> StoreResult<Option<Operation>> {
    if record.prime_id.is_none() || !authority(tx, &record.source_system).await? {
        return Ok(None);
    }
    let mut values = Values::about(record.id.0, None, now(), Some(&actor.token_name));
    terminate(tx, actor, "id = $12", &mut values, policy).await
}

/// After account sync operation `op` of `source_system` applied at `at`: the lifecycle
/// authority's records linked under a prime that it deactivated, or deleted while active, end
/// their identities — all in one operation, against one threshold.
pub(super) async fn after_sync(
    tx: &mut Tx,
    actor: &Actor,
    source_system: &str,
    op: OperationId,
    at: DateTime<Utc>,
    policy: &Policy,
) -> StoreResult<Option<Operation>> {
    if !authority(tx, source_system).await? {
        return Ok(None);
    }
    let mut values = Values::about(Uuid::nil(), None, at, Some(&actor.token_name));
    values.source = source_system.to_owned();
    values.cause = op.0;
    let seeds = format!(
        "id IN (SELECT r.id FROM resource r WHERE r.source_system = $1 \
         AND r.prime_id IS NOT NULL AND r.modified = $3 AND EXISTS (SELECT 1 FROM change c \
         WHERE c.resource_id = r.id AND c.operation_id = $16 AND (c.kind = {} \
         OR (c.kind = {} AND r.active))))",
        ChangeKind::ResourceDeactivated.code(),
        ChangeKind::ResourceDeleted.code()
    );
    terminate(tx, actor, &seeds, &mut values, policy).await
}

async fn authority(tx: &mut Tx, source_system: &str) -> StoreResult<bool> {
    let select = Sql::new("SELECT lifecycle_authority FROM source WHERE source_system = $1");
    let rows: Vec<(bool,)> = tx.fetch_all(&select.bind(source_system)).await?;
    Ok(rows.first().is_some_and(|r| r.0))
}

/// Patches one resource (a write that changes nothing writes nothing). Deactivating a lifecycle
/// authority's record deactivates its identity in the same transaction.
pub(super) async fn update(
    tx: &mut Tx,
    actor: &Actor,
    id: ResourceId,
    patch: &ResourcePatch,
    policy: &Policy,
) -> StoreResult<Resource> {
    prepare(tx, id).await?;
    let (updated, changed) = write(tx, actor, id, patch, None).await?;
    if changed.contains(&"active") && !updated.active {
        hr_trigger(tx, actor, &updated, policy).await?;
    }
    Ok(updated)
}

/// Writes `patch` to resource `id` with its audit and change records (by operation `op`); returns
/// the resource and the attributes that changed.
async fn write(
    tx: &mut Tx,
    actor: &Actor,
    id: ResourceId,
    patch: &ResourcePatch,
    op: Option<OperationId>,
) -> StoreResult<(Resource, Vec<&'static str>)> {
    let current = records::lock(tx, id).await?;
    let (next, changed) = patch.apply(&current)?;
    if changed.is_empty() {
        return Ok((current, changed));
    }
    let record = AuditRecord::new("resource.update", target::resource(id))
        .with_detail(serde_json::json!({ "changed": changed, "operation_id": op }));
    records::audit(tx, actor, record).await?;
    let updated = records::write_resource(tx, &current, &next).await?;
    let mut named = changed.clone();
    if updated.deactivation_reason != current.deactivation_reason {
        named.push("deactivation_reason");
    }
    let mut change =
        ChangeRecord::resource(ChangeKind::of_update(&changed, updated.active), &updated)
            .with_attrs(changed_attributes(&current, &updated, &named));
    change.operation_id = op;
    records::log_change(tx, actor, change).await?;
    Ok((updated, changed))
}

/// Deactivates, as one `expire` operation, every live active resource whose `expires_at` has
/// passed at `at`. Serialised across processes, so an account expires once; none due, nothing
/// written.
pub(super) async fn expire(tx: &mut Tx, at: DateTime<Utc>) -> StoreResult<Option<Operation>> {
    records::serialize(tx, "roster:expiry-sweep").await?;
    let mut values = Values::about(Uuid::nil(), None, at, Some("roster"));
    let due: Vec<(i64,)> = tx
        .fetch_all(&values.sql(&format!("SELECT count(*) FROM resource WHERE {}", due())))
        .await?;
    if due.first().is_none_or(|r| r.0 == 0) {
        return Ok(None);
    }
    values.reason = Some(EXPIRED.to_owned());
    let params = serde_json::json!({ "reason": EXPIRED });
    values.op = new_operation(
        tx,
        OperationType::Expire,
        "deactivate the accounts whose expires_at passed",
        &params,
        &values,
    )
    .await?;
    tx.execute(&values.sql(&plan_expiry())).await?;
    let changed = apply(tx, false, true, &values).await?;
    let op = settle(tx, &values, OperationStatus::Complete, changed.len(), None).await?;
    Ok(Some(op))
}

/// The accounts a lifecycle operation lists, in id order.
pub(super) async fn targets(
    tx: &mut Tx,
    op: OperationId,
    page: &PageRequest<Uuid>,
) -> StoreResult<Vec<Resource>> {
    let columns = RESOURCE_COLUMNS
        .split(", ")
        .map(|c| format!("r.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let select = Sql::new(format!(
        "SELECT {columns} FROM lifecycle_target t JOIN resource r ON r.id = t.resource_id \
         WHERE t.operation_id = $1 AND r.id > $2 ORDER BY r.id LIMIT $3"
    ))
    .bind(op)
    .bind(page.after.unwrap_or_default())
    .bind(page.fetch());
    records::resources(tx, &select).await
}

/// What roster knows about a source system (defaults for one never configured).
pub(super) async fn source(tx: &mut Tx, source_system: &str) -> StoreResult<Source> {
    let select =
        Sql::new("SELECT lifecycle_authority, modified FROM source WHERE source_system = $1");
    let rows: Vec<(bool, DateTime<Utc>)> = tx.fetch_all(&select.bind(source_system)).await?;
    let found = rows.first();
    Ok(Source {
        source_system: source_system.to_owned(),
        lifecycle_authority: found.is_some_and(|r| r.0),
        modified: found.map(|r| r.1),
    })
}

/// Applies an approved lifecycle operation in one transaction.
pub(crate) async fn apply_lifecycle(
    db: &super::db::Db,
    op: &Operation,
) -> StoreResult<ApplyOutcome> {
    let mut tx = db.write().await?;
    let counts = apply_approved(&mut tx, op).await?;
    tx.commit().await?;
    Ok(ApplyOutcome::Complete(counts))
}

/// Identity lifecycle: actions on the accounts of an identity, a cohort or one account, the
/// expiry sweep, cohort-local propagation and the sources' lifecycle settings.
impl super::Store {
    /// Carries out an action as one operation (pending past the threshold): the operation and
    /// the accounts it changed, or would change.
    pub async fn act(
        &self,
        actor: &Actor,
        action: &Action,
        policy: &Policy,
    ) -> StoreResult<(Operation, Vec<ResourceId>)> {
        self.in_write(async |tx| {
            records::serialize(tx, LINK_LOCK).await?;
            let resource = records::get(tx, action.resource_id).await?;
            if action.scope == ActionScope::Account && resource.ty != ResourceType::User {
                let message = format!(
                    "resource {} is a {}: scope account acts on an account (a user); use scope \
                     cohort or identity from a prime or a record",
                    resource.id,
                    resource.ty.name()
                );
                return Err(crate::domain::InvalidInput::new(message).into());
            }
            let token = Some(actor.token_name.as_str());
            let mut values = Values::about(action.resource_id.0, None, now(), token);
            let (verb, audited) = if action.active {
                ("activate", "resource.activate")
            } else {
                ("deactivate", "resource.deactivate")
            };
            let reason = action.reason.as_deref();
            let description = format!(
                "{verb} the {} of {}{}",
                action.scope.name(),
                resource.id,
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
            let ids = scope_ids(action.scope);
            let planned = start(tx, action, &description, &ids, &mut values).await?;
            let record = AuditRecord::new(audited, target::resource(action.resource_id))
            .with_detail(serde_json::json!({
                "operation_id": values.op, "scope": action.scope.name(), "reason": action.reason,
                "accounts": planned,
            }));
            records::audit(tx, actor, record).await?;
            conclude(tx, action.active, planned, policy, &values).await
        })
        .await
    }

    /// Applies a patch's persona attributes to every account of the cohort, as one operation.
    pub async fn propagate(
        &self,
        actor: &Actor,
        id: ResourceId,
        patch: &ResourcePatch,
    ) -> StoreResult<Propagation> {
        self.in_write(async |tx| {
            check_persona_patch(patch)?;
            records::serialize(tx, LINK_LOCK).await?;
            let account = records::get(tx, id).await?;
            let Some(cohort) = account
                .prime_id
                .filter(|_| account.ty == ResourceType::User)
            else {
                return Err(StoreError::conflict(
                    ConflictKind::State,
                    format!(
                        "resource {id} is not an account linked to a cohort: patch it without \
                         propagate, or link it to a prime first"
                    ),
                ));
            };
            let mut values = Values::about(id.0, Some(cohort.0), now(), Some(&actor.token_name));
            let members: Vec<(Uuid,)> = tx
                .fetch_all(&values.sql(&format!(
                    "SELECT id FROM resource WHERE prime_id = $13 AND type = {} AND NOT deleted \
                         ORDER BY id",
                    ResourceType::User.code()
                )))
                .await?;
            let params = serde_json::json!({ "resource_id": id, "cohort_id": cohort });
            let description = format!("propagate a patch of {id} to cohort {cohort}");
            values.op =
                new_operation(tx, OperationType::Propagate, &description, &params, &values).await?;
            let mut accounts = Vec::new();
            let mut resource = account;
            for (member,) in members {
                let (written, changed) = write(
                    tx,
                    actor,
                    ResourceId(member),
                    patch,
                    Some(OperationId(values.op)),
                )
                .await?;
                if !changed.is_empty() {
                    accounts.push(written.id);
                }
                if written.id == id {
                    resource = written;
                }
            }
            let operation =
                settle(tx, &values, OperationStatus::Complete, accounts.len(), None).await?;
            Ok(Propagation {
                resource,
                operation,
                accounts,
            })
        })
        .await
    }

    /// Deactivates the accounts whose `expires_at` passed, as one operation (none: none due).
    pub async fn expire_due(&self) -> StoreResult<Option<Operation>> {
        self.in_write(async |tx| expire(tx, now()).await).await
    }

    /// The accounts a lifecycle operation lists, in id order; fetches one more than the page.
    pub async fn lifecycle_targets(
        &self,
        op: OperationId,
        page: &PageRequest<uuid::Uuid>,
    ) -> StoreResult<Vec<Resource>> {
        targets(&mut self.db().snapshot().await?, op, page).await
    }

    pub async fn source(&self, source_system: &str) -> StoreResult<Source> {
        source(&mut self.db().snapshot().await?, source_system).await
    }

    /// Sets a source system's lifecycle settings.
    pub async fn put_source(
        &self,
        actor: &Actor,
        source_system: &str,
        request: &SourceRequest,
    ) -> StoreResult<Source> {
        self.in_write(async |tx| {
            let upsert = Sql::new(
                "INSERT INTO source (source_system, lifecycle_authority, modified) \
                 VALUES ($1, $2, $3) ON CONFLICT (source_system) \
                 DO UPDATE SET lifecycle_authority = $2, modified = $3",
            )
            .bind(source_system)
            .bind(request.lifecycle_authority)
            .bind(now());
            tx.execute(&upsert).await?;
            let detail = serde_json::json!({ "lifecycle_authority": request.lifecycle_authority });
            let record = AuditRecord::new("source.update", format!("source:{source_system}"))
                .with_detail(detail);
            records::audit(tx, actor, record).await?;
            source(tx, source_system).await
        })
        .await
    }
}
