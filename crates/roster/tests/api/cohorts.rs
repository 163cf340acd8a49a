//! Cohorts, prime identities, unified groups and the cohort-aware sync plan: the Sean scenario of
//! docs/cohorts.md, cycles, depth, uncorrelated members and echoes.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::StatusCode;
use serde_json::{json, Value};

on_both_backends!(
    the_sean_scenario_plans_per_cohort,
    a_single_tier_identity_is_ambiguous_never_a_removal,
    links_that_close_a_cycle_or_pass_the_depth_are_refused,
    uncorrelated_members_are_never_removed,
    a_synced_echo_does_not_keep_a_person_in,
    links_are_checked_and_recorded,
    correlation_rebuilds_cohorts_and_never_links_a_dispute,
    a_member_from_another_source_contributes_and_a_deleted_prime_does_not,
);

pub fn resource(source: &str, identifier: &str, ty: &str, subtype: Option<&str>) -> Value {
    let mut body = json!({"type": ty, "source_system": source, "identifier": identifier});
    if let Some(subtype) = subtype {
        body["subtype"] = json!(subtype);
    }
    body
}

pub async fn prime(app: &TestApp, name: &str) -> String {
    app.create(resource("roster", name, "prime", None)).await
}

pub async fn link(app: &TestApp, id: &str, prime: &str) {
    let reply = app
        .put(
            &format!("/api/v1/resources/{id}/prime"),
            Some(json!({"prime_id": prime})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

async fn parent(app: &TestApp, id: &str, parent: &str) -> crate::common::Reply {
    app.put(
        &format!("/api/v1/resources/{id}/parent"),
        Some(json!({"parent_id": parent})),
    )
    .await
}

pub async fn add(app: &TestApp, group: &str, member: &str) {
    let reply = app
        .put(&format!("/api/v1/groups/{group}/members/{member}"), None)
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
}

async fn unified(app: &TestApp, name: &str, links: &[(&str, &str)]) -> String {
    let reply = app
        .post(
            "/api/v1/unified-groups",
            json!({"source_system": "roster", "identifier": name}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json["id"].as_str().expect("id").to_owned();
    for (group, role) in links {
        let reply = app
            .put(
                &format!("/api/v1/unified-groups/{id}/links/{group}"),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    id
}

/// The plan as sorted (group, action, member-or-cohort) triples.
pub async fn plan(app: &TestApp, unified: &str) -> Vec<(String, String, String)> {
    let reply = app
        .get(&format!("/api/v1/unified-groups/{unified}/plan"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let mut out = Vec::new();
    for group in reply.json["groups"].as_array().expect("groups") {
        let id = group["group_id"].as_str().unwrap_or_default();
        for action in ["add", "remove"] {
            for e in group[action].as_array().expect("entries") {
                assert!(!e["reason"].as_str().unwrap_or_default().is_empty());
                let member = e["member_id"].as_str().unwrap_or_default();
                out.push((id.to_owned(), action.to_owned(), member.to_owned()));
            }
        }
        for e in group["unresolved"].as_array().expect("unresolved") {
            assert!(!e["reason"].as_str().unwrap_or_default().is_empty());
            let who = e["member_id"].as_str().or(e["cohort_id"].as_str());
            let kind = e["kind"].as_str().unwrap_or_default();
            out.push((
                id.to_owned(),
                kind.to_owned(),
                who.unwrap_or_default().to_owned(),
            ));
        }
    }
    out.sort();
    out
}

pub fn entries(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = items
        .iter()
        .map(|(g, a, m)| ((*g).to_owned(), (*a).to_owned(), (*m).to_owned()))
        .collect();
    out.sort();
    out
}

/// Sean's accounts: per persona (1, 2, PA) the home account and its guests in foo and bar.
pub struct Sean {
    pub accounts: Vec<[String; 3]>,
    pub primes: Vec<String>,
    pub root: String,
    pub workday: String,
    pub groups: [String; 3],
    pub unified: String,
}

pub async fn sean(app: &TestApp, multi_tier: bool) -> Sean {
    let mut accounts = Vec::new();
    for (persona, subtype) in [
        ("sean1", "native"),
        ("sean2", "native"),
        ("seanpa", "privileged"),
    ] {
        let home = app
            .create(resource(
                "home",
                &format!("{persona}@home"),
                "user",
                Some(subtype),
            ))
            .await;
        let in_foo = app
            .create(resource(
                "foo",
                &format!("{persona}_home#EXT#@foo"),
                "user",
                Some("guest"),
            ))
            .await;
        let in_bar = app
            .create(resource(
                "bar",
                &format!("{persona}_home#EXT#@bar"),
                "user",
                Some("guest"),
            ))
            .await;
        accounts.push([home, in_foo, in_bar]);
    }
    let root = prime(app, "P0").await;
    let workday = app.create(resource("workday", "W-1", "worker", None)).await;
    link(app, &workday, &root).await;
    let mut primes = Vec::new();
    for (i, persona) in accounts.iter().enumerate() {
        let cohort = if multi_tier {
            let p = prime(app, &format!("P{}", i + 1)).await;
            assert_eq!(parent(app, &p, &root).await.status, StatusCode::OK);
            p
        } else {
            root.clone()
        };
        for account in persona {
            link(app, account, &cohort).await;
        }
        primes.push(cohort);
    }
    let home = app.group("home", "Engineering").await;
    let in_foo = app.group("foo", "Engineering").await;
    let in_bar = app.group("bar", "Engineering").await;
    add(app, &home, &accounts[0][0]).await;
    add(app, &in_foo, &accounts[0][1]).await;
    add(app, &in_bar, &accounts[0][2]).await;
    let unified = unified(
        app,
        "engineering",
        &[
            (&home, "authoritative"),
            (&in_foo, "mirror"),
            (&in_bar, "mirror"),
        ],
    )
    .await;
    Sean {
        accounts,
        primes,
        root,
        workday,
        groups: [home, in_foo, in_bar],
        unified,
    }
}

async fn the_sean_scenario_plans_per_cohort(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = sean(&app, true).await;
    let [home, in_foo, in_bar] = &s.groups;
    assert_eq!(plan(&app, &s.unified).await, vec![]);
    let members = app
        .get(&format!("/api/v1/unified-groups/{}/members", s.unified))
        .await;
    assert_eq!(members.json["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(members.json["items"][0]["cohort_id"], json!(s.primes[0]));
    assert_eq!(
        members.json["items"][0]["via"][0]["member_id"],
        json!(s.accounts[0][0])
    );

    // Sean 1 leaves the authoritative group (a full-update without him, approved): exactly his
    // two guests are to be removed.
    let held = app.full_update(home, &[]).await;
    assert_eq!(held["status"], "pending", "{held}");
    let op = held["id"].as_i64().expect("id");
    let approved = app
        .post(
            &format!("/api/v1/operations/{op}/approve?wait=20"),
            json!({}),
        )
        .await;
    assert_eq!(approved.json["status"], "complete", "{}", approved.text);
    let sean1 = &s.accounts[0];
    assert_eq!(
        plan(&app, &s.unified).await,
        entries(&[(in_foo, "remove", &sean1[1]), (in_bar, "remove", &sean1[2])])
    );

    // Sean 2 joins: exactly his two guests are to be added (and Sean 1's still removed).
    add(&app, home, &s.accounts[1][0]).await;
    let sean2 = &s.accounts[1];
    assert_eq!(
        plan(&app, &s.unified).await,
        entries(&[
            (in_foo, "remove", &sean1[1]),
            (in_bar, "remove", &sean1[2]),
            (in_foo, "add", &sean2[1]),
            (in_bar, "add", &sean2[2]),
        ])
    );

    // The plan counts the effective cohorts (Sean 2 only) and names, for each add, the
    // membership that puts the cohort in.
    let whole = app
        .get(&format!("/api/v1/unified-groups/{}/plan", s.unified))
        .await;
    assert_eq!(whole.json["cohorts"], json!(1), "{}", whole.text);
    let reason = whole.json["groups"][0]["add"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "member {} of authoritative group {home}",
            sean2[0]
        )),
        "{reason}"
    );

    // One mirror's plan, a page at a time.
    let base = format!(
        "/api/v1/unified-groups/{}/plan?group_id={in_foo}&limit=1",
        s.unified
    );
    let first = app.get(&base).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json["groups"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        first.json["groups"][0]["add"][0]["member_id"],
        json!(sean2[1])
    );
    assert!(first.json["groups"][0]["remove"]
        .as_array()
        .is_some_and(Vec::is_empty));
    let next = first.json["next"].as_str().expect("a next page").to_owned();
    let second = app.get(&format!("{base}&cursor={next}")).await;
    assert_eq!(
        second.json["groups"][0]["remove"][0]["member_id"],
        json!(sean1[1])
    );
    assert!(second.json["next"].is_null(), "{}", second.text);
    app.get(&format!("{base}&cursor=nonsense"))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "cursor");

    // Scopes: the identity holds all nine accounts and the Workday record; the cohort, three.
    let ids = |reply: crate::common::Reply| {
        let mut ids: Vec<String> = reply.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let identity = app
        .get(&format!(
            "/api/v1/resources/{}/related?scope=identity",
            sean1[0]
        ))
        .await;
    let mut expected: Vec<String> = s.accounts.iter().flatten().cloned().collect();
    expected.push(s.workday.clone());
    expected.sort();
    assert_eq!(ids(identity), expected);
    let cohort = app
        .get(&format!(
            "/api/v1/resources/{}/related?scope=cohort",
            sean1[0]
        ))
        .await;
    let mut expected = sean1.to_vec();
    expected.sort();
    assert_eq!(ids(cohort), expected);

    let tree = app
        .get(&format!("/api/v1/resources/{}/identity", sean1[2]))
        .await;
    assert_eq!(tree.json["root_id"], json!(s.root), "{}", tree.text);
    let primes = tree.json["primes"].as_array().expect("primes");
    assert_eq!(primes.len(), 4);
    assert_eq!(primes[0]["prime"]["id"], json!(s.root));
    assert_eq!(primes[0]["accounts"][0]["id"], json!(s.workday));
    assert!(primes[1..]
        .iter()
        .all(|p| p["depth"] == 1 && p["accounts"].as_array().map(Vec::len) == Some(3)));
}

async fn a_single_tier_identity_is_ambiguous_never_a_removal(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = sean(&app, false).await;
    let [_, in_foo, in_bar] = &s.groups;
    // One prime for all nine accounts: three candidates in each tenant.
    assert_eq!(
        plan(&app, &s.unified).await,
        entries(&[
            (in_foo, "ambiguous", &s.root),
            (in_bar, "ambiguous", &s.root)
        ])
    );
}

async fn links_that_close_a_cycle_or_pass_the_depth_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b, c) = (
        prime(&app, "A").await,
        prime(&app, "B").await,
        prime(&app, "C").await,
    );
    assert_eq!(parent(&app, &b, &a).await.status, StatusCode::OK);
    assert_eq!(parent(&app, &c, &b).await.status, StatusCode::OK);
    let before = app.fingerprint().await;
    parent(&app, &a, &c)
        .await
        .assert_problem(StatusCode::CONFLICT, "cycle");
    parent(&app, &a, &a)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "own parent");
    assert_eq!(app.fingerprint().await, before);

    // A chain of 16 links is the most: account → C → B → A is 3, so 13 more primes fit above A
    // and the fourteenth is refused.
    let account = app.user("home", "deep").await;
    link(&app, &account, &c).await;
    let mut top = a.clone();
    for i in 0..13 {
        let p = prime(&app, &format!("up{i}")).await;
        let reply = parent(&app, &top, &p).await;
        assert_eq!(reply.status, StatusCode::OK, "{i}: {}", reply.text);
        top = p;
    }
    let last = prime(&app, "too-far").await;
    parent(&app, &top, &last)
        .await
        .assert_problem(StatusCode::CONFLICT, "at most 16");
    let tree = app
        .get(&format!("/api/v1/resources/{account}/identity"))
        .await;
    assert_eq!(tree.json["root_id"], json!(top));
    assert_eq!(tree.json["primes"].as_array().map(Vec::len), Some(16));
}

async fn uncorrelated_members_are_never_removed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = sean(&app, true).await;
    let [_, in_foo, _] = &s.groups;
    let stranger = app
        .create(resource("foo", "stranger@foo", "user", Some("guest")))
        .await;
    add(&app, in_foo, &stranger).await;
    // A disabled second guest of Sean 1 is no candidate (no ambiguity); a prime that is a
    // member is no account (never removed).
    let disabled = app
        .create(resource("foo", "old-sean1@foo", "user", Some("guest")))
        .await;
    link(&app, &disabled, &s.primes[0]).await;
    let reply = app
        .patch(
            &format!("/api/v1/resources/{disabled}"),
            json!({"active": false}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    add(&app, in_foo, &s.primes[1]).await;
    assert_eq!(
        plan(&app, &s.unified).await,
        entries(&[(in_foo, "uncorrelated", &stranger)])
    );
    // A cohort with no account in a tenant needs provisioning.
    let bar_guest = &s.accounts[2][2];
    let reply = app.delete(&format!("/api/v1/resources/{bar_guest}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    add(&app, &s.groups[0], &s.accounts[2][0]).await;
    let [_, in_foo, in_bar] = &s.groups;
    assert_eq!(
        plan(&app, &s.unified).await,
        entries(&[
            (in_foo, "uncorrelated", &stranger),
            (in_foo, "add", &s.accounts[2][1]),
            (in_bar, "no-account", &s.primes[2]),
        ])
    );
}

async fn a_synced_echo_does_not_keep_a_person_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = sean(&app, true).await;
    let [home, in_foo, in_bar] = &s.groups;
    let sean2 = &s.accounts[1];
    add(&app, home, &sean2[0]).await;
    // The sync applies the planned adds; the tenants' next imports report them back as
    // non-contributing mirror memberships.
    for (group, guest) in [(in_foo, &sean2[1]), (in_bar, &sean2[2])] {
        let reply = app
            .put(
                &format!("/api/v1/groups/{group}/members/{guest}"),
                Some(json!({"contributing": false})),
            )
            .await;
        assert!(reply.status.is_success(), "{}", reply.text);
    }
    assert_eq!(plan(&app, &s.unified).await, vec![]);
    let reply = app
        .delete(&format!("/api/v1/groups/{home}/members/{}", sean2[0]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        plan(&app, &s.unified).await,
        entries(&[(in_foo, "remove", &sean2[1]), (in_bar, "remove", &sean2[2])])
    );
    // A membership that ends and comes back takes the flag of its new write: an admin's old
    // `true` does not return with our sync's re-addition.
    let guest = &sean2[1];
    app.put(
        &format!("/api/v1/groups/{in_foo}/members/{guest}"),
        Some(json!({"contributing": true})),
    )
    .await;
    app.delete(&format!("/api/v1/groups/{in_foo}/members/{guest}"))
        .await;
    add(&app, in_foo, guest).await;
    let again = app
        .get(&format!("/api/v1/groups/{in_foo}/members/{guest}"))
        .await;
    assert_eq!(again.json["contributing"], Value::Null, "{}", again.text);
    // A local admin's addition in a mirror, flagged contributing, keeps the person in.
    let reply = app
        .put(
            &format!("/api/v1/groups/{in_foo}/members/{}", sean2[1]),
            Some(json!({"contributing": true})),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    assert_eq!(plan(&app, &s.unified).await, vec![]);
}

async fn links_are_checked_and_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = prime(&app, "P").await;
    let account = app.user("home", "a").await;
    let group = app.group("home", "g").await;
    app.put(
        &format!("/api/v1/resources/{p}/prime"),
        Some(json!({"prime_id": p})),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "PUT …/parent");
    app.put(
        &format!("/api/v1/resources/{account}/prime"),
        Some(json!({"prime_id": group})),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "not a live prime");
    parent(&app, &account, &p)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "not a prime");
    link(&app, &account, &p).await;
    let unlinked = app
        .put(
            &format!("/api/v1/resources/{account}/prime"),
            Some(json!({"prime_id": null})),
        )
        .await;
    assert_eq!(unlinked.json["prime_id"], Value::Null, "{}", unlinked.text);
    let kinds =
        |kind: i64| format!("SELECT count(*) FROM change WHERE resource_id = $1 AND kind = {kind}");
    assert_eq!(app.scalar(&kinds(9), &[&account]).await, 1);
    assert_eq!(app.scalar(&kinds(10), &[&account]).await, 1);
    let lone = app
        .get(&format!("/api/v1/resources/{account}/identity"))
        .await;
    assert_eq!(lone.json["root_id"], Value::Null);
    let related = app
        .get(&format!(
            "/api/v1/resources/{account}/related?scope=identity"
        ))
        .await;
    assert_eq!(related.json["items"][0]["id"], json!(account));
    app.get(&format!("/api/v1/resources/{account}/related?scope=tenant"))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "tenant");
    let not_unified = app
        .get(&format!("/api/v1/unified-groups/{group}/plan"))
        .await;
    not_unified.assert_problem(StatusCode::NOT_FOUND, "not a live unified group");
}

/// Runs a correlation rule; returns the operation.
async fn correlate(app: &TestApp, rule: &str) -> Value {
    let reply = app
        .post("/api/v1/correlation/runs", json!({"rule_id": rule}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["type"], "correlate");
    reply.json
}

async fn cases(app: &TestApp, situation: &str) -> Vec<String> {
    let reply = app
        .get(&format!("/api/v1/correlation/cases?situation={situation}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let mut ids: Vec<String> = reply.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["account_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn correlation_rebuilds_cohorts_and_never_links_a_dispute(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut personas = Vec::new();
    // Sean's three personas, and a fourth whose home identifier is held twice (differing in
    // case): its guests are disputed.
    for persona in ["sean.one", "sean.two", "sean.pa", "sam"] {
        let home = app
            .create(resource(
                "home",
                &format!("{persona}@home.com"),
                "user",
                Some("native"),
            ))
            .await;
        let mut guests = Vec::new();
        for tenant in ["foo", "bar"] {
            let upn = format!("{persona}_home.com#EXT#@{tenant}.onmicrosoft.com");
            guests.push(
                app.create(resource(tenant, &upn, "user", Some("guest")))
                    .await,
            );
        }
        personas.push((home, guests));
    }
    let twin = app
        .create(resource("home", "SAM@home.com", "user", Some("native")))
        .await;
    let mut rules = Vec::new();
    for tenant in ["foo", "bar"] {
        let reply = app
            .post(
                "/api/v1/correlation/rules",
                json!({"name": format!("b2b-{tenant}"), "source_system": tenant,
                       "target_source_system": "home", "normalize": "entra-b2b"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        rules.push(reply.json["id"].as_str().expect("id").to_owned());
    }
    let duplicate = app
        .post(
            "/api/v1/correlation/rules",
            json!({"name": "b2b-foo", "source_system": "foo",
                   "target_source_system": "home", "normalize": "entra-b2b"}),
        )
        .await;
    duplicate.assert_problem(StatusCode::CONFLICT, "conflicts");

    let run = correlate(&app, &rules[0]).await;
    assert_eq!(run["counts"]["added"], 3, "{run}");
    assert_eq!(
        cases(&app, "disputed").await,
        vec![personas[3].1[0].clone()]
    );
    let run = correlate(&app, &rules[1]).await;
    assert_eq!(run["counts"]["added"], 3, "{run}");
    assert_eq!(
        cases(&app, "disputed").await,
        vec![personas[3].1[1].clone()]
    );

    // The P1/P2/P3 cohorts are rebuilt: each home account with its two guests, three primes.
    let mut primes = Vec::new();
    for (home, guests) in &personas[..3] {
        let cohort = app
            .get(&format!("/api/v1/resources/{home}/related?scope=cohort"))
            .await;
        let mut ids: Vec<String> = cohort.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        let mut expected = guests.clone();
        expected.push(home.clone());
        expected.sort();
        assert_eq!(ids, expected);
        primes.push(app.get(&format!("/api/v1/resources/{home}")).await.json["prime_id"].clone());
    }
    primes.dedup();
    assert_eq!(primes.len(), 3, "{primes:?}");
    // The disputed guests stay unlinked, and so do both candidates.
    for id in [&personas[3].1[0], &personas[3].1[1], &personas[3].0, &twin] {
        let r = app.get(&format!("/api/v1/resources/{id}")).await;
        assert_eq!(r.json["prime_id"], Value::Null, "{}", r.text);
    }

    // A person decides: manual links (and unlinks) win over the rules.
    let p4 = prime(&app, "P4").await;
    link(&app, &personas[3].1[0], &p4).await;
    let unlinked = app
        .put(
            &format!("/api/v1/resources/{}/prime", personas[0].1[0]),
            Some(json!({"prime_id": null})),
        )
        .await;
    assert_eq!(unlinked.status, StatusCode::OK, "{}", unlinked.text);
    let again = correlate(&app, &rules[0]).await;
    assert_eq!(again["counts"]["added"], 0, "{again}");
    assert_eq!(again["counts"]["unchanged"], 4, "{again}");
    let r = app
        .get(&format!("/api/v1/resources/{}", personas[0].1[0]))
        .await;
    assert_eq!(r.json["prime_id"], Value::Null, "the manual unlink holds");
    assert_eq!(cases(&app, "disputed").await, Vec::<String>::new());
}

async fn a_member_from_another_source_contributes_and_a_deleted_prime_does_not(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = sean(&app, true).await;
    let [home, in_foo, in_bar] = &s.groups;
    // Sean 2's HR-side account, of a source no linked group has, joins the authoritative group:
    // it is read by its key, and its cohort is in.
    let hr = app
        .create(resource("hr", "sean2@hr", "user", Some("native")))
        .await;
    link(&app, &hr, &s.primes[1]).await;
    add(&app, home, &hr).await;
    assert_eq!(
        plan(&app, &s.unified).await,
        entries(&[
            (in_foo, "add", &s.accounts[1][1]),
            (in_bar, "add", &s.accounts[1][2]),
        ])
    );
    // Once Sean 2's prime is deleted his cohort is no more: nothing to add.
    let reply = app
        .delete(&format!("/api/v1/resources/{}", s.primes[1]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE id = $1 AND deleted",
            &[&s.primes[1]]
        )
        .await,
        1
    );
    assert_eq!(plan(&app, &s.unified).await, entries(&[]));
}
