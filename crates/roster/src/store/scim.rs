//! SCIM's storage, written once for both backends: lists with filters turned into SQL, writes of
//! a user or group with its SCIM document in one transaction (with the same audit and change
//! records as every other write), and membership edits that cost the size of the edit, not of the
//! group: one set-based statement per step, whatever the number of members named.

use super::db::Tx;
use super::query::Sql;
use super::records;
use super::rows::ScimRow;
use super::scim_sql::{self as ssql, MemberStep};
use super::{lifecycle_sync, now, StoreError, StoreResult};
use super::{ConflictKind, Record};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::{ChangeKind, ChangeRecord};
use crate::domain::lifecycle::Policy;
use crate::domain::operation::{OperationCounts, OperationType};
use crate::domain::resource::{NewResource, Resource, ResourcePatch};
use crate::domain::scim::{Attr, ScimPage, ScimQuery};
use crate::domain::scim::{MemberEdit, ScimRecord, ScimType, ScimWrite};
use crate::domain::token::Actor;
use crate::domain::OperationId;
use crate::domain::ResourceId;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Most members one membership edit may name (both drivers bind each one).
pub const MAX_MEMBERS_PER_EDIT: usize = 10_000;

fn not_found(ty: ScimType, id: ResourceId, source: &str) -> StoreError {
    StoreError::missing(
        Record::Resource,
        id,
        format!("there is no {} {id} in source system {source:?}", ty.name()),
    )
}

/// Checks that `resource` is a live `ty` of `source`.
pub(super) fn check_scim(resource: &Resource, ty: ScimType, source: &str) -> StoreResult<()> {
    if resource.deleted || resource.ty != ty.resource_type() || resource.source_system != source {
        return Err(not_found(ty, resource.id, source));
    }
    Ok(())
}

/// Refuses a write based on a version older than the stored one.
pub(super) fn check_version(
    current: &Resource,
    ty: ScimType,
    expected: Option<chrono::DateTime<chrono::Utc>>,
) -> StoreResult<()> {
    if expected.is_some_and(|at| at != current.modified) {
        return Err(StoreError::Stale(format!(
            "{} {} changed since it was read; read it again and retry",
            ty.name(),
            current.id
        )));
    }
    Ok(())
}

/// Refuses a `userName` another live user of the source has, without regard to case (SCIM's
/// uniqueness of `userName`); holds the name for the transaction.
async fn check_user_name(tx: &mut Tx, write: &ScimWrite, except: ResourceId) -> StoreResult<()> {
    let (Some(key), Some(name)) = (user_name_key(write), write.identifier.as_deref()) else {
        return Ok(());
    };
    records::serialize(tx, &key).await?;
    if user_name_taken(tx, &write.source_system, name, except).await? {
        return Err(taken(write, Taken::UserName, "already"));
    }
    Ok(())
}

/// Whether a live user of `source` other than `except` has `name` as its identifier, without
/// regard to case.
async fn user_name_taken(
    tx: &mut Tx,
    source: &str,
    name: &str,
    except: ResourceId,
) -> StoreResult<bool> {
    let taken = Sql::new(
        "SELECT EXISTS (SELECT 1 FROM resource WHERE source_system = $1 AND type = 1 \
         AND NOT deleted AND lower(identifier) = lower($2) AND id <> $3)",
    )
    .bind(source)
    .bind(name)
    .bind(except)
    .replanned();
    tx.scalar(&taken).await
}

/// A SCIM document: the attributes roster keeps as they were sent.
type Doc = Map<String, serde_json::Value>;

/// A resource's SCIM document (empty when it has none).
async fn scim_doc(tx: &mut Tx, id: ResourceId) -> StoreResult<Map<String, serde_json::Value>> {
    let select = Sql::new("SELECT scim FROM resource WHERE id = $1").bind(id);
    let doc: Option<(Option<sqlx::types::Json<Doc>>,)> = tx.fetch_optional(&select).await?;
    Ok(doc_of(doc.and_then(|(d,)| d)))
}

/// Stores a resource's SCIM document, as a modification of the resource.
async fn write_scim_doc(
    tx: &mut Tx,
    id: ResourceId,
    doc: &Map<String, serde_json::Value>,
) -> StoreResult<()> {
    let update = Sql::new("UPDATE resource SET scim = $2, modified = $3 WHERE id = $1")
        .bind(id)
        .bind(serde_json::Value::Object(doc.clone()))
        .bind(super::now());
    tx.execute(&update).await?;
    Ok(())
}

/// The columns of a user or group SCIM creates.
fn new_resource(write: &ScimWrite) -> NewResource {
    NewResource {
        ty: write.ty.resource_type(),
        subtype: None,
        source_system: write.source_system.clone(),
        identifier: write.identifier.clone(),
        external_id: write.external_id.clone(),
        displayname: write.displayname.clone(),
        description: None,
        notes: None,
        tags: Vec::new(),
        active: write.active,
        expires_at: None,
    }
}

/// What each write of a [`create_all`] came to, in the order of the writes.
pub type Created = Vec<StoreResult<ScimRecord>>;

/// Creates users and groups (without members) with their documents, in `tx`, each refused on its
/// own: one whose keys are invalid, whose `userName` another live user of the source has (without
/// regard to case) or whose `externalId` another live resource has, or that repeats one of these
/// of an earlier write, writes nothing. The rest are written set-based, whatever their number:
/// the names held, one check, one insert, one statement of audit entries and one of changes.
pub(super) async fn create_all(
    tx: &mut Tx,
    actor: &Actor,
    writes: &[ScimWrite],
) -> StoreResult<Created> {
    let mut checked: Vec<StoreResult<()>> = writes
        .iter()
        .map(|w| new_resource(w).validate().map_err(StoreError::from))
        .collect();
    let keys = writes
        .iter()
        .zip(&checked)
        .filter(|(_, check)| check.is_ok())
        .flat_map(|(w, _)| [user_name_key(w), external_id_key(w)])
        .flatten()
        .collect();
    records::serialize_all(tx, keys).await?;
    refuse_taken(tx, writes, &mut checked).await?;
    let ids: Vec<ResourceId> = writes.iter().map(|_| ResourceId::generate()).collect();
    let rows: Vec<(ResourceId, &ScimWrite)> = (0..writes.len())
        .filter(|&i| checked[i].is_ok())
        .map(|i| (ids[i], &writes[i]))
        .collect();
    let mut inserted: HashMap<ResourceId, Resource> = HashMap::new();
    if !rows.is_empty() {
        let insert = ssql::insert_resources(&rows, now());
        for resource in records::resources(tx, &insert).await? {
            inserted.insert(resource.id, resource);
        }
    }
    let mut audits = Vec::new();
    let mut changes = Vec::new();
    let mut created = Vec::with_capacity(writes.len());
    for ((write, check), id) in writes.iter().zip(checked).zip(ids) {
        created.push(check.and_then(|()| match inserted.remove(&id) {
            Some(resource) => {
                audits.push(AuditRecord::new("resource.create", target::resource(id)));
                changes.push(ChangeRecord::resource(
                    ChangeKind::ResourceCreated,
                    &resource,
                ));
                Ok(ScimRecord {
                    resource,
                    doc: write.doc.clone(),
                })
            }
            // Names and externalIds are held, but a REST create holds neither: one that
            // committed meanwhile with the same identifier or externalId makes the insert skip
            // the row.
            None => Err(taken(write, Taken::Key, "by a write made at the same time")),
        }));
    }
    records::audit_all(tx, actor, audits).await?;
    records::log_changes(tx, actor, changes).await?;
    Ok(created)
}

/// The lock that holds a user's `userName` (without regard to case) in its source.
fn user_name_key(write: &ScimWrite) -> Option<String> {
    let name = write.identifier.as_deref()?;
    (write.ty == ScimType::User).then(|| {
        format!(
            "scim-user-name:{}:{}",
            write.source_system,
            name.to_lowercase()
        )
    })
}

/// The lock that holds an `externalId` in its source.
fn external_id_key(write: &ScimWrite) -> Option<String> {
    let id = write.external_id.as_deref()?;
    Some(format!("scim-external-id:{}:{id}", write.source_system))
}

/// Refuses each write, not refused yet, whose `userName` or `externalId` is taken by a live
/// resource or by an earlier write.
async fn refuse_taken(
    tx: &mut Tx,
    writes: &[ScimWrite],
    checked: &mut [StoreResult<()>],
) -> StoreResult<()> {
    let asked: Vec<usize> = (0..writes.len()).filter(|&i| checked[i].is_ok()).collect();
    if asked.is_empty() {
        return Ok(());
    }
    let found: Vec<(i32, bool, bool)> = tx.fetch_all(&ssql::taken(writes, &asked)).await?;
    for (i, name, ext) in found {
        let Some(i) = usize::try_from(i).ok().filter(|&i| i < writes.len()) else {
            continue;
        };
        if name || ext {
            let what = if name {
                Taken::UserName
            } else {
                Taken::ExternalId
            };
            checked[i] = Err(taken(&writes[i], what, "already"));
        }
    }
    let mut names = HashSet::new();
    let mut external_ids = HashSet::new();
    for i in asked {
        if checked[i].is_err() {
            continue;
        }
        let write = &writes[i];
        // A write refused here holds neither its name nor its externalId for those after it.
        let name = user_name_key(write);
        let ext = external_id_key(write);
        let again = "earlier in the same request";
        if name.as_ref().is_some_and(|n| names.contains(n)) {
            checked[i] = Err(taken(write, Taken::UserName, again));
        } else if ext.as_ref().is_some_and(|e| external_ids.contains(e)) {
            checked[i] = Err(taken(write, Taken::ExternalId, again));
        } else {
            names.extend(name);
            external_ids.extend(ext);
        }
    }
    Ok(())
}

/// Which key of a create another resource has.
#[derive(Clone, Copy)]
enum Taken {
    UserName,
    ExternalId,
    /// The identifier or the `externalId`: the insert does not say which.
    Key,
}

/// The refusal of a create whose key (`what`) another resource has (`when`).
fn taken(write: &ScimWrite, what: Taken, when: &str) -> StoreError {
    let name = write.identifier.as_deref().unwrap_or_default();
    let ext = write.external_id.as_deref().unwrap_or_default();
    let source = &write.source_system;
    StoreError::conflict(
        ConflictKind::Duplicate,
        match what {
            Taken::UserName => format!(
                "userName {name:?} is taken {when} by another user of source system {source:?} \
                 (compared without regard to case)"
            ),
            Taken::ExternalId => format!(
                "externalId {ext:?} is taken {when} by another resource of source system \
                 {source:?}"
            ),
            Taken::Key => format!(
                "the userName {name:?} or the externalId {ext:?} was taken {when} by another \
                 resource of source system {source:?}"
            ),
        },
    )
}

/// A user or group (with its members) created in `tx`.
async fn create_with_members(
    tx: &mut Tx,
    actor: &Actor,
    write: &ScimWrite,
    members: &[ResourceId],
) -> StoreResult<ScimRecord> {
    // One write has one outcome; an empty answer would mean the insert returned no row.
    let mut record = create_all(tx, actor, std::slice::from_ref(write))
        .await?
        .pop()
        .unwrap_or(Err(StoreError::Database(sqlx::Error::RowNotFound)))?;
    if !members.is_empty() {
        let edit = MemberEdit {
            add: members.to_vec(),
            remove: Vec::new(),
        };
        let id = record.resource.id;
        edit_members(tx, actor, &write.source_system, id, &edit, None).await?;
        record.resource = records::get(tx, id).await?;
    }
    Ok(record)
}

/// Replaces a user's or group's attributes and document, unless it changed since `expected`; a
/// change of the document alone is recorded as an update of `scim`.
pub(super) async fn replace(
    tx: &mut Tx,
    actor: &Actor,
    id: ResourceId,
    write: &ScimWrite,
    expected: Option<chrono::DateTime<chrono::Utc>>,
    policy: &Policy,
) -> StoreResult<()> {
    lifecycle_sync::prepare(tx, id).await?;
    let current = records::lock(tx, id).await?;
    check_scim(&current, write.ty, &write.source_system)?;
    check_version(&current, write.ty, expected)?;
    check_user_name(tx, write, id).await?;
    let patch = ResourcePatch {
        // A group's identifier is its source's key, which SCIM does not carry: it stays.
        identifier: (write.ty == ScimType::User).then(|| write.identifier.clone()),
        external_id: Some(write.external_id.clone()),
        displayname: Some(write.displayname.clone()),
        active: write.active,
        ..ResourcePatch::default()
    };
    let updated = lifecycle_sync::update(tx, actor, id, &patch, policy).await?;
    let old = scim_doc(tx, id).await?;
    if old != write.doc {
        if updated == current {
            let record = AuditRecord::new("resource.update", target::resource(id))
                .with_detail(serde_json::json!({ "changed": ["scim"] }));
            records::audit(tx, actor, record).await?;
        }
        write_scim_doc(tx, id, &write.doc).await?;
        let resource = records::get(tx, id).await?;
        let change = ChangeRecord::resource(ChangeKind::ResourceUpdated, &resource).with_attrs(
            serde_json::json!({
                "scim": { "old": Value::Object(old), "new": Value::Object(write.doc.clone()) }
            }),
        );
        records::log_change(tx, actor, change).await?;
    }
    Ok(())
}

/// The distinct ids of an edit, refusing more than [`MAX_MEMBERS_PER_EDIT`] in all.
pub(super) fn distinct(edit: &MemberEdit) -> StoreResult<(Vec<ResourceId>, Vec<ResourceId>)> {
    let sorted = |ids: &[ResourceId]| {
        let mut out = ids.to_vec();
        out.sort();
        out.dedup();
        out
    };
    let (add, remove) = (sorted(&edit.add), sorted(&edit.remove));
    if add.len() + remove.len() > MAX_MEMBERS_PER_EDIT {
        return Err(StoreError::Invalid(crate::domain::InvalidInput::new(
            format!(
                "{} members named in one request; the limit is {MAX_MEMBERS_PER_EDIT}",
                add.len() + remove.len()
            ),
        )));
    }
    Ok((add, remove))
}

/// A document read back from the database.
pub(super) fn doc_of(value: Option<sqlx::types::Json<Map<String, Value>>>) -> Map<String, Value> {
    value.map(|d| d.0).unwrap_or_default()
}

/// The named members that are not live users or groups of the group's source.
async fn invalid_members_of(
    tx: &mut Tx,
    step: &MemberStep<'_>,
    ids: &[ResourceId],
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut check = Sql::new("");
    ssql::push_invalid_members(&mut check, step, ids);
    let invalid: Vec<(Uuid,)> = tx.fetch_all(&check).await?;
    if invalid.is_empty() {
        Ok(())
    } else {
        let invalid: Vec<Uuid> = invalid.into_iter().map(|(id,)| id).collect();
        Err(invalid_members(&invalid, step.source))
    }
}

/// Edits a group's members in the caller's transaction, as one partial-update operation (none
/// when the edit is empty), with a change record per membership that changed; the group's
/// version moves when one did.
async fn edit_members(
    tx: &mut Tx,
    actor: &Actor,
    source: &str,
    group: ResourceId,
    edit: &MemberEdit,
    expected: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    let (add, remove) = distinct(edit)?;
    records::serialize(tx, &group.to_string()).await?;
    let current = records::get(tx, group).await?;
    check_scim(&current, ScimType::Group, source)?;
    check_version(&current, ScimType::Group, expected)?;
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    let op = records::insert_operation(
        tx,
        actor,
        OperationType::PartialUpdate,
        Some(group),
        Some(source),
    )
    .await?;
    let step = MemberStep {
        group,
        op,
        at: now(),
        source,
        token: Some(actor.token_name.as_str()),
    };
    invalid_members_of(tx, &step, &add).await?;
    let mut counts = OperationCounts::default();
    if !add.is_empty() {
        let mut fresh = Sql::new("");
        ssql::push_count_fresh(&mut fresh, &step, &add);
        (counts.added, counts.reactivated) = tx.fetch_one(&fresh).await?;
        for statement in ssql::add_statements(tx.dialect()) {
            let mut q = Sql::new("");
            statement(&mut q, &step, &add);
            tx.execute(&q).await?;
        }
    }
    if !remove.is_empty() {
        let mut removed = 0;
        for statement in ssql::remove_statements(tx.dialect()) {
            let mut q = Sql::new("");
            statement(&mut q, &step, &remove);
            removed = tx.execute(&q).await?;
        }
        counts.removed = i64::try_from(removed).unwrap_or(i64::MAX);
    }
    if counts.added + counts.reactivated + counts.removed > 0 {
        let touch = Sql::new("UPDATE resource SET modified = $2 WHERE id = $1")
            .bind(group)
            .bind(step.at);
        tx.execute(&touch).await?;
    }
    let record = AuditRecord::new("operation.partial-update", target::operation(op)).with_detail(
        serde_json::json!({
            "added": add.len(), "removed": remove.len(), "via": "scim"
        }),
    );
    records::audit(tx, actor, record).await?;
    records::set_counts(tx, op, counts).await?;
    Ok(())
}

/// SCIM records selected by `sql` (with `ssql::columns()`).
async fn scim_rows(tx: &mut Tx, sql: &Sql) -> StoreResult<Vec<ScimRecord>> {
    let rows: Vec<ScimRow> = tx.fetch_all(sql).await?;
    rows.into_iter().map(ScimRecord::try_from).collect()
}

impl super::Store {
    /// The live users or groups of `source` that match, in the asked order: the total, and the
    /// page (after an offset or after a cursor's row).
    pub async fn scim_list(
        &self,
        source: &str,
        ty: ScimType,
        query: &ScimQuery,
    ) -> StoreResult<ScimPage> {
        let mut tx = self.db().snapshot().await?;
        let d = tx.dialect();
        let mut count = Sql::new("SELECT count(*) FROM resource r WHERE ");
        ssql::push_scope(&mut count, d, source, ty, query.cond.as_ref());
        let total: i64 = tx.scalar(&count).await?;
        let mut page = Sql::new(format!("SELECT {} FROM resource r WHERE ", ssql::columns()));
        ssql::push_scope(&mut page, d, source, ty, query.cond.as_ref());
        ssql::push_after(&mut page, d, query);
        ssql::push_order(&mut page, d, query);
        let mut records = scim_rows(&mut tx, &page).await?;
        let more = records.len() as i64 > query.count;
        records.truncate(usize::try_from(query.count).unwrap_or_default());
        let sorted = query
            .sort
            .as_ref()
            .filter(|a| query.keyed && more && **a != Attr::Id);
        let last_key = match (sorted, records.last()) {
            (Some(attr), Some(last)) => {
                let key = Sql::new(ssql::sort_key_of(attr, d)).bind(last.resource.id);
                tx.scalar(&key).await?
            }
            _ => None,
        };
        Ok(ScimPage {
            total,
            records,
            more,
            last_key,
        })
    }

    /// The stored records among `ids`, deleted ones included (a delta query answers those as
    /// tombstones), whatever their source and type; purged ones are missing.
    pub async fn scim_records(&self, ids: &[ResourceId]) -> StoreResult<Vec<ScimRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = Sql::new(format!(
            "SELECT {} FROM resource r WHERE r.id IN (",
            ssql::columns()
        ));
        for (i, id) in ids.iter().enumerate() {
            q.push(if i == 0 { "" } else { ", " }).push_bind(*id);
        }
        q.push(") ORDER BY r.id");
        scim_rows(&mut self.db().read().await?, &q).await
    }

    /// One live user or group of `source`.
    pub async fn scim_get(
        &self,
        source: &str,
        ty: ScimType,
        id: ResourceId,
    ) -> StoreResult<ScimRecord> {
        let select = Sql::new(format!(
            "SELECT {} FROM resource r WHERE r.id = $1",
            ssql::columns()
        ))
        .bind(id);
        let Some(record) = scim_rows(&mut self.db().read().await?, &select)
            .await?
            .pop()
        else {
            return Err(StoreError::missing(
                Record::Resource,
                id,
                format!("there is no {} {id} in source system {source:?}", ty.name()),
            ));
        };
        check_scim(&record.resource, ty, source)?;
        Ok(record)
    }

    /// The active members of a group that are users or groups of the group's own source (the
    /// only ones its SCIM base knows), in member-id order, at most `limit`: each member's id,
    /// its name in the group, and whether it is a group.
    pub async fn scim_members(
        &self,
        group: ResourceId,
        limit: i64,
    ) -> StoreResult<Vec<(ResourceId, Option<String>, bool)>> {
        let select = Sql::new(
            "SELECT gm.member_id, coalesce(gm.member_name, m.displayname), \
             m.type = 2 FROM group_member gm JOIN resource m ON m.id = gm.member_id \
             JOIN resource g ON g.id = gm.group_id \
             WHERE gm.group_id = $1 AND NOT gm.removed \
             AND m.source_system = g.source_system AND m.type IN (1, 2) \
             ORDER BY gm.member_id LIMIT $2",
        )
        .bind(group)
        .bind(limit);
        let rows: Vec<(Uuid, Option<String>, bool)> =
            self.db().read().await?.fetch_all(&select).await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, is_group)| (ResourceId(id), name, is_group))
            .collect())
    }

    /// The active members of a group that its SCIM document does not list (members of other
    /// sources, and members that are neither users nor groups): a replace of the document's
    /// members keeps them.
    pub async fn scim_hidden_members(&self, group: ResourceId) -> StoreResult<Vec<ResourceId>> {
        let select = Sql::new(
            "SELECT gm.member_id FROM group_member gm \
             JOIN resource m ON m.id = gm.member_id \
             JOIN resource g ON g.id = gm.group_id \
             WHERE gm.group_id = $1 AND NOT gm.removed \
             AND NOT (m.source_system = g.source_system AND m.type IN (1, 2))",
        )
        .bind(group);
        let rows: Vec<(Uuid,)> = self.db().read().await?.fetch_all(&select).await?;
        Ok(rows.into_iter().map(|(id,)| ResourceId(id)).collect())
    }

    /// Creates a user or group (with its members), in one transaction.
    pub async fn scim_create(
        &self,
        actor: &Actor,
        write: &ScimWrite,
        members: &[ResourceId],
    ) -> StoreResult<ScimRecord> {
        let mut tx = self.db().write().await?;
        let record = create_with_members(&mut tx, actor, write, members).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Creates users and groups (without members) in one transaction, set-based; each is
    /// refused on its own (see [`create_all`]). An error of the whole means none was created.
    pub async fn scim_create_all(
        &self,
        actor: &Actor,
        writes: &[ScimWrite],
    ) -> StoreResult<Created> {
        let mut tx = self.db().write().await?;
        let created = create_all(&mut tx, actor, writes).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Replaces the attributes of a live user or group of `write.source_system` (and edits a
    /// group's members), in one transaction, unless it changed since version `expected`.
    pub async fn scim_replace(
        &self,
        actor: &Actor,
        id: ResourceId,
        write: &ScimWrite,
        edit: &MemberEdit,
        expected: Option<DateTime<Utc>>,
        policy: &Policy,
    ) -> StoreResult<()> {
        let mut tx = self.db().write().await?;
        if !edit.is_empty() {
            // The group's lock first, as every membership write takes it.
            records::serialize(&mut tx, &id.to_string()).await?;
        }
        replace(&mut tx, actor, id, write, expected, policy).await?;
        if !edit.is_empty() {
            edit_members(&mut tx, actor, &write.source_system, id, edit, None).await?;
        }
        tx.commit().await
    }

    /// Adds and removes members of a live group of `source`, as one partial-update operation,
    /// unless the group changed since version `expected`.
    pub async fn scim_edit_members(
        &self,
        actor: &Actor,
        source: &str,
        group: ResourceId,
        edit: &MemberEdit,
        expected: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        let mut tx = self.db().write().await?;
        edit_members(&mut tx, actor, source, group, edit, expected).await?;
        tx.commit().await
    }

    /// Refuses members that are not live users or groups of the group's source.
    pub async fn scim_check_members(
        &self,
        source: &str,
        group: ResourceId,
        members: &[ResourceId],
    ) -> StoreResult<()> {
        let step = MemberStep {
            group,
            op: OperationId(0),
            at: now(),
            source,
            token: None,
        };
        let edit = MemberEdit {
            add: members.to_vec(),
            remove: Vec::new(),
        };
        let (add, _) = distinct(&edit)?;
        invalid_members_of(&mut self.db().read().await?, &step, &add).await
    }
}

/// The error for members that are not live users or groups of the group's source.
pub(super) fn invalid_members(ids: &[uuid::Uuid], source: &str) -> StoreError {
    let shown: Vec<String> = ids.iter().take(10).map(ToString::to_string).collect();
    StoreError::Invalid(crate::domain::InvalidInput::new(format!(
        "{} of the members named are not live users or groups of source system {source:?} (or \
         are the group itself): {}{}; nothing was changed",
        ids.len(),
        shown.join(", "),
        if ids.len() > shown.len() { ", …" } else { "" }
    )))
}
