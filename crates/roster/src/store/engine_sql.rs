//! The operations engine's SQL that both backends share, the statements that differ written side
//! by side (`pg_*` use data-modifying CTEs; SQLite has none and logs changes with a SELECT of the
//! same predicate just before the write), and the checks around them.
//!
//! A step of the engine is a list of statements that run in order with the same parameters; the
//! first appends the step's change records, and how many it appended is the step's count.

use super::db::Dialect;
use super::rows::{MEMBERSHIP_COLUMNS, OPERATION_COLUMNS};
use super::{ApplyOutcome, StoreError, StoreResult};
use super::{ConflictKind, Record};
use crate::domain::full_update::{GroupDiff, PreviewAction, PreviewEntry, Threshold};
use crate::domain::membership::{check_ends, Membership, MembershipWrite};
use crate::domain::operation::{
    FullUpdateParams, Gc, Operation, OperationCounts, OperationStatus, Scope,
};
use crate::domain::page::PageRequest;
use crate::domain::resource::{Resource, ResourceType};
use crate::domain::token::Principal;
use crate::domain::{InvalidInput, OperationId, ResourceId};
use std::fmt;
use std::sync::LazyLock;
use uuid::Uuid;

/// The actor named in the audit trail for what the engine does on its own.
pub const ENGINE_ACTOR: &str = "roster-engine";

/// The staging table of one full-update.
#[derive(Debug, Clone, Copy)]
pub struct Staging(pub OperationId);

impl fmt::Display for Staging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "staging_{}", self.0 .0)
    }
}

pub const STAGING_COLUMNS: &str = "chunk, line, group_id, group_ref, member_id, member_source, \
     member_identifier, member_external_id, member_type, member_name, contributing";

/// `CREATE TABLE` for a staging table, with the backend's uuid and boolean types. It has no
/// index while it loads; the apply adds one (see [`staging_index`]).
pub fn create_staging(d: Dialect, staging: &Staging) -> String {
    let (uuid, boolean) = (d.uuid(), d.boolean());
    format!(
        "CREATE TABLE {staging} (chunk integer NOT NULL, line integer NOT NULL, \
         group_id {uuid}, group_ref text, member_id {uuid}, member_source text, \
         member_identifier text, member_external_id text, member_type smallint, \
         member_name text, contributing {boolean})"
    )
}

pub fn operation_not_found(id: OperationId) -> StoreError {
    StoreError::not_found(Record::Operation, id)
}

/// Refuses a chunk or a `complete` for an operation that no longer takes uploads.
pub fn check_uploading(
    id: OperationId,
    state: Option<(Option<String>, String)>,
) -> StoreResult<()> {
    match state {
        None => Err(operation_not_found(id)),
        Some((Some(phase), _)) if phase == "uploading" => Ok(()),
        Some((phase, status)) => Err(StoreError::conflict(
            ConflictKind::State,
            format!(
                "operation {id} is {}{}; it takes chunks and `complete` only while uploading",
                status,
                phase.map(|p| format!(" ({p})")).unwrap_or_default()
            ),
        )),
    }
}

pub fn params(op: &Operation) -> StoreResult<FullUpdateParams> {
    serde_json::from_value(op.params.clone()).map_err(|e| {
        StoreError::Database(sqlx::Error::Decode(
            format!("operation {} has unreadable params: {e}", op.id).into(),
        ))
    })
}

pub fn rejection_reason(id: OperationId, rejected: i64) -> String {
    format!(
        "{rejected} uploaded line(s) of operation {id} were rejected; its rejections list them \
         with their chunk and line numbers (or upload with on_error=skip to apply the rest)"
    )
}

/// Whether the staging table can go: the snapshot is no longer needed for a preview, an
/// approval or a deferred reconcile.
pub fn staging_done(op: &Operation) -> StoreResult<bool> {
    Ok(match op.status {
        OperationStatus::Failed => true,
        OperationStatus::Complete => params(op)?.gc == Gc::Now,
        OperationStatus::Pending | OperationStatus::Running => false,
    })
}

/// The status, counts and reason columns of an outcome.
pub fn outcome_columns(outcome: &ApplyOutcome) -> (&'static str, OperationCounts, Option<&str>) {
    match outcome {
        ApplyOutcome::Complete(counts) => ("complete", *counts, None),
        ApplyOutcome::Pending { reason, counts } => ("pending", *counts, Some(reason)),
        ApplyOutcome::Failed { reason, counts } => ("failed", *counts, Some(reason)),
    }
}

/// The deletion-threshold decision, made here alone for a whole source scope before it is
/// applied, for one group as it is applied, and for a reconcile: why the changes to these groups
/// need a person's approval (the reason of the first group past the threshold), if they do.
pub fn threshold_hold(
    threshold: &Threshold,
    diffs: impl IntoIterator<Item = GroupDiff>,
) -> Option<String> {
    diffs
        .into_iter()
        .find_map(|diff| threshold.hold_reason(&diff))
}

/// The per-group diffs [`source_diffs`] reads.
pub fn source_group_diffs(rows: Vec<(Uuid, i64, i64, i64)>) -> impl Iterator<Item = GroupDiff> {
    rows.into_iter()
        .map(|(group, active, snapshot, to_remove)| GroupDiff {
            group_id: ResourceId(group),
            active,
            snapshot,
            to_add: 0,
            to_reactivate: 0,
            to_remove,
        })
}

pub fn scope_columns(scope: &Scope) -> (Option<ResourceId>, Option<String>) {
    match scope {
        Scope::Group(id) => (Some(*id), None),
        Scope::Source(source) => (None, Some(source.clone())),
    }
}

/// Which staging rows belong to the group being applied: all of them in a group-scoped
/// full-update, those naming the group in a source-scoped one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagingFilter {
    WholeTable,
    GroupColumn,
}

impl StagingFilter {
    pub fn for_operation(op: &Operation) -> Self {
        Self::for_scope(op.group_id.is_some())
    }

    /// For the staging table of a full-update, given whether it was group-scoped.
    pub fn for_scope(group_scoped: bool) -> Self {
        if group_scoped {
            Self::WholeTable
        } else {
            Self::GroupColumn
        }
    }

    /// Whether its condition binds the group as `$1`.
    pub fn binds_group(self) -> bool {
        self == Self::GroupColumn
    }

    /// The condition on staging row `s` for the group bound as `$1`, led by `AND`.
    fn and(self) -> &'static str {
        match self {
            Self::WholeTable => "",
            Self::GroupColumn => " AND s.group_id = $1",
        }
    }
}

/// Whether any staged line names its member (first) or its group (second) by keys that still need
/// resolving.
pub fn unresolved_probe(staging: &Staging) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {staging} WHERE member_id IS NULL), \
         EXISTS (SELECT 1 FROM {staging} WHERE group_id IS NULL AND group_ref IS NOT NULL)"
    )
}

/// Resolves members and groups named by keys; each statement with whether it binds the
/// operation's source system as `$1` (the group statement comes first).
pub fn resolve_statements(staging: &Staging) -> Vec<(String, bool)> {
    let identifier_match = format!(
        "FROM resource r WHERE r.source_system = {staging}.member_source \
         AND r.identifier = {staging}.member_identifier AND NOT r.deleted \
         AND ({staging}.member_type IS NULL OR r.type = {staging}.member_type)"
    );
    vec![
        (
            format!(
                "UPDATE {staging} SET group_id = (SELECT r.id FROM resource r \
                 WHERE r.source_system = $1 AND r.identifier = {staging}.group_ref \
                 AND r.type = {group} AND NOT r.deleted) \
                 WHERE group_id IS NULL AND group_ref IS NOT NULL",
                group = ResourceType::Group.code()
            ),
            true,
        ),
        (
            format!(
                "UPDATE {staging} SET member_id = (SELECT r.id {identifier_match}) \
                 WHERE member_id IS NULL AND member_identifier IS NOT NULL \
                 AND (SELECT count(*) {identifier_match}) = 1"
            ),
            false,
        ),
        (
            format!(
                "UPDATE {staging} SET member_id = (SELECT r.id FROM resource r \
                 WHERE r.source_system = {staging}.member_source \
                 AND r.external_id = {staging}.member_external_id AND NOT r.deleted) \
                 WHERE member_id IS NULL AND member_external_id IS NOT NULL"
            ),
            false,
        ),
    ]
}

/// Why a staged line `s` (joined to its member as `m`) cannot be applied, or NULL; `$4` binds the
/// token's bound source system in `record_rejections`, `$6` in `pg_apply_new_lines`.
/// Why a staged line's member cannot be applied, if it cannot. A token bound to a source may
/// not add a member of another source to `group`, but may confirm one that is already in it.
fn member_reason(bound: &str, group: &str) -> String {
    format!(
        "WHEN s.member_id IS NULL THEN 'no live resource matches this member (check \
           source_system and identifier or external_id; add \"type\" when several types \
           share the identifier)' \
         WHEN m.id IS NULL THEN 'the member does not exist' \
         WHEN m.deleted THEN 'the member is deleted' \
         WHEN {bound} IS NOT NULL AND m.source_system <> {bound} AND NOT EXISTS (SELECT 1 \
           FROM group_member a WHERE a.group_id = {group} AND a.member_id = s.member_id \
           AND NOT a.removed) THEN 'the token is bound to another source system than the \
           member''s'"
    )
}

/// Records every staged line that cannot be applied, with its reason. Binds `$1` operation id,
/// `$2` the scope's group (or null), `$3` the operation's source system, `$4` the token's bound
/// source system (or null).
pub fn record_rejections(staging: &Staging, op: &Operation) -> String {
    let group_checks = if op.group_id.is_some() {
        "WHEN s.member_id = $2 THEN 'a group cannot be a member of itself'".to_owned()
    } else {
        format!(
            "WHEN s.group_id IS NULL THEN 'no live group of the operation''s source system has \
             this group identifier' \
             WHEN g.id IS NULL OR g.type <> {group} OR g.deleted OR g.source_system <> $3 \
             THEN 'the group is not a live group of the operation''s source system' \
             WHEN s.member_id = s.group_id THEN 'a group cannot be a member of itself'",
            group = ResourceType::Group.code()
        )
    };
    let group_join = if op.group_id.is_some() {
        ""
    } else {
        "LEFT JOIN resource g ON g.id = s.group_id"
    };
    format!(
        "INSERT INTO operation_rejection (operation_id, chunk, line, reason) \
         SELECT $1, chunk, line, reason FROM ( \
           SELECT s.chunk, s.line, CASE {} {group_checks} END AS reason \
           FROM {staging} s LEFT JOIN resource m ON m.id = s.member_id {group_join} \
         ) checked WHERE reason IS NOT NULL \
         ON CONFLICT DO NOTHING",
        member_reason(
            "$4",
            if op.group_id.is_some() {
                "$2"
            } else {
                "s.group_id"
            }
        )
    )
}

/// Deletes the rejected lines from the staging table.
pub fn delete_rejected(staging: &Staging) -> String {
    format!(
        "DELETE FROM {staging} WHERE EXISTS (SELECT 1 FROM operation_rejection r \
         WHERE r.operation_id = $1 AND r.chunk = {staging}.chunk AND r.line = {staging}.line)"
    )
}

/// The columns of a membership's change record, which apply statements fill from their fixed
/// parameters (see `membership_sync::Step`).
const MEMBERSHIP_CHANGE: &str =
    "INSERT INTO change (at, kind, group_id, member_id, source_system, operation_id, token_name)";

/// The active memberships of group `$1` that the snapshot does not confirm and no newer operation
/// wrote, as `gm`.
fn unconfirmed(staging: &Staging, filter: StagingFilter, older_than: &str) -> String {
    format!(
        "gm.group_id = $1 AND NOT gm.removed AND coalesce(gm.last_operation_id, 0) < {older_than} \
         AND NOT EXISTS (SELECT 1 FROM {staging} s WHERE s.member_id = gm.member_id{})",
        filter.and()
    )
}

/// Snapshot members of group `$1` with no membership row yet, as `s`.
fn new_members(staging: &Staging, filter: StagingFilter) -> String {
    format!(
        "FROM {staging} s WHERE s.member_id IS NOT NULL{} \
         AND NOT EXISTS (SELECT 1 FROM group_member gm \
         WHERE gm.group_id = $1 AND gm.member_id = s.member_id)",
        filter.and()
    )
}

/// Ended memberships of group `$1` that the snapshot confirms and no newer operation wrote
/// (SQLite).
fn ended_confirmed(staging: &Staging, filter: StagingFilter) -> String {
    format!(
        "gm.group_id = $1 AND gm.removed AND coalesce(gm.last_operation_id, 0) < $2 \
         AND EXISTS (SELECT 1 FROM {staging} s WHERE s.member_id = gm.member_id{})",
        filter.and()
    )
}

/// Active memberships of group `$1` whose name or flag the snapshot changes (SQLite).
fn attributes_changed(staging: &Staging, filter: StagingFilter) -> String {
    format!(
        "gm.group_id = $1 AND NOT gm.removed AND coalesce(gm.last_operation_id, 0) < $2 \
         AND EXISTS (SELECT 1 FROM {staging} s WHERE s.member_id = gm.member_id{} \
           AND ((s.member_name IS NOT NULL AND s.member_name <> coalesce(gm.member_name, '')) \
             OR (s.contributing IS NOT NULL AND s.contributing IS DISTINCT FROM gm.contributing)))",
        filter.and()
    )
}

/// The staged attribute of the member of `gm`, the last line winning (SQLite, which looks it up
/// through the staging table's index).
fn staged_attribute(staging: &Staging, filter: StagingFilter, column: &str) -> String {
    format!(
        "coalesce((SELECT s.{column} FROM {staging} s WHERE s.member_id = gm.member_id{} \
         AND s.{column} IS NOT NULL ORDER BY s.chunk DESC, s.line DESC LIMIT 1), gm.{column})",
        filter.and()
    )
}

/// In one statement, for group `$1`: one pass over the staging table and the group's memberships
/// (a full join, materialised) finds what differs: the active memberships the snapshot does not
/// confirm (ended, with `remove`, unless a newer operation wrote them) and the snapshot lines
/// without an active membership. Only those, usually few, are then looked up: checked against
/// their member resource (the invalid ones recorded as rejections), new memberships inserted (in
/// member order, so that the membership and change-log indexes keyed by member are written in key
/// order rather than at random) and ended ones the snapshot confirms re-activated (unless a newer
/// operation wrote them), each write with its change record. The ending and the additions touch
/// different members, so they cannot meet. Binds `$6`, the token's bound source system. Returns
/// (removed, added, re-activated, rejected).
pub fn pg_apply_diff(staging: &Staging, filter: StagingFilter, remove: bool) -> String {
    let added = crate::domain::change::ChangeKind::MembershipAdded.code();
    let removed = crate::domain::change::ChangeKind::MembershipRemoved.code();
    let (ended, ended_count) = if remove {
        (
            format!(
                "ended AS (UPDATE group_member gm SET removed = true, removed_timestamp = $3, \
                   last_operation_id = $2 FROM diff d WHERE NOT d.staged \
                   AND gm.group_id = $1 AND gm.member_id = d.member_id AND NOT gm.removed \
                   AND coalesce(gm.last_operation_id, 0) < $2 RETURNING gm.member_id), \
                 ended_logged AS ({MEMBERSHIP_CHANGE} \
                   SELECT $3, {removed}, $1, member_id, $4, $2, $5 FROM ended), "
            ),
            "(SELECT count(*) FROM ended)",
        )
    } else {
        (String::new(), "0::bigint")
    };
    format!(
        "WITH diff AS MATERIALIZED ( \
           SELECT coalesce(s.member_id, gm.member_id) AS member_id, s.chunk, s.line, \
             s.member_name, s.contributing, s.line IS NOT NULL AS staged \
           FROM (SELECT s.chunk, s.line, s.member_id, s.member_name, s.contributing \
             FROM {staging} s WHERE true{}) s \
           FULL JOIN (SELECT member_id, removed, last_operation_id FROM group_member \
             WHERE group_id = $1) gm ON gm.member_id = s.member_id \
           WHERE (s.line IS NULL AND NOT gm.removed AND coalesce(gm.last_operation_id, 0) < $2) \
             OR (s.line IS NOT NULL AND (gm.member_id IS NULL OR gm.removed))), \
         {ended}\
         new AS MATERIALIZED ( \
           SELECT s.chunk, s.line, s.member_id, s.member_name, s.contributing, \
             CASE {} WHEN s.member_id = $1 THEN 'a group cannot be a member of itself' END \
               AS reason \
           FROM diff s LEFT JOIN resource m ON m.id = s.member_id WHERE s.staged), \
         rejected AS (INSERT INTO operation_rejection (operation_id, chunk, line, reason) \
           SELECT $2, chunk, line, reason FROM new WHERE reason IS NOT NULL \
           ON CONFLICT DO NOTHING), \
         added AS (INSERT INTO group_member (source, group_id, member_id, member_name, \
           contributing, last_operation_id, created_timestamp) \
           SELECT $4, $1, n.member_id, n.member_name, n.contributing, $2, $3 FROM new n \
           WHERE n.reason IS NULL AND NOT EXISTS (SELECT 1 FROM group_member gm \
             WHERE gm.group_id = $1 AND gm.member_id = n.member_id) \
           ORDER BY n.member_id \
           ON CONFLICT (group_id, member_id) DO NOTHING RETURNING member_id), \
         back AS (UPDATE group_member gm SET removed = false, removed_timestamp = NULL, \
           last_operation_id = $2, member_name = coalesce(n.member_name, gm.member_name), \
           contributing = n.contributing FROM new n \
           WHERE n.reason IS NULL AND gm.group_id = $1 AND gm.member_id = n.member_id \
             AND gm.removed AND coalesce(gm.last_operation_id, 0) < $2 \
           RETURNING gm.member_id), \
         logged AS ({MEMBERSHIP_CHANGE} \
           SELECT $3, {added}, $1, member_id, $4, $2, $5 FROM added \
           UNION ALL SELECT $3, {added}, $1, member_id, $4, $2, $5 FROM back) \
         SELECT {ended_count}, (SELECT count(*) FROM added), (SELECT count(*) FROM back), \
           (SELECT count(*) FROM new WHERE reason IS NOT NULL)",
        filter.and(),
        member_reason("$6::text", "$1")
    )
}

/// The step that writes the names and flags the snapshot changes on active memberships.
pub fn update_attributes(d: Dialect, staging: &Staging, filter: StagingFilter) -> Vec<String> {
    match d {
        Dialect::Postgres => vec![pg_update_attributes(staging, filter)],
        Dialect::Sqlite => sqlite_update_attributes(staging, filter),
    }
}

fn pg_update_attributes(staging: &Staging, filter: StagingFilter) -> String {
    format!(
        "WITH upd AS (UPDATE group_member gm SET last_operation_id = $2, \
         member_name = coalesce(s.member_name, gm.member_name), \
         contributing = coalesce(s.contributing, gm.contributing) FROM {staging} s \
         WHERE gm.group_id = $1 AND gm.member_id = s.member_id{} AND NOT gm.removed \
         AND coalesce(gm.last_operation_id, 0) < $2 \
         AND ((s.member_name IS NOT NULL AND s.member_name IS DISTINCT FROM gm.member_name) \
           OR (s.contributing IS NOT NULL AND s.contributing IS DISTINCT FROM gm.contributing)) \
         RETURNING gm.member_id, gm.member_name, gm.contributing) \
         INSERT INTO change (at, kind, group_id, member_id, source_system, operation_id, \
         token_name, attrs) SELECT $3, {}, $1, member_id, $4, $2, $5, \
         jsonb_build_object('member_name', member_name, 'contributing', contributing) FROM upd",
        filter.and(),
        crate::domain::change::ChangeKind::MembershipUpdated.code()
    )
}

/// The staged lines of the group (`$1`, bound only when the filter uses it).
pub fn staged_lines(staging: &Staging, filter: StagingFilter) -> String {
    format!(
        "SELECT count(*) FROM {staging} s WHERE true{}",
        filter.and()
    )
}

/// Refuses a reconcile (whole, so nothing of it is kept) that would pass the deletion threshold
/// for a group.
pub fn check_reconcile(
    threshold: &crate::domain::full_update::Threshold,
    group: ResourceId,
    active: i64,
    snapshot: i64,
    removed: i64,
) -> StoreResult<()> {
    let diff = GroupDiff {
        group_id: group,
        active,
        snapshot,
        to_add: 0,
        to_reactivate: 0,
        to_remove: removed,
    };
    match threshold_hold(threshold, [diff]) {
        None => Ok(()),
        Some(reason) => Err(StoreError::conflict(
            ConflictKind::Threshold,
            format!(
            "the reconcile was refused and changed nothing: {reason}; pass a \"threshold\" that \
             allows it once a person has checked the deferred full-update"
        ),
        )),
    }
}

/// Reconcile: like the removal of an apply, for memberships older than full-update `$6`.
pub fn reconcile(d: Dialect, staging: &Staging, filter: StagingFilter) -> Vec<String> {
    match d {
        Dialect::Postgres => vec![pg_reconcile(staging, filter)],
        Dialect::Sqlite => sqlite_remove_unconfirmed(staging, filter, "$6"),
    }
}

fn pg_reconcile(staging: &Staging, filter: StagingFilter) -> String {
    format!(
        "WITH ended AS (UPDATE group_member gm SET removed = true, removed_timestamp = $3, \
         last_operation_id = $2 WHERE {} RETURNING gm.member_id) \
         {MEMBERSHIP_CHANGE} SELECT $3, {}, $1, member_id, $4, $2, $5 FROM ended",
        unconfirmed(staging, filter, "$6"),
        crate::domain::change::ChangeKind::MembershipRemoved.code()
    )
}

/// SQLite's diff of group `$1`, in three steps: end the active memberships the snapshot does not
/// confirm (no statements when removals are deferred), add the new members, re-activate the
/// ended memberships the snapshot confirms.
pub fn sqlite_diff(staging: &Staging, filter: StagingFilter, remove: bool) -> [Vec<String>; 3] {
    let removals = if remove {
        sqlite_remove_unconfirmed(staging, filter, "$2")
    } else {
        Vec::new()
    };
    [
        removals,
        sqlite_insert_new(staging, filter),
        sqlite_reactivate(staging, filter),
    ]
}

fn sqlite_log(kind: crate::domain::change::ChangeKind, from_where: &str) -> String {
    format!(
        "{MEMBERSHIP_CHANGE} SELECT $3, {}, $1, gm.member_id, $4, $2, $5 FROM group_member gm \
         WHERE {from_where}",
        kind.code()
    )
}

fn sqlite_remove_unconfirmed(
    staging: &Staging,
    filter: StagingFilter,
    older_than: &str,
) -> Vec<String> {
    let predicate = unconfirmed(staging, filter, older_than);
    vec![
        sqlite_log(
            crate::domain::change::ChangeKind::MembershipRemoved,
            &predicate,
        ),
        format!(
            "UPDATE group_member AS gm SET removed = true, removed_timestamp = $3, \
             last_operation_id = $2 WHERE {predicate}"
        ),
    ]
}

fn sqlite_insert_new(staging: &Staging, filter: StagingFilter) -> Vec<String> {
    let new = new_members(staging, filter);
    vec![
        format!(
            "{MEMBERSHIP_CHANGE} SELECT DISTINCT $3, {}, $1, s.member_id, $4, $2, $5 {new}",
            crate::domain::change::ChangeKind::MembershipAdded.code()
        ),
        format!(
            "INSERT INTO group_member (source, group_id, member_id, member_name, contributing, \
             last_operation_id, created_timestamp) \
             SELECT $4, $1, s.member_id, s.member_name, s.contributing, $2, $3 {new} \
             ON CONFLICT (group_id, member_id) DO NOTHING"
        ),
    ]
}

fn sqlite_reactivate(staging: &Staging, filter: StagingFilter) -> Vec<String> {
    let predicate = ended_confirmed(staging, filter);
    vec![
        sqlite_log(
            crate::domain::change::ChangeKind::MembershipAdded,
            &predicate,
        ),
        format!(
            "UPDATE group_member AS gm SET removed = false, removed_timestamp = NULL, \
             last_operation_id = $2, member_name = {}, contributing = (SELECT s.contributing \
             FROM {staging} s WHERE s.member_id = gm.member_id{} ORDER BY s.chunk DESC, \
             s.line DESC LIMIT 1) WHERE {predicate}",
            staged_attribute(staging, filter, "member_name"),
            filter.and(),
        ),
    ]
}

fn sqlite_update_attributes(staging: &Staging, filter: StagingFilter) -> Vec<String> {
    let predicate = attributes_changed(staging, filter);
    let name = staged_attribute(staging, filter, "member_name");
    let contributing = staged_attribute(staging, filter, "contributing");
    vec![
        format!(
            "INSERT INTO change (at, kind, group_id, member_id, source_system, operation_id, \
             token_name, attrs) SELECT $3, {}, $1, gm.member_id, $4, $2, $5, \
             json_object('member_name', {name}, 'contributing', \
               CASE {contributing} WHEN 1 THEN json('true') WHEN 0 THEN json('false') END) \
             FROM group_member gm WHERE {predicate}",
            crate::domain::change::ChangeKind::MembershipUpdated.code()
        ),
        format!(
            "UPDATE group_member AS gm SET last_operation_id = $2, member_name = {name}, \
             contributing = {contributing} WHERE {predicate}"
        ),
    ]
}

/// Per group of source system `$1`: active members, snapshot lines, and memberships the
/// full-update `$2` would end.
pub fn source_diffs(staging: &Staging) -> String {
    format!(
        "SELECT g.id, \
           (SELECT count(*) FROM group_member gm WHERE gm.group_id = g.id AND NOT gm.removed), \
           (SELECT count(*) FROM {staging} s WHERE s.group_id = g.id), \
           (SELECT count(*) FROM group_member gm WHERE gm.group_id = g.id AND NOT gm.removed \
             AND coalesce(gm.last_operation_id, 0) < $2 AND NOT EXISTS (SELECT 1 FROM {staging} s \
             WHERE s.group_id = g.id AND s.member_id = gm.member_id)) \
         FROM resource g WHERE g.source_system = $1 AND g.type = {} AND NOT g.deleted",
        ResourceType::Group.code()
    )
}

pub const UPSERT_GROUP_SYNC: &str = "INSERT INTO group_sync (group_id, operation_id, completed) \
     VALUES ($1, $2, $3) ON CONFLICT (group_id) DO UPDATE SET \
     operation_id = excluded.operation_id, completed = excluded.completed \
     WHERE group_sync.operation_id < excluded.operation_id";

/// The groups of source system `$1`, in id order.
pub const SOURCE_GROUPS: &str =
    "SELECT id FROM resource WHERE source_system = $1 AND type = 2 AND NOT deleted ORDER BY id";

/// Active members of group `$1`.
pub const ACTIVE_MEMBERS: &str =
    "SELECT count(*) FROM group_member WHERE group_id = $1 AND NOT removed";

pub const NEWEST_FULL_UPDATE: &str = "SELECT operation_id FROM group_sync WHERE group_id = $1";

pub const COUNT_REJECTIONS: &str =
    "SELECT count(*) FROM operation_rejection WHERE operation_id = $1";

macro_rules! returning_operation {
    ($name:ident, $sql:expr) => {
        pub static $name: LazyLock<String> =
            LazyLock::new(|| format!("{} RETURNING {OPERATION_COLUMNS}", $sql));
    };
}

returning_operation!(
    INSERT_FULL_UPDATE,
    "INSERT INTO operation (type, description, status, phase, group_id, source_system, params, \
     token_name, created, modified, target) \
     VALUES ('full-update', $1, 'running', 'uploading', $2, $3, $4, $5, $6, $6, $7)"
);

returning_operation!(
    QUEUE_OPERATION,
    "UPDATE operation SET phase = 'queued', modified = $2 WHERE id = $1"
);

/// Claims the oldest queued operation, or one whose worker's lease expired: `$1` node, `$2` lease
/// end, `$3` now. On PostgreSQL the claim skips a row another process is claiming.
pub fn claim_operation(d: Dialect) -> String {
    format!(
        "UPDATE operation SET phase = 'applying', lease_owner = $1, lease_expires_at = $2, \
         attempts = attempts + 1 WHERE id = (SELECT id FROM operation \
         WHERE phase = 'queued' OR (phase = 'applying' AND lease_expires_at < $3) \
         ORDER BY id LIMIT 1{}) RETURNING {OPERATION_COLUMNS}",
        d.skip_locked()
    )
}

returning_operation!(
    FINISH_OPERATION,
    "UPDATE operation SET status = $2, phase = NULL, lease_owner = NULL, lease_expires_at = NULL, \
     added = $3, reactivated = $4, removed = $5, updated = $6, unchanged = $7, rejected = $8, \
     reason = $9, modified = $10, completed = CASE WHEN $2 = 'pending' THEN NULL ELSE $10 END \
     WHERE id = $1 AND lease_owner = $11"
);

returning_operation!(
    APPROVE_OPERATION,
    "UPDATE operation SET status = 'running', phase = 'queued', params = $2, reason = NULL, \
     modified = $3 WHERE id = $1"
);

returning_operation!(
    REJECT_OPERATION,
    "UPDATE operation SET status = 'failed', phase = NULL, reason = $2, modified = $3, \
     completed = $3 WHERE id = $1"
);

/// Fails the operations whose workers died `$2` times or more (their lease expired at `$1`).
pub const GIVE_UP: &str = "UPDATE operation SET status = 'failed', phase = NULL, \
     lease_owner = NULL, lease_expires_at = NULL, modified = $1, completed = $1, \
     reason = 'gave up: the workers applying it stopped ' || attempts || ' times without finishing' \
     WHERE phase = 'applying' AND lease_expires_at < $1 AND attempts >= $2 RETURNING id";

pub fn lease_lost(id: OperationId) -> StoreError {
    StoreError::conflict(
        ConflictKind::Lease,
        format!("operation {id}: this worker's lease expired and another worker took it over"),
    )
}

pub const UPSERT_CHUNK: &str =
    "INSERT INTO operation_chunk (operation_id, chunk, lines, received) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (operation_id, chunk) DO UPDATE SET \
     lines = excluded.lines, received = excluded.received";

pub const RENEW_LEASE: &str = "UPDATE operation SET lease_expires_at = $3 \
     WHERE id = $1 AND lease_owner = $2 AND phase = 'applying'";

pub const LIST_REJECTIONS: &str = "SELECT chunk, line, reason FROM operation_rejection \
     WHERE operation_id = $1 AND (chunk > $2 OR (chunk = $2 AND line > $3)) \
     ORDER BY chunk, line LIMIT $4";

/// Groups with a completed full-update, the full-update, whether it was group-scoped, and the
/// group's source system: one group (`$1`).
pub const RECONCILE_GROUP: &str = "SELECT gs.group_id, gs.operation_id, o.group_id IS NOT NULL, \
     r.source_system FROM group_sync gs JOIN operation o ON o.id = gs.operation_id \
     JOIN resource r ON r.id = gs.group_id WHERE gs.group_id = $1";

/// The same for every group of source system `$1`.
pub const RECONCILE_SOURCE: &str = "SELECT gs.group_id, gs.operation_id, o.group_id IS NOT NULL, \
     r.source_system FROM group_sync gs JOIN operation o ON o.id = gs.operation_id \
     JOIN resource r ON r.id = gs.group_id WHERE r.source_system = $1";

pub const PURGE_MEMBERSHIPS: &str = "DELETE FROM group_member WHERE id IN \
     (SELECT id FROM group_member WHERE removed AND removed_timestamp < $1 LIMIT $2)";

pub const PURGE_GROUP_SYNC: &str = "DELETE FROM group_sync WHERE group_id IN \
     (SELECT id FROM resource WHERE deleted AND deleted_at < $1)";

/// Deleted resources older than `$1` that nothing refers to any more, `$2` at most.
pub const PURGEABLE_RESOURCES: &str = "SELECT r.id FROM resource r \
     WHERE r.deleted AND r.deleted_at < $1 \
     AND NOT EXISTS (SELECT 1 FROM group_member gm WHERE gm.group_id = r.id) \
     AND NOT EXISTS (SELECT 1 FROM group_member gm WHERE gm.member_id = r.id) \
     AND NOT EXISTS (SELECT 1 FROM group_sync gs WHERE gs.group_id = r.id) \
     AND NOT EXISTS (SELECT 1 FROM resource c WHERE c.prime_id = r.id) \
     AND NOT EXISTS (SELECT 1 FROM unified_link l WHERE l.unified_id = r.id OR l.group_id = r.id) \
     AND NOT EXISTS (SELECT 1 FROM correlation_case k WHERE k.account_id = r.id) \
     ORDER BY r.id LIMIT $2";

/// The step that deletes a batch of purgeable resources (`$1` before, `$2` batch), logging each
/// at `$3` for operation `$4` by token `$5`.
pub fn purge_resources(d: Dialect) -> Vec<String> {
    let purged = crate::domain::change::ChangeKind::ResourcePurged.code();
    let log = "INSERT INTO change (at, kind, resource_id, source_system, operation_id, token_name)";
    match d {
        Dialect::Postgres => vec![format!(
            "WITH gone AS (DELETE FROM resource WHERE id IN ({PURGEABLE_RESOURCES}) \
             RETURNING id, source_system) \
             {log} SELECT $3, {purged}, id, source_system, $4, $5 FROM gone"
        )],
        Dialect::Sqlite => vec![
            format!(
                "{log} SELECT $3, {purged}, id, source_system, $4, $5 FROM resource \
                 WHERE id IN ({PURGEABLE_RESOURCES})"
            ),
            format!("DELETE FROM resource WHERE id IN ({PURGEABLE_RESOURCES})"),
        ],
    }
}

/// The index an apply adds to a full-update's staging table, if any: PostgreSQL's
/// source-scoped diff reads it by group; SQLite's steps look members up by id.
pub fn staging_index(d: Dialect, staging: &Staging, source_scoped: bool) -> Option<String> {
    match d {
        Dialect::Postgres => source_scoped.then(|| {
            format!("CREATE INDEX IF NOT EXISTS {staging}_group ON {staging} (group_id, member_id)")
        }),
        Dialect::Sqlite => Some(format!(
            "CREATE INDEX IF NOT EXISTS {staging}_member ON {staging} (member_id, group_id)"
        )),
    }
}

pub const FAIL_ABANDONED: &str = "UPDATE operation SET status = 'failed', phase = NULL, \
     reason = 'abandoned: no chunk arrived for too long; start a new full-update', \
     modified = $2, completed = $2 \
     WHERE phase = 'uploading' AND coalesce((SELECT max(c.received) FROM operation_chunk c \
     WHERE c.operation_id = operation.id), created) < $1 RETURNING id";

/// Parses a preview cursor, `group:member`; no cursor starts before every id.
pub fn preview_cursor(page: &PageRequest<String>) -> StoreResult<(Uuid, Uuid)> {
    let Some(cursor) = &page.after else {
        return Ok((Uuid::nil(), Uuid::nil()));
    };
    let parsed = cursor
        .split_once(':')
        .and_then(|(g, m)| Some((Uuid::parse_str(g).ok()?, Uuid::parse_str(m).ok()?)));
    parsed.ok_or_else(|| StoreError::Invalid(InvalidInput::new("the preview cursor is not valid")))
}

/// Parses a rejections cursor, `chunk:line`.
pub fn rejection_cursor(page: &PageRequest<String>) -> StoreResult<(i32, i32)> {
    let Some(cursor) = &page.after else {
        return Ok((-1, -1));
    };
    let parsed = cursor
        .split_once(':')
        .and_then(|(c, l)| Some((c.parse().ok()?, l.parse().ok()?)));
    parsed
        .ok_or_else(|| StoreError::Invalid(InvalidInput::new("the rejections cursor is not valid")))
}

/// The page of a preview: what full-update `$3` would add to or remove from the scope (group
/// `$1`, or the groups of source system `$2`), after (`$4`, `$5`), `$6` rows.
pub fn preview(staging: &Staging, op: &Operation, action: PreviewAction) -> String {
    let group_scoped = op.group_id.is_some();
    match action {
        PreviewAction::Remove => {
            let groups = if group_scoped {
                "gm.group_id = $1".to_owned()
            } else {
                format!(
                    "gm.group_id IN (SELECT id FROM resource WHERE source_system = $2 \
                     AND type = {} AND NOT deleted)",
                    ResourceType::Group.code()
                )
            };
            let same_group = if group_scoped {
                ""
            } else {
                " AND s.group_id = gm.group_id"
            };
            format!(
                "SELECT gm.group_id, gm.member_id FROM group_member gm WHERE {groups} \
                 AND NOT gm.removed AND coalesce(gm.last_operation_id, 0) < $3 \
                 AND NOT EXISTS (SELECT 1 FROM {staging} s WHERE s.member_id = gm.member_id\
                 {same_group}) \
                 AND (gm.group_id > $4 OR (gm.group_id = $4 AND gm.member_id > $5)) \
                 ORDER BY gm.group_id, gm.member_id LIMIT $6"
            )
        }
        PreviewAction::Add => {
            let group = if group_scoped { "$1" } else { "s.group_id" };
            format!(
                "SELECT DISTINCT {group}, s.member_id FROM {staging} s \
                 WHERE s.member_id IS NOT NULL AND {group} IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM group_member gm WHERE gm.group_id = {group} \
                   AND gm.member_id = s.member_id \
                   AND (NOT gm.removed OR coalesce(gm.last_operation_id, 0) >= $3)) \
                 AND ({group} > $4 OR ({group} = $4 AND s.member_id > $5)) \
                 ORDER BY 1, 2 LIMIT $6"
            )
        }
    }
}

pub fn preview_entries(rows: Vec<(Uuid, Uuid)>, action: PreviewAction) -> Vec<PreviewEntry> {
    rows.into_iter()
        .map(|(group, member)| PreviewEntry {
            group_id: ResourceId(group),
            member_id: ResourceId(member),
            action,
        })
        .collect()
}

/// The statement of one partial-update edit; binds `$1` source, `$2` group, `$3` member,
/// `$4` member name, `$5` contributing, `$6` operation, `$7` time.
pub fn edit_statement(action: PreviewAction) -> &'static str {
    static ADD: LazyLock<String> = LazyLock::new(|| super::sql::UPSERT_MEMBERSHIP.clone());
    static REMOVE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO group_member (source, group_id, member_id, member_name, contributing, \
             last_operation_id, created_timestamp, removed, removed_timestamp) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, true, $7) \
             ON CONFLICT (group_id, member_id) DO UPDATE SET \
             removed_timestamp = CASE WHEN group_member.removed \
               THEN group_member.removed_timestamp ELSE excluded.removed_timestamp END, \
             removed = true, last_operation_id = excluded.last_operation_id \
             RETURNING {MEMBERSHIP_COLUMNS}"
        )
    });
    match action {
        PreviewAction::Add => &ADD,
        PreviewAction::Remove => &REMOVE,
    }
}

/// What an edit did, from the row before and after it. Removing a membership that never was
/// leaves a removed row behind (a tombstone) so that an older full-update cannot add it, but it
/// is not a change.
pub fn classify_edit(
    action: PreviewAction,
    before: Option<&Membership>,
    after: &Membership,
) -> MembershipWrite {
    match (action, before) {
        (PreviewAction::Add, _) => MembershipWrite::classify(before, after),
        (PreviewAction::Remove, Some(b)) if !b.removed => MembershipWrite::Removed,
        (PreviewAction::Remove, _) => MembershipWrite::Unchanged,
    }
}

/// Checks one edit of a partial-update (its ends, and the token's source binding); the message
/// names the edit by its position.
pub fn check_edit(
    index: usize,
    group: &Resource,
    member: &Resource,
    bound_source: Option<&str>,
) -> StoreResult<()> {
    let prefixed = |message: String| format!("changes[{index}]: {message}");
    check_ends(group, member).map_err(|e| StoreError::Invalid(InvalidInput::new(prefixed(e.0))))?;
    Principal::check_membership_sources(bound_source, group, member)
        .map_err(|e| StoreError::Forbidden(prefixed(e)))
}

/// The error for an edit whose member cannot be found.
pub fn edit_member_not_found(index: usize, what: &str) -> StoreError {
    StoreError::Invalid(InvalidInput::new(format!(
        "changes[{index}]: no live resource matches {what} (add \"type\" when several types \
         share an identifier)"
    )))
}

/// The column and value to find an edit's member by, for members named by source keys.
pub fn edit_member_key(
    member: &crate::domain::full_update::MemberRef,
) -> Option<(&'static str, &str, &str)> {
    use crate::domain::full_update::MemberRef;
    match member {
        MemberRef::Id(_) => None,
        MemberRef::Identifier {
            source_system,
            identifier,
        } => Some(("identifier", source_system, identifier)),
        MemberRef::ExternalId {
            source_system,
            external_id,
        } => Some(("external_id", source_system, external_id)),
    }
}

pub fn purge_summary(memberships: i64, resources: i64) -> String {
    format!("purged {memberships} ended membership(s) and {resources} deleted resource(s)")
}

/// With `create_missing`: creates a minimal account (of the line's type, default user) for every
/// member named by its source's keys that matches no live resource of a source the token may
/// write (`$14`: its bound source, or null for any). Re-resolving the lines afterwards finds
/// the new resources, and `log_created` records them.
pub fn create_missing(d: super::resource_sql::Dialect, staging: &Staging) -> String {
    let id = match d {
        super::resource_sql::Dialect::Postgres => "gen_random_uuid()",
        super::resource_sql::Dialect::Sqlite => {
            "unhex(substr(m.h, 1, 12) || '4' || substr(m.h, 14, 3) \
             || substr('89AB', 1 + abs(random()) % 4, 1) || substr(m.h, 18, 15))"
        }
    };
    let random_hex = match d {
        super::resource_sql::Dialect::Postgres => "NULL",
        super::resource_sql::Dialect::Sqlite => "hex(randomblob(16))",
    };
    format!(
        "INSERT INTO resource (id, type, typename, source_system, identifier, external_id, \
         created, modified) \
         SELECT {id}, m.t, {}, m.src, m.ident, m.ext, $3, $3 FROM (SELECT k.*, {random_hex} AS h \
           FROM (SELECT DISTINCT member_source AS src, member_identifier AS ident, \
             member_external_id AS ext, coalesce(member_type, {}) AS t FROM {staging} \
             WHERE member_id IS NULL AND member_source IS NOT NULL \
             AND ($14 IS NULL OR member_source = $14)) k) m \
         WHERE true ON CONFLICT DO NOTHING",
        super::resource_sql::typename("m.t"),
        ResourceType::User.code()
    )
}

/// Records `resource.created` for the members `create_missing` created (at `$3`, the only
/// resources of the staged lines created at that instant).
pub fn log_created(staging: &Staging) -> String {
    format!(
        "INSERT INTO change (at, kind, resource_id, source_system, operation_id, token_name) \
         SELECT $3, {}, r.id, r.source_system, $2, $4 FROM resource r WHERE r.created = $3 \
         AND r.id IN (SELECT member_id FROM {staging} WHERE member_id IS NOT NULL)",
        crate::domain::change::ChangeKind::ResourceCreated.code()
    )
}
