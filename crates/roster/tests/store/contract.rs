//! What every backend's store must answer.

use crate::scratch::{Backend, Scratch};
use chrono::{Duration as Span, Utc};
use futures_util::stream;
use roster::domain::audit::AuditFilter;
use roster::domain::change::ChangeKind;
use roster::domain::feed::{ChangeFilter, Cursor, ExportScope};
use roster::domain::full_update::{GroupRef, MemberRef, StagedLine, Threshold};
use roster::domain::lifecycle::Policy;
use roster::domain::membership::{MembershipFilter, MembershipInput, MembershipWrite};
use roster::domain::operation::{FullUpdateParams, OperationStatus, OperationType, Scope, Target};
use roster::domain::page::PageRequest;
use roster::domain::resource::{
    NewResource, Resource, ResourceFilter, ResourcePatch, ResourceType,
};
use roster::domain::token::{Actor, NewToken, ReadScope, Scope as TokenScope, Secret};
use roster::domain::{OperationId, ResourceId};
use roster::store::{
    self, ApplyOutcome, ConflictKind, ExportItem, FullUpdateDraft, Record, StagedBatch, Store,
    StoreError,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

crate::on_both_backends!(
    resources_round_trip_and_page_by_id,
    unknown_records_are_not_found,
    a_duplicate_key_is_a_conflict_that_writes_nothing,
    memberships_report_what_each_write_did,
    the_feed_lists_every_write_once_in_order,
    racing_writers_leave_no_gap_in_the_feed,
    a_full_update_applies_and_a_large_removal_is_held,
    an_operation_is_claimed_by_one_worker_at_a_time,
    history_and_past_membership_come_from_the_log,
    an_export_is_one_snapshot_ending_in_a_cursor,
    a_trimmed_cursor_is_gone,
    the_relay_lease_has_one_holder,
    tokens_are_found_by_name_and_hash_and_revoked_once,
    every_write_is_audited,
);

struct Fixture {
    store: Arc<Store>,
    actor: Actor,
    _scratch: Scratch,
}

async fn open(backend: Backend) -> Fixture {
    let scratch = Scratch::new(backend).await;
    let store = store::open(&scratch.location).await.expect("open store");
    Fixture {
        store,
        actor: Actor::system("conformance"),
        _scratch: scratch,
    }
}

fn new_resource(ty: ResourceType, source: &str, identifier: &str) -> NewResource {
    NewResource {
        ty,
        subtype: None,
        source_system: source.to_owned(),
        identifier: Some(identifier.to_owned()),
        external_id: None,
        displayname: Some(format!("{identifier} name")),
        description: None,
        notes: None,
        tags: vec!["conformance".to_owned()],
        active: None,
        expires_at: None,
    }
}

impl Fixture {
    async fn create(&self, ty: ResourceType, identifier: &str) -> Resource {
        self.store
            .create_resource(&self.actor, &new_resource(ty, "src", identifier))
            .await
            .expect("create resource")
    }

    async fn group_with_members(&self, name: &str, members: usize) -> (Resource, Vec<Resource>) {
        let group = self.create(ResourceType::Group, name).await;
        let mut accounts = Vec::new();
        for i in 0..members {
            let account = self
                .create(ResourceType::User, &format!("{name}-member-{i}"))
                .await;
            self.store
                .put_membership(
                    &self.actor,
                    group.id,
                    account.id,
                    &MembershipInput::default(),
                )
                .await
                .expect("put membership");
            accounts.push(account);
        }
        (group, accounts)
    }

    async fn active_members(&self, group: ResourceId) -> BTreeSet<Uuid> {
        self.store
            .list_members(group, &MembershipFilter::default(), &page(1000))
            .await
            .expect("list members")
            .rows
            .into_iter()
            .map(|m| m.member_id.0)
            .collect()
    }

    /// Every change after `after`, following the feed a few rows at a time.
    async fn follow(&self, after: &Cursor) -> (Vec<roster::domain::feed::StoredChange>, Cursor) {
        let mut cursor = *after;
        let mut all = Vec::new();
        loop {
            let batch = self
                .store
                .changes(&cursor, &ChangeFilter::default(), 3)
                .await
                .expect("read the feed");
            if batch.items.is_empty() {
                return (all, cursor);
            }
            cursor = batch.next;
            all.extend(batch.items);
        }
    }

    /// Creates, stages, queues, claims and applies a full-update of `group` confirming `members`.
    async fn full_update(
        &self,
        group: &Resource,
        members: &[Resource],
    ) -> (OperationId, ApplyOutcome) {
        let draft = FullUpdateDraft {
            target: Target::Memberships,
            description: Some("conformance".to_owned()),
            scope: Scope::Group(group.id),
            source_system: group.source_system.clone(),
            params: FullUpdateParams {
                threshold: Threshold::default(),
                batch_size: 10_000,
                ..FullUpdateParams::default()
            },
        };
        let op = self
            .store
            .create_full_update(&self.actor, &draft)
            .await
            .expect("create full-update");
        let lines = members
            .iter()
            .enumerate()
            .map(|(i, m)| StagedLine {
                line: i32::try_from(i + 1).expect("few lines"),
                group: GroupRef::Scope,
                member: MemberRef::Id(m.id),
                member_type: None,
                member_name: None,
                contributing: None,
            })
            .collect();
        let batch = StagedBatch {
            lines,
            rejected: Vec::new(),
        };
        let receipt = self
            .store
            .stage_chunk(op.id, 1, Box::pin(stream::iter([Ok(batch)])))
            .await
            .expect("stage chunk");
        assert_eq!(receipt.staged, i64::try_from(members.len()).expect("few"));
        self.store
            .queue_operation(&self.actor, op.id)
            .await
            .expect("queue");
        let claimed = self
            .store
            .claim_operation("node-a", Duration::from_secs(60), 3)
            .await
            .expect("claim")
            .expect("a queued operation to claim");
        assert_eq!(claimed.id, op.id);
        let outcome = self
            .store
            .apply_full_update(&claimed, &Policy::default())
            .await
            .expect("apply");
        self.store
            .finish_operation(op.id, "node-a", &outcome)
            .await
            .expect("finish");
        (op.id, outcome)
    }
}

fn page<K>(limit: u32) -> PageRequest<K> {
    PageRequest { after: None, limit }
}

async fn resources_round_trip_and_page_by_id(backend: Backend) {
    let f = open(backend).await;
    let created = f.create(ResourceType::User, "alice").await;
    let read = f.store.get_resource(created.id).await.expect("get");
    assert_eq!(read.identifier.as_deref(), Some("alice"));
    assert_eq!(read.displayname.as_deref(), Some("alice name"));
    assert_eq!(read.tags, vec!["conformance".to_owned()]);
    assert!(read.active && !read.deleted);

    let patch = ResourcePatch {
        displayname: Some(Some("Alice".to_owned())),
        ..ResourcePatch::default()
    };
    let updated = f
        .store
        .update_resource(&f.actor, created.id, &patch, &Policy::default())
        .await
        .expect("update");
    assert_eq!(updated.displayname.as_deref(), Some("Alice"));
    assert_eq!(updated.identifier.as_deref(), Some("alice"));

    for i in 0..4 {
        f.create(ResourceType::User, &format!("bob-{i}")).await;
    }
    let filter = ResourceFilter::default();
    let listing = f
        .store
        .list_resources(&filter, &page(2))
        .await
        .expect("page");
    assert!(
        listing.as_of.is_some(),
        "a first page is read after the feed's head"
    );
    let first = listing.rows;
    assert_eq!(first.len(), 3, "a page fetches one more than its limit");
    let after = PageRequest {
        after: Some(first[1].id.0),
        limit: 10,
    };
    let rest = f.store.list_resources(&filter, &after).await.expect("page");
    assert!(rest.as_of.is_none(), "only a first page carries the head");
    let rest = rest.rows;
    assert_eq!(rest.len(), 3);
    assert!(
        rest.iter().all(|r| r.id.0 > first[1].id.0),
        "pages follow id order"
    );

    let deletion = f
        .store
        .delete_resource(&f.actor, created.id, &Policy::default())
        .await
        .expect("delete");
    assert!(deletion.resource.deleted);
    assert_eq!(
        deletion.operation.map(|op| op.ty),
        Some(OperationType::Delete)
    );
    let restored = f
        .store
        .restore_resource(&f.actor, created.id)
        .await
        .expect("restore");
    assert!(!restored.deleted);
}

async fn unknown_records_are_not_found(backend: Backend) {
    let f = open(backend).await;
    let nobody = ResourceId(Uuid::now_v7());
    let group = f.create(ResourceType::Group, "g").await;
    let token = Uuid::now_v7();
    assert!(matches!(
        f.store.get_resource(nobody).await,
        Err(StoreError::NotFound { kind: Record::Resource, id, .. }) if id == nobody.to_string()
    ));
    assert!(matches!(
        f.store.get_membership(group.id, nobody).await,
        Err(StoreError::NotFound {
            kind: Record::Membership,
            ..
        })
    ));
    assert!(matches!(
        f.store.get_operation(OperationId(987_654)).await,
        Err(StoreError::NotFound { kind: Record::Operation, id, .. }) if id == "987654"
    ));
    assert!(matches!(
        f.store.get_token(token).await,
        Err(StoreError::NotFound { kind: Record::Token, id, .. }) if id == token.to_string()
    ));
    let refused = f
        .store
        .put_membership(&f.actor, group.id, nobody, &MembershipInput::default())
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::NotFound {
                kind: Record::Resource,
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(f.active_members(group.id).await.is_empty());
}

async fn a_duplicate_key_is_a_conflict_that_writes_nothing(backend: Backend) {
    let f = open(backend).await;
    f.create(ResourceType::User, "dup").await;
    let head = f.store.head().await.expect("head");
    let again = f
        .store
        .create_resource(&f.actor, &new_resource(ResourceType::User, "src", "dup"))
        .await;
    assert!(
        matches!(
            again,
            Err(StoreError::Conflict {
                kind: ConflictKind::Duplicate,
                ..
            })
        ),
        "{again:?}"
    );
    let filter = ResourceFilter {
        identifier: Some("dup".to_owned()),
        ..ResourceFilter::default()
    };
    let found = f.store.find_resources(&filter, 10).await.expect("list");
    assert_eq!(found.len(), 1);
    let (after, _) = f.follow(&head).await;
    assert!(
        after.is_empty(),
        "a refused write logs no change: {after:?}"
    );
}

async fn memberships_report_what_each_write_did(backend: Backend) {
    let f = open(backend).await;
    let group = f.create(ResourceType::Group, "g").await;
    let member = f.create(ResourceType::User, "m").await;
    let input = MembershipInput::default();
    let put = |f: &Fixture| {
        let store = f.store.clone();
        let actor = f.actor.clone();
        let input = input.clone();
        async move {
            store
                .put_membership(&actor, group.id, member.id, &input)
                .await
                .expect("put")
                .write
        }
    };
    assert_eq!(put(&f).await, MembershipWrite::Added);
    assert_eq!(put(&f).await, MembershipWrite::Unchanged);
    let removed = f
        .store
        .remove_membership(&f.actor, group.id, member.id)
        .await
        .expect("remove");
    assert_eq!(removed.write, MembershipWrite::Removed);
    assert!(removed.membership.removed);
    assert!(f.active_members(group.id).await.is_empty());
    assert_eq!(put(&f).await, MembershipWrite::Reactivated);

    let groups = f
        .store
        .list_groups_of(member.id, &MembershipFilter::default(), &page(10))
        .await
        .expect("groups of");
    assert_eq!(
        groups.rows.iter().map(|m| m.group_id).collect::<Vec<_>>(),
        vec![group.id]
    );
    let head = f.store.head().await.expect("head");
    assert_eq!(
        groups.as_of,
        Some(head),
        "a first page says the head it was read at"
    );
    let members = f
        .store
        .list_members(group.id, &MembershipFilter::default(), &page(10))
        .await
        .expect("members");
    assert_eq!(members.rows.len(), 1);
    assert_eq!(members.as_of, Some(head), "as the members' first page does");
    let none = f
        .store
        .list_groups_of(group.id, &MembershipFilter::default(), &page(10))
        .await
        .expect("groups of a group in none");
    assert!(none.rows.is_empty());
    assert_eq!(none.as_of, Some(head), "an empty first page says it too");
    let stored = f
        .store
        .get_membership(group.id, member.id)
        .await
        .expect("get membership");
    assert!(!stored.removed);
    assert_eq!(stored.source, "src");
}

async fn the_feed_lists_every_write_once_in_order(backend: Backend) {
    let f = open(backend).await;
    let start = f.store.head().await.expect("head");
    let group = f.create(ResourceType::Group, "g").await;
    let member = f.create(ResourceType::User, "m").await;
    f.store
        .put_membership(&f.actor, group.id, member.id, &MembershipInput::default())
        .await
        .expect("put");
    f.store
        .remove_membership(&f.actor, group.id, member.id)
        .await
        .expect("remove");
    let (changes, end) = f.follow(&start).await;
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ChangeKind::ResourceCreated,
            ChangeKind::ResourceCreated,
            ChangeKind::MembershipAdded,
            ChangeKind::MembershipRemoved,
        ]
    );
    assert_eq!(changes[0].resource_id, Some(group.id));
    assert_eq!(changes[3].member_id, Some(member.id));
    assert!(
        changes.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "cursors rise"
    );
    let (again, _) = f.follow(&end).await;
    assert!(again.is_empty(), "nothing after the end: {again:?}");
    assert_eq!(f.store.head().await.expect("head"), end);
}

async fn racing_writers_leave_no_gap_in_the_feed(backend: Backend) {
    let f = open(backend).await;
    let group = f.create(ResourceType::Group, "g").await;
    let start = f.store.head().await.expect("head");
    let mut members = Vec::new();
    for i in 0..24 {
        members.push(f.create(ResourceType::User, &format!("m{i}")).await);
    }
    let after_creates = f.store.head().await.expect("head");
    // A reader follows the feed while eight writers race; every change it has seen must stay
    // behind its cursor, and at the end it must have seen each membership exactly once.
    let writers: Vec<_> = members
        .chunks(3)
        .map(|chunk| {
            let store = f.store.clone();
            let actor = f.actor.clone();
            let ids: Vec<ResourceId> = chunk.iter().map(|m| m.id).collect();
            tokio::spawn(async move {
                for id in ids {
                    store
                        .put_membership(&actor, group.id, id, &MembershipInput::default())
                        .await
                        .expect("racing put");
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut cursor = after_creates;
    let mut done = false;
    while !done {
        done = writers.iter().all(|w| w.is_finished());
        let batch = f
            .store
            .changes(&cursor, &ChangeFilter::default(), 5)
            .await
            .expect("follow");
        cursor = batch.next;
        seen.extend(batch.items);
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.expect("writer");
    }
    let (rest, _) = f.follow(&cursor).await;
    seen.extend(rest);
    let added: Vec<Uuid> = seen
        .iter()
        .filter(|c| c.kind == ChangeKind::MembershipAdded)
        .filter_map(|c| c.member_id.map(|m| m.0))
        .collect();
    let unique: BTreeSet<Uuid> = added.iter().copied().collect();
    assert_eq!(added.len(), 24, "each addition once: {added:?}");
    assert_eq!(unique, members.iter().map(|m| m.id.0).collect());
    let (all, _) = f.follow(&start).await;
    assert_eq!(all.len(), 48, "24 creates and 24 additions");
}

async fn a_full_update_applies_and_a_large_removal_is_held(backend: Backend) {
    let f = open(backend).await;
    let (group, members) = f.group_with_members("big", 120).await;
    let (op, outcome) = f.full_update(&group, &members[..110]).await;
    let ApplyOutcome::Complete(counts) = outcome else {
        panic!("a removal of 10 of 120 applies: {outcome:?}");
    };
    assert_eq!((counts.removed, counts.unchanged), (10, 110));
    assert_eq!(f.active_members(group.id).await.len(), 110);
    let stored = f.store.get_operation(op).await.expect("operation");
    assert_eq!(stored.status, OperationStatus::Complete);

    let before = f.active_members(group.id).await;
    let (held, outcome) = f.full_update(&group, &members[..10]).await;
    assert!(
        matches!(outcome, ApplyOutcome::Pending { .. }),
        "a removal of 100 of 110 is held: {outcome:?}"
    );
    assert_eq!(
        f.active_members(group.id).await,
        before,
        "held: nothing changed"
    );
    let stored = f.store.get_operation(held).await.expect("operation");
    assert_eq!(stored.status, OperationStatus::Pending);
    assert_eq!(
        f.store.preview_totals(held).await.expect("totals"),
        (0, 100)
    );
    let rejected = f.store.decide(&f.actor, held, false).await.expect("reject");
    assert_eq!(rejected.status, OperationStatus::Failed);
    assert_eq!(f.active_members(group.id).await, before);
    let twice = f.store.decide(&f.actor, held, true).await;
    assert!(
        matches!(
            twice,
            Err(StoreError::Conflict {
                kind: ConflictKind::State,
                ..
            })
        ),
        "only a pending operation is decided: {twice:?}"
    );
}

async fn an_operation_is_claimed_by_one_worker_at_a_time(backend: Backend) {
    let f = open(backend).await;
    let group = f.create(ResourceType::Group, "g").await;
    let draft = FullUpdateDraft {
        target: Target::Memberships,
        description: None,
        scope: Scope::Group(group.id),
        source_system: "src".to_owned(),
        params: FullUpdateParams::default(),
    };
    let op = f
        .store
        .create_full_update(&f.actor, &draft)
        .await
        .expect("create");
    f.store
        .queue_operation(&f.actor, op.id)
        .await
        .expect("queue");
    let lease = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        f.store.claim_operation("node-a", lease, 3),
        f.store.claim_operation("node-b", lease, 3)
    );
    let claims = [a.expect("claim a"), b.expect("claim b")];
    let winners: Vec<_> = claims.iter().flatten().collect();
    assert_eq!(winners.len(), 1, "one worker wins: {claims:?}");
    let winner = if claims[0].is_some() {
        "node-a"
    } else {
        "node-b"
    };
    let loser = if winner == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    assert!(f
        .store
        .renew_lease(op.id, winner, lease)
        .await
        .expect("renew"));
    assert!(!f
        .store
        .renew_lease(op.id, loser, lease)
        .await
        .expect("renew"));
    let late = f
        .store
        .finish_operation(op.id, loser, &ApplyOutcome::Complete(Default::default()))
        .await;
    assert!(
        matches!(
            late,
            Err(StoreError::Conflict {
                kind: ConflictKind::Lease,
                ..
            })
        ),
        "{late:?}"
    );
    assert_eq!(
        f.store.operation_attempts(op.id).await.expect("attempts"),
        1
    );
}

async fn history_and_past_membership_come_from_the_log(backend: Backend) {
    let f = open(backend).await;
    let (group, members) = f.group_with_members("g", 2).await;
    f.store
        .remove_membership(&f.actor, group.id, members[0].id)
        .await
        .expect("remove");
    let history = f
        .store
        .history(group.id, &ChangeFilter::default(), None, 100)
        .await
        .expect("history");
    let kinds: Vec<ChangeKind> = history.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ChangeKind::ResourceCreated,
            ChangeKind::MembershipAdded,
            ChangeKind::MembershipAdded,
            ChangeKind::MembershipRemoved,
        ]
    );
    // The moment of the second addition, as the log recorded it: both were members then.
    let between = history[2].at;
    let then: BTreeSet<Uuid> = f
        .store
        .members_at(group.id, between, None, &page(10))
        .await
        .expect("members at")
        .into_iter()
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(then, members.iter().map(|m| m.id.0).collect());
    let now = f
        .store
        .members_at(group.id, Utc::now(), None, &page(10))
        .await
        .expect("members now");
    assert_eq!(
        now.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![members[1].id]
    );
}

async fn an_export_is_one_snapshot_ending_in_a_cursor(backend: Backend) {
    let f = open(backend).await;
    let (group, members) = f.group_with_members("g", 3).await;
    let (sink, mut items) = tokio::sync::mpsc::channel(4);
    let store = f.store.clone();
    let export = tokio::spawn(async move {
        store
            .export(&ExportScope::Group(group.id), None, sink)
            .await
    });
    let mut got = Vec::new();
    while let Some(item) = items.recv().await {
        got.push(item.expect("export item"));
    }
    export.await.expect("export task").expect("export");
    let memberships: BTreeSet<Uuid> = got
        .iter()
        .filter_map(|i| match i {
            ExportItem::Membership(m) => Some(m.member_id.0),
            _ => None,
        })
        .collect();
    assert_eq!(memberships, members.iter().map(|m| m.id.0).collect());
    let Some(ExportItem::End(cursor)) = got.last() else {
        panic!("an export ends in its cursor: {got:?}");
    };
    let (after, _) = f.follow(cursor).await;
    assert!(
        after.is_empty(),
        "the export's cursor is its snapshot's: {after:?}"
    );
}

async fn a_trimmed_cursor_is_gone(backend: Backend) {
    let f = open(backend).await;
    let start = f.store.head().await.expect("head");
    f.create(ResourceType::User, "a").await;
    let kept = f.store.head().await.expect("head");
    let trimmed = f
        .store
        .trim_history(Utc::now() + Span::seconds(1))
        .await
        .expect("trim");
    assert_eq!(trimmed, 1);
    let old = f.store.changes(&start, &ChangeFilter::default(), 10).await;
    assert!(matches!(old, Err(StoreError::Gone(_))), "{old:?}");
    let (after, _) = f.follow(&kept).await;
    assert!(after.is_empty());
}

async fn the_relay_lease_has_one_holder(backend: Backend) {
    let f = open(backend).await;
    let lease = Duration::from_secs(60);
    let position = f
        .store
        .claim_relay("nats", "node-a", lease)
        .await
        .expect("claim");
    assert_eq!(position, Some(Cursor::start()));
    assert_eq!(
        f.store
            .claim_relay("nats", "node-b", lease)
            .await
            .expect("claim"),
        None
    );
    f.create(ResourceType::User, "a").await;
    let head = f.store.head().await.expect("head");
    assert!(!f
        .store
        .advance_relay("nats", "node-b", &head, lease)
        .await
        .expect("advance"));
    assert!(f
        .store
        .advance_relay("nats", "node-a", &head, lease)
        .await
        .expect("advance"));
    assert_eq!(
        f.store
            .claim_relay("nats", "node-a", lease)
            .await
            .expect("claim"),
        Some(head)
    );
}

async fn tokens_are_found_by_name_and_hash_and_revoked_once(backend: Backend) {
    let f = open(backend).await;
    let secret = Secret::generate().expect("randomness");
    let new = NewToken {
        name: "reader".to_owned(),
        scopes: vec![TokenScope::Read],
        source_system: Some("src".to_owned()),
        read_scope: ReadScope::Bound,
        expires_at: None,
    };
    let token = f
        .store
        .create_token(&f.actor, &new, &secret.hash())
        .await
        .expect("create token");
    let again = f.store.create_token(&f.actor, &new, &secret.hash()).await;
    assert!(
        matches!(
            again,
            Err(StoreError::Conflict {
                kind: ConflictKind::Duplicate,
                ..
            })
        ),
        "{again:?}"
    );
    assert_eq!(
        f.store.find_token("reader").await.expect("by name").id,
        token.id
    );
    let (found, hash) = f
        .store
        .token_by_hash(&secret.hash())
        .await
        .expect("by hash")
        .expect("a token");
    assert_eq!(found.id, token.id);
    assert!(secret.hash().matches(&hash));
    assert!(!f
        .store
        .bootstrap_token("second", &secret.hash())
        .await
        .expect("bootstrap"));
    let revoked = f
        .store
        .revoke_token(&f.actor, token.id)
        .await
        .expect("revoke");
    let twice = f
        .store
        .revoke_token(&f.actor, token.id)
        .await
        .expect("revoke");
    assert_eq!(
        revoked.revoked_at, twice.revoked_at,
        "a second revoke changes nothing"
    );
    assert!(revoked.revoked_at.is_some());
}

async fn every_write_is_audited(backend: Backend) {
    let f = open(backend).await;
    let account = f.create(ResourceType::User, "audited").await;
    let entries = f
        .store
        .list_audit(&AuditFilter::default(), &page(10))
        .await
        .expect("audit");
    assert!(
        entries
            .iter()
            .any(|e| e.target.contains(&account.id.0.to_string()) && e.token_name == "conformance"),
        "{entries:?}"
    );
}
