//! Cohorts, identities and unified groups, written once for both backends over [`Tx`]: prime
//! links (refusing cycles and chains deeper than `MAX_DEPTH`), identity resolution in one
//! recursive query, and a unified group's effective membership and sync plan, set-based.

use super::db::Tx;
use super::query::Sql;
use super::records;
use super::resource_sql::Dialect;
use super::rows::RESOURCE_COLUMNS;
use super::{now, resource_not_found, StoreError, StoreResult};
use super::{ConflictKind, Record};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::{ChangeKind, ChangeRecord};
use crate::domain::cohort::{
    page_rows, Contribution, EffectiveCohort, GroupLink, IdentityTree, LinkKind, LinkRole,
    PlanPage, PlanRow, RelatedScope, SyncPlan, MAX_DEPTH,
};
use crate::domain::resource::{Resource, ResourceType, Subtype};
use crate::domain::token::Actor;
use crate::domain::{InvalidInput, ResourceId};
use uuid::Uuid;

/// The chain from resource `from` (a placeholder) up to its root, with each step's depth (0: the resource).
/// Bounded one past `MAX_DEPTH`, so that a longer (or cyclic) chain shows.
fn up(from: &str) -> String {
    format!(
        "up(id, prime_id, depth) AS (SELECT id, prime_id, 0 FROM resource WHERE id = {from} \
         UNION ALL SELECT r.id, r.prime_id, up.depth + 1 FROM resource r \
         JOIN up ON r.id = up.prime_id WHERE up.depth <= {MAX_DEPTH})"
    )
}

/// The ids of every resource under the root of resource `id` (a placeholder; the root
/// included): one recursive query.
pub(super) fn identity_ids(id: &str) -> String {
    identities_of(&format!("id = {id}"))
}

/// The ids of every resource under the roots of the resources `seeds` selects (a condition on
/// `resource`), in one recursive query.
pub(super) fn identities_of(seeds: &str) -> String {
    format!(
        "WITH RECURSIVE up(id, prime_id, depth) AS (SELECT id, prime_id, 0 FROM resource \
         WHERE {seeds} UNION ALL SELECT r.id, r.prime_id, up.depth + 1 FROM resource r \
         JOIN up ON r.id = up.prime_id WHERE up.depth <= {MAX_DEPTH}), \
         root(id) AS (SELECT DISTINCT id FROM up WHERE prime_id IS NULL), \
         down(id, depth) AS (SELECT id, 0 FROM root UNION ALL SELECT r.id, down.depth + 1 \
         FROM resource r JOIN down ON r.prime_id = down.id WHERE down.depth <= {MAX_DEPTH}) \
         SELECT id FROM down"
    )
}

/// Every live resource under the root of `id` (the root included).
fn identity_members(id: ResourceId) -> Sql {
    Sql::new(format!(
        "SELECT {RESOURCE_COLUMNS} FROM resource WHERE id IN ({}) AND NOT deleted ORDER BY id",
        identity_ids("$1")
    ))
    .bind(id)
}

/// The root of `id`'s chain (itself when it links to nothing).
fn root(id: ResourceId) -> Sql {
    let up = up("$1");
    Sql::new(format!(
        "WITH RECURSIVE {up} SELECT id, depth FROM up WHERE prime_id IS NULL"
    ))
    .bind(id)
}

/// The chain above `parent`: ids and depths.
fn chain_above(parent: ResourceId) -> Sql {
    Sql::new(format!(
        "WITH RECURSIVE {} SELECT id, depth FROM up",
        up("$1")
    ))
    .bind(parent)
}

/// How many levels of resources hang below `id`.
fn height_below(id: ResourceId) -> Sql {
    Sql::new(format!(
        "WITH RECURSIVE down(id, depth) AS (SELECT id, 0 FROM resource WHERE id = $1 \
         UNION ALL SELECT r.id, down.depth + 1 FROM resource r JOIN down ON r.prime_id = down.id \
         WHERE down.depth <= {MAX_DEPTH}) SELECT CAST(max(depth) AS INTEGER) FROM down"
    ))
    .bind(id)
}

/// Refuses a link of `child` under `parent` that would close a cycle or make a chain deeper than
/// `MAX_DEPTH`.
async fn check_chain(tx: &mut Tx, child: &Resource, parent: &Resource) -> StoreResult<()> {
    let above: Vec<(Uuid, i32)> = tx.fetch_all(&chain_above(parent.id)).await?;
    if let Some(position) = above.iter().position(|(id, _)| *id == child.id.0) {
        let path: Vec<String> = above[..=position]
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        return Err(StoreError::conflict(
            ConflictKind::Tree,
            format!(
                "linking {} under {} would close a cycle: {} is already under {} (chain {})",
                child.id,
                parent.id,
                parent.id,
                child.id,
                path.join(" → ")
            ),
        ));
    }
    let heights: Vec<(Option<i32>,)> = tx.fetch_all(&height_below(child.id)).await?;
    let below = heights.first().and_then(|h| h.0).unwrap_or(0) as usize;
    let depth = above.len() + below;
    if depth > MAX_DEPTH {
        return Err(StoreError::conflict(
            ConflictKind::Tree,
            format!(
                "linking {} under {} would make a chain of {depth} links; at most {MAX_DEPTH} are \
             allowed",
                child.id, parent.id
            ),
        ));
    }
    Ok(())
}

/// The live resources linked to prime `prime`.
fn children_of(prime: ResourceId) -> Sql {
    Sql::new(format!(
        "SELECT {RESOURCE_COLUMNS} FROM resource WHERE prime_id = $1 AND NOT deleted ORDER BY id"
    ))
    .bind(prime)
}

/// A live unified group, or why not.
async fn unified_group(tx: &mut Tx, id: ResourceId) -> StoreResult<Resource> {
    let group = records::get(tx, id).await?;
    if group.ty != ResourceType::Group || group.subtype != Some(Subtype::Unified) || group.deleted {
        return Err(StoreError::missing(
            Record::Resource,
            id,
            format!("resource {id} is not a live unified group"),
        ));
    }
    Ok(group)
}

/// The groups linked to unified group `id`, as (group, role, source system).
fn links(id: ResourceId) -> Sql {
    Sql::new(
        "SELECT l.group_id, l.role, g.source_system FROM unified_link l \
         JOIN resource g ON g.id = l.group_id WHERE l.unified_id = $1 AND NOT g.deleted \
         ORDER BY l.group_id",
    )
    .bind(id)
}

/// The memberships that contribute to unified group `$1` at `$2`: active, of a live, active, unexpired
/// user account linked to a live cohort prime, in a linked group whose role (or the membership's
/// own flag) lets it contribute.
const CONTRIBUTING: &str = "FROM unified_link l \
     JOIN group_member gm ON gm.group_id = l.group_id AND NOT gm.removed \
     JOIN resource m ON m.id = gm.member_id AND NOT m.deleted AND m.active AND m.type = 1 \
       AND (m.expires_at IS NULL OR m.expires_at > $2) \
     JOIN resource p ON p.id = m.prime_id AND NOT p.deleted \
     WHERE l.unified_id = $1 AND coalesce(gm.contributing, l.role = 'authoritative')";

fn contributions(id: ResourceId) -> Sql {
    Sql::new(format!(
        "SELECT m.prime_id, gm.member_id, gm.group_id, l.role, gm.contributing {CONTRIBUTING} \
         ORDER BY m.prime_id, gm.member_id, gm.group_id"
    ))
    .bind(id)
    .bind(now())
}

/// The plan rows, set-based and proportional to the unified group's size (every step reads the
/// linked groups' memberships or index ranges of the mirror tenants, never a whole table):
///
/// - `lm`: the linked groups' active memberships with what the plan needs of each member, read
///   once (see [`pick`]);
/// - `eff`: the effective membership — cohorts (live primes) of live accounts whose membership
///   contributes; deleted primes come from their own small index (a `NOT IN` over every deleted
///   resource, as this once was, degrades to a scan per row once they outgrow `work_mem`);
/// - `missing`: per mirror, the effective cohorts with no live account among its members;
/// - `shared`: per mirror tenant, the cohorts with two or more live accounts there (from the
///   `(source_system, prime_id)` index, grouped once per tenant rather than per mirror);
/// - `probed`: those cohorts' live accounts in the tenant, counted (0: no account, 1: add it,
///   more: ambiguous), each with one membership that puts the cohort in the unified group;
/// - `lapsed`: per cohort, one membership that would contribute but for its account being
///   inactive or expired (with the account's deactivation reason), to say why a removal;
/// - then the members to remove (a user whose cohort does not contribute) or that have no live
///   cohort, and one `cohorts` row with the size of the effective membership.
fn plan_rows(
    d: Dialect,
    id: ResourceId,
    groups: &[Uuid],
    linked_sources: &[String],
    mirror_sources: &[String],
) -> Sql {
    let user = ResourceType::User.code();
    let prime = ResourceType::Prime.code();
    let (text, int) = match d {
        Dialect::Postgres => ("text", "bigint"),
        Dialect::Sqlite => ("TEXT", "INTEGER"),
    };
    let live = |a: &str| {
        format!(
            "{a}.type = {user} AND NOT {a}.deleted AND {a}.active \
             AND ({a}.expires_at IS NULL OR {a}.expires_at > $2)"
        )
    };
    let accounts = format!(
        "FROM resource a WHERE a.source_system = c.source_system AND a.prime_id = c.cohort \
         AND {}",
        live("a")
    );
    Sql::new(format!(
        "WITH lm AS MATERIALIZED (SELECT l.group_id, l.role, gm.member_id, gm.contributing, \
           {} AS prime_id, {} AS type, {} AS live, \
           coalesce(gm.contributing, l.role = 'authoritative') AS contributes, {} AS why \
           FROM unified_link l JOIN group_member gm ON gm.group_id = l.group_id AND NOT gm.removed \
           LEFT JOIN resource m ON m.id = gm.member_id AND m.source_system IN ({}) \
             AND NOT m.deleted AND m.identifier IS NOT NULL \
           WHERE l.unified_id = $1 AND gm.group_id IN ({})), \
         eff AS MATERIALIZED (SELECT DISTINCT prime_id AS cohort FROM lm \
           WHERE live AND contributes AND prime_id IS NOT NULL AND NOT EXISTS (SELECT 1 \
             FROM resource p WHERE p.id = lm.prime_id AND p.deleted AND p.type = {prime})), \
         mirrors AS (SELECT group_id, source_system FROM (SELECT l.group_id, \
             (SELECT g.source_system FROM resource g WHERE g.id = l.group_id AND NOT g.deleted) \
               AS source_system \
           FROM unified_link l WHERE l.unified_id = $1 AND l.role = 'mirror') k \
           WHERE source_system IS NOT NULL), \
         missing AS (SELECT mi.group_id, mi.source_system, e.cohort \
           FROM mirrors mi CROSS JOIN eff e \
           WHERE NOT EXISTS (SELECT 1 FROM lm WHERE lm.group_id = mi.group_id \
             AND lm.prime_id = e.cohort AND lm.live)), \
         shared AS (SELECT mi.group_id, mi.source_system, t.cohort FROM mirrors mi \
           JOIN (SELECT a.source_system, a.prime_id AS cohort FROM resource a \
             WHERE a.source_system IN ({}) \
               AND a.prime_id IS NOT NULL AND NOT a.deleted \
             GROUP BY a.source_system, a.prime_id HAVING count(*) > 1) t \
           ON t.source_system = mi.source_system), \
         candidates AS (SELECT group_id, source_system, cohort, 1 AS missing FROM missing \
           UNION SELECT s.group_id, s.source_system, s.cohort, 0 FROM shared s \
             JOIN eff e ON e.cohort = s.cohort), \
         probed AS MATERIALIZED (SELECT c.group_id, c.cohort, c.missing, \
           (SELECT count(*) {accounts}) AS n, (SELECT a.id {accounts} LIMIT 1) AS account \
           FROM candidates c), \
         res AS (SELECT group_id, CASE WHEN n = 0 THEN 'no-account' WHEN n = 1 THEN 'add' \
             ELSE 'ambiguous' END AS kind, CASE WHEN n = 1 THEN account END AS member, cohort \
           FROM probed WHERE n > 1 OR missing = 1), \
         via AS (SELECT r.group_id, r.cohort, lm.member_id, lm.group_id AS via_group, lm.role, \
             lm.contributing, \
             row_number() OVER (PARTITION BY r.group_id, r.cohort \
               ORDER BY lm.member_id, lm.group_id) AS k \
           FROM res r JOIN lm ON lm.prime_id = r.cohort AND lm.live AND lm.contributes), \
         lapsed AS (SELECT prime_id, member_id, group_id, role, why, \
             row_number() OVER (PARTITION BY prime_id ORDER BY member_id, group_id) AS k \
           FROM lm WHERE contributes AND NOT live AND prime_id IS NOT NULL) \
         SELECT r.group_id, CAST(r.kind AS {text}), r.member, r.cohort, v.member_id, \
           v.via_group, v.role, v.contributing, CAST(NULL AS {int}), CAST(NULL AS {text}) \
           FROM res r \
           LEFT JOIN via v ON v.group_id = r.group_id AND v.cohort = r.cohort AND v.k = 1 \
         UNION ALL SELECT lm.group_id, CASE WHEN coalesce((SELECT NOT p.deleted FROM resource p \
             WHERE p.id = lm.prime_id), FALSE) THEN 'remove' ELSE 'uncorrelated' END, \
           lm.member_id, lm.prime_id, x.member_id, x.group_id, x.role, NULL, NULL, x.why FROM lm \
           JOIN mirrors mi ON mi.group_id = lm.group_id \
           LEFT JOIN lapsed x ON x.prime_id = lm.prime_id AND x.k = 1 \
           WHERE lm.type = {user} \
             AND NOT EXISTS (SELECT 1 FROM eff WHERE eff.cohort = lm.prime_id) \
         UNION ALL SELECT $1, 'cohorts', NULL, NULL, NULL, NULL, NULL, NULL, \
           (SELECT count(*) FROM eff), NULL \
         ORDER BY 1, 2, 3, 4",
        pick("m.prime_id", "x.prime_id"),
        pick("m.type", "x.type"),
        pick(&live("m"), &live("x")),
        pick("m.deactivation_reason", "x.deactivation_reason"),
        text_list(d, linked_sources),
        id_list(d, groups),
        text_list(d, mirror_sources)
    ))
    .bind(id)
    .bind(now())
}

/// A member's column: from `m`, the join over the linked groups' own sources (where nearly every
/// member is, found by a hash join on their index ranges), or else from `x`, the member looked
/// up by its key (evaluated only for the members found elsewhere).
fn pick(joined: &str, looked_up: &str) -> String {
    format!(
        "CASE WHEN m.id IS NOT NULL THEN {joined} \
         ELSE (SELECT {looked_up} FROM resource x WHERE x.id = gm.member_id) END"
    )
}

/// `texts` as SQL string literals of the dialect for an `IN` list: quotes doubled, and on
/// PostgreSQL an escape string (`E'…'`, backslashes doubled), which reads the same whatever
/// `standard_conforming_strings` says.
fn text_list(d: Dialect, texts: &[String]) -> String {
    if texts.is_empty() {
        return "NULL".to_owned();
    }
    texts
        .iter()
        .map(|t| match d {
            Dialect::Postgres => format!("E'{}'", t.replace('\\', "\\\\").replace('\'', "''")),
            Dialect::Sqlite => format!("'{}'", t.replace('\'', "''")),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ids` as SQL literals of the dialect, for an `IN` list: naming the linked groups lets the
/// planner read only their memberships (by the `(group_id, member_id)` key) however many other
/// large groups the table holds.
fn id_list(d: Dialect, ids: &[Uuid]) -> String {
    if ids.is_empty() {
        return "NULL".to_owned();
    }
    ids.iter()
        .map(|id| match d {
            Dialect::Postgres => format!("'{id}'"),
            Dialect::Sqlite => format!("X'{}'", id.simple()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type ContributionRow = (Uuid, Uuid, Uuid, String, Option<bool>);

/// A row of [`plan_rows`]: group, kind, member, cohort, the justifying membership's member, group
/// and role and its own flag, and (on the `cohorts` row) the effective membership's size.
type PlanQueryRow = (
    Uuid,
    String,
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    Option<String>,
    Option<bool>,
    Option<i64>,
    Option<String>,
);

fn contribution(row: &ContributionRow) -> Contribution {
    Contribution {
        member_id: ResourceId(row.1),
        group_id: ResourceId(row.2),
        role: LinkRole::from_name(&row.3).unwrap_or(LinkRole::Mirror),
        contributing: row.4,
    }
}

/// PostgreSQL settings for the plan's transaction. Its one statement joins a few hundred thousand
/// rows, and the planner cannot know how many its CTEs hold:
/// - no nested-loop joins, so a misestimate cannot turn a join of two large sets into their
///   product (it did: a removal anti-join looped 300,000 × 100,000); the statement's key lookups
///   are scalar subqueries, which this setting leaves alone;
/// - no JIT: compiling the statement costs more (1.7 s of 4 s at 100,000 cohorts) than it saves;
/// - hash tables in memory rather than spilled at the default `work_mem`.
const PLAN_SETTINGS: [&str; 3] = [
    "SET LOCAL enable_nestloop = off",
    "SET LOCAL jit = off",
    "SET LOCAL work_mem = '64MB'",
];

/// Cohorts, identities and unified groups.
impl super::Store {
    /// Links a resource to a prime (an account to its cohort, a prime to its parent), or unlinks
    /// it; refuses cycles and chains deeper than `MAX_DEPTH`.
    pub async fn link_prime(
        &self,
        actor: &Actor,
        id: ResourceId,
        kind: LinkKind,
        target: Option<ResourceId>,
    ) -> StoreResult<Resource> {
        self.in_write(async |tx| {
            records::serialize(tx, "roster:prime-links").await?;
            let child = records::lock(tx, id).await?;
            let prime = match target {
                Some(t) => Some(records::lock(tx, t).await?),
                None => None,
            };
            kind.check(&child, prime.as_ref())?;
            if child.prime_id == target {
                return Ok(child);
            }
            if let Some(parent) = &prime {
                check_chain(tx, &child, parent).await?;
            }
            let update = Sql::new(format!(
                "UPDATE resource SET prime_id = $2, prime_pinned = true, modified = $3 \
                 WHERE id = $1 RETURNING {RESOURCE_COLUMNS}"
            ))
            .bind(id)
            .bind(target)
            .bind(now());
            let rows = records::resources(tx, &update).await?;
            let resource = rows
                .into_iter()
                .next()
                .ok_or_else(|| resource_not_found(id))?;
            let change_kind = if target.is_some() {
                ChangeKind::IdentityLinked
            } else {
                ChangeKind::IdentityUnlinked
            };
            let change =
                ChangeRecord::resource(change_kind, &resource).with_attrs(serde_json::json!({
                    "prime_id": {"old": child.prime_id, "new": target}
                }));
            records::log_change(tx, actor, change).await?;
            let record = AuditRecord::new("resource.link", target::resource(id))
                .with_detail(serde_json::json!({ "prime_id": target }));
            records::audit(tx, actor, record).await?;
            Ok(resource)
        })
        .await
    }

    /// The identity a resource belongs to: its root prime and everything under it.
    pub async fn identity(&self, id: ResourceId) -> StoreResult<IdentityTree> {
        let tx = &mut self.db().snapshot().await?;
        let resource = records::get(tx, id).await?;
        let roots: Vec<(Uuid, i32)> = tx.fetch_all(&root(id)).await?;
        let root = roots.first().map(|(r, _)| ResourceId(*r));
        let Some(root) = root.filter(|r| *r != id || resource.ty == ResourceType::Prime) else {
            // Linked to nothing: the resource is a person of its own, with no prime.
            return Ok(IdentityTree::build(None, Vec::new()));
        };
        let members = records::resources(tx, &identity_members(id)).await?;
        Ok(IdentityTree::build(Some(root), members))
    }

    /// The accounts of a resource's cohort or identity.
    pub async fn related(&self, id: ResourceId, scope: RelatedScope) -> StoreResult<Vec<Resource>> {
        let tx = &mut self.db().snapshot().await?;
        let resource = records::get(tx, id).await?;
        let found = match (scope, resource.ty, resource.prime_id) {
            (RelatedScope::Cohort, ResourceType::Prime, _) => {
                records::resources(tx, &children_of(id)).await?
            }
            (RelatedScope::Cohort, _, Some(prime)) => {
                records::resources(tx, &children_of(prime)).await?
            }
            (RelatedScope::Cohort, _, None) => vec![resource],
            (RelatedScope::Identity, _, _) => records::resources(tx, &identity_members(id)).await?,
        };
        Ok(found
            .into_iter()
            .filter(|r| r.ty != ResourceType::Prime && !r.deleted)
            .collect())
    }

    /// Links `group` to the unified group `id` with `role` (or changes its role).
    pub async fn link_group(
        &self,
        actor: &Actor,
        id: ResourceId,
        group: ResourceId,
        role: LinkRole,
    ) -> StoreResult<GroupLink> {
        self.in_write(async |tx| {
            unified_group(tx, id).await?;
            let linked = records::lock(tx, group).await?;
            if linked.ty != ResourceType::Group || linked.deleted {
                let message = format!("resource {group} is not a live group");
                return Err(InvalidInput::new(message).into());
            }
            if linked.subtype == Some(Subtype::Unified) {
                return Err(InvalidInput::new(format!(
                    "resource {group} is a unified group itself; link the groups it gathers instead"
                ))
                .into());
            }
            let link = Sql::new(
                "INSERT INTO unified_link (unified_id, group_id, role, created) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (unified_id, group_id) DO UPDATE SET role = excluded.role",
            )
            .bind(id)
            .bind(group)
            .bind(role.name())
            .bind(now());
            tx.execute(&link).await?;
            let record = AuditRecord::new("unified-group.link", target::resource(id))
                .with_detail(serde_json::json!({ "group_id": group, "role": role }));
            records::audit(tx, actor, record).await?;
            Ok(GroupLink {
                unified_id: id,
                group_id: group,
                role,
            })
        })
        .await
    }

    /// Unlinks `group` from the unified group `id`.
    pub async fn unlink_group(
        &self,
        actor: &Actor,
        id: ResourceId,
        group: ResourceId,
    ) -> StoreResult<()> {
        self.in_write(async |tx| {
            unified_group(tx, id).await?;
            let unlink =
                Sql::new("DELETE FROM unified_link WHERE unified_id = $1 AND group_id = $2")
                    .bind(id)
                    .bind(group);
            let removed = tx.execute(&unlink).await?;
            if removed == 0 {
                return Err(StoreError::missing(
                    Record::GroupLink,
                    group,
                    format!("group {group} is not linked to unified group {id}"),
                ));
            }
            let record = AuditRecord::new("unified-group.unlink", target::resource(id))
                .with_detail(serde_json::json!({ "group_id": group }));
            records::audit(tx, actor, record).await
        })
        .await
    }

    /// The groups linked to unified group `id`.
    pub async fn group_links(&self, id: ResourceId) -> StoreResult<Vec<GroupLink>> {
        let tx = &mut self.db().snapshot().await?;
        unified_group(tx, id).await?;
        let linked: Vec<(Uuid, String, String)> = tx.fetch_all(&links(id)).await?;
        Ok(linked
            .into_iter()
            .map(|(group, role, _)| GroupLink {
                unified_id: id,
                group_id: ResourceId(group),
                role: LinkRole::from_name(&role).unwrap_or(LinkRole::Mirror),
            })
            .collect())
    }

    /// The cohorts in a unified group's effective membership, with what justifies each.
    pub async fn unified_members(&self, id: ResourceId) -> StoreResult<Vec<EffectiveCohort>> {
        let tx = &mut self.db().snapshot().await?;
        unified_group(tx, id).await?;
        let rows: Vec<ContributionRow> = tx.fetch_all(&contributions(id)).await?;
        let mut cohorts: Vec<EffectiveCohort> = Vec::new();
        for row in &rows {
            match cohorts.last_mut() {
                Some(last) if last.cohort_id.0 == row.0 => last.via.push(contribution(row)),
                _ => cohorts.push(EffectiveCohort {
                    cohort_id: ResourceId(row.0),
                    via: vec![contribution(row)],
                }),
            }
        }
        Ok(cohorts)
    }

    /// The sync plan of a unified group's mirror groups (or a page of one group's).
    pub async fn sync_plan(
        &self,
        id: ResourceId,
        page: Option<&PlanPage>,
    ) -> StoreResult<SyncPlan> {
        let tx = &mut self.db().snapshot().await?;
        unified_group(tx, id).await?;
        let linked: Vec<(Uuid, String, String)> = tx.fetch_all(&links(id)).await?;
        let groups: Vec<Uuid> = linked.iter().map(|(group, _, _)| *group).collect();
        let mirrors: Vec<(ResourceId, String)> = linked
            .iter()
            .filter(|(_, role, _)| role == LinkRole::Mirror.name())
            .filter(|(group, _, _)| page.is_none_or(|p| p.group_id.0 == *group))
            .map(|(group, _, source)| (ResourceId(*group), source.clone()))
            .collect();
        if let (Some(p), true) = (page, mirrors.is_empty()) {
            return Err(StoreError::missing(
                Record::GroupLink,
                p.group_id,
                format!("group {} is not a mirror of unified group {id}", p.group_id),
            ));
        }
        let sources: Vec<String> = linked.iter().map(|(_, _, s)| s.clone()).collect();
        let mirror_sources: Vec<String> = linked
            .iter()
            .filter(|(_, role, _)| role == LinkRole::Mirror.name())
            .map(|(_, _, source)| source.clone())
            .collect();
        let statement = plan_rows(tx.dialect(), id, &groups, &sources, &mirror_sources);
        tx.postgres_only(&PLAN_SETTINGS).await?;
        let fetched: Vec<PlanQueryRow> = tx.fetch_all(&statement).await?;
        let mut cohorts = 0;
        let mut rows = Vec::with_capacity(fetched.len());
        for (
            group_id,
            kind,
            member_id,
            cohort_id,
            via_member,
            via_group,
            via_role,
            flag,
            count,
            why,
        ) in fetched
        {
            if kind == "cohorts" {
                cohorts = count
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or_default();
                continue;
            }
            let via = via_member
                .zip(via_group)
                .map(|(member, group)| Contribution {
                    member_id: ResourceId(member),
                    group_id: ResourceId(group),
                    role: via_role
                        .as_deref()
                        .and_then(LinkRole::from_name)
                        .unwrap_or(LinkRole::Mirror),
                    contributing: flag,
                });
            rows.push(PlanRow {
                group_id,
                kind,
                member_id,
                cohort_id,
                via,
                deactivation_reason: why,
            });
        }
        let next = page.and_then(|p| page_rows(&mut rows, p));
        let mut plan = SyncPlan::build(id, cohorts, mirrors, rows);
        plan.next = next;
        Ok(plan)
    }
}
