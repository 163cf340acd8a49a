//! Nested groups: a member's ancestry (the groups that hold it, directly or through other groups)
//! and the questions asked of it — depth, the paths from a group down to the member, and cycles.
//!
//! A path is a chain of live memberships: none ended, and every group in the middle of the chain
//! active and not deleted (a deactivated group still has its direct members, but passes none of
//! them on). Paths are simple: a group appears once in a path, so a cycle never loops a resolver,
//! and a group is not listed as a member of itself.

use super::ResourceId;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use utoipa::ToSchema;

/// A live membership edge: `child` is a direct member of `parent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    pub child: ResourceId,
    pub parent: ResourceId,
}

/// The live edges above one member: every membership of the member, and of each group reached
/// from it that passes its members on.
#[derive(Debug, Clone)]
pub struct Ancestry {
    member: ResourceId,
    /// Each node's parents, in id order.
    parents: BTreeMap<ResourceId, BTreeSet<ResourceId>>,
}

/// A group a member is in, directly (depth 1) or through nesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct NestedMembership {
    pub group_id: ResourceId,
    pub member_id: ResourceId,
    /// The length of the shortest path: 1 for a direct membership, 2 for a member of a member…
    pub depth: u32,
}

/// One path from a group down to a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MembershipPath {
    /// The chain of groups, from the group asked about down to the member's direct group.
    pub groups: Vec<ResourceId>,
    /// The number of memberships on the path (`groups.len()`).
    pub depth: u32,
}

/// The paths of one page, and whether the enumeration stopped at its bound before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub paths: Vec<MembershipPath>,
    /// Whether another path follows the page.
    pub more: bool,
    /// Whether the search gave up at its bound of work ([`PATH_WORK`]) before it ran out of
    /// paths: paths after the last one listed may exist and are not listed.
    pub truncated: bool,
}

/// How many edges the search for paths may follow before it stops: a densely nested directory
/// can hold more simple paths between two nodes than any client could read.
pub const PATH_WORK: usize = 100_000;

/// Where a page of paths starts: after this path (its groups, from the group asked about down).
/// Paths are ordered shortest first, then by their groups read from the member up, so a page
/// continues after its last path even when paths appeared or ended in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathKey(pub Vec<ResourceId>);

impl PathKey {
    /// Whether `path` (groups from the top down) comes after this key.
    fn precedes(&self, path: &[ResourceId]) -> bool {
        let order = self.0.len().cmp(&path.len());
        order
            .then_with(|| self.0.iter().rev().cmp(path.iter().rev()))
            .is_lt()
    }
}

impl std::fmt::Display for PathKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.0.iter().map(|id| id.0.to_string()).collect();
        f.write_str(&ids.join("."))
    }
}

impl std::str::FromStr for PathKey {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split('.')
            .map(|id| id.parse().map(ResourceId))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl Ancestry {
    /// The ancestry of `member` from its live edges (any order, duplicates allowed).
    pub fn new(member: ResourceId, edges: impl IntoIterator<Item = Edge>) -> Self {
        let mut parents: BTreeMap<ResourceId, BTreeSet<ResourceId>> = BTreeMap::new();
        for e in edges {
            parents.entry(e.child).or_default().insert(e.parent);
        }
        Self { member, parents }
    }

    /// Every group above the member with the length of its shortest path, in group-id order.
    /// The search starts at the member, so a cycle that leads back to it does not list it.
    pub fn groups(&self) -> Vec<NestedMembership> {
        let mut groups: Vec<NestedMembership> = self
            .depths_up()
            .into_iter()
            .map(|(group_id, depth)| NestedMembership {
                group_id,
                member_id: self.member,
                depth,
            })
            .collect();
        groups.sort_by_key(|g| g.group_id);
        groups
    }

    /// The membership in `group` through the shortest path, if any.
    pub fn within(&self, group: ResourceId) -> Option<NestedMembership> {
        self.depths_up().get(&group).map(|&depth| NestedMembership {
            group_id: group,
            member_id: self.member,
            depth,
        })
    }

    /// Breadth-first distances from the member up to every node above it.
    fn depths_up(&self) -> HashMap<ResourceId, u32> {
        let mut depth = HashMap::new();
        let mut queue = VecDeque::from([(self.member, 0u32)]);
        let mut seen = HashSet::from([self.member]);
        while let Some((node, d)) = queue.pop_front() {
            for &parent in self.parents.get(&node).into_iter().flatten() {
                if seen.insert(parent) {
                    depth.insert(parent, d + 1);
                    queue.push_back((parent, d + 1));
                }
            }
        }
        depth
    }

    /// The paths from `group` down to the member after `after`, at most `limit` of them, in
    /// [`PathKey`] order.
    pub fn paths(&self, group: ResourceId, after: Option<&PathKey>, limit: usize) -> Paths {
        self.paths_within(group, after, limit, PATH_WORK)
    }

    /// [`Ancestry::paths`], following at most `work` edges. A breadth-first search over partial
    /// paths from the member up finds them in order: shorter ones first, and those of one length
    /// in the order of their groups, since each node's parents are visited in id order. Partial
    /// paths are kept as links to their prefix, so memory grows with the work, not with the
    /// work times the length.
    fn paths_within(
        &self,
        group: ResourceId,
        after: Option<&PathKey>,
        limit: usize,
        work: usize,
    ) -> Paths {
        let useful = self.reaching(group);
        // Each partial path: its last node and the index of its prefix (none for the member).
        let mut arena: Vec<(ResourceId, Option<usize>)> = vec![(self.member, None)];
        let mut queue = VecDeque::from([0usize]);
        let mut found = Vec::new();
        let mut followed = 0usize;
        let (mut more, mut truncated) = (false, false);
        'search: while let Some(at) = queue.pop_front() {
            let Some(&(last, _)) = arena.get(at) else {
                continue;
            };
            for &parent in self.parents.get(&last).into_iter().flatten() {
                followed += 1;
                if followed > work {
                    truncated = true;
                    break 'search;
                }
                if !useful.contains(&parent) || on_path(&arena, at, parent) {
                    continue;
                }
                if parent != group {
                    arena.push((parent, Some(at)));
                    queue.push_back(arena.len() - 1);
                    continue;
                }
                let groups = path_down(&arena, at, group);
                if after.is_some_and(|key| !key.precedes(&groups)) {
                    continue;
                }
                if found.len() == limit {
                    more = true;
                    break 'search;
                }
                found.push(MembershipPath {
                    depth: u32::try_from(groups.len()).unwrap_or(u32::MAX),
                    groups,
                });
            }
        }
        Paths {
            paths: found,
            more,
            truncated,
        }
    }

    /// The nodes from which `group` can be reached going up (the group included): only these
    /// can lie on a path.
    fn reaching(&self, group: ResourceId) -> HashSet<ResourceId> {
        let mut children: HashMap<ResourceId, Vec<ResourceId>> = HashMap::new();
        for (&child, parents) in &self.parents {
            for &parent in parents {
                children.entry(parent).or_default().push(child);
            }
        }
        let mut reach = HashSet::from([group]);
        let mut stack = vec![group];
        while let Some(node) = stack.pop() {
            for &child in children.get(&node).into_iter().flatten() {
                if reach.insert(child) {
                    stack.push(child);
                }
            }
        }
        reach
    }
}

/// Whether `node` is on the partial path that ends at `at`.
fn on_path(arena: &[(ResourceId, Option<usize>)], at: usize, node: ResourceId) -> bool {
    let mut link = Some(at);
    while let Some(&(id, prefix)) = link.and_then(|i| arena.get(i)) {
        if id == node {
            return true;
        }
        link = prefix;
    }
    false
}

/// The groups of the partial path ending at `at`, completed by `group`, listed from `group`
/// down to the member's direct group (the member itself left out).
fn path_down(
    arena: &[(ResourceId, Option<usize>)],
    at: usize,
    group: ResourceId,
) -> Vec<ResourceId> {
    let mut groups = vec![group];
    let mut link = Some(at);
    while let Some(&(id, prefix)) = link.and_then(|i| arena.get(i)) {
        if prefix.is_some() {
            groups.push(id);
        }
        link = prefix;
    }
    groups
}

/// A set of groups each of which holds every other, through live memberships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Cycle {
    /// The groups, in id order.
    pub groups: Vec<ResourceId>,
}

/// The cycles among live group-in-group edges: the strongly connected components of more than
/// one group (no group is a member of itself: writes refuse it), in the order of their first
/// group.
pub fn cycles(edges: &[Edge]) -> Vec<Cycle> {
    let mut graph: BTreeMap<ResourceId, Vec<ResourceId>> = BTreeMap::new();
    for e in edges {
        graph.entry(e.parent).or_default().push(e.child);
        graph.entry(e.child).or_default();
    }
    let mut found: Vec<Cycle> = components(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|mut groups| {
            groups.sort();
            Cycle { groups }
        })
        .collect();
    found.sort_by(|a, b| a.groups.first().cmp(&b.groups.first()));
    found
}

/// Tarjan's strongly connected components, iteratively (a deep nesting must not overflow the
/// stack).
fn components(graph: &BTreeMap<ResourceId, Vec<ResourceId>>) -> Vec<Vec<ResourceId>> {
    struct Node {
        index: usize,
        low: usize,
        on_stack: bool,
    }
    let mut nodes: HashMap<ResourceId, Node> = HashMap::new();
    let mut stack: Vec<ResourceId> = Vec::new();
    let mut out = Vec::new();
    let mut next = 0usize;
    for &root in graph.keys() {
        if nodes.contains_key(&root) {
            continue;
        }
        // Each frame: a node and how many of its children it has visited.
        let mut frames: Vec<(ResourceId, usize)> = vec![(root, 0)];
        nodes.insert(
            root,
            Node {
                index: next,
                low: next,
                on_stack: true,
            },
        );
        next += 1;
        stack.push(root);
        while let Some(&mut (node, ref mut visited)) = frames.last_mut() {
            let children = graph.get(&node).map(Vec::as_slice).unwrap_or_default();
            if let Some(&child) = children.get(*visited) {
                *visited += 1;
                match nodes.get(&child) {
                    None => {
                        nodes.insert(
                            child,
                            Node {
                                index: next,
                                low: next,
                                on_stack: true,
                            },
                        );
                        next += 1;
                        stack.push(child);
                        frames.push((child, 0));
                    }
                    Some(c) if c.on_stack => {
                        let index = c.index;
                        if let Some(n) = nodes.get_mut(&node) {
                            n.low = n.low.min(index);
                        }
                    }
                    Some(_) => {}
                }
                continue;
            }
            frames.pop();
            let (index, low) = nodes.get(&node).map_or((0, 0), |n| (n.index, n.low));
            if let Some(&(parent, _)) = frames.last() {
                if let Some(p) = nodes.get_mut(&parent) {
                    p.low = p.low.min(low);
                }
            }
            if low == index {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    if let Some(n) = nodes.get_mut(&member) {
                        n.on_stack = false;
                    }
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                out.push(component);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ResourceId {
        ResourceId(uuid::Uuid::from_u128(u128::from(n) + 1))
    }

    fn edge(child: u8, parent: u8) -> Edge {
        Edge {
            child: id(child),
            parent: id(parent),
        }
    }

    /// Every simple path from `group` down to `member`, by brute force.
    fn all_paths(edges: &[Edge], member: ResourceId, group: ResourceId) -> Vec<Vec<ResourceId>> {
        fn walk(
            edges: &[Edge],
            at: ResourceId,
            group: ResourceId,
            path: &mut Vec<ResourceId>,
            out: &mut Vec<Vec<ResourceId>>,
        ) {
            for e in edges.iter().filter(|e| e.child == at) {
                if path.contains(&e.parent) {
                    continue;
                }
                path.push(e.parent);
                if e.parent == group {
                    out.push(path[1..].iter().rev().copied().collect());
                } else {
                    walk(edges, e.parent, group, path, out);
                }
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(edges, member, group, &mut vec![member], &mut out);
        out
    }

    #[test]
    fn a_cycle_is_one_component_and_its_members_are_in_each_group_of_it() {
        // 1 ⊃ 2 ⊃ 3 ⊃ 1, and 3 ⊃ 10 (a user).
        let edges = [edge(2, 1), edge(3, 2), edge(1, 3), edge(10, 3)];
        assert_eq!(
            cycles(&edges),
            vec![Cycle {
                groups: vec![id(1), id(2), id(3)]
            }]
        );
        let user = Ancestry::new(id(10), edges);
        let depths: Vec<(ResourceId, u32)> = user
            .groups()
            .iter()
            .map(|g| (g.group_id, g.depth))
            .collect();
        assert_eq!(depths, vec![(id(1), 3), (id(2), 2), (id(3), 1)]);
        let group = Ancestry::new(id(1), edges);
        assert!(group.within(id(1)).is_none(), "no group is its own member");
        assert_eq!(group.within(id(2)).map(|m| m.depth), Some(2));
    }

    #[test]
    fn the_search_for_paths_stops_at_its_bound_and_says_so() {
        // 10 in 2 and 3, both in 1: two paths, and the search follows four edges to list them.
        let edges = [edge(10, 2), edge(10, 3), edge(2, 1), edge(3, 1)];
        let a = Ancestry::new(id(10), edges);
        let whole = a.paths_within(id(1), None, 10, 5);
        assert_eq!((whole.paths.len(), whole.truncated), (2, false));
        let cut = a.paths_within(id(1), None, 10, 3);
        assert_eq!((cut.paths.len(), cut.truncated), (1, true));
    }

    #[test]
    fn paths_page_through_in_length_order() {
        // 10 in 3 and 4; 3 and 4 in 2; 2 in 1; 4 also in 1 directly.
        let edges = [
            edge(10, 3),
            edge(10, 4),
            edge(3, 2),
            edge(4, 2),
            edge(2, 1),
            edge(4, 1),
        ];
        let a = Ancestry::new(id(10), edges);
        let all = a.paths(id(1), None, 10);
        let groups: Vec<Vec<ResourceId>> = all.paths.iter().map(|p| p.groups.clone()).collect();
        assert_eq!(
            groups,
            vec![
                vec![id(1), id(4)],
                vec![id(1), id(2), id(3)],
                vec![id(1), id(2), id(4)]
            ]
        );
        assert!(!all.more && !all.truncated);
        let after_first = PathKey(all.paths[0].groups.clone());
        let second = a.paths(id(1), Some(&after_first), 1);
        assert_eq!(second.paths, all.paths[1..2]);
        assert!(second.more);
        let key: PathKey = after_first.to_string().parse().expect("a key reads back");
        assert_eq!(key, after_first);
        // A page continues after its last path even when that path has ended since.
        let without_it = Ancestry::new(
            id(10),
            [edge(10, 3), edge(10, 4), edge(3, 2), edge(4, 2), edge(2, 1)],
        );
        let rest = without_it.paths(id(1), Some(&after_first), 10);
        assert_eq!(rest.paths, all.paths[1..]);
    }

    /// Depths and paths agree with brute force on 500 random nestings of 8 nodes, cycles
    /// included (a fixed generator, so that a failure replays).
    #[test]
    fn ancestry_agrees_with_brute_force() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            u8::try_from((state >> 33) % n).unwrap_or(0)
        };
        for _ in 0..500 {
            let count = next(20);
            let edges: Vec<Edge> = (0..count).map(|_| edge(next(8), next(8))).collect();
            let (member, group) = (next(8), next(8));
            let a = Ancestry::new(id(member), edges.clone());
            let mut expected = all_paths(&edges, id(member), id(group));
            expected.sort_by(|x, y| x.len().cmp(&y.len()).then(x.cmp(y)));
            expected.dedup();
            let found = a.paths(id(group), None, 1000);
            let mut got: Vec<Vec<ResourceId>> =
                found.paths.iter().map(|p| p.groups.clone()).collect();
            assert!(
                got.windows(2).all(|w| w[0].len() <= w[1].len()),
                "{edges:?}"
            );
            got.sort_by(|x, y| x.len().cmp(&y.len()).then(x.cmp(y)));
            assert_eq!(got, expected, "{edges:?}");
            let shortest = expected
                .first()
                .map(|p| u32::try_from(p.len()).unwrap_or(u32::MAX));
            let expected_depth = if member == group { None } else { shortest };
            assert_eq!(
                a.within(id(group)).map(|m| m.depth),
                expected_depth,
                "{edges:?}"
            );
        }
    }
}
