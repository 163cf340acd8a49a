//! SCIM's storage, written once for both backends: lists with filters turned into SQL, writes of
//! a user or group with its SCIM document in one transaction (with the same audit and change
//! records as every other write), and membership edits that cost the size of the edit, not of the
//! group: one set-based statement per step, whatever the number of members named.

use super::resource_sync::Conn;
use super::{lifecycle_sync, StoreError, StoreResult};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::{ChangeKind, ChangeRecord};
use crate::domain::lifecycle::Policy;
use crate::domain::resource::{NewResource, Resource, ResourcePatch};
use crate::domain::scim::{ScimRecord, ScimType, ScimWrite};
use crate::domain::token::Actor;
use crate::domain::ResourceId;
use async_trait::async_trait;
use serde_json::{Map, Value};

/// Most members one membership edit may name (both drivers bind each one).
pub const MAX_MEMBERS_PER_EDIT: usize = 10_000;

#[async_trait]
pub trait ScimStore: Send + Sync {
    /// The live users or groups of `source` that match, in the asked order: the total, and the
    /// page.
    async fn scim_list(
        &self,
        source: &str,
        ty: ScimType,
        query: &crate::domain::scim::ScimQuery,
    ) -> StoreResult<(i64, Vec<ScimRecord>)>;
    /// One live user or group of `source`.
    async fn scim_get(&self, source: &str, ty: ScimType, id: ResourceId)
        -> StoreResult<ScimRecord>;
    /// The active members of a group in member-id order, after `after`, at most `limit`: each
    /// member's id, its name in the group, and whether it is a group.
    async fn scim_members(
        &self,
        group: ResourceId,
        after: Option<ResourceId>,
        limit: i64,
    ) -> StoreResult<Vec<(ResourceId, Option<String>, bool)>>;
    async fn scim_create(&self, actor: &Actor, write: &ScimWrite) -> StoreResult<ScimRecord>;
    /// Replaces the attributes of a live user or group of `write.source_system`.
    async fn scim_replace(
        &self,
        actor: &Actor,
        id: ResourceId,
        write: &ScimWrite,
        expected: Option<chrono::DateTime<chrono::Utc>>,
        policy: &Policy,
    ) -> StoreResult<ScimRecord>;
    /// Adds and removes members of a live group of `source`, as one partial-update operation.
    async fn scim_edit_members(
        &self,
        actor: &Actor,
        source: &str,
        group: ResourceId,
        add: &[ResourceId],
        remove: &[ResourceId],
    ) -> StoreResult<crate::domain::operation::Operation>;
}

fn not_found(ty: ScimType, id: ResourceId, source: &str) -> StoreError {
    StoreError::NotFound(format!(
        "there is no {} {id} in source system {source:?}",
        ty.name()
    ))
}

/// Checks that `resource` is a live `ty` of `source`.
pub(super) fn check_scim(resource: &Resource, ty: ScimType, source: &str) -> StoreResult<()> {
    if resource.deleted
        || resource.ty != super::scim_sql::resource_type(ty)
        || resource.source_system != source
    {
        return Err(not_found(ty, resource.id, source));
    }
    Ok(())
}

/// Creates a user or group with its document.
pub(super) async fn create<C: Conn>(
    conn: &mut C,
    actor: &Actor,
    write: &ScimWrite,
) -> StoreResult<ScimRecord> {
    let new = NewResource {
        ty: super::scim_sql::resource_type(write.ty),
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
    };
    new.validate()?;
    let resource = conn.insert_resource(actor, &new).await?;
    conn.write_scim_doc(resource.id, &write.doc).await?;
    Ok(ScimRecord {
        resource,
        doc: write.doc.clone(),
    })
}

/// Replaces a user's or group's attributes and document; a change of the document alone is
/// recorded as an update of `scim`.
pub(super) async fn replace<C: Conn>(
    conn: &mut C,
    actor: &Actor,
    id: ResourceId,
    write: &ScimWrite,
    expected: Option<chrono::DateTime<chrono::Utc>>,
    policy: &Policy,
) -> StoreResult<ScimRecord> {
    lifecycle_sync::prepare(conn, id).await?;
    let current = conn.lock(id).await?;
    check_scim(&current, write.ty, &write.source_system)?;
    if expected.is_some_and(|at| at != current.modified) {
        return Err(StoreError::Stale(format!(
            "{} {id} changed since it was read; read it again and retry",
            write.ty.name()
        )));
    }
    let patch = ResourcePatch {
        // A group's identifier is its source's key, which SCIM does not carry: it stays.
        identifier: (write.ty == ScimType::User).then(|| write.identifier.clone()),
        external_id: Some(write.external_id.clone()),
        displayname: Some(write.displayname.clone()),
        active: write.active,
        ..ResourcePatch::default()
    };
    let mut resource = lifecycle_sync::update(conn, actor, id, &patch, policy).await?;
    let old = conn.scim_doc(id).await?;
    if old != write.doc {
        if resource == current {
            let record = AuditRecord::new("resource.update", target::resource(id))
                .with_detail(serde_json::json!({ "changed": ["scim"] }));
            conn.audit(actor, record).await?;
        }
        conn.write_scim_doc(id, &write.doc).await?;
        resource = conn.get(id).await?;
        let change = ChangeRecord::resource(ChangeKind::ResourceUpdated, &resource).with_attrs(
            serde_json::json!({
                "scim": { "old": Value::Object(old), "new": Value::Object(write.doc.clone()) }
            }),
        );
        conn.log_change(actor, change).await?;
    }
    Ok(ScimRecord {
        resource,
        doc: write.doc.clone(),
    })
}

/// The distinct ids of `ids`, in order, refusing more than [`MAX_MEMBERS_PER_EDIT`].
pub(super) fn distinct(ids: &[ResourceId]) -> StoreResult<Vec<ResourceId>> {
    let mut out: Vec<ResourceId> = ids.to_vec();
    out.sort();
    out.dedup();
    if out.len() > MAX_MEMBERS_PER_EDIT {
        return Err(StoreError::Invalid(crate::domain::InvalidInput::new(
            format!(
                "{} members named in one request; the limit is {MAX_MEMBERS_PER_EDIT}",
                out.len()
            ),
        )));
    }
    Ok(out)
}

/// A document read back from the database.
pub(super) fn doc_of(value: Option<sqlx::types::Json<Map<String, Value>>>) -> Map<String, Value> {
    value.map(|d| d.0).unwrap_or_default()
}

/// Implements [`ScimStore`] for a store with `read_tx`, `write_tx`, `finish`,
/// `insert_operation`, `set_counts` and `audit`, on database `$db` whose resource rows read as
/// `$row`.
macro_rules! impl_scim_store {
    ($store:ty, $db:ty, $dialect:expr, $row:ty) => {
        #[async_trait::async_trait]
        impl crate::store::scim::ScimStore for $store {
            async fn scim_list(
                &self,
                source: &str,
                ty: crate::domain::scim::ScimType,
                query: &crate::domain::scim::ScimQuery,
            ) -> crate::store::StoreResult<(i64, Vec<crate::domain::scim::ScimRecord>)> {
                use crate::store::scim_sql as ssql;
                let mut tx = self.read_tx().await?;
                let mut count = sqlx::QueryBuilder::<$db>::new(
                    "SELECT count(*) FROM resource r WHERE ",
                );
                ssql::push_scope(&mut count, $dialect, source, ty, query.cond.as_ref());
                let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;
                let mut page = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM resource r WHERE ",
                    ssql::columns()
                ));
                ssql::push_scope(&mut page, $dialect, source, ty, query.cond.as_ref());
                ssql::push_order(&mut page, $dialect, query);
                let rows: Vec<crate::store::rows::ScimRow<$row>> =
                    page.build_query_as().fetch_all(&mut *tx).await?;
                let records = rows
                    .into_iter()
                    .map(crate::domain::scim::ScimRecord::try_from)
                    .collect::<Result<_, _>>()?;
                Ok((total, records))
            }

            async fn scim_get(
                &self,
                source: &str,
                ty: crate::domain::scim::ScimType,
                id: crate::domain::ResourceId,
            ) -> crate::store::StoreResult<crate::domain::scim::ScimRecord> {
                let mut tx = self.read_tx().await?;
                let row: Option<crate::store::rows::ScimRow<$row>> = sqlx::query_as(&format!(
                    "SELECT {} FROM resource r WHERE r.id = $1",
                    crate::store::scim_sql::columns()
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let record = match row {
                    Some(row) => crate::domain::scim::ScimRecord::try_from(row)?,
                    None => {
                        return Err(crate::store::StoreError::NotFound(format!(
                            "there is no {} {id} in source system {source:?}",
                            ty.name()
                        )))
                    }
                };
                crate::store::scim::check_scim(&record.resource, ty, source)?;
                Ok(record)
            }

            async fn scim_members(
                &self,
                group: crate::domain::ResourceId,
                after: Option<crate::domain::ResourceId>,
                limit: i64,
            ) -> crate::store::StoreResult<
                Vec<(crate::domain::ResourceId, Option<String>, bool)>,
            > {
                let mut tx = self.read_tx().await?;
                let rows: Vec<(uuid::Uuid, Option<String>, bool)> = sqlx::query_as(
                    "SELECT gm.member_id, coalesce(gm.member_name, m.displayname, m.identifier), \
                     m.type = 2 FROM group_member gm JOIN resource m ON m.id = gm.member_id \
                     WHERE gm.group_id = $1 AND NOT gm.removed AND gm.member_id > $2 \
                     ORDER BY gm.member_id LIMIT $3",
                )
                .bind(group)
                .bind(after.map_or(uuid::Uuid::nil(), |a| a.0))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, is_group)| (crate::domain::ResourceId(id), name, is_group))
                    .collect())
            }

            async fn scim_create(
                &self,
                actor: &crate::domain::token::Actor,
                write: &crate::domain::scim::ScimWrite,
            ) -> crate::store::StoreResult<crate::domain::scim::ScimRecord> {
                let mut tx = self.write_tx().await?;
                let record = crate::store::scim::create(&mut tx, actor, write).await?;
                <$store>::finish(tx).await?;
                Ok(record)
            }

            async fn scim_replace(
                &self,
                actor: &crate::domain::token::Actor,
                id: crate::domain::ResourceId,
                write: &crate::domain::scim::ScimWrite,
                expected: Option<chrono::DateTime<chrono::Utc>>,
                policy: &crate::domain::lifecycle::Policy,
            ) -> crate::store::StoreResult<crate::domain::scim::ScimRecord> {
                let mut tx = self.write_tx().await?;
                let record =
                    crate::store::scim::replace(&mut tx, actor, id, write, expected, policy)
                        .await?;
                <$store>::finish(tx).await?;
                Ok(record)
            }

            async fn scim_edit_members(
                &self,
                actor: &crate::domain::token::Actor,
                source: &str,
                group: crate::domain::ResourceId,
                add: &[crate::domain::ResourceId],
                remove: &[crate::domain::ResourceId],
            ) -> crate::store::StoreResult<crate::domain::operation::Operation> {
                use crate::store::resource_sync::Conn;
                use crate::store::scim_sql as ssql;
                let add = crate::store::scim::distinct(add)?;
                let remove = crate::store::scim::distinct(remove)?;
                let mut tx = self.write_tx().await?;
                tx.serialize(&group.to_string()).await?;
                let current = tx.get(group).await?;
                crate::store::scim::check_scim(
                    &current,
                    crate::domain::scim::ScimType::Group,
                    source,
                )?;
                let op = <$store>::insert_operation(
                    &mut tx,
                    actor,
                    crate::domain::operation::OperationType::PartialUpdate,
                    Some(group),
                    Some(source),
                )
                .await?;
                let step = ssql::MemberStep {
                    group,
                    op,
                    at: crate::store::now(),
                    source,
                    token: Some(actor.token_name.as_str()),
                };
                let mut counts = crate::domain::operation::OperationCounts::default();
                if !add.is_empty() {
                    let mut check = sqlx::QueryBuilder::<$db>::new("");
                    ssql::push_invalid_members(&mut check, &step, &add);
                    let invalid: Vec<uuid::Uuid> =
                        check.build_query_scalar().fetch_all(&mut *tx).await?;
                    if !invalid.is_empty() {
                        return Err(crate::store::scim::invalid_members(&invalid, source));
                    }
                    let mut fresh = sqlx::QueryBuilder::<$db>::new("");
                    ssql::push_count_fresh(&mut fresh, &step, &add);
                    let (added, reactivated): (i64, i64) =
                        fresh.build_query_as().fetch_one(&mut *tx).await?;
                    for statement in ssql::add_statements($dialect) {
                        let mut q = sqlx::QueryBuilder::<$db>::new("");
                        statement(&mut q, &step, &add);
                        q.build().execute(&mut *tx).await?;
                    }
                    counts.added = added;
                    counts.reactivated = reactivated;
                }
                if !remove.is_empty() {
                    let mut removed = 0;
                    for statement in ssql::remove_statements($dialect) {
                        let mut q = sqlx::QueryBuilder::<$db>::new("");
                        statement(&mut q, &step, &remove);
                        removed = q.build().execute(&mut *tx).await?.rows_affected();
                    }
                    counts.removed = i64::try_from(removed).unwrap_or(i64::MAX);
                }
                let record = crate::domain::audit::AuditRecord::new(
                    "operation.partial-update",
                    crate::domain::audit::target::operation(op),
                )
                .with_detail(serde_json::json!({
                    "added": add.len(), "removed": remove.len(), "via": "scim"
                }));
                <$store>::audit(&mut tx, actor, record).await?;
                let operation = <$store>::set_counts(&mut tx, op, counts).await?;
                <$store>::finish(tx).await?;
                Ok(operation)
            }
        }
    };
}

pub(crate) use impl_scim_store;

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
