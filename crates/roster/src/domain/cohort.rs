//! Cohorts and prime identities: an account links to its cohort prime (one persona across
//! tenants), a prime to its parent prime, up to the root (the person). Unified groups gather
//! groups of several sources, and their sync plan maps each cohort to *its* account in each
//! mirror tenant.

use super::resource::{Resource, ResourceType};
use super::{InvalidInput, ResourceId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// The longest chain from an account up to its root prime.
pub const MAX_DEPTH: usize = 16;

/// Body of `PUT /api/v1/resources/{id}/prime`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrimeLink {
    /// The cohort prime, or null to unlink.
    pub prime_id: Option<ResourceId>,
}

/// Body of `PUT /api/v1/resources/{id}/parent`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentLink {
    /// The parent prime, or null to make this prime a root.
    pub parent_id: Option<ResourceId>,
}

/// Which link a request sets: an account's (or HR record's) prime, or a prime's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Prime,
    Parent,
}

impl LinkKind {
    /// Checks the two ends of a link, before any stored data is consulted.
    pub fn check(self, child: &Resource, target: Option<&Resource>) -> Result<(), InvalidInput> {
        if child.deleted {
            return Err(InvalidInput::new(format!(
                "resource {} is deleted",
                child.id
            )));
        }
        let child_is_prime = child.ty == ResourceType::Prime;
        match (self, child_is_prime) {
            (Self::Prime, true) => {
                return Err(InvalidInput::new(format!(
                    "resource {} is a prime: link it to its parent with PUT …/parent",
                    child.id
                )))
            }
            (Self::Prime, false) if child.ty == ResourceType::Group => {
                return Err(InvalidInput::new(format!(
                    "resource {} is a group: groups belong to no cohort (link accounts and \
                     records)",
                    child.id
                )))
            }
            (Self::Parent, false) => {
                return Err(InvalidInput::new(format!(
                    "resource {} is a {}, not a prime: link it to its cohort with PUT …/prime",
                    child.id,
                    child.ty.name()
                )))
            }
            _ => {}
        }
        match target {
            Some(t) if t.ty != ResourceType::Prime || t.deleted => Err(InvalidInput::new(format!(
                "resource {} is not a live prime",
                t.id
            ))),
            Some(t) if t.id == child.id => {
                Err(InvalidInput::new("a prime cannot be its own parent"))
            }
            _ => Ok(()),
        }
    }
}

/// `scope` of `GET /api/v1/resources/{id}/related`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RelatedScope {
    /// The accounts of the same cohort prime.
    Cohort,
    /// Every account under the root prime.
    Identity,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RelatedParams {
    /// `cohort` or `identity`.
    #[param(inline)]
    pub scope: RelatedScope,
}

/// One prime of an identity with the resources linked straight to it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PrimeNode {
    pub prime: Resource,
    /// 0 for the root.
    pub depth: usize,
    /// Accounts and records (an HR record on the root) linked to this prime.
    pub accounts: Vec<Resource>,
}

/// A person: the root prime and every prime and account under it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentityTree {
    /// Null when the resource is linked to no prime.
    pub root_id: Option<ResourceId>,
    /// The primes, parents before children.
    pub primes: Vec<PrimeNode>,
}

impl IdentityTree {
    /// Builds the tree from every resource under the root (primes and the rest).
    pub fn build(root_id: Option<ResourceId>, resources: Vec<Resource>) -> Self {
        let mut children: HashMap<Option<ResourceId>, Vec<Resource>> = HashMap::new();
        let mut root = None;
        for r in resources {
            if Some(r.id) == root_id {
                root = Some(r);
            } else {
                children.entry(r.prime_id).or_default().push(r);
            }
        }
        let mut primes = Vec::new();
        let mut queue: std::collections::VecDeque<(Resource, usize)> =
            root.into_iter().map(|r| (r, 0)).collect();
        while let Some((prime, depth)) = queue.pop_front() {
            let (mut sub, mut accounts): (Vec<Resource>, Vec<Resource>) = children
                .remove(&Some(prime.id))
                .unwrap_or_default()
                .into_iter()
                .partition(|r| r.ty == ResourceType::Prime);
            sub.sort_by_key(|r| r.id);
            accounts.sort_by_key(|r| r.id);
            queue.extend(sub.into_iter().map(|p| (p, depth + 1)));
            primes.push(PrimeNode {
                prime,
                depth,
                accounts,
            });
        }
        Self { root_id, primes }
    }
}

/// The role of a group linked to a unified group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkRole {
    /// Its memberships contribute, unless flagged `contributing: false`.
    Authoritative,
    /// Synced from the unified group: its memberships contribute only when flagged
    /// `contributing: true` (a local admin's addition), so sync never echoes people back in.
    Mirror,
}

impl LinkRole {
    pub fn name(self) -> &'static str {
        match self {
            Self::Authoritative => "authoritative",
            Self::Mirror => "mirror",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Authoritative, Self::Mirror]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// Body of `PUT /api/v1/unified-groups/{id}/links/{group_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupLinkRequest {
    pub role: LinkRole,
}

/// A group linked to a unified group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupLink {
    pub unified_id: ResourceId,
    pub group_id: ResourceId,
    pub role: LinkRole,
}

/// Body of `POST /api/v1/unified-groups`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUnifiedGroup {
    /// Where the unified group is kept (roster's own namespace, say `roster`).
    pub source_system: String,
    pub identifier: String,
    #[serde(default)]
    pub displayname: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A membership that makes a cohort part of a unified group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Contribution {
    pub member_id: ResourceId,
    pub group_id: ResourceId,
    pub role: LinkRole,
    /// The membership's own flag (null: the role decides).
    pub contributing: Option<bool>,
}

/// One cohort of a unified group's effective membership, with what justifies it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EffectiveCohort {
    pub cohort_id: ResourceId,
    pub via: Vec<Contribution>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UnresolvedKind {
    /// The cohort has no account in the mirror's tenant: it needs provisioning.
    NoAccount,
    /// The cohort has several candidate accounts in the tenant: a person decides.
    Ambiguous,
    /// A member of the mirror group is linked to no cohort: it is never removed automatically.
    Uncorrelated,
}

/// An add or a removal the plan asks for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanEntry {
    pub member_id: ResourceId,
    pub cohort_id: ResourceId,
    pub reason: String,
}

/// What the plan cannot decide.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Unresolved {
    pub kind: UnresolvedKind,
    pub cohort_id: Option<ResourceId>,
    pub member_id: Option<ResourceId>,
    pub reason: String,
}

/// The plan of one mirror group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupPlan {
    pub group_id: ResourceId,
    pub source_system: String,
    pub add: Vec<PlanEntry>,
    pub remove: Vec<PlanEntry>,
    pub unresolved: Vec<Unresolved>,
}

/// The sync plan of a unified group: per mirror group, who to add and remove.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SyncPlan {
    pub unified_id: ResourceId,
    /// Cohorts in the effective membership.
    pub cohorts: usize,
    pub groups: Vec<GroupPlan>,
    /// With `group_id`: pass as `cursor` for the next page of that group's entries; null on the
    /// last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Query of `GET /api/v1/unified-groups/{id}/plan`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanParams {
    /// Only this mirror group's plan, in pages.
    pub group_id: Option<ResourceId>,
    /// Entries per page with `group_id`, 1 to 10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
    /// The `next` value of the previous page (empty or absent: the first page).
    pub cursor: Option<String>,
}

/// One page of one mirror group's plan.
#[derive(Debug, Clone)]
pub struct PlanPage {
    pub group_id: ResourceId,
    pub limit: usize,
    /// After this entry: `kind:id`.
    pub after: Option<(String, uuid::Uuid)>,
}

impl PlanParams {
    /// The page asked for, if any.
    pub fn page(&self) -> Result<Option<PlanPage>, InvalidInput> {
        let Some(group_id) = self.group_id else {
            if self.limit.is_some() || self.cursor.as_deref().is_some_and(|c| !c.is_empty()) {
                return Err(InvalidInput::new(
                    "limit and cursor page one group: add group_id",
                ));
            }
            return Ok(None);
        };
        let limit = self.limit.unwrap_or(1000);
        if !(1..=10_000).contains(&limit) {
            return Err(InvalidInput::new("limit must be between 1 and 10000"));
        }
        let after = self
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.split_once(':')
                    .and_then(|(kind, id)| Some((kind.to_owned(), uuid::Uuid::parse_str(id).ok()?)))
                    .ok_or_else(|| InvalidInput::new("the plan cursor is not valid"))
            })
            .transpose()?;
        Ok(Some(PlanPage {
            group_id,
            limit: limit as usize,
            after,
        }))
    }
}

/// Keeps the rows of one page (rows come sorted by group, kind, member, cohort); returns the
/// cursor of the next page.
pub fn page_rows(rows: &mut Vec<PlanRow>, page: &PlanPage) -> Option<String> {
    let key = |r: &PlanRow| {
        (
            r.kind.clone(),
            r.member_id.or(r.cohort_id).unwrap_or_default(),
        )
    };
    rows.retain(|r| r.group_id == page.group_id.0);
    rows.sort_by_key(key);
    if let Some(after) = &page.after {
        rows.retain(|r| key(r) > *after);
    }
    let more = rows.len() > page.limit;
    rows.truncate(page.limit);
    more.then(|| rows.last().map(|r| format!("{}:{}", key(r).0, key(r).1)))
        .flatten()
}

/// One row of the plan query.
#[derive(Debug, Clone)]
pub struct PlanRow {
    pub group_id: uuid::Uuid,
    /// `add`, `remove`, `no-account`, `ambiguous` or `uncorrelated`.
    pub kind: String,
    pub member_id: Option<uuid::Uuid>,
    pub cohort_id: Option<uuid::Uuid>,
    /// For adds and unresolved cohorts: one membership that puts the cohort in the unified group;
    /// for removals, one that would, but for its account being inactive or expired.
    pub via: Option<Contribution>,
    /// For removals: why that account was deactivated (`hr-terminated`, `expired`…), if roster
    /// deactivated it.
    pub deactivation_reason: Option<String>,
}

/// Why cohort `c` leaves the mirrors: no contributing membership, or one whose account lapsed.
fn removal_reason(c: ResourceId, lapsed: Option<&Contribution>, why: Option<&str>) -> String {
    let Some(v) = lapsed else {
        return format!("cohort {c} has no active contributing membership in the unified group");
    };
    let state = match why {
        Some(why) => format!("was deactivated: {why}"),
        None => "is inactive or expired".to_owned(),
    };
    format!(
        "cohort {c} has no active contributing membership in the unified group: its account {} \
         in {} group {} {state}",
        v.member_id,
        v.role.name(),
        v.group_id
    )
}

impl SyncPlan {
    /// Assembles the plan from the query's rows, with a reason for each entry. `mirrors` are the
    /// mirror groups and their source systems.
    pub fn build(
        unified_id: ResourceId,
        cohorts: usize,
        mirrors: Vec<(ResourceId, String)>,
        rows: Vec<PlanRow>,
    ) -> Self {
        let mut groups: Vec<GroupPlan> = mirrors
            .into_iter()
            .map(|(group_id, source_system)| GroupPlan {
                group_id,
                source_system,
                add: Vec::new(),
                remove: Vec::new(),
                unresolved: Vec::new(),
            })
            .collect();
        let index: HashMap<ResourceId, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.group_id, i))
            .collect();
        for row in rows {
            let Some(&i) = index.get(&ResourceId(row.group_id)) else {
                continue;
            };
            let plan = &mut groups[i];
            let member = row.member_id.map(ResourceId);
            let cohort = row.cohort_id.map(ResourceId);
            let tenant = plan.source_system.clone();
            let because = |c: ResourceId| match &row.via {
                Some(v) => format!(
                    "cohort {c} is in the unified group through member {} of {} group {}",
                    v.member_id,
                    v.role.name(),
                    v.group_id
                ),
                None => format!("cohort {c} is in the unified group"),
            };
            match (row.kind.as_str(), member, cohort) {
                ("add", Some(m), Some(c)) => plan.add.push(PlanEntry {
                    member_id: m,
                    cohort_id: c,
                    reason: format!(
                        "{}; its one account in {tenant:?} is not a member",
                        because(c)
                    ),
                }),
                ("remove", Some(m), Some(c)) => plan.remove.push(PlanEntry {
                    member_id: m,
                    cohort_id: c,
                    reason: removal_reason(c, row.via.as_ref(), row.deactivation_reason.as_deref()),
                }),
                ("no-account", _, Some(c)) => plan.unresolved.push(Unresolved {
                    kind: UnresolvedKind::NoAccount,
                    cohort_id: Some(c),
                    member_id: None,
                    reason: format!("{}; it has no account in {tenant:?}", because(c)),
                }),
                ("ambiguous", _, Some(c)) => plan.unresolved.push(Unresolved {
                    kind: UnresolvedKind::Ambiguous,
                    cohort_id: Some(c),
                    member_id: None,
                    reason: format!(
                        "{}; it has several accounts in {tenant:?}, so none is chosen",
                        because(c)
                    ),
                }),
                (_, Some(m), _) => plan.unresolved.push(Unresolved {
                    kind: UnresolvedKind::Uncorrelated,
                    cohort_id: None,
                    member_id: Some(m),
                    reason: "the member is linked to no cohort; it is never removed \
                             automatically"
                        .to_owned(),
                }),
                _ => {}
            }
        }
        Self {
            unified_id,
            cohorts,
            groups,
            next: None,
        }
    }
}
