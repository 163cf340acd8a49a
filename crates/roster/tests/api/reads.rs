//! Reads across sources. A SCIM base shows nothing of another source: not through a group's
//! members, a filter's joins or a delta. A token whose reads are bound to its source
//! (`read_scope: "bound"`) reads nothing of another source, anywhere in the API.
//!
//! Every test starts from one world of two sources joined by memberships that an unbound token
//! wrote, and checks what each answer reveals, not only its status.

use crate::common::{Backend, Reply, TestApp};
use crate::on_both_backends;
use crate::scim::scim;
use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use roster::domain::token::Scope;
use serde_json::{json, Value};
use std::collections::BTreeSet;

on_both_backends!(
    a_scim_group_lists_only_members_of_its_base,
    scim_filters_join_only_within_the_base,
    a_scim_delta_lists_no_group_for_a_change_of_a_member_of_another_source,
    a_scim_remove_touches_no_member_of_another_source,
    read_scope_bound_needs_a_source_and_is_shown_on_the_token,
    a_reader_bound_to_foo_lists_and_gets_only_foo_resources,
    a_reader_bound_to_foo_sees_no_member_or_group_of_bar,
    a_reader_bound_to_foo_sees_nesting_within_foo_only,
    a_reader_bound_to_foo_follows_only_foo_changes,
    a_reader_bound_to_foo_streams_only_foo_changes,
    a_reader_bound_to_foo_exports_only_foo,
    a_reader_bound_to_foo_reads_history_only_of_foo,
    a_reader_bound_to_foo_is_refused_views_that_span_sources,
    a_reader_bound_to_foo_reads_only_operations_of_foo,
    a_scim_token_with_bound_reads_reads_no_other_base,
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
        self.assert_text_reveals_nothing_of_bar(what, &reply.text);
    }

    fn assert_text_reveals_nothing_of_bar(&self, what: &str, text: &str) {
        for secret in [&self.bob, BOB_NAME, &self.bar_admins, BAR_GROUP_NAME] {
            assert!(
                !text.contains(secret),
                "{what} reveals {secret:?} of source bar: {text}"
            );
        }
    }

    /// A new token bound to foo whose reads are bound too (`read_scope: bound`), with `scopes`.
    async fn bound_reader(&self, name: &str, scopes: &[&str]) -> String {
        let body = json!({
            "name": name, "scopes": scopes, "source_system": "foo", "read_scope": "bound",
        });
        let reply = self.app.post("/api/v1/tokens", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        assert_eq!(reply.json["token"]["read_scope"], "bound");
        reply.json["secret"].as_str().expect("secret").to_owned()
    }

    /// A GET as `token`.
    async fn get_as(&self, token: &str, path: &str) -> Reply {
        self.app.call_as(Some(token), Method::GET, path, None).await
    }
}

/// Asserts a 403 whose detail names foo's read binding, and nothing of bar that the request
/// (`what`, its path) did not name: neither bar's names nor, for an id, its source.
fn assert_refused_by_the_binding(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{what}: {}",
        reply.text
    );
    let detail = reply.json["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("bound to source system \"foo\" for reads"),
        "{what}: {detail:?} does not name the binding"
    );
    for secret in [BOB_NAME, BAR_GROUP_NAME] {
        assert!(!reply.text.contains(secret), "{what}: {}", reply.text);
    }
    if !what.contains("bar") {
        assert!(!detail.contains("bar"), "{what}: {detail:?} names bar");
    }
}

/// The values of `field` in a page's items.
fn field_of(reply: &Reply, field: &str) -> BTreeSet<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item[field].as_str().map(str::to_owned))
        .collect()
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
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(w.app.members(&w.team).await.contains(&w.bob));
    let removed = "SELECT count(*) FROM change WHERE kind = 7 AND member_id = $1";
    assert_eq!(w.app.scalar(removed, &[&w.bob]).await, 0);
    // Like removing a member that is absent: the edit counts no removal.
    let ops = "SELECT count(*) FROM operation WHERE removed > 0";
    assert_eq!(w.app.scalar(ops, &[]).await, 0);
}

async fn read_scope_bound_needs_a_source_and_is_shown_on_the_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let unbound = json!({"name": "r1", "scopes": ["read"], "read_scope": "bound"});
    app.post("/api/v1/tokens", unbound)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "source_system");
    let bound = json!({
        "name": "r2", "scopes": ["read"], "source_system": "foo", "read_scope": "bound",
    });
    let reply = app.post("/api/v1/tokens", bound).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json["token"]["id"].as_str().expect("id").to_owned();
    let shown = app.get(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(shown.json["read_scope"], "bound", "{}", shown.text);
    let stored = "SELECT read_scope FROM api_token WHERE id = $1";
    assert_eq!(app.text(stored, &[&id]).await.as_deref(), Some("bound"));
    // Left out, a token reads every source, as every token did before the option.
    let default = json!({"name": "r3", "scopes": ["read"], "source_system": "foo"});
    let reply = app.post("/api/v1/tokens", default).await;
    assert_eq!(reply.json["token"]["read_scope"], "all", "{}", reply.text);
    let odd =
        json!({"name": "r4", "scopes": ["read"], "source_system": "foo", "read_scope": "some"});
    assert_eq!(
        app.post("/api/v1/tokens", odd).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

async fn a_reader_bound_to_foo_lists_and_gets_only_foo_resources(backend: Backend) {
    let w = World::new(backend).await;
    let reader = w.bound_reader("foo-reader", &["read"]).await;
    let of_foo = ids(&[&w.alice, &w.carol, &w.team, &w.bob_only]);
    let reply = w.get_as(&reader, "/api/v1/resources").await;
    assert_eq!(field_of(&reply, "id"), of_foo);
    w.assert_reveals_nothing_of_bar("the resource list", &reply);
    let reply = w
        .get_as(&reader, "/api/v1/resources?source_system=foo&type=user")
        .await;
    assert_eq!(field_of(&reply, "id"), ids(&[&w.alice, &w.carol]));
    for path in [
        "/api/v1/resources?source_system=bar".to_owned(),
        format!("/api/v1/resources/{}", w.bob),
        format!("/api/v1/resources/{}", w.bar_admins),
        "/api/v1/resources/lookup?source_system=bar&identifier=bob@bar".to_owned(),
    ] {
        let reply = w.get_as(&reader, &path).await;
        assert_refused_by_the_binding(&reply, &path);
    }
    let reply = w
        .get_as(&reader, &format!("/api/v1/resources/{}", w.alice))
        .await;
    assert_eq!(reply.json["id"], w.alice.as_str(), "{}", reply.text);
    // A token bound to foo for writes only reads bar, as before.
    let writer = w.app.token("foo-writer", &[Scope::Read], Some("foo")).await;
    let reply = w
        .get_as(&writer, &format!("/api/v1/resources/{}", w.bob))
        .await;
    assert_eq!(reply.json["displayname"], BOB_NAME, "{}", reply.text);
}

async fn a_reader_bound_to_foo_sees_no_member_or_group_of_bar(backend: Backend) {
    let w = World::new(backend).await;
    let reader = w.bound_reader("foo-reader", &["read"]).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for path in [
        format!("/api/v1/groups/{}/members", w.team),
        format!("/api/v1/groups/{}/members?include_removed=true", w.team),
        format!("/api/v1/groups/{}/members?as_of={now}", w.team),
    ] {
        let reply = w.get_as(&reader, &path).await;
        assert_eq!(field_of(&reply, "member_id"), ids(&[&w.alice]), "{path}");
        w.assert_reveals_nothing_of_bar(&path, &reply);
    }
    let path = format!("/api/v1/groups/{}/members", w.bob_only);
    assert_eq!(
        field_of(&w.get_as(&reader, &path).await, "member_id"),
        BTreeSet::new()
    );
    let reply = w
        .get_as(&reader, &format!("/api/v1/resources/{}/groups", w.alice))
        .await;
    assert_eq!(field_of(&reply, "group_id"), ids(&[&w.team]));
    w.assert_reveals_nothing_of_bar("alice's groups", &reply);
    let reply = w
        .get_as(&reader, &format!("/api/v1/resources/{}/groups", w.carol))
        .await;
    assert_eq!(field_of(&reply, "group_id"), BTreeSet::new());
    for path in [
        format!("/api/v1/groups/{}/members", w.bar_admins),
        format!("/api/v1/resources/{}/groups", w.bob),
        format!("/api/v1/groups/{}/members/{}", w.team, w.bob),
        format!("/api/v1/groups/{}/members/{}", w.bar_admins, w.alice),
    ] {
        let reply = w.get_as(&reader, &path).await;
        assert_refused_by_the_binding(&reply, &path);
    }
    let path = format!("/api/v1/groups/{}/members/{}", w.team, w.alice);
    assert_eq!(w.get_as(&reader, &path).await.status, StatusCode::OK);
}

async fn a_reader_bound_to_foo_follows_only_foo_changes(backend: Backend) {
    let w = World::new(backend).await;
    let reader = w.bound_reader("foo-reader", &["read"]).await;
    for format in ["notice", "full", "scim"] {
        let path = format!("/api/v1/changes?limit=1000&format={format}");
        let reply = w.get_as(&reader, &path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        w.assert_reveals_nothing_of_bar(&path, &reply);
        assert!(reply.text.contains(&w.alice), "{format}: {}", reply.text);
    }
    let reply = w.get_as(&reader, "/api/v1/changes?limit=1000").await;
    let items = reply.json["items"].as_array().expect("items");
    assert!(
        items.iter().all(|c| c["source_system"] == "foo"),
        "{}",
        reply.text
    );
    // foo's group gained alice and bob; only alice's joining is foo's to see.
    let joined: BTreeSet<String> = items
        .iter()
        .filter(|c| c["kind"] == "membership.added" && c["group_id"] == w.team.as_str())
        .map(|c| c["member_id"].as_str().expect("member").to_owned())
        .collect();
    assert_eq!(joined, ids(&[&w.alice]));
    // The same, asked for foo by name or for foo's group.
    let path = format!("/api/v1/changes?source_system=foo&group_id={}", w.team);
    let reply = w.get_as(&reader, &path).await;
    assert_eq!(field_of(&reply, "member_id"), ids(&[&w.alice]));
    let reply = w.get_as(&reader, "/api/v1/changes?source_system=bar").await;
    assert_refused_by_the_binding(&reply, "the feed of bar");
}

/// The events of a change stream read as `token` up to the first `stop` says ends it, then
/// hangs up; fails after a minute without it.
async fn events_until(
    app: &TestApp,
    token: &str,
    path: &str,
    stop: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let read = read_events(app, token, path, stop);
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the last event within a minute")
}

async fn read_events(
    app: &TestApp,
    token: &str,
    path: &str,
    stop: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let response = app.open(token, path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let (mut text, mut out) = (String::new(), Vec::new());
    loop {
        let frame = body.frame().await.expect("a frame").expect("readable");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let data = block.lines().find_map(|l| l.strip_prefix("data:"));
            let Some(event) = data.and_then(|d| serde_json::from_str::<Value>(d.trim()).ok())
            else {
                continue;
            };
            let last = stop(&event);
            out.push(event);
            if last {
                return out;
            }
        }
    }
}

async fn a_reader_bound_to_foo_streams_only_foo_changes(backend: Backend) {
    let w = World::new(backend).await;
    let reader = w.bound_reader("foo-reader", &["read"]).await;
    // The last change of all: foo's new user, after bar's last.
    let last = w.app.user("foo", "last").await;
    let events = events_until(&w.app, &reader, "/api/v1/changes/stream", |e| {
        e["resource_id"] == last.as_str()
    })
    .await;
    let text = serde_json::to_string(&events).expect("json");
    w.assert_text_reveals_nothing_of_bar("the stream", &text);
    assert!(events.iter().all(|e| e["source_system"] == "foo"), "{text}");
    assert!(text.contains(&w.alice), "{text}");
    let reply = w
        .get_as(&reader, "/api/v1/changes/stream?source_system=bar")
        .await;
    assert_refused_by_the_binding(&reply, "the stream of bar");
}

/// The resource ids and (group, member) pairs of an NDJSON export.
fn exported(reply: &Reply) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let (mut resources, mut memberships) = (BTreeSet::new(), BTreeSet::new());
    for line in reply.text.lines() {
        let line: Value = serde_json::from_str(line).expect("an NDJSON line");
        if let Some(id) = line["resource"]["id"].as_str() {
            resources.insert(id.to_owned());
        }
        if let Some(m) = line.get("membership") {
            let side = |k: &str| m[k].as_str().expect("id").to_owned();
            memberships.insert((side("group_id"), side("member_id")));
        }
    }
    (resources, memberships)
}

async fn a_reader_bound_to_foo_exports_only_foo(backend: Backend) {
    let w = World::new(backend).await;
    let reader = w.bound_reader("foo-reader", &["read"]).await;
    let reply = w.get_as(&reader, "/api/v1/export?source_system=foo").await;
    let (resources, memberships) = exported(&reply);
    assert_eq!(resources, ids(&[&w.alice, &w.carol, &w.team, &w.bob_only]));
    let only = BTreeSet::from([(w.team.clone(), w.alice.clone())]);
    assert_eq!(memberships, only);
    w.assert_reveals_nothing_of_bar("the export of foo", &reply);
    let reply = w
        .get_as(&reader, &format!("/api/v1/export?group_id={}", w.team))
        .await;
    assert_eq!(exported(&reply), (ids(&[&w.team]), only));
    for path in [
        "/api/v1/export?source_system=bar".to_owned(),
        format!("/api/v1/export?group_id={}", w.bar_admins),
    ] {
        let reply = w.get_as(&reader, &path).await;
        assert_refused_by_the_binding(&reply, &path);
    }
}

async fn a_reader_bound_to_foo_reads_history_only_of_foo(backend: Backend) {
    let w = World::new(backend).await;
    let reader = w.bound_reader("foo-reader", &["read"]).await;
    for (resource, members) in [(&w.team, ids(&[&w.alice])), (&w.alice, ids(&[&w.alice]))] {
        let path = format!("/api/v1/resources/{resource}/history");
        let reply = w.get_as(&reader, &path).await;
        w.assert_reveals_nothing_of_bar(&path, &reply);
        assert_eq!(field_of(&reply, "member_id"), members, "{path}");
        let groups = field_of(&reply, "group_id");
        assert_eq!(groups, ids(&[&w.team]), "{path}");
    }
    let path = format!("/api/v1/resources/{}/history", w.bob);
    let reply = w.get_as(&reader, &path).await;
    assert_refused_by_the_binding(&reply, &path);
}

async fn a_reader_bound_to_foo_is_refused_views_that_span_sources(backend: Backend) {
    let w = World::new(backend).await;
    let reader = w.bound_reader("foo-reader", &["read"]).await;
    for path in [
        format!("/api/v1/resources/{}/identity", w.alice),
        format!("/api/v1/resources/{}/related?scope=identity", w.alice),
        format!("/api/v1/unified-groups/{}/links", w.team),
        format!("/api/v1/unified-groups/{}/members", w.team),
        format!("/api/v1/unified-groups/{}/plan", w.team),
        "/api/v1/correlation/rules".to_owned(),
        "/api/v1/correlation/cases".to_owned(),
    ] {
        let reply = w.get_as(&reader, &path).await;
        assert_refused_by_the_binding(&reply, &path);
        assert!(
            reply.text.contains("spans source systems"),
            "{}",
            reply.text
        );
    }
    let reply = w.get_as(&reader, "/api/v1/sources/bar").await;
    assert_refused_by_the_binding(&reply, "bar's settings");
    let reply = w.get_as(&reader, "/api/v1/sources/foo").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

async fn a_reader_bound_to_foo_reads_only_operations_of_foo(backend: Backend) {
    let w = World::new(backend).await;
    let reader = w.bound_reader("foo-reader", &["read"]).await;
    let all = w.app.get("/api/v1/operations?limit=1000").await;
    let of_source = |source: &str| -> BTreeSet<String> {
        all.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|o| o["source_system"] == source)
            .map(|o| o["id"].to_string())
            .collect()
    };
    let (of_foo, of_bar) = (of_source("foo"), of_source("bar"));
    assert!(!of_foo.is_empty() && !of_bar.is_empty(), "{}", all.text);
    let reply = w.get_as(&reader, "/api/v1/operations?limit=1000").await;
    let listed: BTreeSet<String> = reply.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["id"].to_string())
        .collect();
    assert_eq!(listed, of_foo, "{}", reply.text);
    for id in &of_bar {
        for path in [
            format!("/api/v1/operations/{id}"),
            format!("/api/v1/operations/{id}/preview"),
            format!("/api/v1/operations/{id}/rejections"),
        ] {
            let reply = w.get_as(&reader, &path).await;
            assert_refused_by_the_binding(&reply, &path);
        }
    }
    for id in &of_foo {
        let reply = w.get_as(&reader, &format!("/api/v1/operations/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
}

async fn a_scim_token_with_bound_reads_reads_no_other_base(backend: Backend) {
    let w = World::new(backend).await;
    let token = w.bound_reader("foo-scim-reader", &["scim", "read"]).await;
    for path in [
        "/bar/Users".to_owned(),
        format!("/bar/Users/{}", w.bob),
        format!("/bar/Groups/{}", w.bar_admins),
    ] {
        let reply = scim(&w.app, &token, Method::GET, &path, None).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            reply.text
        );
        assert_eq!(reply.content_type, "application/scim+json");
        w.assert_reveals_nothing_of_bar(&path, &reply);
    }
    let path = format!("/foo/Groups/{}", w.team);
    let reply = scim(&w.app, &token, Method::GET, &path, None).await;
    assert_eq!(member_ids(&reply.json), ids(&[&w.alice]), "{}", reply.text);
}

/// `roster token create --read-scope bound` binds a token's reads, and only with `--source`.
#[tokio::test]
async fn roster_token_create_binds_reads_only_with_a_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/roster.db", dir.path().display());
    let run = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"));
        command.args(args).args(["--database-url", &url]);
        async move {
            let out = command.output().await.expect("run roster");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.success(), text(&out.stdout), text(&out.stderr))
        }
    };
    let create = ["token", "create", "--name", "r", "--scope", "read"];
    let (ok, _, err) = run(&[&create[..], &["--read-scope", "bound"]].concat()).await;
    assert!(!ok, "a bound read scope without a source is refused");
    assert!(err.contains("source_system"), "{err}");
    let bound = ["--source", "foo", "--read-scope", "bound"];
    let (ok, out, err) = run(&[&create[..], &bound].concat()).await;
    assert!(ok, "{err}");
    assert!(out.contains("source=foo reads=bound"), "{out}");
    let (ok, out, err) = run(&["token", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("reads=bound"), "{out}");
}

async fn a_reader_bound_to_foo_sees_nesting_within_foo_only(backend: Backend) {
    let w = World::new(backend).await;
    // foo's team holds bar's bar_admins (which holds foo's carol), and bar_admins holds team
    // back: a path and a cycle that cross the two sources.
    for (group, member) in [(&w.team, &w.bar_admins), (&w.bar_admins, &w.team)] {
        let reply = w
            .app
            .put(&format!("/api/v1/groups/{group}/members/{member}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let check = format!(
        "/api/v1/groups/{}/members/{}?transitive=true",
        w.team, w.carol
    );
    let paths = format!("/api/v1/groups/{}/members/{}/paths", w.team, w.carol);
    let alice_groups = format!("/api/v1/resources/{}/groups?transitive=true", w.alice);
    let group_ids = |reply: &Reply| -> Vec<String> {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["group_id"].as_str().expect("group id").to_owned())
            .collect()
    };
    // An unbound reader sees carol in team through bar_admins, and the cycle.
    assert_eq!(w.app.get(&check).await.json["depth"], 2);
    assert_eq!(
        w.app.get(&paths).await.json["items"][0]["groups"],
        json!([w.team, w.bar_admins])
    );
    let mut both = vec![w.team.clone(), w.bar_admins.clone()];
    both.sort();
    assert_eq!(group_ids(&w.app.get(&alice_groups).await), both);
    let cycles = w.app.get("/api/v1/groups/cycles").await;
    assert_eq!(cycles.json["items"], json!([{"groups": both}]));

    let reader = w.bound_reader("foo-nesting", &["read"]).await;
    let reply = w.get_as(&reader, &check).await;
    reply.assert_problem(StatusCode::NOT_FOUND, "not a member");
    w.assert_reveals_nothing_of_bar("the transitive check", &reply);
    let reply = w.get_as(&reader, &paths).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["depth"], Value::Null);
    assert_eq!(reply.json["items"], json!([]));
    w.assert_reveals_nothing_of_bar("the paths", &reply);
    let reply = w.get_as(&reader, &alice_groups).await;
    assert_eq!(group_ids(&reply), vec![w.team.clone()]);
    w.assert_reveals_nothing_of_bar("the transitive groups", &reply);
    let reply = w.get_as(&reader, "/api/v1/groups/cycles").await;
    assert_eq!(reply.json["items"], json!([]), "{}", reply.text);
    let reply = w
        .get_as(
            &reader,
            &format!("/api/v1/groups/{}/members/{}/paths", w.bar_admins, w.alice),
        )
        .await;
    assert_refused_by_the_binding(&reply, "the paths of bar's group");
}
