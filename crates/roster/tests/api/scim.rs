//! The SCIM 2.0 service provider: users and groups through `/scim/v2/{source}`, checked in the
//! database; every filter operator and value path against an in-test model; index paging with
//! inserts between pages; the identity providers' quirks, each its own test; membership PATCHes
//! that touch only the members named; the threshold on a full push of members; source binding.

use crate::common::{Backend, Reply, TestApp};
use crate::on_both_backends;
use axum::http::{Method, StatusCode};
use roster::domain::token::Scope;
use roster::http::scim::rate::ScimRate;
use serde_json::{json, Value};
use std::collections::BTreeSet;

on_both_backends!(
    a_user_round_trips_with_its_extensions,
    a_bulk_of_user_creates_commits_in_runs_and_a_refused_one_undoes_only_itself,
    every_filter_operator_matches_the_model,
    index_paging_with_inserts_between_pages_has_no_gaps_or_duplicates,
    cursor_paging_with_inserts_and_deletes_between_pages_has_no_gaps_or_duplicates,
    bad_cursors_are_invalid_cursor_or_invalid_count,
    delta_query_follows_creates_updates_and_deletes,
    a_delta_token_older_than_the_history_is_expired,
    a_search_post_answers_as_the_get_list,
    discovery_documents_are_read_by_id,
    emptying_a_small_group_is_an_edit_not_a_held_push,
    a_token_over_its_rate_gets_429_with_retry_after,
    bulk_applies_each_operation_in_order_and_resolves_bulk_ids,
    a_groups_users_page_by_cursor_through_a_groups_value_filter,
    cursors_page_every_sort_order_and_refuse_forged_positions,
    a_delta_longer_than_a_feed_batch_pages_every_change_once,
    bulk_operations_count_against_the_rate_whatever_the_scheme_case,
    duplicate_user_name_is_409_uniqueness,
    entra_test_connection_filter_on_a_random_value_answers_an_empty_list,
    patch_op_names_ignore_case_and_boolean_strings_are_read,
    no_path_replace_takes_dotted_and_urn_keys,
    entra_add_through_a_value_filter_path_creates_the_value,
    group_patch_adds_and_removes_only_the_members_named,
    entra_remove_of_members_with_a_value_list,
    remove_of_members_with_a_value_filter,
    okta_replace_of_members_is_a_full_push,
    okta_no_path_group_replace_with_id_and_display_name,
    a_push_that_would_empty_a_large_group_is_held_and_changes_nothing,
    excluded_members_are_not_read,
    if_match_with_an_old_version_is_412,
    a_token_bound_to_foo_cannot_read_or_write_bar,
    bad_requests_answer_scim_errors_and_change_nothing,
    an_id_that_is_not_roster_s_is_not_found_and_changes_nothing,
    a_patch_answers_the_resource_as_patched,
    a_body_over_the_limit_is_a_scim_error,
    a_bound_token_cannot_reactivate_through_scim_what_roster_deactivated,
);

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// A SCIM token bound to `source`.
async fn token(app: &TestApp, source: &str) -> String {
    app.token(&format!("scim-{source}"), &[Scope::Scim], Some(source))
        .await
}

pub(crate) async fn scim(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    app.call_as(Some(token), method, &format!("/scim/v2{path}"), body)
        .await
}

fn assert_scim_error(reply: &Reply, status: StatusCode, scim_type: Option<&str>, needle: &str) {
    assert_eq!(reply.status, status, "body: {}", reply.text);
    assert_eq!(reply.content_type, "application/scim+json");
    assert_eq!(reply.json["status"], status.as_u16().to_string());
    assert_eq!(
        reply.json["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    if let Some(t) = scim_type {
        assert_eq!(reply.json["scimType"], t, "body: {}", reply.text);
    }
    let detail = reply.json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
}

async fn create_user(app: &TestApp, token: &str, source: &str, body: Value) -> String {
    let reply = scim(
        app,
        token,
        Method::POST,
        &format!("/{source}/Users"),
        Some(body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json["id"].as_str().expect("id").to_owned()
}

async fn user_named(app: &TestApp, token: &str, source: &str, name: &str) -> String {
    create_user(
        app,
        token,
        source,
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name}),
    )
    .await
}

async fn create_group(
    app: &TestApp,
    token: &str,
    source: &str,
    name: &str,
    members: &[&str],
) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let reply = scim(
        app,
        token,
        Method::POST,
        &format!("/{source}/Groups"),
        Some(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": name, "members": members}),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json["id"].as_str().expect("id").to_owned()
}

/// The active members of a group, from the database.
async fn members(app: &TestApp, group: &str) -> BTreeSet<String> {
    app.members(group).await.into_iter().collect()
}

/// A query parameter's value, percent-encoded.
fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The status of each operation of a BulkResponse, in order.
fn statuses(reply: &Reply) -> Vec<&str> {
    reply.json["Operations"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or_default())
        .collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

async fn a_user_round_trips_with_its_extensions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, "urn:example:custom"],
        "userName": "Ada@Example.com",
        "externalId": "e-1",
        "displayName": "Ada Lovelace",
        "password": "never-stored",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"type": "work", "value": "ada@example.com", "primary": true}],
        ENTERPRISE: {"employeeNumber": "42", "manager": {"value": "m-1"}},
        // PostgreSQL prints the largest double as 309 digits: it must still read back.
        "urn:example:custom": {"badge": 7, "limit": f64::MAX, "least": -f64::MAX, "tiny": 5e-324}
    });
    let reply = scim(&app, &t, Method::POST, "/foo/Users", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json["id"].as_str().expect("id").to_owned();
    assert!(reply.location.as_deref().is_some_and(|l| l.ends_with(&id)));
    assert_eq!(
        app.text("SELECT identifier FROM resource WHERE id = $1", &[&id])
            .await
            .as_deref(),
        Some("Ada@Example.com")
    );
    assert_eq!(
        app.text("SELECT external_id FROM resource WHERE id = $1", &[&id])
            .await
            .as_deref(),
        Some("e-1")
    );
    let read = scim(&app, &t, Method::GET, &format!("/foo/Users/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json["name"]["givenName"], "Ada");
    assert_eq!(read.json[ENTERPRISE]["employeeNumber"], "42");
    assert_eq!(read.json["urn:example:custom"]["badge"], 7);
    for (name, value) in [("limit", f64::MAX), ("least", -f64::MAX), ("tiny", 5e-324)] {
        assert_eq!(read.json["urn:example:custom"][name].as_f64(), Some(value));
    }
    let listed = scim(&app, &t, Method::GET, "/foo/Users", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(
        listed.json["Resources"][0]["urn:example:custom"]["limit"].as_f64(),
        Some(f64::MAX)
    );
    assert_eq!(read.json["active"], true);
    assert!(read.json.get("password").is_none(), "{}", read.text);
    assert!(!read.text.contains("never-stored"));
    assert_eq!(read.json["meta"]["resourceType"], "User");
    let created = app
        .scalar("SELECT count(*) FROM change WHERE resource_id = $1", &[&id])
        .await;
    assert!(created >= 1);

    let replaced = scim(
        &app,
        &t,
        Method::PUT,
        &format!("/foo/Users/{id}"),
        Some(
            json!({"userName": "ada@example.com", "displayName": "Ada L.", "active": false,
                    "name": {"givenName": "Ada"}}),
        ),
    )
    .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(replaced.json["displayName"], "Ada L.");
    assert!(replaced.json.get("emails").is_none());
    assert!(replaced.json.get(ENTERPRISE).is_none());
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE id = $1 AND NOT active",
            &[&id]
        )
        .await,
        1
    );
    let deleted = scim(&app, &t, Method::DELETE, &format!("/foo/Users/{id}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE id = $1 AND deleted",
            &[&id]
        )
        .await,
        1
    );
    let gone = scim(&app, &t, Method::GET, &format!("/foo/Users/{id}"), None).await;
    assert_scim_error(&gone, StatusCode::NOT_FOUND, None, &id);
}

/// One user of the filter data set, as the model sees it.
struct Person {
    user_name: &'static str,
    display: Option<&'static str>,
    title: Option<&'static str>,
    active: bool,
    emails: &'static [(&'static str, &'static str)],
    employee: Option<&'static str>,
    age: Option<i64>,
}

const PEOPLE: [Person; 6] = [
    Person {
        user_name: "alice",
        display: Some("Alice Smith"),
        title: Some("Engineer"),
        active: true,
        emails: &[("work", "alice@corp.com"), ("home", "alice@home.org")],
        employee: Some("100"),
        age: Some(31),
    },
    Person {
        user_name: "bob",
        display: Some("Bob Jones"),
        title: Some("Manager"),
        active: false,
        emails: &[("work", "bob@corp.com")],
        employee: Some("200"),
        age: Some(45),
    },
    Person {
        user_name: "carol",
        display: Some("Carol King"),
        title: None,
        active: true,
        emails: &[("home", "carol@home.org")],
        employee: None,
        age: Some(28),
    },
    Person {
        user_name: "dave",
        display: None,
        title: Some("engineer"),
        active: true,
        emails: &[],
        employee: Some("300"),
        age: None,
    },
    Person {
        user_name: "Eve",
        display: Some("Eve Adams"),
        title: Some("Director"),
        active: false,
        emails: &[("work", "eve@corp.com"), ("other", "eve@else.net")],
        employee: None,
        age: Some(52),
    },
    Person {
        user_name: "frank",
        display: Some("Frank"),
        title: Some("Engineer II"),
        active: true,
        emails: &[("work", "FRANK@CORP.COM")],
        employee: Some("150"),
        age: Some(39),
    },
];

fn person_body(p: &Person) -> Value {
    let mut body = json!({"userName": p.user_name, "active": p.active});
    if let Some(d) = p.display {
        body["displayName"] = json!(d);
    }
    if let Some(t) = p.title {
        body["title"] = json!(t);
    }
    if !p.emails.is_empty() {
        body["emails"] = Value::Array(
            p.emails
                .iter()
                .map(|(ty, v)| json!({"type": ty, "value": v}))
                .collect(),
        );
    }
    if let Some(e) = p.employee {
        body[ENTERPRISE] = json!({"employeeNumber": e});
    }
    if let Some(a) = p.age {
        body["urn:example:custom"] = json!({"age": a});
    }
    body
}

async fn every_filter_operator_matches_the_model(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    for p in &PEOPLE {
        create_user(&app, &t, "foo", person_body(p)).await;
    }
    let lower = |s: &str| s.to_lowercase();
    type Model = Box<dyn Fn(&Person) -> bool>;
    let cases: Vec<(&str, Model)> = vec![
        (
            r#"userName eq "ALICE""#,
            Box::new(|p| p.user_name == "alice"),
        ),
        (
            r#"userName ne "alice""#,
            Box::new(|p| p.user_name != "alice"),
        ),
        (
            r#"displayName co "o""#,
            Box::new(move |p| p.display.is_some_and(|d| lower(d).contains('o'))),
        ),
        (
            r#"displayName sw "ca""#,
            Box::new(|p| {
                p.display
                    .is_some_and(|d| d.to_lowercase().starts_with("ca"))
            }),
        ),
        (
            r#"displayName ew "S""#,
            Box::new(|p| p.display.is_some_and(|d| d.to_lowercase().ends_with('s'))),
        ),
        (
            r#"userName gt "carol""#,
            Box::new(|p| p.user_name.to_lowercase().as_str() > "carol"),
        ),
        (
            r#"userName ge "carol""#,
            Box::new(|p| p.user_name.to_lowercase().as_str() >= "carol"),
        ),
        (
            r#"userName lt "carol""#,
            Box::new(|p| p.user_name.to_lowercase().as_str() < "carol"),
        ),
        (
            r#"userName le "carol""#,
            Box::new(|p| p.user_name.to_lowercase().as_str() <= "carol"),
        ),
        ("title pr", Box::new(|p| p.title.is_some())),
        ("not (title pr)", Box::new(|p| p.title.is_none())),
        ("active eq false", Box::new(|p| !p.active)),
        (
            r#"title eq "engineer" and active eq true"#,
            Box::new(|p| p.title.is_some_and(|t| t.eq_ignore_ascii_case("engineer")) && p.active),
        ),
        (
            r#"title sw "eng" or displayName eq "eve adams""#,
            Box::new(|p| {
                p.title.is_some_and(|t| t.to_lowercase().starts_with("eng"))
                    || p.display == Some("Eve Adams")
            }),
        ),
        (
            r#"emails[type eq "work" and value ew "corp.com"]"#,
            Box::new(|p| {
                p.emails
                    .iter()
                    .any(|(t, v)| *t == "work" && v.to_lowercase().ends_with("corp.com"))
            }),
        ),
        (
            r#"emails[type eq "work"].value eq "frank@corp.com""#,
            Box::new(|p| {
                p.emails
                    .iter()
                    .any(|(t, v)| *t == "work" && v.eq_ignore_ascii_case("frank@corp.com"))
            }),
        ),
        (
            r#"emails co "home.org""#,
            Box::new(|p| p.emails.iter().any(|(_, v)| v.contains("home.org"))),
        ),
        (
            r#"emails.type eq "other""#,
            Box::new(|p| p.emails.iter().any(|(t, _)| *t == "other")),
        ),
        ("emails pr", Box::new(|p| !p.emails.is_empty())),
        (
            r#"not (emails[type eq "work"])"#,
            Box::new(|p| !p.emails.iter().any(|(t, _)| *t == "work")),
        ),
        (
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber ge "150""#,
            Box::new(|p| p.employee.is_some_and(|e| e >= "150")),
        ),
        (
            "urn:example:custom:age gt 35",
            Box::new(|p| p.age.is_some_and(|a| a > 35)),
        ),
        (
            "urn:example:custom:age le 31",
            Box::new(|p| p.age.is_some_and(|a| a <= 31)),
        ),
        (
            r#"(userName eq "bob" or userName eq "dave") and not (active eq true)"#,
            Box::new(|p| p.user_name == "bob"),
        ),
        (
            r#"meta.created gt "2000-01-01T00:00:00Z""#,
            Box::new(|_| true),
        ),
        (
            r#"meta.lastModified lt "2000-01-01T00:00:00Z""#,
            Box::new(|_| false),
        ),
        (r#"nickName eq "nobody""#, Box::new(|_| false)),
    ];
    for (filter, model) in cases {
        let path = format!("/foo/Users?count=100&filter={}", enc(filter));
        let reply = scim(&app, &t, Method::GET, &path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{filter}: {}", reply.text);
        let got: BTreeSet<String> = reply.json["Resources"]
            .as_array()
            .expect("Resources")
            .iter()
            .map(|r| r["userName"].as_str().expect("userName").to_owned())
            .collect();
        let expected: BTreeSet<String> = PEOPLE
            .iter()
            .filter(|p| model(p))
            .map(|p| p.user_name.to_owned())
            .collect();
        assert_eq!(got, expected, "filter {filter}");
        assert_eq!(
            reply.json["totalResults"],
            expected.len(),
            "filter {filter}"
        );
    }
}

async fn index_paging_with_inserts_between_pages_has_no_gaps_or_duplicates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let mut before = BTreeSet::new();
    for i in 0..10 {
        before.insert(user_named(&app, &t, "foo", &format!("user{i:02}")).await);
    }
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let reply = scim(
            &app,
            &t,
            Method::GET,
            &format!("/foo/Users?startIndex={start}&count=3"),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["startIndex"], start);
        let page = reply.json["Resources"].as_array().expect("page").clone();
        if page.is_empty() {
            break;
        }
        seen.extend(
            page.iter()
                .map(|r| r["id"].as_str().expect("id").to_owned()),
        );
        user_named(&app, &t, "foo", &format!("late{start:02}")).await;
        start += 3;
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a user was listed twice");
    assert!(
        before.is_subset(&unique),
        "a user present from the start was skipped"
    );
}

/// Pages through `path` (which ends in `cursor` parameters' neighbours) by cursor; the ids in
/// order, and the last page's body.
async fn by_cursor(
    app: &TestApp,
    t: &str,
    path: &str,
    mut between: impl FnMut(usize) -> Option<(Method, String, Option<Value>)>,
) -> (Vec<String>, Value) {
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for page_no in 0.. {
        let reply = scim(
            app,
            t,
            Method::GET,
            &format!("{path}&cursor={cursor}"),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert!(reply.json.get("startIndex").is_none(), "{}", reply.text);
        let page = reply.json["Resources"].as_array().expect("page").clone();
        seen.extend(
            page.iter()
                .map(|r| r["id"].as_str().expect("id").to_owned()),
        );
        let Some(next) = reply.json["nextCursor"].as_str() else {
            return (seen, reply.json);
        };
        assert!(!page.is_empty(), "a page before the last is empty");
        cursor = enc(next);
        if let Some((method, at, body)) = between(page_no) {
            let r = scim(app, t, method, &at, body).await;
            assert!(r.status.is_success(), "{}", r.text);
        }
    }
    unreachable!("the loop returns on the last page")
}

async fn cursor_paging_with_inserts_and_deletes_between_pages_has_no_gaps_or_duplicates(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let mut names = std::collections::BTreeMap::new();
    for i in 0..12 {
        let name = format!("user{i:02}");
        names.insert(user_named(&app, &t, "foo", &name).await, name);
    }
    let config = scim(&app, &t, Method::GET, "/foo/ServiceProviderConfig", None).await;
    assert_eq!(config.json["pagination"]["cursor"], true);
    // Sorted by userName, descending: insert names that sort on both sides of the position and
    // delete one user not yet listed (user00, the last in this order) between pages.
    let doomed = names
        .iter()
        .find(|(_, n)| *n == "user00")
        .map(|(id, _)| id.clone())
        .expect("user00");
    let path = "/foo/Users?sortBy=userName&sortOrder=descending&count=5".to_owned();
    let (seen, last) = by_cursor(&app, &t, &path, |page| {
        Some(match page {
            0 => (Method::DELETE, format!("/foo/Users/{doomed}"), None),
            _ => (
                Method::POST,
                "/foo/Users".to_owned(),
                Some(
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "userName": format!("user{:02}", 90 + page)}),
                ),
            ),
        })
    })
    .await;
    assert!(last.get("nextCursor").is_none());
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a user was listed twice: {seen:?}"
    );
    let kept: BTreeSet<&String> = names.keys().filter(|id| **id != doomed).collect();
    assert!(
        kept.is_subset(&unique),
        "a user present throughout was skipped"
    );
    assert!(
        !unique.contains(&doomed),
        "the user deleted before its page was listed"
    );
    let listed: Vec<&String> = seen.iter().filter_map(|id| names.get(id)).collect();
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        listed, sorted,
        "the pages are not in descending userName order"
    );
    // Unsorted, by id: every page follows the last row of the one before.
    let (plain, _) = by_cursor(&app, &t, "/foo/Users?count=4", |_| None).await;
    let live = app
        .scalar(
            "SELECT count(*) FROM resource WHERE source_system = 'foo' AND NOT deleted",
            &[],
        )
        .await;
    assert_eq!(plain.len() as i64, live);
    let unique: BTreeSet<&String> = plain.iter().collect();
    assert_eq!(unique.len(), plain.len());
}

async fn bad_cursors_are_invalid_cursor_or_invalid_count(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    for i in 0..3 {
        user_named(&app, &t, "foo", &format!("u{i}")).await;
    }
    let first = scim(&app, &t, Method::GET, "/foo/Users?count=1&cursor", None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let next = enc(first.json["nextCursor"].as_str().expect("nextCursor"));
    let cases = [
        (
            "/foo/Users?count=1&cursor=not-a-cursor".to_owned(),
            "invalidCursor",
            "not a cursor",
        ),
        (
            format!("/foo/Users?count=1&sortBy=userName&cursor={next}"),
            "invalidCursor",
            "another query",
        ),
        (
            format!("/foo/Users?count=2&cursor={next}"),
            "invalidCount",
            "count must stay",
        ),
        (
            format!("/foo/Users?startIndex=2&cursor={next}"),
            "invalidValue",
            "give one",
        ),
        (
            "/foo/Users?deltaToken=abc".to_owned(),
            "invalidValue",
            "with deltaQuery",
        ),
        (
            "/foo/Users?deltaQuery&deltaToken=abc".to_owned(),
            "invalidValue",
            "not a delta token",
        ),
        (
            format!("/foo/Users?deltaQuery&filter={}", enc("userName eq \"u1\"")),
            "invalidValue",
            "no filter",
        ),
    ];
    for (path, scim_type, needle) in cases {
        let reply = scim(&app, &t, Method::GET, &path, None).await;
        assert_scim_error(&reply, StatusCode::BAD_REQUEST, Some(scim_type), needle);
    }
    // The cursor of foo's list does not page bar's.
    let bar = token(&app, "bar").await;
    let reply = scim(
        &app,
        &bar,
        Method::GET,
        &format!("/bar/Users?count=1&cursor={next}"),
        None,
    )
    .await;
    assert_scim_error(
        &reply,
        StatusCode::BAD_REQUEST,
        Some("invalidCursor"),
        "another query",
    );
}

/// Follows a delta token to its end by cursor: the resources answered, by id, and the next token.
async fn follow_delta(app: &TestApp, t: &str, path: &str, token: &str) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = scim(
            app,
            t,
            Method::GET,
            &format!(
                "{path}?deltaQuery&deltaToken={}&count=1&cursor={cursor}",
                enc(token)
            ),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let page = reply.json["Resources"].as_array().expect("page").clone();
        assert!(page.len() <= 1, "count=1 answered {}", page.len());
        items.extend(page);
        match reply.json["nextCursor"].as_str() {
            Some(next) => {
                assert!(reply.json.get("nextDeltaToken").is_none());
                cursor = enc(next);
            }
            None => {
                let token = reply.json["nextDeltaToken"]
                    .as_str()
                    .expect("nextDeltaToken");
                return (items, token.to_owned());
            }
        }
    }
}

async fn delta_query_follows_creates_updates_and_deletes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let u1 = user_named(&app, &t, "foo", "u1").await;
    let u2 = user_named(&app, &t, "foo", "u2").await;
    let u3 = user_named(&app, &t, "foo", "u3").await;
    let g = create_group(&app, &t, "foo", "Engineering", &[&u1]).await;
    // The full read pages by cursor; a user created while it pages is seen by the delta after.
    let (read, last) = by_cursor(&app, &t, "/foo/Users?deltaQuery&count=2", |page| {
        (page == 0).then(|| {
            (
                Method::POST,
                "/foo/Users".to_owned(),
                Some(
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "userName": "u4"}),
                ),
            )
        })
    })
    .await;
    assert!(set(&[&u1, &u2, &u3]).is_subset(&read.iter().cloned().collect()));
    let token = last["nextDeltaToken"]
        .as_str()
        .expect("nextDeltaToken")
        .to_owned();
    let found = scim(
        &app,
        &t,
        Method::GET,
        &format!("/foo/Users?filter={}", enc("userName eq \"u4\"")),
        None,
    )
    .await;
    let u4 = found.json["Resources"][0]["id"]
        .as_str()
        .expect("u4")
        .to_owned();
    let patched = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Users/{u1}"),
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "displayName", "value": "Ada"}]}),
        ),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    let deleted = scim(&app, &t, Method::DELETE, &format!("/foo/Users/{u2}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let u5 = user_named(&app, &t, "foo", "u5").await;
    let added = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{g}"),
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": u3}]}]}),
        ),
    )
    .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);

    let (users, next) = follow_delta(&app, &t, "/foo/Users", &token).await;
    let by_id: std::collections::BTreeMap<String, &Value> = users
        .iter()
        .map(|u| (u["id"].as_str().expect("id").to_owned(), u))
        .collect();
    assert_eq!(by_id.len(), users.len(), "a user was answered twice");
    let expected = set(&[&u1, &u2, &u4, &u5]);
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(by_id[&u1]["displayName"], "Ada");
    assert_eq!(by_id[&u2]["meta"]["isDeleted"], true);
    assert!(by_id[&u2].get("userName").is_none());
    assert_eq!(by_id[&u5]["userName"], "u5");
    assert!(by_id[&u1]["meta"].get("isDeleted").is_none());

    // The group's membership change makes the group part of the groups' delta.
    let (groups, _) = follow_delta(&app, &t, "/foo/Groups", &token).await;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["id"], g.as_str());
    assert_eq!(groups[0]["members"].as_array().map(Vec::len), Some(2));

    // Nothing changed since the new token: an empty page, and a token again.
    let (none, again) = follow_delta(&app, &t, "/foo/Users", &next).await;
    assert!(none.is_empty(), "{none:?}");
    let u6 = user_named(&app, &t, "foo", "u6").await;
    let (later, _) = follow_delta(&app, &t, "/foo/Users", &again).await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["id"], u6.as_str());
}

async fn a_delta_token_older_than_the_history_is_expired(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    user_named(&app, &t, "foo", "u1").await;
    let first = scim(&app, &t, Method::GET, "/foo/Users?deltaQuery", None).await;
    let token = first.json["nextDeltaToken"]
        .as_str()
        .expect("token")
        .to_owned();
    user_named(&app, &t, "foo", "u2").await;
    app.store
        .trim_history(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("trim");
    let reply = scim(
        &app,
        &t,
        Method::GET,
        &format!("/foo/Users?deltaQuery&deltaToken={}", enc(&token)),
        None,
    )
    .await;
    assert_scim_error(
        &reply,
        StatusCode::BAD_REQUEST,
        Some("expiredDeltaToken"),
        "read everything again",
    );
    // A delta paged by cursor whose history goes between pages: the cursor has expired.
    let read = scim(&app, &t, Method::GET, "/foo/Users?deltaQuery", None).await;
    let token = read.json["nextDeltaToken"]
        .as_str()
        .expect("token")
        .to_owned();
    user_named(&app, &t, "foo", "u3").await;
    user_named(&app, &t, "foo", "u4").await;
    let delta = format!("/foo/Users?deltaQuery&deltaToken={}&count=1", enc(&token));
    let first = scim(&app, &t, Method::GET, &format!("{delta}&cursor"), None).await;
    let next = enc(first.json["nextCursor"].as_str().expect("nextCursor"));
    app.store
        .trim_history(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("trim");
    let reply = scim(
        &app,
        &t,
        Method::GET,
        &format!("{delta}&cursor={next}"),
        None,
    )
    .await;
    assert_scim_error(
        &reply,
        StatusCode::BAD_REQUEST,
        Some("expiredCursor"),
        "read everything",
    );
}

async fn a_search_post_answers_as_the_get_list(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    for i in 0..5 {
        user_named(&app, &t, "foo", &format!("ada{i}")).await;
    }
    user_named(&app, &t, "foo", "grace").await;
    let filter = "userName sw \"ada\"";
    let got = scim(
        &app,
        &t,
        Method::GET,
        &format!(
            "/foo/Users?filter={}&sortBy=userName&sortOrder=descending&startIndex=2&count=2\
             &attributes=userName",
            enc(filter)
        ),
        None,
    )
    .await;
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": filter, "sortBy": "userName", "sortOrder": "descending",
        "startIndex": 2, "count": 2, "attributes": ["userName"]});
    let posted = scim(&app, &t, Method::POST, "/foo/Users/.search", Some(search)).await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.text);
    assert_eq!(posted.json["totalResults"], 5);
    assert_eq!(posted.json, got.json);
    let names: Vec<&str> = posted.json["Resources"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|r| r["userName"].as_str())
        .collect();
    assert_eq!(names, ["ada3", "ada2"]);
    // A cursor from a search pages the search.
    let first = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "count": 4, "cursor": ""});
    let page = scim(&app, &t, Method::POST, "/foo/Users/.search", Some(first)).await;
    let next = page.json["nextCursor"].as_str().expect("nextCursor");
    let second = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "count": 4, "cursor": next});
    let rest = scim(&app, &t, Method::POST, "/foo/Users/.search", Some(second)).await;
    assert_eq!(rest.json["Resources"].as_array().map(Vec::len), Some(2));
    assert!(rest.json.get("nextCursor").is_none());
    for (body, scim_type, needle) in [
        (json!({"filter": filter}), "invalidValue", "SearchRequest"),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                   "attributes": [1]}),
            "invalidValue",
            "attribute names",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                   "filter": "userName zz 1"}),
            "invalidFilter",
            "",
        ),
    ] {
        let reply = scim(&app, &t, Method::POST, "/foo/Users/.search", Some(body)).await;
        assert_scim_error(&reply, StatusCode::BAD_REQUEST, Some(scim_type), needle);
    }
    // At the root: users, then groups, paged by index across the boundary.
    let group = create_group(&app, &t, "foo", "adagroup", &[]).await;
    let root = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "startIndex": 6, "count": 3, "attributes": ["displayName"]});
    let both = scim(&app, &t, Method::POST, "/foo/.search", Some(root)).await;
    assert_eq!(both.status, StatusCode::OK, "{}", both.text);
    assert_eq!(both.json["totalResults"], 7);
    assert_eq!(both.json["startIndex"], 6);
    let items = both.json["Resources"].as_array().expect("page");
    assert_eq!(items.len(), 2, "{}", both.text);
    assert_eq!(items[0]["meta"]["resourceType"], "User");
    assert_eq!(items[1]["id"], group.as_str());
    assert_eq!(items[1]["displayName"], "adagroup");
    let by_name = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "userName eq \"grace\""});
    let grace = scim(&app, &t, Method::POST, "/foo/.search", Some(by_name)).await;
    assert_eq!(grace.json["totalResults"], 1, "{}", grace.text);
    let cursor = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "cursor": ""});
    let refused = scim(&app, &t, Method::POST, "/foo/.search", Some(cursor)).await;
    assert_scim_error(
        &refused,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
        "pages by index",
    );
    let bar = token(&app, "bar").await;
    let reply = scim(
        &app,
        &bar,
        Method::POST,
        "/foo/Groups/.search",
        Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
}

async fn discovery_documents_are_read_by_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let user_type = scim(&app, &t, Method::GET, "/foo/ResourceTypes/User", None).await;
    assert_eq!(user_type.status, StatusCode::OK, "{}", user_type.text);
    assert_eq!(user_type.json["endpoint"], "/Users");
    let group = scim(
        &app,
        &t,
        Method::GET,
        "/foo/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group",
        None,
    )
    .await;
    assert_eq!(group.status, StatusCode::OK, "{}", group.text);
    let attributes = group.json["attributes"].as_array().expect("attributes");
    let display = attributes
        .iter()
        .find(|a| a["name"] == "displayName")
        .expect("displayName");
    assert_eq!(display["required"], true);
    let members = attributes
        .iter()
        .find(|a| a["name"] == "members")
        .expect("members");
    let value = members["subAttributes"]
        .as_array()
        .and_then(|s| s.iter().find(|a| a["name"] == "value"))
        .expect("members.value");
    assert_eq!(value["mutability"], "immutable");
    for missing in [
        "/foo/ResourceTypes/Printer",
        "/foo/Schemas/urn:example:nope",
    ] {
        let reply = scim(&app, &t, Method::GET, missing, None).await;
        assert_scim_error(&reply, StatusCode::NOT_FOUND, None, "there is no");
    }
    let bar = token(&app, "bar").await;
    let reply = scim(&app, &bar, Method::GET, "/foo/ResourceTypes/User", None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

async fn emptying_a_small_group_is_an_edit_not_a_held_push(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let a = user_named(&app, &t, "foo", "a").await;
    let b = user_named(&app, &t, "foo", "b").await;
    let group = create_group(&app, &t, "foo", "Small", &[&a, &b]).await;
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{group}"),
        Some(json!({"Operations": [{"op": "Remove", "path": "members"}]})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(members(&app, &group).await.is_empty());
    let removed = app
        .scalar(
            "SELECT count(*) FROM change WHERE kind = 7 AND group_id = $1",
            &[&group],
        )
        .await;
    assert_eq!(removed, 2, "one membership.removed per member");
    let pending = app
        .scalar(
            "SELECT count(*) FROM operation WHERE status = 'pending'",
            &[],
        )
        .await;
    assert_eq!(pending, 0);
}

async fn a_token_over_its_rate_gets_429_with_retry_after(backend: Backend) {
    // Bursts of 3, one more an hour: the fourth request in a row is over the rate.
    let rate = ScimRate {
        burst: std::num::NonZeroU32::new(3).expect("3"),
        replenish: std::time::Duration::from_secs(3600),
    };
    let limits = roster::server::Limits {
        scim_rate: Some(rate),
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(backend, limits).await;
    let t = token(&app, "foo").await;
    for i in 0..3 {
        user_named(&app, &t, "foo", &format!("u{i}")).await;
    }
    let refused = [("reason", "rate")];
    let refusals = crate::metrics::current(&app, "roster_scim_refused_total", &refused).await;
    let over = scim(
        &app,
        &t,
        Method::POST,
        "/foo/Users",
        Some(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": "one-too-many"}),
        ),
    )
    .await;
    assert_scim_error(&over, StatusCode::TOO_MANY_REQUESTS, None, "rate");
    let counted = crate::metrics::current(&app, "roster_scim_refused_total", &refused).await;
    assert!(
        counted > refusals,
        "the refusal is counted: {refusals} then {counted}"
    );
    let retry: u64 = over
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=3600).contains(&retry), "Retry-After: {retry}");
    let users = app
        .scalar(
            "SELECT count(*) FROM resource WHERE source_system = 'foo' AND type = 1",
            &[],
        )
        .await;
    assert_eq!(users, 3, "the refused request created a user");
    // Another token (another tenant connection) has its own rate; the REST API has none.
    let other = token(&app, "bar").await;
    let fine = scim(&app, &other, Method::GET, "/bar/Users", None).await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.text);
    let rest = app.get("/api/v1/resources?source_system=foo").await;
    assert_eq!(rest.status, StatusCode::OK, "{}", rest.text);
}

async fn bulk_applies_each_operation_in_order_and_resolves_bulk_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let old = user_named(&app, &t, "foo", "old").await;
    let user = "urn:ietf:params:scim:schemas:core:2.0:User";
    let mut ada = bulk_user("ada");
    ada["bulkId"] = json!("ada");
    let operations = vec![
        ada,
        json!({"method": "POST", "path": "/Groups", "bulkId": "eng",
             "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                      "displayName": "Engineering", "members": [{"value": "bulkId:ada"}]}}),
        json!({"method": "PATCH", "path": "/Users/bulkId:ada",
             "data": {"Operations": [{"op": "replace", "path": "displayName", "value": "Ada"}]}}),
        bulk_user("old"),
        json!({"method": "DELETE", "path": format!("/Users/{old}")}),
        json!({"method": "PUT", "path": "/Users/bulkId:nobody",
             "data": {"schemas": [user], "userName": "x"}}),
    ];
    let reply = post_bulk(&app, &t, operations, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
    );
    let results = reply.json["Operations"].as_array().expect("operations");
    assert_eq!(
        statuses(&reply),
        ["201", "201", "200", "409", "204", "409"],
        "{}",
        reply.text
    );
    assert_eq!(results[0]["bulkId"], "ada");
    assert_eq!(results[3]["response"]["scimType"], "uniqueness");
    assert!(results[5]["response"]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("nobody")));
    let ada = results[0]["location"]
        .as_str()
        .and_then(|l| l.rsplit('/').next())
        .expect("location")
        .to_owned();
    let group = results[1]["location"]
        .as_str()
        .and_then(|l| l.rsplit('/').next())
        .expect("location")
        .to_owned();
    assert_eq!(members(&app, &group).await, set(&[&ada]));
    assert_eq!(
        app.text(
            "SELECT displayname FROM resource WHERE identifier = 'ada'",
            &[]
        )
        .await
        .as_deref(),
        Some("Ada")
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE id = $1 AND deleted",
            &[&old]
        )
        .await,
        1
    );
    // failOnErrors stops after that many errors; more than maxOperations is refused whole.
    let failing = vec![bulk_user("ada"), bulk_user("new")];
    let reply = post_bulk(&app, &t, failing, Some(1)).await;
    assert_eq!(reply.json["Operations"].as_array().map(Vec::len), Some(1));
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"method": "DELETE", "path": format!("/Users/{i}")}))
        .collect();
    let reply = post_bulk(&app, &t, too_many, None).await;
    assert_scim_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, None, "at most 1000");
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE identifier = 'new'",
            &[]
        )
        .await,
        0
    );
}

async fn a_groups_users_page_by_cursor_through_a_groups_value_filter(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let mut inside = Vec::new();
    for i in 0..7 {
        inside.push(user_named(&app, &t, "foo", &format!("in{i}")).await);
    }
    let outside = user_named(&app, &t, "foo", "out").await;
    let refs: Vec<&str> = inside.iter().map(String::as_str).collect();
    let group = create_group(&app, &t, "foo", "Big", &refs).await;
    create_group(&app, &t, "foo", "Other", &[&outside]).await;
    // One member leaves: an ended membership does not list its user.
    let left = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{group}"),
        Some(json!({"Operations": [{"op": "remove",
            "path": format!("members[value eq \"{}\"]", inside[0])}]})),
    )
    .await;
    assert_eq!(left.status, StatusCode::OK, "{}", left.text);
    let filter = enc(&format!("groups.value eq \"{group}\""));
    let (paged, last) = by_cursor(
        &app,
        &t,
        &format!("/foo/Users?filter={filter}&count=2"),
        |_| None,
    )
    .await;
    assert_eq!(last["totalResults"], 6);
    let expected: BTreeSet<String> = inside[1..].iter().cloned().collect();
    assert_eq!(paged.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(paged.len(), 6, "a user was listed twice");
    let any = scim(
        &app,
        &t,
        Method::GET,
        &format!("/foo/Users?filter={}", enc("groups pr")),
        None,
    )
    .await;
    assert_eq!(any.json["totalResults"], 7, "{}", any.text);
    let bad = scim(
        &app,
        &t,
        Method::GET,
        &format!("/foo/Users?filter={}", enc("groups.display eq \"Big\"")),
        None,
    )
    .await;
    assert_scim_error(
        &bad,
        StatusCode::BAD_REQUEST,
        Some("invalidFilter"),
        "groups.display",
    );
}

async fn cursors_page_every_sort_order_and_refuse_forged_positions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let mut all = BTreeSet::new();
    for i in 0..7 {
        let body = if i % 2 == 0 {
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": format!("u{i}"), "active": i % 3 == 0, "title": format!("t{i}")})
        } else {
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": format!("u{i}")})
        };
        all.insert(create_user(&app, &t, "foo", body).await);
    }
    for sort in [
        "id",
        "meta.created",
        "meta.lastModified",
        "active",
        "title",
        "externalId",
    ] {
        for order in ["ascending", "descending"] {
            let path = format!("/foo/Users?sortBy={sort}&sortOrder={order}&count=2");
            let (seen, _) = by_cursor(&app, &t, &path, |_| None).await;
            let unique: BTreeSet<String> = seen.iter().cloned().collect();
            assert_eq!(seen.len(), 7, "{sort} {order}: {seen:?}");
            assert_eq!(unique, all, "{sort} {order}");
            let by_index = scim(
                &app,
                &t,
                Method::GET,
                &format!("/foo/Users?sortBy={sort}&sortOrder={order}&count=7"),
                None,
            )
            .await;
            let listed: Vec<&str> = by_index.json["Resources"]
                .as_array()
                .expect("page")
                .iter()
                .filter_map(|r| r["id"].as_str())
                .collect();
            assert_eq!(
                listed, seen,
                "{sort} {order}: index and cursor orders differ"
            );
        }
    }
    // A cursor whose position is not a value of the sort attribute is refused, not tried.
    let first = scim(
        &app,
        &t,
        Method::GET,
        "/foo/Users?sortBy=meta.created&count=2&cursor",
        None,
    )
    .await;
    let next = first.json["nextCursor"].as_str().expect("nextCursor");
    let mut state: Value = base64_json(next);
    state["a"]["key"] = json!("not a time");
    let forged = encode_json(&state);
    let reply = scim(
        &app,
        &t,
        Method::GET,
        &format!("/foo/Users?sortBy=meta.created&count=2&cursor={forged}"),
        None,
    )
    .await;
    assert_scim_error(
        &reply,
        StatusCode::BAD_REQUEST,
        Some("invalidCursor"),
        "not one roster",
    );
}

fn base64_json(text: &str) -> Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

fn encode_json(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Posts a BulkRequest of `operations` (with `failOnErrors` when given) to foo.
async fn post_bulk(app: &TestApp, t: &str, operations: Vec<Value>, fail_on: Option<u32>) -> Reply {
    let mut request = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                             "Operations": operations});
    if let Some(n) = fail_on {
        request["failOnErrors"] = json!(n);
    }
    scim(app, t, Method::POST, "/foo/Bulk", Some(request)).await
}

/// A bulk POST of a user named `name`.
fn bulk_user(name: &str) -> Value {
    json!({"method": "POST", "path": "/Users",
           "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name}})
}

async fn a_bulk_of_user_creates_commits_in_runs_and_a_refused_one_undoes_only_itself(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    // 250 creates, across three runs of creates. Refused: the 150th takes the 10th's userName
    // (written in an earlier run), the 161st the 151st's (in the same run, in another case), the
    // 172nd the 171st's externalId. The 181st names the 176th (same run) as its manager, and the
    // group names users of the first and the last run, by bulkId.
    let mut operations: Vec<Value> = (0..250)
        .map(|i| {
            let name = match i {
                149 => "u9".to_owned(),
                160 => "U150".to_owned(),
                _ => format!("u{i}"),
            };
            let mut op = bulk_user(&name);
            op["bulkId"] = json!(format!("b{i}"));
            if i == 170 || i == 171 {
                op["data"]["externalId"] = json!("ext-170");
            }
            if i == 180 {
                op["data"]["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] =
                    json!({"manager": {"value": "bulkId:b175"}});
            }
            op
        })
        .collect();
    operations.push(json!({"method": "POST", "path": "/Groups", "bulkId": "g",
        "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                 "displayName": "Runs", "members": [{"value": "bulkId:b0"}, {"value": "bulkId:b249"}]}}));
    let reply = post_bulk(&app, &t, operations, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let results = reply.json["Operations"].as_array().expect("results");
    assert_eq!(results.len(), 251);
    let refused = [149, 160, 171];
    for (i, result) in results.iter().enumerate() {
        let expected = if refused.contains(&i) { "409" } else { "201" };
        assert_eq!(result["status"], expected, "operation {i}: {result}");
    }
    for i in refused {
        assert_eq!(results[i]["response"]["scimType"], "uniqueness");
        assert_eq!(results[i]["bulkId"], format!("b{i}"));
    }
    assert!(results[171]["response"]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("externalId")));
    let users = "SELECT count(*) FROM resource WHERE source_system = 'foo' AND type = 1";
    assert_eq!(
        app.scalar(users, &[]).await,
        247,
        "every create but the refused ones"
    );
    let created = "SELECT count(*) FROM change WHERE kind = 1 AND source_system = 'foo'";
    let audited = "SELECT count(*) FROM audit WHERE action = 'resource.create'";
    assert_eq!(
        app.scalar(created, &[]).await,
        248,
        "247 users and the group, one change each"
    );
    assert_eq!(app.scalar(audited, &[]).await, 248);
    // The changes are logged in the order of the operations.
    let id_of = |result: &Value| {
        result["location"]
            .as_str()
            .and_then(|l| l.rsplit('/').next())
            .map(str::to_owned)
    };
    let answered: Vec<String> = results.iter().filter_map(id_of).collect();
    let before = "SELECT count(*) FROM change a JOIN change b ON a.kind = 1 AND b.kind = 1 \
                  WHERE a.resource_id = $1 AND b.resource_id = $2 AND a.seq < b.seq";
    for pair in answered.windows(2) {
        assert_eq!(
            app.scalar(before, &[&pair[0], &pair[1]]).await,
            1,
            "{pair:?}"
        );
    }
    let (manager, report) = (id_of(&results[175]), id_of(&results[180]));
    let report = scim(
        &app,
        &t,
        Method::GET,
        &format!("/foo/Users/{}", report.expect("id")),
        None,
    )
    .await;
    assert_eq!(
        report.json["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"]
            ["value"],
        json!(manager.expect("id"))
    );
    // A create refused for its externalId holds no name for those after it; an externalId a
    // live user has is refused too.
    let with_ext = |name: &str, ext: &str| {
        let mut op = bulk_user(name);
        op["data"]["externalId"] = json!(ext);
        op
    };
    let operations = vec![
        with_ext("a1", "e-a"),
        with_ext("b1", "e-a"),
        with_ext("B1", "e-c"),
        with_ext("d1", "ext-170"),
    ];
    let reply = post_bulk(&app, &t, operations, None).await;
    assert_eq!(
        statuses(&reply),
        ["201", "409", "201", "409"],
        "{}",
        reply.text
    );
    assert!(reply.json["Operations"][3]["response"]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("ext-170")));
    // failOnErrors counts the refusals inside a row of creates: nothing starts after the second.
    let operations = vec![
        bulk_user("U0"),
        bulk_user("x1"),
        bulk_user("u1"),
        bulk_user("x2"),
    ];
    let reply = post_bulk(&app, &t, operations, Some(2)).await;
    assert_eq!(statuses(&reply), ["409", "201", "409"], "{}", reply.text);
    let named = "SELECT count(*) FROM resource WHERE identifier IN ('x1', 'x2')";
    assert_eq!(app.scalar(named, &[]).await, 1, "x1 only");
    // Each answer is the user as stored, with where to find it.
    let first = &results[0];
    let id = first["location"]
        .as_str()
        .and_then(|l| l.rsplit('/').next())
        .expect("location");
    let stored = scim(&app, &t, Method::GET, &format!("/foo/Users/{id}"), None).await;
    assert_eq!(stored.json["userName"], "u0");
    assert_eq!(first["version"], stored.json["meta"]["version"]);
    let group = results[250]["location"]
        .as_str()
        .and_then(|l| l.rsplit('/').next())
        .expect("location")
        .to_owned();
    assert_eq!(members(&app, &group).await.len(), 2);
}

async fn bulk_create(app: &TestApp, t: &str, names: impl Iterator<Item = String>) {
    let reply = post_bulk(app, t, names.map(|n| bulk_user(&n)).collect(), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let failed = reply.json["Operations"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["status"] != "201")
        .count();
    assert_eq!(failed, 0, "{}", reply.text);
}

async fn a_delta_longer_than_a_feed_batch_pages_every_change_once(backend: Backend) {
    // Two Bulks of 700 in a row are more than a token's default rate allows within a second;
    // this test is about paging, so the rate is off.
    let limits = roster::server::Limits {
        scim_rate: None,
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(backend, limits).await;
    let t = token(&app, "foo").await;
    user_named(&app, &t, "foo", "before").await;
    let first = scim(
        &app,
        &t,
        Method::GET,
        "/foo/Users?deltaQuery&count=0&cursor",
        None,
    )
    .await;
    assert_eq!(first.json["totalResults"], 1);
    assert!(
        first.json.get("nextDeltaToken").is_none(),
        "count=0 handed out a token: {}",
        first.text
    );
    let read = scim(&app, &t, Method::GET, "/foo/Users?deltaQuery", None).await;
    let token = read.json["nextDeltaToken"]
        .as_str()
        .expect("token")
        .to_owned();
    bulk_create(&app, &t, (0..700).map(|i| format!("a{i}"))).await;
    bulk_create(&app, &t, (0..700).map(|i| format!("b{i}"))).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = scim(
            &app,
            &t,
            Method::GET,
            &format!(
                "/foo/Users?deltaQuery&deltaToken={}&count=300&cursor={cursor}",
                enc(&token)
            ),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let page = reply.json["Resources"].as_array().expect("page");
        assert!(page.len() <= 300);
        seen.extend(
            page.iter()
                .filter_map(|r| r["userName"].as_str().map(str::to_owned)),
        );
        match reply.json["nextCursor"].as_str() {
            Some(next) => cursor = enc(next),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 1400, "every user once");
    assert_eq!(unique.len(), 1400);
}

async fn bulk_operations_count_against_the_rate_whatever_the_scheme_case(backend: Backend) {
    let rate = ScimRate {
        burst: std::num::NonZeroU32::new(4).expect("4"),
        replenish: std::time::Duration::from_secs(3600),
    };
    let limits = roster::server::Limits {
        scim_rate: Some(rate),
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(backend, limits).await;
    let t = token(&app, "foo").await;
    // Two requests, one with the scheme in lower case: the same token, the same rate.
    user_named(&app, &t, "foo", "a").await;
    let lower = app
        .send(
            axum::http::Request::builder()
                .method(Method::GET)
                .uri("/scim/v2/foo/Users")
                .header("authorization", format!("bearer {t}"))
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(lower.status, StatusCode::OK, "{}", lower.text);
    // A bulk of three operations is three requests: over the two left.
    let operations = (0..3).map(|i| bulk_user(&format!("b{i}"))).collect();
    let reply = post_bulk(&app, &t, operations, None).await;
    assert_scim_error(&reply, StatusCode::TOO_MANY_REQUESTS, None, "rate");
    assert!(reply.retry_after.is_some());
    let users = app
        .scalar("SELECT count(*) FROM resource WHERE type = 1", &[])
        .await;
    assert_eq!(users, 1, "the refused bulk wrote nothing");
}

async fn duplicate_user_name_is_409_uniqueness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    user_named(&app, &t, "foo", "ada").await;
    let before = app.fingerprint().await;
    let reply = scim(
        &app,
        &t,
        Method::POST,
        "/foo/Users",
        Some(json!({"userName": "ada"})),
    )
    .await;
    assert_scim_error(&reply, StatusCode::CONFLICT, Some("uniqueness"), "");
    let reply = scim(
        &app,
        &t,
        Method::POST,
        "/foo/Users",
        Some(json!({"userName": "ADA"})),
    )
    .await;
    assert_scim_error(&reply, StatusCode::CONFLICT, Some("uniqueness"), "ADA");
    assert_eq!(app.fingerprint().await, before);
    let other = user_named(&app, &t, "foo", "grace").await;
    let renamed = scim(
        &app,
        &t,
        Method::PUT,
        &format!("/foo/Users/{other}"),
        Some(json!({"userName": "Ada"})),
    )
    .await;
    assert_scim_error(&renamed, StatusCode::CONFLICT, Some("uniqueness"), "Ada");
    // The same userName in another source is another user.
    let bar = token(&app, "bar").await;
    user_named(&app, &bar, "bar", "ada").await;
}

async fn entra_test_connection_filter_on_a_random_value_answers_an_empty_list(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    user_named(&app, &t, "foo", "someone").await;
    let path = format!(
        "/foo/Users?filter={}",
        enc(r#"userName eq "6f1a7b2c-5d3e-4f60-9a8b-7c6d5e4f3a2b""#)
    );
    let reply = scim(&app, &t, Method::GET, &path, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, "application/scim+json");
    assert_eq!(reply.json["totalResults"], 0);
    assert_eq!(reply.json["Resources"], json!([]));
    assert_eq!(
        reply.json["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:ListResponse"
    );
}

async fn patch_op_names_ignore_case_and_boolean_strings_are_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let id = user_named(&app, &t, "foo", "ada").await;
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Users/{id}"),
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"},
                           {"op": "Add", "path": "title", "value": "Engineer"}]
        })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["active"], false);
    assert_eq!(reply.json["title"], "Engineer");
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE id = $1 AND NOT active",
            &[&id]
        )
        .await,
        1
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM change WHERE resource_id = $1 AND kind = 11",
            &[&id]
        )
        .await,
        1,
        "the deactivation is on the feed"
    );
}

async fn entra_add_through_a_value_filter_path_creates_the_value(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let id = create_user(
        &app,
        &t,
        "foo",
        json!({"userName": "ada", "roles": ["admin", "ops"]}),
    )
    .await;
    let reply = scim(&app, &t, Method::PATCH, &format!("/foo/Users/{id}"), Some(json!({
        "Operations": [{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "ada@corp.com"},
                       {"op": "Replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555"}]
    }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json["emails"],
        json!([{"type": "work", "value": "ada@corp.com"}])
    );
    assert_eq!(reply.json["phoneNumbers"][0]["value"], "+1 555");
    // A list of plain values is filtered like any other, on both backends.
    for (filter, expected) in [
        (r#"emails[type eq "work"].value eq "ADA@corp.com""#, 1),
        (r#"roles[type eq "x"]"#, 0),
        (r#"roles pr"#, 1),
    ] {
        let path = format!("/foo/Users?filter={}", enc(filter));
        let reply = scim(&app, &t, Method::GET, &path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{filter}: {}", reply.text);
        assert_eq!(reply.json["totalResults"], expected, "{filter}");
    }
}

async fn no_path_replace_takes_dotted_and_urn_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let id = user_named(&app, &t, "foo", "ada").await;
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Users/{id}"),
        Some(json!({
            "Operations": [{"op": "replace", "value": {
                "name.givenName": "Ada",
                "displayName": "Ada L",
                format!("{ENTERPRISE}:department"): "R&D"
            }}]
        })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["name"]["givenName"], "Ada");
    assert_eq!(reply.json[ENTERPRISE]["department"], "R&D");
    assert_eq!(
        app.text("SELECT displayname FROM resource WHERE id = $1", &[&id])
            .await
            .as_deref(),
        Some("Ada L")
    );
}

async fn group_patch_adds_and_removes_only_the_members_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(user_named(&app, &t, "foo", &format!("u{i}")).await);
    }
    let group = create_group(
        &app,
        &t,
        "foo",
        "Engineering",
        &[&users[0], &users[1], &users[2]],
    )
    .await;
    assert_eq!(
        members(&app, &group).await,
        set(&[&users[0], &users[1], &users[2]])
    );
    let changes_before = app.scalar("SELECT count(*) FROM change", &[]).await;
    let reply = scim(&app, &t, Method::PATCH, &format!("/foo/Groups/{group}"), Some(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "add", "path": "members", "value": [{"value": users[3]}, {"value": users[4]}]},
            {"op": "remove", "path": "members", "value": [{"value": users[0]}]}
        ]
    }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["id"], group.as_str());
    assert_eq!(reply.json["displayName"], "Engineering");
    let answered: BTreeSet<String> = reply.json["members"]
        .as_array()
        .expect("a small group's PATCH answer lists its members")
        .iter()
        .filter_map(|m| m["value"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        members(&app, &group).await,
        set(&[&users[1], &users[2], &users[3], &users[4]])
    );
    assert_eq!(
        answered,
        members(&app, &group).await,
        "the answer is the group as stored"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM change", &[]).await - changes_before,
        3,
        "one change per member added or removed, none for the others"
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM operation WHERE type = 'partial-update' AND added = 2 AND removed = 1",
            &[]
        )
        .await,
        1
    );
    // Adding members already there and removing absent ones changes nothing.
    let before = app.scalar("SELECT count(*) FROM change", &[]).await;
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{group}"),
        Some(json!({
            "Operations": [
                {"op": "add", "path": "members", "value": [{"value": users[3]}]},
                {"op": "remove", "path": "members", "value": [{"value": users[0]}]}
            ]
        })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app.scalar("SELECT count(*) FROM change", &[]).await, before);
}

/// A group of two users, `a` and `b`, in source `foo`; its members after `operations`.
async fn members_after(
    backend: Backend,
    operations: impl Fn(&str, &str) -> Value,
) -> (Vec<String>, BTreeSet<String>) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let a = user_named(&app, &t, "foo", "a").await;
    let b = user_named(&app, &t, "foo", "b").await;
    let group = create_group(&app, &t, "foo", "G", &[&a, &b]).await;
    let body = json!({"Operations": operations(&a, &b)});
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{group}"),
        Some(body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    (vec![a, b], members(&app, &group).await)
}

async fn entra_remove_of_members_with_a_value_list(backend: Backend) {
    let (users, left) = members_after(
        backend,
        |a, _| json!([{"op": "Remove", "path": "members", "value": [{"value": a}]}]),
    )
    .await;
    assert_eq!(left, set(&[&users[1]]));
}

async fn remove_of_members_with_a_value_filter(backend: Backend) {
    let (users, left) = members_after(
        backend,
        |_, b| json!([{"op": "remove", "path": format!("members[value eq \"{b}\"]")}]),
    )
    .await;
    assert_eq!(left, set(&[&users[0]]));
}

async fn okta_replace_of_members_is_a_full_push(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let a = user_named(&app, &t, "foo", "a").await;
    let b = user_named(&app, &t, "foo", "b").await;
    let c = user_named(&app, &t, "foo", "c").await;
    let group = create_group(&app, &t, "foo", "G", &[&a, &b]).await;
    let reply = scim(&app, &t, Method::PATCH, &format!("/foo/Groups/{group}"), Some(json!({
        "Operations": [{"op": "replace", "path": "members", "value": [{"value": b}, {"value": c}]}]
    }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(members(&app, &group).await, set(&[&b, &c]));
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM operation WHERE type = 'full-update' AND status = 'complete' \
             AND added = 1 AND removed = 1",
            &[]
        )
        .await,
        1
    );
}

async fn okta_no_path_group_replace_with_id_and_display_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let group = create_group(&app, &t, "foo", "Old", &[]).await;
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{group}"),
        Some(json!({
            "Operations": [{"op": "replace", "value": {"id": group, "displayName": "New"}}]
        })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        app.text("SELECT displayname FROM resource WHERE id = $1", &[&group])
            .await
            .as_deref(),
        Some("New")
    );
}

async fn a_push_that_would_empty_a_large_group_is_held_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let group = create_group(&app, &t, "foo", "Big", &[]).await;
    let mut users = Vec::new();
    for i in 0..120 {
        users.push(user_named(&app, &t, "foo", &format!("u{i:03}")).await);
    }
    let value: Vec<Value> = users.iter().map(|u| json!({"value": u})).collect();
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{group}"),
        Some(json!({
            "Operations": [{"op": "add", "path": "members", "value": value}]
        })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply.json.get("members").is_none(),
        "a large group's PATCH answer leaves its members out: {}",
        reply.text
    );
    assert_eq!(reply.json["displayName"], "Big");
    assert_eq!(members(&app, &group).await.len(), 120);
    let asked = format!("/foo/Groups/{group}?attributes=members");
    let rename = json!({"Operations": [{"op": "replace", "path": "displayName", "value": "Big"}]});
    let reply = scim(&app, &t, Method::PATCH, &asked, Some(rename)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json["members"].as_array().map(Vec::len),
        Some(120),
        "attributes=members lists them all"
    );
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{group}"),
        Some(json!({
            "Operations": [{"op": "replace", "path": "members", "value": []}]
        })),
    )
    .await;
    assert_scim_error(&reply, StatusCode::CONFLICT, None, "held for approval");
    assert_eq!(
        members(&app, &group).await.len(),
        120,
        "nothing was removed"
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM operation WHERE status = 'pending'",
            &[]
        )
        .await,
        1
    );
}

async fn excluded_members_are_not_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let a = user_named(&app, &t, "foo", "a").await;
    let group = create_group(&app, &t, "foo", "Ops Team", &[&a]).await;
    let path = format!(
        "/foo/Groups?excludedAttributes=members&filter={}",
        enc(r#"displayName eq "ops team""#)
    );
    let reply = scim(&app, &t, Method::GET, &path, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["totalResults"], 1);
    assert_eq!(reply.json["Resources"][0]["id"], group.as_str());
    assert!(reply.json["Resources"][0].get("members").is_none());
    let full = scim(&app, &t, Method::GET, &format!("/foo/Groups/{group}"), None).await;
    assert_eq!(full.json["members"][0]["value"], a.as_str());
    assert_eq!(full.json["members"][0]["type"], "User");
    let filtered = format!(
        "/foo/Groups?filter={}",
        enc(&format!(r#"members[value eq "{a}"]"#))
    );
    let reply = scim(&app, &t, Method::GET, &filtered, None).await;
    assert_eq!(reply.json["totalResults"], 1, "{}", reply.text);
}

async fn if_match_with_an_old_version_is_412(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let id = user_named(&app, &t, "foo", "ada").await;
    let read = scim(&app, &t, Method::GET, &format!("/foo/Users/{id}"), None).await;
    let version = read.json["meta"]["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let patch =
        |title: &str| json!({"Operations": [{"op": "replace", "path": "title", "value": title}]});
    let request = |body: Value| {
        axum::http::Request::builder()
            .method(Method::PATCH)
            .uri(format!("/scim/v2/foo/Users/{id}"))
            .header("authorization", format!("Bearer {t}"))
            .header("content-type", "application/scim+json")
            .header("if-match", version.clone())
            .body(axum::body::Body::from(body.to_string()))
            .expect("request")
    };
    let group = create_group(&app, &t, "foo", "G", &[]).await;
    let group_version = scim(&app, &t, Method::GET, &format!("/foo/Groups/{group}"), None)
        .await
        .json["meta"]["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let add = |member: &str| {
        axum::http::Request::builder()
            .method(Method::PATCH)
            .uri(format!("/scim/v2/foo/Groups/{group}"))
            .header("authorization", format!("Bearer {t}"))
            .header("if-match", group_version.clone())
            .header("content-type", "application/scim+json")
            .body(axum::body::Body::from(
                json!({"Operations": [
                {"op": "add", "path": "members", "value": [{"value": member}]}]})
                .to_string(),
            ))
            .expect("request")
    };
    assert_eq!(app.send_raw(add(&id)).await.status, StatusCode::OK);
    let moved = scim(&app, &t, Method::GET, &format!("/foo/Groups/{group}"), None).await;
    assert_ne!(
        moved.json["meta"]["version"],
        group_version.as_str(),
        "the members changed the version"
    );
    let other = user_named(&app, &t, "foo", "other").await;
    let stale = app.send_raw(add(&other)).await;
    assert_scim_error(&stale, StatusCode::PRECONDITION_FAILED, None, "");
    assert_eq!(members(&app, &group).await, set(&[&id]));
    let first = app.send_raw(request(patch("one"))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let before = app.fingerprint().await;
    let second = app.send_raw(request(patch("two"))).await;
    assert_scim_error(&second, StatusCode::PRECONDITION_FAILED, None, "If-Match");
    assert_eq!(app.fingerprint().await, before);
}

async fn a_token_bound_to_foo_cannot_read_or_write_bar(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let foo_token = token(&app, "foo").await;
    let bar = token(&app, "bar").await;
    let id = user_named(&app, &bar, "bar", "bob").await;
    let before = app.fingerprint().await;
    for (method, path, body) in [
        (Method::GET, "/bar/Users".to_owned(), None),
        (Method::GET, format!("/bar/Users/{id}"), None),
        (
            Method::POST,
            "/bar/Users".to_owned(),
            Some(json!({"userName": "mallory"})),
        ),
        (Method::DELETE, format!("/bar/Users/{id}"), None),
    ] {
        let reply = scim(&app, &foo_token, method, &path, body).await;
        assert_scim_error(&reply, StatusCode::FORBIDDEN, None, "bar");
    }
    // Through its own base, bar's user does not exist for foo either.
    let reply = scim(
        &app,
        &foo_token,
        Method::GET,
        &format!("/foo/Users/{id}"),
        None,
    )
    .await;
    assert_scim_error(&reply, StatusCode::NOT_FOUND, None, "foo");
    assert_eq!(app.fingerprint().await, before);
}

async fn bad_requests_answer_scim_errors_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let id = user_named(&app, &t, "foo", "ada").await;
    let before = app.fingerprint().await;
    let bad_filter = format!("/foo/Users?filter={}", enc("userName eq"));
    assert_scim_error(
        &scim(&app, &t, Method::GET, &bad_filter, None).await,
        StatusCode::BAD_REQUEST,
        Some("invalidFilter"),
        "expected a value",
    );
    let list_filter = format!("/foo/Users?filter={}", enc("name[givenName eq \"x\"]"));
    assert_scim_error(
        &scim(&app, &t, Method::GET, &list_filter, None).await,
        StatusCode::BAD_REQUEST,
        Some("invalidFilter"),
        "multi-valued",
    );
    assert_scim_error(
        &scim(&app, &t, Method::GET, "/foo/Users?count=ten", None).await,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
        "count",
    );
    assert_scim_error(
        &scim(
            &app,
            &t,
            Method::POST,
            "/foo/Users",
            Some(json!({"displayName": "x"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
        "userName",
    );
    assert_scim_error(
        &scim(
            &app,
            &t,
            Method::PATCH,
            &format!("/foo/Users/{id}"),
            Some(json!({"Operations": [{"op": "jump", "path": "title"}]})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        Some("invalidSyntax"),
        "jump",
    );
    let nul = format!("/foo/Users?filter={}", enc("userName eq \"a\\u0000b\""));
    assert_scim_error(
        &scim(&app, &t, Method::GET, &nul, None).await,
        StatusCode::BAD_REQUEST,
        Some("invalidFilter"),
        "NUL",
    );
    assert_scim_error(
        &scim(
            &app,
            &t,
            Method::POST,
            "/foo/Users",
            Some(json!({"userName": "n", "title": "a\u{0}b"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
        "NUL",
    );
    assert_eq!(
        app.fingerprint().await,
        before,
        "the refused user requests changed nothing"
    );
    let group = create_group(&app, &t, "foo", "G", &[]).await;
    let before_group = app.fingerprint().await;
    for filter in [
        "members pr",
        "members[type eq \"User\"]",
        "members.type eq \"Group\"",
    ] {
        let path = format!("/foo/Groups?filter={}", enc(filter));
        let reply = scim(&app, &t, Method::GET, &path, None).await;
        if filter == "members pr" {
            assert_eq!(reply.status, StatusCode::OK, "{filter}: {}", reply.text);
            assert_eq!(reply.json["totalResults"], 0, "{filter}");
        } else {
            assert_scim_error(
                &reply,
                StatusCode::BAD_REQUEST,
                Some("invalidFilter"),
                "value or display",
            );
        }
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    let reply = scim(
        &app,
        &t,
        Method::POST,
        "/foo/Groups",
        Some(json!({
        "displayName": "H", "members": [{"value": unknown}]})),
    )
    .await;
    assert_scim_error(
        &reply,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
        &unknown,
    );
    let reply = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/foo/Groups/{group}"),
        Some(json!({
        "Operations": [{"op": "replace", "path": "displayName", "value": "Renamed"},
                       {"op": "add", "path": "members", "value": [{"value": unknown}]}]})),
    )
    .await;
    assert_scim_error(
        &reply,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
        &unknown,
    );
    assert_eq!(
        app.fingerprint().await,
        before_group,
        "a refused group write changed nothing"
    );
    let stranger = uuid::Uuid::now_v7().to_string();
    assert_scim_error(
        &scim(&app, &t, Method::PATCH, &format!("/foo/Groups/{group}"),
              Some(json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": stranger}]}]}))).await,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
        &stranger,
    );
    assert_eq!(app.fingerprint().await, before_group);
    let no_token = app
        .call_as(None, Method::GET, "/scim/v2/foo/Users", None)
        .await;
    assert_scim_error(&no_token, StatusCode::UNAUTHORIZED, None, "token");
    let read_token = app.token("reader", &[Scope::Read], None).await;
    let wrong_scope = app
        .call_as(Some(&read_token), Method::GET, "/scim/v2/foo/Users", None)
        .await;
    assert_scim_error(&wrong_scope, StatusCode::FORBIDDEN, None, "scim");
}

/// The rule the REST API keeps (a connector may not undo roster's deactivation) holds for every
/// SCIM write of `active`: PATCH, PUT and a PATCH inside a Bulk request.
async fn a_bound_token_cannot_reactivate_through_scim_what_roster_deactivated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let ada = user_named(&app, &t, "foo", "ada").await;
    let reply = app
        .post(
            &format!("/api/v1/resources/{ada}/actions/deactivate"),
            json!({"scope": "account", "reason": "left the company"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let deactivated = "SELECT count(*) FROM resource WHERE id = $1 AND NOT active \
                       AND deactivation_reason = 'left the company'";
    assert_eq!(app.scalar(deactivated, &[&ada]).await, 1);
    let before = app.fingerprint().await;
    let path = format!("/foo/Users/{ada}");
    let activate = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": true}]
    });
    let reply = scim(&app, &t, Method::PATCH, &path, Some(activate.clone())).await;
    assert_scim_error(&reply, StatusCode::FORBIDDEN, None, "deactivated by roster");
    let put = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                     "userName": "ada", "active": true});
    let reply = scim(&app, &t, Method::PUT, &path, Some(put)).await;
    assert_scim_error(&reply, StatusCode::FORBIDDEN, None, "deactivated by roster");
    let bulk = post_bulk(
        &app,
        &t,
        vec![json!({"method": "PATCH", "path": format!("/Users/{ada}"), "data": activate})],
        None,
    )
    .await;
    assert_eq!(bulk.status, StatusCode::OK, "{}", bulk.text);
    assert_eq!(bulk.json["Operations"][0]["status"], "403", "{}", bulk.text);
    assert_eq!(
        app.fingerprint().await,
        before,
        "a refused activation changes nothing"
    );
    assert_eq!(app.scalar(deactivated, &[&ada]).await, 1);
    // An account the source itself deactivated is the source's to activate again.
    let bob = user_named(&app, &t, "foo", "bob").await;
    let path = format!("/foo/Users/{bob}");
    for active in [false, true] {
        let body = json!({"Operations": [{"op": "replace", "path": "active", "value": active}]});
        let reply = scim(&app, &t, Method::PATCH, &path, Some(body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["active"], active);
    }
}

/// RFC 7644 §3.12: a resource that does not exist is a 404, whatever its id looks like; a Bulk
/// operation answers the same.
async fn an_id_that_is_not_roster_s_is_not_found_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    user_named(&app, &t, "foo", "ada").await;
    let before = app.fingerprint().await;
    let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x"});
    let patch = json!({"Operations": [{"op": "replace", "path": "displayName", "value": "y"}]});
    for kind in ["Users", "Groups"] {
        for id in [
            "not-a-uuid",
            "12345",
            "00000000-0000-0000-0000-00000000000g",
        ] {
            let path = format!("/foo/{kind}/{id}");
            for (method, body) in [
                (Method::GET, None),
                (Method::PUT, Some(user.clone())),
                (Method::PATCH, Some(patch.clone())),
                (Method::DELETE, None),
            ] {
                let reply = scim(&app, &t, method.clone(), &path, body).await;
                assert_scim_error(&reply, StatusCode::NOT_FOUND, None, id);
            }
        }
    }
    let operations = vec![json!({"method": "PATCH", "path": "/Users/not-a-uuid", "data": patch})];
    let reply = post_bulk(&app, &t, operations, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json["Operations"][0]["status"], "404",
        "{}",
        reply.text
    );
    assert_eq!(app.fingerprint().await, before, "nothing changed");
}

/// RFC 7644 §3.5.2: a PATCH answers 200 with the resource, subject to `attributes` (a large
/// group's members are left out unless named: `a_push_that_would_empty_a_large_group_…`).
async fn a_patch_answers_the_resource_as_patched(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = token(&app, "foo").await;
    let ada = user_named(&app, &t, "foo", "ada").await;
    let rename = |name: &str| json!({"Operations": [{"op": "replace", "path": "displayName", "value": name}]});
    let path = format!("/foo/Users/{ada}");
    let reply = scim(&app, &t, Method::PATCH, &path, Some(rename("Ada L"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["displayName"], "Ada L");
    assert_eq!(reply.json["userName"], "ada");
    let stored = scim(&app, &t, Method::GET, &path, None).await;
    assert_eq!(
        reply.json, stored.json,
        "the answer is the resource as stored"
    );
    let only = format!("{path}?attributes=displayName");
    let reply = scim(&app, &t, Method::PATCH, &only, Some(rename("Ada"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["displayName"], "Ada");
    assert!(reply.json.get("userName").is_none(), "{}", reply.text);
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM resource WHERE id = $1 AND displayname = 'Ada'",
            &[&ada]
        )
        .await,
        1
    );
    let group = create_group(&app, &t, "foo", "G", &[]).await;
    let add = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": ada}]}]});
    let group_path = format!("/foo/Groups/{group}");
    let reply = scim(&app, &t, Method::PATCH, &group_path, Some(add)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["displayName"], "G");
    assert_eq!(
        reply.json["members"][0]["value"],
        ada.as_str(),
        "{}",
        reply.text
    );
    let only = format!("{group_path}?attributes=displayName");
    let reply = scim(&app, &t, Method::PATCH, &only, Some(rename("H"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["displayName"], "H");
    assert!(reply.json.get("members").is_none(), "{}", reply.text);
    assert_eq!(members(&app, &group).await, set(&[&ada]));
}

/// A body over the limit on a SCIM path is a SCIM error, not plain text.
async fn a_body_over_the_limit_is_a_scim_error(backend: Backend) {
    let limits = roster::server::Limits {
        body_bytes: 1024,
        ..roster::server::Limits::default()
    };
    let app = TestApp::spawn_with(backend, limits).await;
    let t = token(&app, "foo").await;
    let before = app.fingerprint().await;
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                      "userName": "big", "title": "x".repeat(4096)});
    let reply = scim(&app, &t, Method::POST, "/foo/Users", Some(body)).await;
    assert_scim_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, None, "limit");
    assert_eq!(app.fingerprint().await, before, "nothing changed");
}
