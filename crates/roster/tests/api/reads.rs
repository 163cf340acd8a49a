//! Reads across sources. A SCIM base shows nothing of another source: not through a group's
//! members, a filter's joins or a delta. A token whose reads are bound to its source
//! (`read_scope: "bound"`) reads nothing of another source, anywhere in the API.
//!
//! Every test starts from one world of two sources joined by memberships that an unbound token
//! wrote, and checks what each answer reveals, not only its status.

use crate::common::{Backend, Reply, TestApp};
use crate::on_both_backends;
use axum::http::{Method, StatusCode};
use roster::domain::token::Scope;
use serde_json::{json, Value};
use std::collections::BTreeSet;

on_both_backends!(
    a_scim_group_lists_only_members_of_its_base,
    scim_filters_join_only_within_the_base,
    a_scim_delta_lists_no_group_for_a_change_of_a_member_of_another_source,
    a_scim_remove_touches_no_member_of_another_source,
);

/// bar's names: no answer to a foo reader may hold them.
const BOB_NAME: &str = "Bob Bar-Secret";
const BAR_GROUP_NAME: &str = "Bar Admins Secret";

/// Two sources joined by memberships an unbound token wrote: bar's `bob` is in foo's groups
/// `team` and `bob_only`; foo's `alice` is in `team` and in bar's group `bar_admins`; foo's
/// `carol` is only in `bar_admins`.
struct World {
    app: TestApp,
    foo_scim: String,
    alice: String,
    carol: String,
    bob: String,
    team: String,
    bob_only: String,
    bar_admins: String,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let app = TestApp::spawn(backend).await;
        let foo_scim = app.token("scim-foo", &[Scope::Scim], Some("foo")).await;
        let bar_scim = app.token("scim-bar", &[Scope::Scim], Some("bar")).await;
        let user = json!({"userName": "alice", "displayName": "Alice"});
        let alice = scim_create(&app, &foo_scim, "/foo/Users", user).await;
        let carol = scim_create(&app, &foo_scim, "/foo/Users", json!({"userName": "carol"})).await;
        let user = json!({"userName": "bob@bar", "displayName": BOB_NAME});
        let bob = scim_create(&app, &bar_scim, "/bar/Users", user).await;
        let group = json!({"displayName": "Team", "members": [{"value": alice}]});
        let team = scim_create(&app, &foo_scim, "/foo/Groups", group).await;
        let group = json!({"displayName": "Bob only"});
        let bob_only = scim_create(&app, &foo_scim, "/foo/Groups", group).await;
        let group = json!({"displayName": BAR_GROUP_NAME});
        let bar_admins = scim_create(&app, &bar_scim, "/bar/Groups", group).await;
        for (group, member) in [
            (&team, &bob),
            (&bob_only, &bob),
            (&bar_admins, &alice),
            (&bar_admins, &carol),
        ] {
            let reply = app
                .put(&format!("/api/v1/groups/{group}/members/{member}"), None)
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        }
        Self {
            app,
            foo_scim,
            alice,
            carol,
            bob,
            team,
            bob_only,
            bar_admins,
        }
    }

    /// A SCIM request at a base, as foo's SCIM token.
    async fn scim(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let token = self.foo_scim.clone();
        scim(&self.app, &token, method, path, body).await
    }

    /// Fails the test when `reply` holds anything of bar: its user's or group's id or name.
    fn assert_reveals_nothing_of_bar(&self, what: &str, reply: &Reply) {
        for secret in [&self.bob, BOB_NAME, &self.bar_admins, BAR_GROUP_NAME] {
            assert!(
                !reply.text.contains(secret),
                "{what} reveals {secret:?} of source bar: {}",
                reply.text
            );
        }
    }
}

async fn scim(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    app.call_as(Some(token), method, &format!("/scim/v2{path}"), body)
        .await
}

async fn scim_create(app: &TestApp, token: &str, path: &str, body: Value) -> String {
    let reply = scim(app, token, Method::POST, path, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json["id"].as_str().expect("id").to_owned()
}

/// A query parameter's value, percent-encoded.
fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn ids(values: &[&String]) -> BTreeSet<String> {
    values.iter().map(|s| (*s).clone()).collect()
}

/// The ids of a ListResponse's resources.
fn listed(reply: &Reply) -> BTreeSet<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json["Resources"]
        .as_array()
        .expect("Resources")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The member ids a SCIM group document lists.
fn member_ids(document: &Value) -> BTreeSet<String> {
    document["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["value"].as_str().expect("value").to_owned())
        .collect()
}

async fn a_scim_group_lists_only_members_of_its_base(backend: Backend) {
    let w = World::new(backend).await;
    let reply = w
        .scim(Method::GET, &format!("/foo/Groups/{}", w.team), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(member_ids(&reply.json), ids(&[&w.alice]));
    w.assert_reveals_nothing_of_bar("a group's document", &reply);
    let reply = w
        .scim(Method::GET, &format!("/foo/Groups/{}", w.bob_only), None)
        .await;
    assert_eq!(member_ids(&reply.json), BTreeSet::new(), "{}", reply.text);
    w.assert_reveals_nothing_of_bar("a group of bar's member only", &reply);

    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]});
    for (method, path, body) in [
        (Method::GET, "/foo/Groups".to_owned(), None),
        (Method::GET, "/foo/Groups?cursor&count=10".to_owned(), None),
        (
            Method::GET,
            "/foo/Groups?deltaQuery&cursor".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/foo/Groups/.search".to_owned(),
            Some(search.clone()),
        ),
    ] {
        let reply = w.scim(method, &path, body).await;
        assert_eq!(listed(&reply), ids(&[&w.team, &w.bob_only]), "{path}");
        w.assert_reveals_nothing_of_bar(&path, &reply);
    }
    let reply = w.scim(Method::POST, "/foo/.search", Some(search)).await;
    let every = ids(&[&w.alice, &w.carol, &w.team, &w.bob_only]);
    assert_eq!(listed(&reply), every);
    w.assert_reveals_nothing_of_bar("a search of the base", &reply);
    // A write's answer is the document too.
    let reply = w
        .scim(
            Method::PUT,
            &format!("/foo/Groups/{}", w.team),
            Some(json!({"displayName": "Team renamed"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(member_ids(&reply.json), ids(&[&w.alice]));
    w.assert_reveals_nothing_of_bar("a PUT's answer", &reply);
    // bar's member is still in the group; its base just does not show it.
    assert!(w.app.members(&w.team).await.contains(&w.bob));
}

async fn scim_filters_join_only_within_the_base(backend: Backend) {
    let w = World::new(backend).await;
    let none = BTreeSet::new();
    for (list, filter, expected) in [
        (
            "Users",
            format!("groups.value eq \"{}\"", w.bar_admins),
            none.clone(),
        ),
        (
            "Users",
            format!("groups[value eq \"{}\"]", w.bar_admins),
            none.clone(),
        ),
        ("Users", "groups pr".to_owned(), ids(&[&w.alice])),
        ("Users", "not (groups pr)".to_owned(), ids(&[&w.carol])),
        (
            "Users",
            format!("groups.value eq \"{}\"", w.team),
            ids(&[&w.alice]),
        ),
        (
            "Groups",
            format!("members.value eq \"{}\"", w.bob),
            none.clone(),
        ),
        (
            "Groups",
            format!("members[value eq \"{}\"]", w.bob),
            none.clone(),
        ),
        (
            "Groups",
            "members[display co \"bar-secret\"]".to_owned(),
            none.clone(),
        ),
        (
            "Groups",
            format!("members.display eq \"{BOB_NAME}\""),
            none.clone(),
        ),
        ("Groups", "members pr".to_owned(), ids(&[&w.team])),
        ("Groups", "not (members pr)".to_owned(), ids(&[&w.bob_only])),
        (
            "Groups",
            "members[display co \"ali\"]".to_owned(),
            ids(&[&w.team]),
        ),
    ] {
        let path = format!("/foo/{list}?filter={}", enc(&filter));
        let reply = w.scim(Method::GET, &path, None).await;
        assert_eq!(listed(&reply), expected, "{list} filter {filter}");
        assert_eq!(reply.json["totalResults"], expected.len(), "{filter}");
        let search = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": filter,
        });
        let path = format!("/foo/{list}/.search");
        let reply = w.scim(Method::POST, &path, Some(search)).await;
        assert_eq!(listed(&reply), expected, "search {list} filter {filter}");
    }
}

/// Follows a delta query of foo's groups from `token` to its end: the groups answered and the
/// next token.
async fn groups_since(w: &World, token: &str) -> (BTreeSet<String>, String) {
    let mut found = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let path = format!(
            "/foo/Groups?deltaQuery&deltaToken={}&count=10&cursor={cursor}",
            enc(token)
        );
        let reply = w.scim(Method::GET, &path, None).await;
        w.assert_reveals_nothing_of_bar("a delta page", &reply);
        found.extend(listed(&reply));
        match reply.json["nextCursor"].as_str() {
            Some(next) => cursor = enc(next),
            None => {
                let next = reply.json["nextDeltaToken"].as_str().expect("token");
                return (found, next.to_owned());
            }
        }
    }
}

async fn a_scim_delta_lists_no_group_for_a_change_of_a_member_of_another_source(backend: Backend) {
    let w = World::new(backend).await;
    let read = w
        .scim(Method::GET, "/foo/Groups?deltaQuery&cursor&count=10", None)
        .await;
    let token = read.json["nextDeltaToken"]
        .as_str()
        .expect("nextDeltaToken")
        .to_owned();
    // bar's member leaves both foo groups: nothing foo's base shows has changed.
    for group in [&w.team, &w.bob_only] {
        let path = format!("/api/v1/groups/{group}/members/{}", w.bob);
        let reply = w.app.delete(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let (changed, token) = groups_since(&w, &token).await;
    assert_eq!(changed, BTreeSet::new());
    // A member of foo leaving is a change of the group.
    let path = format!("/api/v1/groups/{}/members/{}", w.team, w.alice);
    assert_eq!(w.app.delete(&path).await.status, StatusCode::OK);
    let (changed, _) = groups_since(&w, &token).await;
    assert_eq!(changed, ids(&[&w.team]));
}

async fn a_scim_remove_touches_no_member_of_another_source(backend: Backend) {
    let w = World::new(backend).await;
    let remove = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": "members", "value": [{"value": w.bob}]}],
    });
    let path = format!("/foo/Groups/{}", w.team);
    let reply = w.scim(Method::PATCH, &path, Some(remove)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(w.app.members(&w.team).await.contains(&w.bob));
    let removed = "SELECT count(*) FROM change WHERE kind = 7 AND member_id = $1";
    assert_eq!(w.app.scalar(removed, &[&w.bob]).await, 0);
    // Like removing a member that is absent: the edit counts no removal.
    let ops = "SELECT count(*) FROM operation WHERE removed > 0";
    assert_eq!(w.app.scalar(ops, &[]).await, 0);
}
