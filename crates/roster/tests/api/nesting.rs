//! Nested groups: transitive checks and groups-of, the paths of a membership and the cycles,
//! compared with a model of the same nesting computed here.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::StatusCode;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

on_both_backends!(
    transitive_reads_agree_with_a_model_of_random_nesting,
    a_removed_intermediate_edge_ends_the_right_memberships_only,
    transitive_reads_refuse_what_they_cannot_answer,
);

fn members_path(group: &str, member: &str) -> String {
    format!("/api/v1/groups/{group}/members/{member}")
}

/// A deterministic stream of numbers (a linear congruential generator), so that a failure
/// replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// The nesting as the test built it: nodes are indices, groups first.
struct Model {
    ids: Vec<String>,
    groups: usize,
    active: Vec<bool>,
    /// Live edges (parent, child).
    edges: BTreeSet<(usize, usize)>,
}

const NONE: u32 = u32::MAX;

impl Model {
    /// Shortest path lengths from each group down to each node: Floyd–Warshall with only active
    /// groups allowed in the middle of a path.
    fn distances(&self) -> Vec<Vec<u32>> {
        let n = self.ids.len();
        let mut d = vec![vec![NONE; n]; n];
        for &(p, c) in &self.edges {
            d[p][c] = 1;
        }
        for k in (0..self.groups).filter(|&k| self.active[k]) {
            for i in 0..n {
                for j in 0..n {
                    if d[i][k] != NONE && d[k][j] != NONE {
                        d[i][j] = d[i][j].min(d[i][k] + d[k][j]);
                    }
                }
            }
        }
        d
    }

    /// Every simple path from `group` down to `member` (groups from `group` down), by brute force.
    fn paths(&self, group: usize, member: usize) -> BTreeSet<Vec<String>> {
        fn up(
            m: &Model,
            at: usize,
            group: usize,
            path: &mut Vec<usize>,
            out: &mut Vec<Vec<usize>>,
        ) {
            for &(p, c) in &m.edges {
                if c != at || path.contains(&p) {
                    continue;
                }
                if p == group {
                    let mut found: Vec<usize> = path[1..].to_vec();
                    found.push(p);
                    found.reverse();
                    out.push(found);
                } else if m.active[p] {
                    path.push(p);
                    up(m, p, group, path, out);
                    path.pop();
                }
            }
        }
        let mut out = Vec::new();
        up(self, member, group, &mut vec![member], &mut out);
        out.into_iter()
            .map(|p| p.into_iter().map(|i| self.ids[i].clone()).collect())
            .collect()
    }

    /// The cycles: groups that reach each other through edges out of active groups.
    fn cycles(&self) -> BTreeSet<Vec<String>> {
        let g = self.groups;
        let mut reach = vec![vec![false; g]; g];
        for &(p, c) in &self.edges {
            if c < g && self.active[c] {
                reach[p][c] = true;
            }
        }
        for k in 0..g {
            for i in 0..g {
                for j in 0..g {
                    reach[i][j] |= reach[i][k] && reach[k][j];
                }
            }
        }
        (0..g)
            .filter(|&i| reach[i][i])
            .map(|i| {
                let mut ids: Vec<String> = (0..g)
                    .filter(|&j| i == j || (reach[i][j] && reach[j][i]))
                    .map(|j| self.ids[j].clone())
                    .collect();
                ids.sort();
                ids
            })
            .collect()
    }
}

/// Reads every page of `path` (which has a query) with `limit`.
async fn all_pages(app: &TestApp, path: &str, limit: u32) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = app
            .get(&format!("{path}&limit={limit}&cursor={cursor}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        let page = reply.json["items"].as_array().expect("items").clone();
        assert!(page.len() <= limit as usize);
        items.extend(page);
        match reply.json["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return items,
        }
    }
}

async fn transitive_reads_agree_with_a_model_of_random_nesting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (groups, users) = (7, 4);
    let mut ids = Vec::new();
    for g in 0..groups {
        ids.push(app.group("home", &format!("g{g}")).await);
    }
    for u in 0..users {
        ids.push(app.user("home", &format!("u{u}")).await);
    }
    let mut model = Model {
        ids: ids.clone(),
        groups,
        active: vec![true; groups + users],
        edges: BTreeSet::new(),
    };
    let mut rng = Lcg(0x5eed);
    // About two edges a node, cycles likely; then a fifth of them ended, and one group
    // deactivated (it keeps its members but passes none on).
    while model.edges.len() < 2 * (groups + users) {
        let parent = rng.below(groups);
        let child = rng.below(groups + users);
        if parent != child && model.edges.insert((parent, child)) {
            let reply = app
                .put(&members_path(&ids[parent], &ids[child]), None)
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        }
    }
    let ended: Vec<(usize, usize)> = model.edges.iter().copied().step_by(5).collect();
    for (parent, child) in ended {
        let reply = app.delete(&members_path(&ids[parent], &ids[child])).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        model.edges.remove(&(parent, child));
    }
    let inactive = rng.below(groups);
    let reply = app
        .patch(
            &format!("/api/v1/resources/{}", ids[inactive]),
            json!({"active": false}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    model.active[inactive] = false;

    let d = model.distances();
    for m in 0..ids.len() {
        let expected: BTreeMap<String, u64> = (0..groups)
            .filter(|&g| g != m && d[g][m] != NONE)
            .map(|g| (ids[g].clone(), u64::from(d[g][m])))
            .collect();
        let listed = all_pages(
            &app,
            &format!("/api/v1/resources/{}/groups?transitive=true", ids[m]),
            2,
        )
        .await;
        let got: BTreeMap<String, u64> = listed
            .iter()
            .map(|x| {
                assert_eq!(x["member_id"], ids[m]);
                (
                    x["group_id"].as_str().unwrap().to_owned(),
                    x["depth"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got.len(), listed.len(), "each group listed once");
        assert_eq!(got, expected, "transitive groups of node {m}");

        for g in 0..groups {
            let reply = app
                .get(&format!(
                    "{}?transitive=true",
                    members_path(&ids[g], &ids[m])
                ))
                .await;
            match expected.get(&ids[g]) {
                Some(&depth) => {
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
                    assert_eq!(reply.json["depth"], depth);
                    assert_eq!(reply.json["group_id"], ids[g]);
                }
                None => reply.assert_problem(StatusCode::NOT_FOUND, "not a member"),
            }
            let paths = all_pages(
                &app,
                &format!("{}/paths?", members_path(&ids[g], &ids[m])),
                2,
            )
            .await;
            let lengths: Vec<u64> = paths.iter().map(|p| p["depth"].as_u64().unwrap()).collect();
            assert!(
                lengths.windows(2).all(|w| w[0] <= w[1]),
                "shortest first: {lengths:?}"
            );
            let got: BTreeSet<Vec<String>> = paths
                .iter()
                .map(|p| {
                    let groups: Vec<String> = p["groups"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|g| g.as_str().unwrap().to_owned())
                        .collect();
                    assert_eq!(p["depth"].as_u64().unwrap() as usize, groups.len());
                    groups
                })
                .collect();
            assert_eq!(got.len(), paths.len(), "each path listed once");
            let expected_paths = if g == m {
                BTreeSet::new()
            } else {
                model.paths(g, m)
            };
            assert_eq!(got, expected_paths, "paths from group {g} to node {m}");
        }
    }

    let cycles = all_pages(&app, "/api/v1/groups/cycles?", 1).await;
    let got: BTreeSet<Vec<String>> = cycles
        .iter()
        .map(|c| {
            c["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(got, model.cycles());
    assert!(!got.is_empty(), "the seed makes at least one cycle");
}

async fn a_removed_intermediate_edge_ends_the_right_memberships_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.group("home", "a").await;
    let b = app.group("home", "b").await;
    let c = app.group("home", "c").await;
    let d = app.group("home", "d").await;
    let (u, u2, u3) = (
        app.user("home", "u").await,
        app.user("home", "u2").await,
        app.user("home", "u3").await,
    );
    // a ⊃ b ⊃ c ⊃ u, a ⊃ d ⊃ u2, b ⊃ u3, and d ⊃ c: u is in a through b and through d.
    for (parent, child) in [
        (&a, &b),
        (&b, &c),
        (&c, &u),
        (&a, &d),
        (&d, &u2),
        (&b, &u3),
        (&d, &c),
    ] {
        let reply = app.put(&members_path(parent, child), None).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let groups_of = |member: String| {
        let app = &app;
        async move {
            let reply = app
                .get(&format!(
                    "/api/v1/resources/{member}/groups?transitive=true"
                ))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            reply.json["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    (
                        x["group_id"].as_str().unwrap().to_owned(),
                        x["depth"].as_u64().unwrap(),
                    )
                })
                .collect::<BTreeMap<String, u64>>()
        }
    };
    let before = groups_of(u.clone()).await;
    assert_eq!(
        before,
        BTreeMap::from([
            (c.clone(), 1),
            (b.clone(), 2),
            (d.clone(), 2),
            (a.clone(), 3)
        ])
    );
    let why = app.get(&format!("{}/paths", members_path(&a, &u))).await;
    assert_eq!(why.json["depth"], 3);
    // Paths of one length come in the order of their groups from the member up; ids are
    // time-ordered, and b was created before d.
    assert_eq!(
        why.json["items"],
        json!([
            {"groups": [a, b, c], "depth": 3},
            {"groups": [a, d, c], "depth": 3},
        ])
    );

    let reply = app.delete(&members_path(&b, &c)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        groups_of(u.clone()).await,
        BTreeMap::from([(c.clone(), 1), (d.clone(), 2), (a.clone(), 3)]),
        "u left b only: a still holds it through d"
    );
    assert_eq!(
        groups_of(u2.clone()).await,
        BTreeMap::from([(d.clone(), 1), (a.clone(), 2)])
    );
    assert_eq!(
        groups_of(u3.clone()).await,
        BTreeMap::from([(b.clone(), 1), (a.clone(), 2)])
    );
    let why = app.get(&format!("{}/paths", members_path(&a, &u))).await;
    assert_eq!(
        why.json["items"],
        json!([{"groups": [a, d, c], "depth": 3}]),
        "only the path through d is left"
    );
    let reply = app
        .get(&format!("{}?transitive=true", members_path(&b, &u)))
        .await;
    reply.assert_problem(StatusCode::NOT_FOUND, "not a member");
    let why = app.get(&format!("{}/paths", members_path(&b, &u))).await;
    assert_eq!(why.status, StatusCode::OK, "{}", why.text);
    assert_eq!(why.json["depth"], serde_json::Value::Null);
    assert_eq!(why.json["items"], json!([]));
    // The direct record is untouched: the membership of c in b ended, nothing else did.
    assert_eq!(
        app.scalar("SELECT count(*) FROM group_member WHERE removed", &[])
            .await,
        1
    );
}

async fn transitive_reads_refuse_what_they_cannot_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let g = app.group("home", "g").await;
    let u = app.user("home", "u").await;
    app.put(&members_path(&g, &u), None).await;
    let before = app.fingerprint().await;
    for (path, needle) in [
        (
            format!("/api/v1/resources/{u}/groups?transitive=true&include_removed=true"),
            "neither include_removed",
        ),
        (
            format!("/api/v1/resources/{u}/groups?transitive=yes"),
            "transitive",
        ),
        (
            format!("{}/paths?cursor=nonsense", members_path(&g, &u)),
            "cursor",
        ),
        (format!("{}/paths?limit=0", members_path(&g, &u)), "limit"),
        ("/api/v1/groups/cycles?limit=5000".to_owned(), "limit"),
    ] {
        app.get(&path)
            .await
            .assert_problem(StatusCode::BAD_REQUEST, needle);
    }
    let nobody = uuid::Uuid::now_v7();
    app.get(&format!("{}/paths", members_path(&nobody.to_string(), &u)))
        .await
        .assert_problem(StatusCode::NOT_FOUND, &nobody.to_string());
    app.get(&format!(
        "/api/v1/resources/{nobody}/groups?transitive=true"
    ))
    .await
    .assert_problem(StatusCode::NOT_FOUND, &nobody.to_string());
    assert_eq!(app.fingerprint().await, before);
}
