//! Security: every route needs a token with its scope, source-bound tokens write only their
//! source, revoked and expired tokens are refused, only hashes are stored, every write is audited
//! in its own transaction.

use crate::common::{Backend, Reply, TestApp};
use crate::on_both_backends;
use crate::openapi::documented_routes;
use axum::http::{Method, StatusCode};
use roster::domain::token::{Actor, NewToken, ReadScope, Scope, Secret, SecretHash};
use serde_json::{json, Value};

on_both_backends!(
    every_documented_route_needs_a_token_and_its_scope,
    public_routes_need_no_token,
    source_bound_token_writes_only_its_source,
    revoked_and_expired_tokens_are_refused,
    only_the_hash_of_a_secret_is_stored,
    token_api_shows_the_secret_once_and_never_again,
    every_kind_of_write_is_audited_with_token_and_request_id,
    audit_rows_roll_back_with_a_failed_write,
    audit_is_filtered_by_target_token_and_time,
);

/// Ids of a small world in which every route has something to act on.
pub(crate) struct World {
    pub(crate) user: String,
    other_user: String,
    pub(crate) group: String,
    deleted: String,
    throwaway: String,
    operation: i64,
    token_id: String,
    /// A token to revoke (a revoked token is gone from its address).
    spare_token: String,
    /// Full-updates in each state a route needs.
    uploading: i64,
    to_complete: i64,
    to_reject: i64,
    to_cancel: i64,
    pending: i64,
    /// A prime, a prime to link under it, a unified group and a group linked to it.
    prime: String,
    child_prime: String,
    unified: String,
    linked: String,
    /// A correlation rule to change and run, and one to delete.
    rule: String,
    spare_rule: String,
    /// A webhook subscription to read and resume, and one to delete.
    subscription: String,
    spare_subscription: String,
    /// A user and a group to delete through SCIM.
    scim_user: String,
    scim_group: String,
}

pub(crate) async fn world(app: &TestApp) -> World {
    let user = app.user("home", "u").await;
    let other_user = app.user("home", "o").await;
    let group = app.group("home", "g").await;
    let put = app
        .put(&format!("/api/v1/groups/{group}/members/{user}"), None)
        .await;
    let deleted = app.user("home", "deleted").await;
    app.delete(&format!("/api/v1/resources/{deleted}")).await;
    let throwaway = app.user("home", "throwaway").await;
    let scim_user = app.user("home", "scim-throwaway").await;
    let scim_group = app.group("home", "scim-throwaway").await;
    let spare_token = app
        .post(
            "/api/v1/tokens",
            json!({"name": "spare", "scopes": ["read"]}),
        )
        .await;
    let token = app
        .post(
            "/api/v1/tokens",
            json!({"name": "victim", "scopes": ["read"]}),
        )
        .await;
    let uploading = app.start_full_update(&group).await;
    let to_complete = app.start_full_update(&group).await;
    let to_reject = app.start_full_update(&group).await;
    let to_cancel = app.start_full_update(&group).await;
    let held = app
        .post(
            "/api/v1/operations?wait=60",
            json!({"type": "full-update", "group_id": group, "members": [], "complete": true}),
        )
        .await;
    assert_eq!(held.json["status"], "pending", "{}", held.text);
    let prime = app
        .create(json!({"type": "prime", "source_system": "home", "identifier": "p"}))
        .await;
    let child_prime = app
        .create(json!({"type": "prime", "source_system": "home", "identifier": "c"}))
        .await;
    let unified = app
        .post(
            "/api/v1/unified-groups",
            json!({"source_system": "home", "identifier": "ug"}),
        )
        .await;
    let unified = unified.json["id"].as_str().unwrap().to_owned();
    let linked = app.group("home", "linked").await;
    app.put(
        &format!("/api/v1/unified-groups/{unified}/links/{linked}"),
        Some(json!({"role": "mirror"})),
    )
    .await;
    let rule = |name: &str| {
        json!({"name": name, "source_system": "foo", "target_source_system": "home",
               "normalize": "entra-b2b"})
    };
    let spare_rule = app.post("/api/v1/correlation/rules", rule("spare")).await;
    let spare_rule = spare_rule.json["id"].as_str().unwrap().to_owned();
    let kept_rule = app.post("/api/v1/correlation/rules", rule("kept")).await;
    let hook = || async {
        let made = app
            .post(
                "/api/v1/subscriptions",
                json!({"url": "http://127.0.0.1:9/hook"}),
            )
            .await;
        made.json["id"].as_str().unwrap().to_owned()
    };
    let (subscription, spare_subscription) = (hook().await, hook().await);
    World {
        subscription,
        spare_subscription,
        scim_user,
        scim_group,
        rule: kept_rule.json["id"].as_str().unwrap().to_owned(),
        spare_rule,
        prime,
        child_prime,
        unified,
        linked,
        uploading,
        to_complete,
        to_reject,
        to_cancel,
        pending: held.json["id"].as_i64().unwrap(),
        user,
        other_user,
        group,
        deleted,
        throwaway,
        operation: put.json["last_operation_id"].as_i64().unwrap(),
        token_id: token.json["token"]["id"].as_str().unwrap().to_owned(),
        spare_token: spare_token.json["token"]["id"].as_str().unwrap().to_owned(),
    }
}

/// A concrete path and body with which `method path` succeeds in `w`. A new route fails this test
/// until it gets a fixture here, so no route escapes the check.
pub(crate) fn fixture(method: &str, path: &str, w: &World) -> (String, Option<Value>) {
    let body = match (method, path) {
        ("post", "/api/v1/resources") => {
            Some(json!({"type": "user", "source_system": "home", "identifier": "new"}))
        }
        ("patch", "/api/v1/resources/{id}") => Some(json!({"displayname": "X"})),
        ("post", "/api/v1/tokens") => Some(json!({"name": "fresh", "scopes": ["read"]})),
        ("post", "/api/v1/operations") => Some(json!({"type": "partial-update", "changes": [
            {"group_id": w.group, "member_id": w.other_user, "action": "add"}]})),
        ("put", "/api/v1/operations/{id}/chunks/{n}") => Some(json!({"member_id": w.user})),
        ("put", "/api/v1/resources/{id}/prime") => Some(json!({"prime_id": w.prime})),
        ("put", "/api/v1/resources/{id}/parent") => Some(json!({"parent_id": w.prime})),
        ("post", "/api/v1/unified-groups") => {
            Some(json!({"source_system": "home", "identifier": "ug-new"}))
        }
        ("put", "/api/v1/unified-groups/{id}/links/{group_id}") => Some(json!({"role": "mirror"})),
        (_, p) if p.starts_with("/api/v1/unified-groups") => None,
        ("post" | "put", p) if p.starts_with("/api/v1/correlation/rules") => Some(json!({
            "name": format!("rule-{method}"), "source_system": "bar",
            "target_source_system": "home", "normalize": "lowercase"})),
        ("post", "/api/v1/correlation/runs") => Some(json!({"rule_id": w.rule})),
        ("post", p) if p.starts_with("/api/v1/resources/{id}/actions/") => {
            Some(json!({"scope": "account", "reason": "security check"}))
        }
        ("put", "/api/v1/sources/{source_system}") => Some(json!({"lifecycle_authority": false})),
        ("get", "/api/v1/sources/{source_system}") => None,
        ("post", "/api/v1/subscriptions") => Some(json!({"url": "https://hooks.example/roster"})),
        (_, p) if p.starts_with("/api/v1/subscriptions") => None,
        (_, p) if p.starts_with("/api/v1/correlation") => None,
        ("post", "/scim/v2/{source_system}/Users") => Some(json!({"userName": "scim-new"})),
        ("put", "/scim/v2/{source_system}/Users/{id}") => Some(json!({"userName": "u"})),
        ("post", "/scim/v2/{source_system}/Groups") => Some(json!({"displayName": "scim-new"})),
        ("put", "/scim/v2/{source_system}/Groups/{id}") => Some(json!({"displayName": "G"})),
        ("post", "/scim/v2/{source_system}/Bulk") => Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": []})),
        ("post", p) if p.ends_with("/.search") => Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "count": 1})),
        ("patch", p) if p.starts_with("/scim/") => Some(json!({"Operations": [
            {"op": "replace", "path": "displayName", "value": "Patched"}]})),
        (_, p) if p.starts_with("/scim/") => None,
        (_, p)
            if p.starts_with("/api/v1/resources")
                || p.starts_with("/api/v1/groups")
                || p.starts_with("/api/v1/operations")
                || p.starts_with("/api/v1/tokens")
                || p.starts_with("/api/v1/changes")
                || p == "/api/v1/export"
                || p == "/api/v1/audit"
                || p == "/metrics" =>
        {
            None
        }
        _ => panic!("no fixture for {method} {path}: add one to security.rs"),
    };
    let user_type = "User".to_owned();
    let user_schema = "urn:ietf:params:scim:schemas:core:2.0:User".to_owned();
    let id = match (method, path) {
        (_, "/scim/v2/{source_system}/ResourceTypes/{id}") => &user_type,
        (_, "/scim/v2/{source_system}/Schemas/{id}") => &user_schema,
        ("delete", "/api/v1/resources/{id}") => &w.throwaway,
        ("delete", "/scim/v2/{source_system}/Users/{id}") => &w.scim_user,
        ("delete", "/scim/v2/{source_system}/Groups/{id}") => &w.scim_group,
        (_, "/scim/v2/{source_system}/Groups/{id}") => &w.group,
        ("post", "/api/v1/resources/{id}/restore") => &w.deleted,
        ("put", "/api/v1/resources/{id}/parent") => &w.child_prime,
        (_, p) if p.starts_with("/api/v1/unified-groups") => &w.unified,
        ("delete", "/api/v1/correlation/rules/{id}") => &w.spare_rule,
        ("delete", "/api/v1/subscriptions/{id}") => &w.spare_subscription,
        (_, p) if p.starts_with("/api/v1/subscriptions") => &w.subscription,
        (_, p) if p.starts_with("/api/v1/correlation") => &w.rule,
        (_, p) if p.starts_with("/api/v1/groups") => &w.group,
        ("delete", "/api/v1/tokens/{id}") => &w.spare_token,
        (_, p) if p.starts_with("/api/v1/tokens") => &w.token_id,
        _ => &w.user,
    };
    let member = if method == "put" {
        &w.other_user
    } else {
        &w.user
    };
    let op = match (method, path) {
        ("get", "/api/v1/operations/{id}/preview") => w.uploading,
        ("put", "/api/v1/operations/{id}/chunks/{n}") => w.uploading,
        ("post", "/api/v1/operations/{id}/complete") => w.to_complete,
        ("post", "/api/v1/operations/{id}/approve") => w.pending,
        ("post", "/api/v1/operations/{id}/reject") => w.to_reject,
        ("delete", "/api/v1/operations/{id}") => w.to_cancel,
        _ => w.operation,
    };
    let concrete = path
        .replace("/operations/{id}", &format!("/operations/{op}"))
        .replace("{n}", "0")
        .replace("{id}", id)
        .replace("{member_id}", member)
        .replace(
            "{group_id}",
            if method == "delete" {
                &w.linked
            } else {
                &w.group
            },
        )
        .replace("/related", "/related?scope=cohort")
        .replace("{source_system}", "home")
        .replace(
            "/api/v1/resources/lookup",
            "/api/v1/resources/lookup?source_system=home&identifier=u",
        )
        .replace("/api/v1/export", "/api/v1/export?source_system=home");
    (concrete, body)
}

/// A refusal: a problem document, or under `/scim/` a SCIM error document.
fn assert_refused(reply: &Reply, status: StatusCode, needle: &str) {
    if reply.content_type != "application/scim+json" {
        reply.assert_problem(status, needle);
        return;
    }
    assert_eq!(reply.status, status, "body: {}", reply.text);
    assert_eq!(reply.json["status"], status.as_u16().to_string());
    let detail = reply.json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
}

async fn every_documented_route_needs_a_token_and_its_scope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let w = world(&app).await;
    let doc = app.get("/openapi.json").await.json;
    let mut checked = 0;
    for (method, path) in documented_routes(&app).await {
        let declared = doc["paths"][&path][&method]["security"][0]["bearer"][0].as_str();
        let Some(scope_name) = declared else {
            assert!(
                ["/healthz", "/readyz"].contains(&path.as_str()),
                "{method} {path} declares no scope"
            );
            continue;
        };
        let scope = Scope::from_name(scope_name).unwrap();
        let (concrete, body) = fixture(&method, &path, &w);
        let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();

        let anonymous = app
            .call_as(None, verb.clone(), &concrete, body.clone())
            .await;
        assert_refused(&anonymous, StatusCode::UNAUTHORIZED, "bearer token");
        assert_eq!(
            anonymous.www_authenticate.as_deref(),
            Some(r#"Bearer realm="roster""#),
            "{method} {path}"
        );
        let garbage = app
            .call_as(
                Some("roster_not-a-token"),
                verb.clone(),
                &concrete,
                body.clone(),
            )
            .await;
        assert_refused(&garbage, StatusCode::UNAUTHORIZED, "not valid");

        let others: Vec<Scope> = Scope::ALL
            .into_iter()
            .filter(|s| *s != scope && *s != Scope::Admin)
            .collect();
        let lacking = app
            .token(&format!("lacks-{method}-{path}"), &others, None)
            .await;
        let refused = app
            .call_as(Some(&lacking), verb.clone(), &concrete, body.clone())
            .await;
        assert_refused(&refused, StatusCode::FORBIDDEN, scope_name);

        let right = app
            .token(&format!("has-{method}-{path}"), &[scope], None)
            .await;
        let allowed = app.call_as(Some(&right), verb, &concrete, body).await;
        assert!(
            allowed.status.is_success(),
            "{method} {concrete} with scope {scope_name}: {} {}",
            allowed.status,
            allowed.text
        );
        checked += 1;
    }
    assert!(checked >= 26, "only {checked} routes were checked");
}

async fn public_routes_need_no_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs/"] {
        let reply = app.call_as(None, Method::GET, path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let doc = app.get("/openapi.json").await.json;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

async fn source_bound_token_writes_only_its_source(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let connector = app
        .token("foo-connector", &[Scope::Read, Scope::Write], Some("foo"))
        .await;
    let foo_group = app.group("foo", "eng").await;
    let foo_user = app.user("foo", "a").await;
    let bar_user = app.user("bar", "b").await;
    let bar_group = app.group("bar", "eng").await;
    app.put(
        &format!("/api/v1/groups/{bar_group}/members/{bar_user}"),
        None,
    )
    .await;
    let before = app.fingerprint().await;

    let as_foo = |method: Method, path: String, body: Option<Value>| {
        let connector = connector.clone();
        let app = &app;
        async move { app.call_as(Some(&connector), method, &path, body).await }
    };
    let refusals: Vec<Reply> = vec![
        as_foo(
            Method::POST,
            "/api/v1/resources".into(),
            Some(json!({"type": "user", "source_system": "bar", "identifier": "x"})),
        )
        .await,
        as_foo(
            Method::PATCH,
            format!("/api/v1/resources/{bar_user}"),
            Some(json!({"displayname": "pwned"})),
        )
        .await,
        as_foo(
            Method::DELETE,
            format!("/api/v1/resources/{bar_user}"),
            None,
        )
        .await,
        as_foo(
            Method::POST,
            format!("/api/v1/resources/{bar_user}/restore"),
            None,
        )
        .await,
        as_foo(
            Method::PUT,
            format!("/api/v1/groups/{bar_group}/members/{foo_user}"),
            None,
        )
        .await,
        as_foo(
            Method::DELETE,
            format!("/api/v1/groups/{bar_group}/members/{bar_user}"),
            None,
        )
        .await,
        // Naming another source's member inside one of its own groups is refused as well.
        as_foo(
            Method::PUT,
            format!("/api/v1/groups/{foo_group}/members/{bar_user}"),
            None,
        )
        .await,
    ];
    for reply in refusals {
        reply.assert_problem(StatusCode::FORBIDDEN, "bound to source system \"foo\"");
    }
    assert_eq!(app.fingerprint().await, before, "refusals changed nothing");

    // Its own source is open to it, and reads are not limited by the binding.
    let own = as_foo(
        Method::PUT,
        format!("/api/v1/groups/{foo_group}/members/{foo_user}"),
        None,
    )
    .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.text);
    let created = as_foo(
        Method::POST,
        "/api/v1/resources".into(),
        Some(json!({"type": "user", "source_system": "foo", "identifier": "c"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let read = as_foo(Method::GET, format!("/api/v1/resources/{bar_user}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
}

async fn revoked_and_expired_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .post(
            "/api/v1/tokens",
            json!({"name": "soon-revoked", "scopes": ["read"]}),
        )
        .await;
    let secret = created.json["secret"].as_str().unwrap().to_owned();
    let id = created.json["token"]["id"].as_str().unwrap().to_owned();
    let ok = app
        .call_as(Some(&secret), Method::GET, "/api/v1/resources", None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let revoked = app.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(revoked.json["revoked_at"].is_string());
    app.call_as(Some(&secret), Method::GET, "/api/v1/resources", None)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "revoked");
    // Revoked, the token is gone from its own address; the list still shows it, revoked.
    app.get(&format!("/api/v1/tokens/{id}"))
        .await
        .assert_problem(StatusCode::GONE, "revoked");
    let listed = app.get("/api/v1/tokens").await;
    let shown = listed.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["id"] == id.as_str());
    assert!(
        shown.is_some_and(|t| t["revoked_at"].is_string()),
        "{}",
        listed.text
    );

    // No token revokes itself: the admin's own revocation is refused and changes nothing.
    let tokens = app.get("/api/v1/tokens").await;
    let own = tokens.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["name"] == "test-admin")
        .and_then(|t| t["id"].as_str())
        .expect("the admin's token")
        .to_owned();
    app.delete(&format!("/api/v1/tokens/{own}"))
        .await
        .assert_problem(StatusCode::CONFLICT, "cannot revoke itself");
    assert_eq!(
        app.get(&format!("/api/v1/tokens/{own}")).await.status,
        StatusCode::OK
    );

    // Expired: stored directly, since the API refuses an expiry in the past.
    let expired = Secret::generate().unwrap();
    let new = NewToken {
        name: "expired".into(),
        scopes: vec![Scope::Read],
        source_system: None,
        read_scope: ReadScope::All,
        expires_at: Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
    };
    app.store
        .create_token(&Actor::system("test"), &new, &expired.hash())
        .await
        .unwrap();
    app.call_as(
        Some(expired.expose()),
        Method::GET,
        "/api/v1/resources",
        None,
    )
    .await
    .assert_problem(StatusCode::UNAUTHORIZED, "expired");
    app.post(
        "/api/v1/tokens",
        json!({"name": "past", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "future");
}

async fn only_the_hash_of_a_secret_is_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .post(
            "/api/v1/tokens",
            json!({"name": "hashed", "scopes": ["read"]}),
        )
        .await;
    let secret = created.json["secret"].as_str().unwrap();
    let id = created.json["token"]["id"].as_str().unwrap();
    let stored: Vec<u8> = match &app.db {
        crate::common::Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT secret_hash FROM api_token WHERE id = $1")
                .bind(uuid::Uuid::parse_str(id).unwrap())
                .fetch_one(pool)
                .await
                .unwrap()
        }
        crate::common::Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT secret_hash FROM api_token WHERE id = $1")
                .bind(uuid::Uuid::parse_str(id).unwrap())
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        stored,
        SecretHash::of(secret).0,
        "the SHA-256 of the secret"
    );
    assert_eq!(stored.len(), 32);
    let leaks = app
        .scalar(
            &format!(
                "SELECT count(*) FROM api_token WHERE name = '{secret}' OR scopes LIKE '%{secret}%'"
            )
            .replace(
                "scopes LIKE",
                if matches!(app.db, crate::common::Db::Postgres(_)) {
                    "array_to_string(scopes, ',') LIKE"
                } else {
                    "scopes LIKE"
                },
            ),
            &[],
        )
        .await;
    assert_eq!(leaks, 0, "the secret itself is stored nowhere");
    let audit = app.get("/api/v1/audit").await;
    assert!(!audit.text.contains(secret), "nor in the audit trail");
}

async fn token_api_shows_the_secret_once_and_never_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .post(
            "/api/v1/tokens",
            json!({"name": "foo-connector", "scopes": ["read", "write"], "source_system": "foo"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.json["secret"].as_str().unwrap();
    assert!(secret.starts_with("roster_"));
    assert_eq!(created.json["token"]["source_system"], "foo");
    assert_eq!(created.json["token"]["scopes"], json!(["read", "write"]));
    let id = created.json["token"]["id"].as_str().unwrap();
    let one = app.get(&format!("/api/v1/tokens/{id}")).await;
    let list = app.get("/api/v1/tokens").await;
    for reply in [&one, &list] {
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.text.contains(secret));
        assert!(!reply.text.contains("secret"));
    }
    assert_eq!(list.json["items"].as_array().unwrap().len(), 2);
    // The token works, and its use is recorded.
    app.call_as(Some(secret), Method::GET, "/api/v1/resources", None)
        .await;
    let used = app.get(&format!("/api/v1/tokens/{id}")).await;
    assert!(used.json["last_used_at"].is_string());
    app.post(
        "/api/v1/tokens",
        json!({"name": "foo-connector", "scopes": ["read"]}),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "foo-connector");
    app.post("/api/v1/tokens", json!({"name": "x", "scopes": []}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "scope");
    app.post("/api/v1/tokens", json!({"name": "x", "scopes": ["root"]}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "root");
}

async fn every_kind_of_write_is_audited_with_token_and_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let writer = app
        .token("writer", &[Scope::Read, Scope::Write], None)
        .await;
    let as_writer = |method: Method, path: String, body: Option<Value>| {
        let writer = writer.clone();
        let app = &app;
        async move { app.call_as(Some(&writer), method, &path, body).await }
    };
    let user = as_writer(
        Method::POST,
        "/api/v1/resources".into(),
        Some(json!({"type": "user", "source_system": "home", "identifier": "a"})),
    )
    .await
    .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = app.group("home", "g").await;
    as_writer(
        Method::PATCH,
        format!("/api/v1/resources/{user}"),
        Some(json!({"displayname": "A"})),
    )
    .await;
    as_writer(
        Method::PUT,
        format!("/api/v1/groups/{group}/members/{user}"),
        None,
    )
    .await;
    as_writer(
        Method::DELETE,
        format!("/api/v1/groups/{group}/members/{user}"),
        None,
    )
    .await;
    as_writer(Method::DELETE, format!("/api/v1/resources/{user}"), None).await;
    as_writer(
        Method::POST,
        format!("/api/v1/resources/{user}/restore"),
        None,
    )
    .await;
    let token = app
        .post("/api/v1/tokens", json!({"name": "t", "scopes": ["read"]}))
        .await;
    let token_id = token.json["token"]["id"].as_str().unwrap().to_owned();
    app.delete(&format!("/api/v1/tokens/{token_id}")).await;

    let audit = app.get("/api/v1/audit?limit=1000").await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text);
    let entries = audit.json["items"].as_array().unwrap();
    let find = |action: &str, target: String| -> &Value {
        entries
            .iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no audit entry {action} {target}: {entries:#?}"))
    };
    let membership = format!("group/{group}/member/{user}");
    for (action, target) in [
        ("resource.create", format!("resource/{user}")),
        ("resource.update", format!("resource/{user}")),
        ("membership.put", membership.clone()),
        ("membership.remove", membership),
        ("resource.delete", format!("resource/{user}")),
        ("resource.restore", format!("resource/{user}")),
    ] {
        let entry = find(action, target);
        assert_eq!(entry["token_name"], "writer");
        assert!(entry["token_id"].is_string());
        assert!(
            entry["request_id"].as_str().is_some_and(|r| r.len() >= 32),
            "{entry}"
        );
    }
    assert_eq!(
        find("resource.update", format!("resource/{user}"))["detail"]["changed"],
        json!(["displayname"])
    );
    find("token.create", format!("token/{token_id}"));
    find("token.revoke", format!("token/{token_id}"));
    // Reads write no audit entries.
    let n = entries.len();
    app.get("/api/v1/resources").await;
    let again = app.get("/api/v1/audit?limit=1000").await;
    assert_eq!(again.json["items"].as_array().unwrap().len(), n);
}

async fn audit_rows_roll_back_with_a_failed_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let old = app.user("home", "a").await;
    app.delete(&format!("/api/v1/resources/{old}")).await;
    app.user("home", "a").await;
    let count = |action: &'static str| {
        let app = &app;
        async move {
            app.scalar(
                &format!("SELECT count(*) FROM audit WHERE action = '{action}'"),
                &[],
            )
            .await
        }
    };
    let creates = count("resource.create").await;
    // The audit row is written first in each transaction; the write then fails on a unique key.
    app.post(
        "/api/v1/resources",
        json!({"type": "user", "source_system": "home", "identifier": "a"}),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "identifier");
    app.call(
        Method::POST,
        &format!("/api/v1/resources/{old}/restore"),
        None,
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "identifier");
    assert_eq!(count("resource.create").await, creates);
    assert_eq!(count("resource.restore").await, 0);
}

async fn audit_is_filtered_by_target_token_and_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.user("home", "a").await;
    let b = app.user("home", "b").await;
    let by_target = app.get(&format!("/api/v1/audit?target=resource/{a}")).await;
    let items = by_target.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["target"], format!("resource/{a}"));
    let by_token = app.get("/api/v1/audit?token=test-admin").await;
    assert!(by_token.json["items"].as_array().unwrap().len() >= 2);
    let nobody = app.get("/api/v1/audit?token=nobody").await;
    assert_eq!(nobody.json["items"].as_array().unwrap().len(), 0);
    let future = app.get("/api/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future.json["items"].as_array().unwrap().len(), 0);
    let past = app.get("/api/v1/audit?until=2000-01-01T00:00:00Z").await;
    assert_eq!(past.json["items"].as_array().unwrap().len(), 0);
    let all = app
        .get("/api/v1/audit?since=2000-01-01T00:00:00Z&limit=1")
        .await;
    assert_eq!(all.json["items"][0]["target"], format!("resource/{b}"));
    assert!(all.json["next"].is_string());
}
