//! Resources, memberships, operations, tokens and the audit: the primitives every flow writes
//! with, and the store's plain reads and single writes, written once over [`Tx`].

use super::db::{Dialect, Tx};
use super::lifecycle_sync;
use super::query::{Sql, TextList, Value as Arg};
use super::rows::{self, AuditRow, MembershipRow, OperationRow, ResourceRow, TokenRow};
use super::{membership_sync, MembershipEdit};
use super::{now, resource_not_found, sql, Deletion, MembershipChange, StoreError, StoreResult};
use super::{ConflictKind, Record};
use crate::domain::audit::{target, AuditEntry, AuditFilter, AuditRecord};
use crate::domain::change::{ChangeKind, ChangeRecord};
use crate::domain::feed::Cursor;
use crate::domain::full_update::{MemberRef, PreviewAction};
use crate::domain::lifecycle::Policy;
use crate::domain::membership::{Membership, MembershipFilter, MembershipInput};
use crate::domain::operation::OperationType::PartialUpdate;
use crate::domain::operation::{Operation, OperationCounts, OperationFilter, OperationType};
use crate::domain::page::{Listing, PageRequest};
use crate::domain::resource::{NewResource, Resource, ResourceFilter, ResourcePatch, ResourceType};
use crate::domain::token::{Actor, NewToken, Scope, SecretHash, Token};
use crate::domain::{OperationId, ResourceId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Turns a unique violation on a resource key into a conflict that names the key.
fn resource_conflict(e: StoreError, source_system: &str) -> StoreError {
    match &e {
        StoreError::Conflict { message, .. } if message.contains("external_id") => StoreError::conflict(ConflictKind::Duplicate, format!(
            "a live resource with this external_id already exists in source system \"{source_system}\""
        )),
        StoreError::Conflict { message, .. } if message.contains("identifier") => StoreError::conflict(ConflictKind::Duplicate, format!(
            "a live resource of this type with this identifier already exists in source system \"{source_system}\""
        )),
        _ => e,
    }
}

/// The head of the feed when `page` is a first page (read on the connection that reads the page,
/// just before it).
async fn as_of<K>(tx: &mut Tx, page: &PageRequest<K>) -> StoreResult<Option<Cursor>> {
    match page.after {
        Some(_) => Ok(None),
        None => super::feed::snapshot_cursor(tx).await.map(Some),
    }
}

/// A resource, deleted or not.
pub(super) async fn get(tx: &mut Tx, id: ResourceId) -> StoreResult<Resource> {
    let row: Option<ResourceRow> = tx
        .fetch_optional(&Sql::new(&**sql::SELECT_RESOURCE).bind(id))
        .await?;
    row.ok_or_else(|| resource_not_found(id))?.try_into()
}

/// A resource, locked for the rest of the transaction.
pub(super) async fn lock(tx: &mut Tx, id: ResourceId) -> StoreResult<Resource> {
    let text = format!("{}{}", *sql::SELECT_RESOURCE, tx.dialect().for_update());
    let row: Option<ResourceRow> = tx.fetch_optional(&Sql::new(text).bind(id)).await?;
    row.ok_or_else(|| resource_not_found(id))?.try_into()
}

/// Writes `next` over the stored resource `current` (same id), returning what was stored.
pub(super) async fn write_resource(
    tx: &mut Tx,
    current: &Resource,
    next: &Resource,
) -> StoreResult<Resource> {
    let update = Sql::new(&**sql::UPDATE_RESOURCE)
        .bind(current.id)
        .bind(next.subtype.map(|s| s.code()))
        .bind(next.identifier.as_deref())
        .bind(next.external_id.as_deref())
        .bind(next.displayname.as_deref())
        .bind(next.description.as_deref())
        .bind(next.notes.as_deref())
        .bind(TextList(next.tags.clone()))
        .bind(next.active)
        .bind(next.expires_at)
        .bind(now());
    let row: ResourceRow = tx
        .fetch_one(&update)
        .await
        .map_err(|e| resource_conflict(e, &current.source_system))?;
    row.try_into()
}

/// Appends one audit entry, in the transaction of the write it records.
pub(super) async fn audit(tx: &mut Tx, actor: &Actor, record: AuditRecord) -> StoreResult<()> {
    audit_all(tx, actor, vec![record]).await
}

/// Appends audit entries, in order, in one statement, in the transaction of the writes they
/// record.
pub(super) async fn audit_all(
    tx: &mut Tx,
    actor: &Actor,
    records: Vec<AuditRecord>,
) -> StoreResult<()> {
    let at = now();
    let rows = records.into_iter().map(|record| {
        [
            at.into(),
            actor.token_id.into(),
            actor.token_name.as_str().into(),
            record.action.into(),
            record.target.into(),
            actor.request_id.as_deref().into(),
            record.detail.into(),
        ]
    });
    insert_rows(tx, sql::INSERT_AUDIT, rows).await
}

/// Appends one change to the log, in the transaction of the write it records.
pub(super) async fn log_change(
    tx: &mut Tx,
    actor: &Actor,
    change: ChangeRecord,
) -> StoreResult<()> {
    log_changes(tx, actor, vec![change]).await
}

/// Appends changes to the log, in order, in one statement, in the transaction of the writes
/// they record.
pub(super) async fn log_changes(
    tx: &mut Tx,
    actor: &Actor,
    changes: Vec<ChangeRecord>,
) -> StoreResult<()> {
    let at = now();
    let rows = changes.into_iter().map(|change| {
        [
            at.into(),
            change.kind.code().into(),
            change.resource_id.into(),
            change.group_id.into(),
            change.member_id.into(),
            change.source_system.into(),
            change.operation_id.into(),
            actor.token_name.as_str().into(),
            change.attrs.into(),
        ]
    });
    insert_rows(tx, sql::INSERT_CHANGE, rows).await
}

/// Runs `insert` (text ending in `VALUES `) with a row of placeholders bound to each of `rows`;
/// nothing when there are none.
async fn insert_rows<const N: usize>(
    tx: &mut Tx,
    insert: &'static str,
    rows: impl Iterator<Item = [Arg; N]>,
) -> StoreResult<()> {
    let mut q = Sql::new(insert);
    let mut count = 0;
    for row in rows {
        q.push(if count > 0 { ", (" } else { "(" });
        for (i, value) in row.into_iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push_bind(value);
        }
        q.push(")");
        count += 1;
    }
    match count {
        0 => {}
        // One row is the common case, kept prepared; each other count would be a statement of
        // its own in the connection's cache.
        1 => {
            tx.execute(&q).await?;
        }
        _ => {
            tx.execute(&q.replanned()).await?;
        }
    }
    Ok(())
}

/// Ends every active membership of a resource (as group and as member), with its changes.
async fn end_memberships_of(
    tx: &mut Tx,
    actor: &Actor,
    id: ResourceId,
    op: OperationId,
    at: DateTime<Utc>,
) -> StoreResult<i64> {
    let removed = ChangeKind::MembershipRemoved.code();
    let log = |from: &str| {
        format!(
            "INSERT INTO change (at, kind, group_id, member_id, source_system, operation_id, \
             token_name) SELECT $2, {removed}, group_id, member_id, source, $3, $4 FROM {from}"
        )
    };
    let statements = match tx.dialect() {
        Dialect::Postgres => vec![format!(
            "WITH ended AS ({} RETURNING group_id, member_id, source) {}",
            sql::END_MEMBERSHIPS_OF,
            log("ended")
        )],
        Dialect::Sqlite => vec![
            log("group_member WHERE (group_id = $1 OR member_id = $1) AND NOT removed"),
            format!("{} AND $4 IS NOT NULL", sql::END_MEMBERSHIPS_OF),
        ],
    };
    let mut ended = 0;
    for text in statements {
        let statement = Sql::new(text)
            .bind(id)
            .bind(at)
            .bind(op)
            .bind(actor.token_name.as_str());
        ended = tx.execute(&statement).await?;
    }
    Ok(i64::try_from(ended).unwrap_or(i64::MAX))
}

/// Records an operation that is complete as it is created (single writes, deletes).
pub(super) async fn insert_operation(
    tx: &mut Tx,
    actor: &Actor,
    ty: OperationType,
    group_id: Option<ResourceId>,
    source_system: Option<&str>,
) -> StoreResult<OperationId> {
    let insert = Sql::new(sql::INSERT_COMPLETED_OPERATION)
        .bind(ty.name())
        .bind(group_id)
        .bind(source_system)
        .bind(actor.token_name.as_str())
        .bind(now());
    Ok(OperationId(tx.scalar::<i64>(&insert).await?))
}

/// Sets the counts of an operation once its writes are known.
pub(super) async fn set_counts(
    tx: &mut Tx,
    id: OperationId,
    counts: OperationCounts,
) -> StoreResult<Operation> {
    let update = Sql::new(&**sql::SET_OPERATION_COUNTS)
        .bind(id)
        .bind(counts.added)
        .bind(counts.reactivated)
        .bind(counts.removed)
        .bind(counts.updated)
        .bind(counts.unchanged)
        .bind(counts.rejected);
    tx.fetch_one::<OperationRow>(&update).await?.try_into()
}

/// Creates a resource with its audit and change records.
pub(super) async fn insert_resource(
    tx: &mut Tx,
    actor: &Actor,
    new: &NewResource,
) -> StoreResult<Resource> {
    let id = ResourceId::generate();
    audit(
        tx,
        actor,
        AuditRecord::new("resource.create", target::resource(id)),
    )
    .await?;
    let insert = Sql::new(&**sql::INSERT_RESOURCE)
        .bind(id)
        .bind(new.ty.code())
        .bind(new.ty.name())
        .bind(new.subtype.map(|s| s.code()))
        .bind(new.source_system.as_str())
        .bind(new.identifier.as_deref())
        .bind(new.external_id.as_deref())
        .bind(new.displayname.as_deref())
        .bind(new.description.as_deref())
        .bind(new.notes.as_deref())
        .bind(TextList(new.tags.clone()))
        .bind(new.active.unwrap_or(true))
        .bind(new.expires_at)
        .bind(now());
    let row: ResourceRow = tx
        .fetch_one(&insert)
        .await
        .map_err(|e| resource_conflict(e, &new.source_system))?;
    let resource: Resource = row.try_into()?;
    let change = ChangeRecord::resource(ChangeKind::ResourceCreated, &resource);
    log_change(tx, actor, change).await?;
    Ok(resource)
}

/// An operation.
pub(super) async fn operation(tx: &mut Tx, id: OperationId) -> StoreResult<Operation> {
    let row: Option<OperationRow> = tx
        .fetch_optional(&Sql::new(&**sql::SELECT_OPERATION).bind(id))
        .await?;
    row.ok_or_else(|| StoreError::not_found(Record::Operation, id))?
        .try_into()
}

/// Locks the group and the member for a membership write and checks that both are live.
async fn lock_membership_ends(
    tx: &mut Tx,
    group_id: ResourceId,
    member_id: ResourceId,
) -> StoreResult<Resource> {
    let group = lock(tx, group_id).await?;
    let text = format!("{}{}", *sql::SELECT_RESOURCE, tx.dialect().for_share());
    let member: Option<ResourceRow> = tx.fetch_optional(&Sql::new(text).bind(member_id)).await?;
    let member: Resource = member
        .ok_or_else(|| resource_not_found(member_id))?
        .try_into()?;
    crate::domain::membership::check_ends(&group, &member)?;
    Ok(group)
}

impl super::Store {
    /// Creates a resource with its audit and change records.
    pub async fn create_resource(&self, actor: &Actor, new: &NewResource) -> StoreResult<Resource> {
        self.in_write(async |tx| insert_resource(tx, actor, new).await)
            .await
    }

    /// A resource by id, deleted or not.
    pub async fn get_resource(&self, id: ResourceId) -> StoreResult<Resource> {
        get(&mut self.db().lookup().await?, id).await
    }

    /// Resources in id order after the page's cursor; fetches one more than the page.
    pub async fn list_resources(
        &self,
        filter: &ResourceFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Listing<Resource>> {
        let mut tx = self.db().read().await?;
        let as_of = as_of(&mut tx, page).await?;
        let list = sql::resource_list(tx.dialect(), filter, page);
        let rows = rows::resources(tx.fetch_all(&list).await?)?;
        Ok(Listing { rows, as_of })
    }

    /// The first `limit` resources in id order that match `filter` (a lookup: no feed head).
    pub async fn find_resources(
        &self,
        filter: &ResourceFilter,
        limit: u32,
    ) -> StoreResult<Vec<Resource>> {
        let mut tx = self.db().read().await?;
        let page = PageRequest { after: None, limit };
        rows::resources(
            tx.fetch_all(&sql::resource_list(tx.dialect(), filter, &page))
                .await?,
        )
    }

    /// Applies a partial update; a patch that changes nothing writes nothing. Deactivating a
    /// lifecycle authority's record deactivates its identity (under `policy`) in the same
    /// transaction.
    pub async fn update_resource(
        &self,
        actor: &Actor,
        id: ResourceId,
        patch: &ResourcePatch,
        policy: &Policy,
    ) -> StoreResult<Resource> {
        self.in_write(async |tx| lifecycle_sync::update(tx, actor, id, patch, policy).await)
            .await
    }

    /// Soft-deletes a resource and ends its memberships, as one delete operation; deleting a
    /// lifecycle authority's record deactivates its identity in the same transaction.
    pub async fn delete_resource(
        &self,
        actor: &Actor,
        id: ResourceId,
        policy: &Policy,
    ) -> StoreResult<Deletion> {
        let mut tx = self.db().write().await?;
        lifecycle_sync::prepare(&mut tx, id).await?;
        let current = lock(&mut tx, id).await?;
        if current.deleted {
            return Ok(Deletion {
                resource: current,
                operation: None,
            });
        }
        let at = now();
        let group_id = (current.ty == ResourceType::Group).then_some(id);
        let op = insert_operation(
            &mut tx,
            actor,
            OperationType::Delete,
            group_id,
            Some(&current.source_system),
        )
        .await?;
        let record = AuditRecord::new("resource.delete", target::resource(id))
            .with_detail(serde_json::json!({ "operation_id": op }));
        audit(&mut tx, actor, record).await?;
        let delete = Sql::new(&**sql::SOFT_DELETE_RESOURCE).bind(id).bind(at);
        let row: ResourceRow = tx.fetch_one(&delete).await?;
        let ended = end_memberships_of(&mut tx, actor, id, op, at).await?;
        let resource: Resource = row.try_into()?;
        let change =
            ChangeRecord::resource(ChangeKind::ResourceDeleted, &resource).with_operation(op);
        log_change(&mut tx, actor, change).await?;
        if resource.active {
            lifecycle_sync::hr_trigger(&mut tx, actor, &resource, policy).await?;
        }
        let counts = OperationCounts {
            removed: ended,
            ..OperationCounts::default()
        };
        let operation = set_counts(&mut tx, op, counts).await?;
        tx.commit().await?;
        Ok(Deletion {
            resource,
            operation: Some(operation),
        })
    }

    pub async fn restore_resource(&self, actor: &Actor, id: ResourceId) -> StoreResult<Resource> {
        let mut tx = self.db().write().await?;
        let current = lock(&mut tx, id).await?;
        if !current.deleted {
            return Ok(current);
        }
        audit(
            &mut tx,
            actor,
            AuditRecord::new("resource.restore", target::resource(id)),
        )
        .await?;
        let restore = Sql::new(&**sql::RESTORE_RESOURCE).bind(id).bind(now());
        let row: ResourceRow = tx
            .fetch_one(&restore)
            .await
            .map_err(|e| resource_conflict(e, &current.source_system))?;
        let restored: Resource = row.try_into()?;
        let change = ChangeRecord::resource(ChangeKind::ResourceRestored, &restored);
        log_change(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(restored)
    }
}

/// One side of a resource's memberships; an empty page is a 404 when the resource itself does
/// not exist (a page with rows needs no second query).
async fn membership_page(
    mut tx: Tx,
    side: sql::MembershipSide,
    filter: &MembershipFilter,
    page: &PageRequest<Uuid>,
) -> StoreResult<Listing<Membership>> {
    // A first page says the feed's head: its rows carry the head of their own snapshot. An
    // empty one has no row to carry it, so the head is read first and the page read again
    // after it (a change committed between the two is then on the page or after the head).
    let d = tx.dialect();
    let first = page.after.is_none();
    let list = sql::membership_list(side, filter, page, first.then(|| super::feed::head(d)));
    let mut rows: Vec<MembershipRow> = tx.fetch_all(&list).await?;
    let mut head_before = None;
    if first && rows.is_empty() {
        head_before = Some(super::feed::snapshot_cursor(&mut tx).await?);
        rows = tx.fetch_all(&list).await?;
    }
    let as_of = match rows.first().and_then(MembershipRow::head) {
        Some(head) => Some(super::feed::head_cursor(d, head)),
        None => head_before,
    };
    if rows.is_empty() {
        let (sql::MembershipSide::MembersOf(id) | sql::MembershipSide::GroupsOf(id)) = side;
        get(&mut tx, id).await?;
    }
    let rows = rows.into_iter().map(Membership::from).collect();
    Ok(Listing { rows, as_of })
}

impl super::Store {
    /// The memberships of a group in member-id order; fetches one more than the page.
    pub async fn list_members(
        &self,
        group_id: ResourceId,
        filter: &MembershipFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Listing<Membership>> {
        let side = sql::MembershipSide::MembersOf(group_id);
        membership_page(self.db().read().await?, side, filter, page).await
    }

    /// The memberships of a resource in group-id order; fetches one more than the page.
    pub async fn list_groups_of(
        &self,
        member_id: ResourceId,
        filter: &MembershipFilter,
        page: &PageRequest<Uuid>,
    ) -> StoreResult<Listing<Membership>> {
        let side = sql::MembershipSide::GroupsOf(member_id);
        membership_page(self.db().lookup().await?, side, filter, page).await
    }

    pub async fn get_membership(
        &self,
        group_id: ResourceId,
        member_id: ResourceId,
    ) -> StoreResult<Membership> {
        let select = Sql::new(&**sql::SELECT_MEMBERSHIP)
            .bind(group_id)
            .bind(member_id);
        let row: Option<MembershipRow> = self.db().lookup().await?.fetch_optional(&select).await?;
        row.map(Membership::from)
            .ok_or_else(|| super::membership_not_found(group_id, member_id))
    }

    /// Adds, re-activates or confirms one membership, recorded as a partial-update operation.
    pub async fn put_membership(
        &self,
        actor: &Actor,
        group_id: ResourceId,
        member_id: ResourceId,
        input: &MembershipInput,
    ) -> StoreResult<MembershipChange> {
        self.edit_membership(actor, group_id, member_id, PreviewAction::Add, input)
            .await
    }

    /// Ends one active membership, recorded as a partial-update operation.
    pub async fn remove_membership(
        &self,
        actor: &Actor,
        group_id: ResourceId,
        member_id: ResourceId,
    ) -> StoreResult<MembershipChange> {
        let input = MembershipInput::default();
        self.edit_membership(actor, group_id, member_id, PreviewAction::Remove, &input)
            .await
    }

    /// One membership edit as its own partial-update operation, audited. An add needs both ends
    /// live; a remove needs an active membership.
    async fn edit_membership(
        &self,
        actor: &Actor,
        group_id: ResourceId,
        member_id: ResourceId,
        action: PreviewAction,
        input: &MembershipInput,
    ) -> StoreResult<MembershipChange> {
        let mut tx = self.db().write().await?;
        let (group, verb) = match action {
            PreviewAction::Add => (
                lock_membership_ends(&mut tx, group_id, member_id).await?,
                "membership.put",
            ),
            PreviewAction::Remove => {
                let group = lock(&mut tx, group_id).await?;
                let select = Sql::new(&**sql::SELECT_MEMBERSHIP)
                    .bind(group_id)
                    .bind(member_id);
                let row: Option<MembershipRow> = tx.fetch_optional(&select).await?;
                if row.is_none_or(|row| Membership::from(row).removed) {
                    return Err(super::membership_not_found(group_id, member_id));
                }
                (group, "membership.remove")
            }
        };
        let (source, group_ref) = (Some(group.source_system.as_str()), Some(group_id));
        let op = insert_operation(&mut tx, actor, PartialUpdate, group_ref, source).await?;
        let record = AuditRecord::new(verb, target::membership(group_id, member_id))
            .with_detail(serde_json::json!({ "operation_id": op }));
        audit(&mut tx, actor, record).await?;
        let edit = MembershipEdit {
            group_id,
            member: MemberRef::Id(member_id),
            member_type: None,
            action,
            member_name: input.member_name.clone(),
            contributing: input.contributing,
        };
        let (membership, write) =
            membership_sync::write_edit(&mut tx, actor, op, &group, member_id, &edit).await?;
        set_counts(&mut tx, op, write.counts()).await?;
        tx.commit().await?;
        Ok(MembershipChange {
            membership,
            write,
            operation_id: op,
        })
    }
}

impl super::Store {
    /// Operations newest first, after the page's cursor; fetches one more than the page.
    pub async fn list_operations(
        &self,
        filter: &OperationFilter,
        page: &PageRequest<i64>,
    ) -> StoreResult<Vec<Operation>> {
        let list = sql::operation_list(filter, page);
        rows::operations(self.db().read().await?.fetch_all(&list).await?)
    }

    /// An operation.
    pub async fn get_operation(&self, id: OperationId) -> StoreResult<Operation> {
        operation(&mut self.db().read().await?, id).await
    }

    /// How many times workers have claimed the operation.
    pub async fn operation_attempts(&self, id: OperationId) -> StoreResult<u32> {
        let select = Sql::new("SELECT attempts FROM operation WHERE id = $1").bind(id);
        let attempts: Option<(i32,)> = self.db().read().await?.fetch_optional(&select).await?;
        Ok(attempts.map_or(0, |(a,)| u32::try_from(a).unwrap_or(0)))
    }
}

fn scope_names(scopes: &[Scope]) -> TextList {
    TextList(scopes.iter().map(|s| s.name().to_owned()).collect())
}

fn token_not_found(what: &str) -> StoreError {
    StoreError::not_found(Record::Token, what)
}

impl super::Store {
    /// Stores a new token with the hash of its secret.
    pub async fn create_token(
        &self,
        actor: &Actor,
        new: &NewToken,
        hash: &SecretHash,
    ) -> StoreResult<Token> {
        let id = Uuid::now_v7();
        let mut tx = self.db().write().await?;
        let record =
            AuditRecord::new("token.create", target::token(id)).with_detail(new.audit_detail());
        audit(&mut tx, actor, record).await?;
        let insert = Sql::new(&**sql::INSERT_TOKEN)
            .bind(id)
            .bind(new.name.trim())
            .bind(hash.0.clone())
            .bind(scope_names(&new.scopes))
            .bind(new.source_system.as_deref())
            .bind(new.expires_at)
            .bind(now())
            .bind(new.read_scope.name());
        let row: TokenRow = tx.fetch_one(&insert).await.map_err(|e| match e {
            StoreError::Conflict { .. } => StoreError::conflict(
                ConflictKind::Duplicate,
                format!(
                    "a token named {:?} exists already (names are never reused)",
                    new.name.trim()
                ),
            ),
            other => other,
        })?;
        tx.commit().await?;
        row.try_into()
    }

    /// Creates the first admin token if, and only if, no token exists yet. Returns whether it did.
    pub async fn bootstrap_token(&self, name: &str, hash: &SecretHash) -> StoreResult<bool> {
        let id = Uuid::now_v7();
        let mut tx = self.db().write().await?;
        let insert = Sql::new(sql::INSERT_BOOTSTRAP_TOKEN)
            .bind(id)
            .bind(name)
            .bind(hash.0.clone())
            .bind(scope_names(&[Scope::Admin]))
            .bind(now());
        let inserted = tx.execute(&insert).await? == 1;
        if inserted {
            let record = AuditRecord::new("token.bootstrap", target::token(id));
            audit(&mut tx, &Actor::system("roster"), record).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Tokens in id order after the page's cursor; fetches one more than the page.
    pub async fn list_tokens(&self, page: &PageRequest<Uuid>) -> StoreResult<Vec<Token>> {
        let list = Sql::new(&**sql::LIST_TOKENS)
            .bind(page.after)
            .bind(page.fetch());
        rows::tokens(self.db().read().await?.fetch_all(&list).await?)
    }

    pub async fn get_token(&self, id: Uuid) -> StoreResult<Token> {
        let select = Sql::new(&**sql::SELECT_TOKEN).bind(id);
        let row: Option<TokenRow> = self.db().lookup().await?.fetch_optional(&select).await?;
        row.ok_or_else(|| token_not_found(&id.to_string()))?
            .try_into()
    }

    /// A token by id or by name.
    pub async fn find_token(&self, id_or_name: &str) -> StoreResult<Token> {
        let select = match Uuid::parse_str(id_or_name) {
            Ok(id) => Sql::new(&**sql::SELECT_TOKEN).bind(id),
            Err(_) => Sql::new(&**sql::SELECT_TOKEN_BY_NAME).bind(id_or_name),
        };
        let row: Option<TokenRow> = self.db().read().await?.fetch_optional(&select).await?;
        row.ok_or_else(|| token_not_found(&format!("{id_or_name:?}")))?
            .try_into()
    }

    /// Revokes a token; revoking a revoked token changes nothing.
    pub async fn revoke_token(&self, actor: &Actor, id: Uuid) -> StoreResult<Token> {
        let mut tx = self.db().write().await?;
        let revoke = Sql::new(&**sql::REVOKE_TOKEN).bind(id).bind(now());
        let Some(row) = tx.fetch_optional::<TokenRow>(&revoke).await? else {
            drop(tx);
            return self.get_token(id).await;
        };
        audit(
            &mut tx,
            actor,
            AuditRecord::new("token.revoke", target::token(id)),
        )
        .await?;
        tx.commit().await?;
        row.try_into()
    }

    /// The token whose secret has this hash, revoked or expired ones included, with the stored
    /// hash (which the caller compares in constant time).
    pub async fn token_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<(Token, Vec<u8>)>> {
        let select = Sql::new(&**sql::SELECT_TOKEN_BY_HASH).bind(hash.0.clone());
        let row: Option<rows::TokenHashRow> =
            self.db().lookup().await?.fetch_optional(&select).await?;
        row.map(|r| Ok((Token::try_from(r.token)?, r.secret_hash)))
            .transpose()
    }

    /// Records that the token was used at `at`.
    pub async fn touch_token(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let touch = Sql::new(sql::TOUCH_TOKEN)
            .bind(id)
            .bind(at)
            .bind(at - chrono::Duration::minutes(1));
        self.db().autocommit().await?.execute(&touch).await?;
        Ok(())
    }
}

impl super::Store {
    /// Audit entries newest first, before the page's cursor; fetches one more than the page.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> StoreResult<Vec<AuditEntry>> {
        let list = sql::audit_list(filter, page);
        let rows: Vec<AuditRow> = self.db().read().await?.fetch_all(&list).await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }
}

/// Serialises the transactions that take `key` (PostgreSQL: an advisory lock; SQLite has one
/// writer).
pub(super) async fn serialize(tx: &mut Tx, key: &str) -> StoreResult<()> {
    let lock = Sql::new("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(key);
    tx.advisory_lock(&lock).await
}

/// Holds every one of `keys` as [`serialize`] does, taken in one statement and in one order
/// (sorted), so that two writers holding several never wait on each other in a cycle.
pub(super) async fn serialize_all(tx: &mut Tx, mut keys: Vec<String>) -> StoreResult<()> {
    keys.sort();
    keys.dedup();
    match keys.as_slice() {
        [] => Ok(()),
        [key] => serialize(tx, key).await,
        _ => {
            let lock = Sql::new(
                "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) \
                 FROM unnest($1::text[]) AS held(k)",
            )
            .bind(TextList(keys));
            tx.advisory_lock(&lock).await
        }
    }
}

/// Resources selected with `RESOURCE_COLUMNS`.
pub(super) async fn resources(tx: &mut Tx, select: &Sql) -> StoreResult<Vec<Resource>> {
    let rows: Vec<ResourceRow> = tx.fetch_all(select).await?;
    super::rows::resources(rows)
}
