//! Bad input: every refusal is a problem document that says what was wrong, and changes nothing.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use roster::domain::token::Scope;
use roster::server::Limits;
use serde_json::json;

on_both_backends!(
    malformed_json_is_400_problem,
    wrong_content_type_is_415_problem,
    body_over_the_limit_is_413_problem,
    unknown_route_and_wrong_method_are_problems,
    bad_cursors_and_limits_are_400,
    invalid_uuid_in_path_is_400,
    head_on_a_get_route_is_a_get_without_a_body,
    nul_is_refused_at_the_edge_and_changes_nothing,
    json_deeper_than_the_limit_is_refused,
    datetimes_outside_the_storable_range_are_refused,
    forged_scim_cursor_times_are_invalid_cursors,
    purge_retention_is_bounded,
    values_the_database_refuses_are_bad_requests,
    client_request_ids_are_bounded_in_the_audit_trail,
);

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    ct: &str,
    body: &str,
) -> crate::common::Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body.to_owned()))
        .unwrap();
    app.send(request).await
}

async fn malformed_json_is_400_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.fingerprint().await;
    raw(
        &app,
        Method::POST,
        "/api/v1/resources",
        "application/json",
        "{\"type\": \"user\",",
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST, "EOF");
    raw(
        &app,
        Method::POST,
        "/api/v1/resources",
        "application/json",
        "not json",
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST, "expected");
    app.post(
        "/api/v1/resources",
        json!({"type": "user", "source_system": "home", "colour": "blue"}),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown field `colour`");
    assert_eq!(app.fingerprint().await, before);
}

async fn wrong_content_type_is_415_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    raw(
        &app,
        Method::POST,
        "/api/v1/resources",
        "text/plain",
        r#"{"type": "user", "source_system": "home"}"#,
    )
    .await
    .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json");
    assert_eq!(app.scalar("SELECT count(*) FROM resource", &[]).await, 0);
}

async fn body_over_the_limit_is_413_problem(backend: Backend) {
    let limits = Limits {
        body_bytes: 1024,
        ..Limits::default()
    };
    let app = TestApp::spawn_with(backend, limits).await;
    let big = "x".repeat(4096);
    app.post(
        "/api/v1/resources",
        json!({"type": "user", "source_system": "home", "notes": big}),
    )
    .await
    .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "larger");
    let user = app.user("home", "a").await;
    let group = app.group("home", "g").await;
    raw(
        &app,
        Method::PUT,
        &format!("/api/v1/groups/{group}/members/{user}"),
        "application/json",
        &format!("{{\"member_name\": \"{big}\"}}"),
    )
    .await
    .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "larger");
    assert_eq!(app.scalar("SELECT count(*) FROM resource", &[]).await, 2);
    assert_eq!(
        app.scalar("SELECT count(*) FROM group_member", &[]).await,
        0
    );
}

async fn unknown_route_and_wrong_method_are_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.get("/api/v1/nothing-here")
        .await
        .assert_problem(StatusCode::NOT_FOUND, "/api/v1/nothing-here");
    app.call(Method::PATCH, "/api/v1/operations", None)
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED, "PATCH");
}

async fn bad_cursors_and_limits_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.get("/api/v1/resources?cursor=garbage")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "cursor");
    app.get("/api/v1/resources?limit=1001")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "1000");
    app.get("/api/v1/resources?limit=0")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "at least 1");
    app.get("/api/v1/resources?limit=-5")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "limit");
    // A cursor of one list is refused by another.
    let group = app.group("home", "g").await;
    for i in 0..3 {
        let u = app.user("home", &format!("u{i}")).await;
        app.put(&format!("/api/v1/groups/{group}/members/{u}"), None)
            .await;
    }
    let page = app
        .get(&format!("/api/v1/groups/{group}/members?limit=1"))
        .await;
    let cursor = page.json["next"].as_str().unwrap();
    app.get(&format!("/api/v1/resources?cursor={cursor}"))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "cursor");
}

async fn invalid_uuid_in_path_is_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.get("/api/v1/resources/not-a-uuid")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "not-a-uuid");
    app.put("/api/v1/groups/x/members/y", None)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "UUID");
}

async fn head_on_a_get_route_is_a_get_without_a_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "u").await;
    let group = app.group("home", "g").await;
    app.put(&format!("/api/v1/groups/{group}/members/{user}"), None)
        .await;
    let reader = app.token("reader", &[Scope::Read], None).await;
    let before = app.fingerprint().await;
    for path in [
        "/api/v1/resources".to_owned(),
        format!("/api/v1/resources/{user}"),
        format!("/api/v1/groups/{group}/members"),
        "/api/v1/operations".to_owned(),
        "/api/v1/changes/head".to_owned(),
    ] {
        let anonymous = app.call_as(None, Method::HEAD, &path, None).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "HEAD {path}");
        assert!(anonymous.www_authenticate.is_some(), "HEAD {path}");
        assert_eq!(anonymous.text, "", "HEAD {path} has no body");
        let head = app.call_as(Some(&reader), Method::HEAD, &path, None).await;
        let get = app.call_as(Some(&reader), Method::GET, &path, None).await;
        assert_eq!(head.status, StatusCode::OK, "HEAD {path}");
        assert_eq!(head.status, get.status, "HEAD {path} answers as GET");
        assert_eq!(head.content_type, get.content_type, "HEAD {path}");
        assert_eq!(head.text, "", "HEAD {path} has no body");
        assert!(!get.text.is_empty(), "GET {path} has one");
    }
    // A HEAD needs the scope its GET needs.
    let head = app
        .call_as(Some(&reader), Method::HEAD, "/api/v1/audit", None)
        .await;
    assert_eq!(head.status, StatusCode::FORBIDDEN);
    assert_eq!(app.fingerprint().await, before);
}

/// A SCIM error document with `status`, `scimType` and a detail that mentions `needle`.
fn assert_scim_error(
    reply: &crate::common::Reply,
    status: StatusCode,
    scim_type: &str,
    needle: &str,
) {
    assert_eq!(reply.status, status, "body: {}", reply.text);
    assert_eq!(reply.content_type, "application/scim+json");
    assert_eq!(reply.json["scimType"], scim_type, "body: {}", reply.text);
    let detail = reply.json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
}

async fn nul_is_refused_at_the_edge_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "u").await;
    let group = app.group("home", "g").await;
    let op = app.start_full_update(&group).await;
    let before = app.fingerprint().await;
    let json = "application/json";

    // In a JSON body, at any depth, in a value or in a key.
    for (method, path, body, needle) in [
        (
            Method::PATCH,
            format!("/api/v1/resources/{user}"),
            json!({"displayname": "a\u{0}b"}),
            "NUL character (\\u0000) in a value",
        ),
        (
            Method::POST,
            "/api/v1/resources".to_owned(),
            json!({"type": "user", "source_system": "home", "identifier": "x",
                   "tags": ["a", "\u{0}"]}),
            "in a value",
        ),
        (
            Method::POST,
            "/api/v1/operations".to_owned(),
            json!({"type": "full-update", "group_id": group,
                   "members": [{"member_id": user, "member_name": "m\u{0}"}]}),
            "in a value",
        ),
        (
            Method::POST,
            "/api/v1/resources".to_owned(),
            json!({"type": "user", "source_system": "home", "identifier": "y", "no\u{0}tes": "n"}),
            "in an object key",
        ),
        (
            Method::PUT,
            format!("/api/v1/groups/{group}/members/{user}"),
            json!({"member_name": "\u{0}"}),
            "in a value",
        ),
    ] {
        raw(&app, method, &path, json, &body.to_string())
            .await
            .assert_problem(StatusCode::BAD_REQUEST, needle);
    }
    // In an upload line: the chunk is refused, naming the line.
    let lines = [
        json!({"member_id": user}),
        json!({"member_id": user, "member_name": "\u{0}"}),
    ];
    let chunk = app
        .chunk(op, 0, &format!("{}\n{}\n", lines[0], lines[1]))
        .await;
    chunk.assert_problem(StatusCode::BAD_REQUEST, "could not be read");
    assert_eq!(chunk.json["errors"][0]["line"], 2, "{}", chunk.text);
    assert!(
        chunk.json["errors"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("NUL"),
        "{}",
        chunk.text
    );
    // In a query parameter (its value or its name), and in a path parameter.
    app.get("/api/v1/resources?source_system=a%00b")
        .await
        .assert_problem(
            StatusCode::BAD_REQUEST,
            "query parameter `source_system` holds a NUL",
        );
    app.get("/api/v1/audit?%00=1")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "NUL");
    app.get("/api/v1/sources/a%00b").await.assert_problem(
        StatusCode::BAD_REQUEST,
        "path parameter `source_system` holds a NUL",
    );
    // In a cursor: one roster issued never holds one.
    use base64::Engine as _;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("p:a\0b");
    app.get(&format!("/api/v1/operations/{op}/preview?cursor={cursor}"))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "cursor");

    // SCIM answers SCIM errors: in the base's name, a filter, a body.
    let scim_ct = "application/scim+json";
    let reply = raw(&app, Method::GET, "/scim/v2/a%00b/Users", scim_ct, "").await;
    assert_scim_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalidValue",
        "path parameter `source_system`",
    );
    let reply = raw(
        &app,
        Method::GET,
        "/scim/v2/home/Users?filter=userName%20eq%20%22a%00%22",
        scim_ct,
        "",
    )
    .await;
    assert_scim_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalidValue",
        "query parameter `filter`",
    );
    let reply = raw(
        &app,
        Method::POST,
        "/scim/v2/home/Users",
        scim_ct,
        r#"{"userName": "a\u0000"}"#,
    )
    .await;
    assert_scim_error(&reply, StatusCode::BAD_REQUEST, "invalidValue", "NUL");
    let reply = raw(&app, Method::POST,
        "/scim/v2/home/Users/.search",
        scim_ct,
        r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName eq \"a\\u0000\""}"#,
    )
    .await;
    assert_scim_error(&reply, StatusCode::BAD_REQUEST, "invalidFilter", "NUL");
    assert_eq!(app.fingerprint().await, before);
}

async fn json_deeper_than_the_limit_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "u").await;
    let group = app.group("home", "g").await;
    let op = app.start_full_update(&group).await;
    let before = app.fingerprint().await;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // The tags' array in an object, `depth - 2` arrays deep inside it.
    let tags = |depth: usize| {
        format!(
            r#"{{"type": "user", "source_system": "home", "identifier": "deep", "tags": [{}]}}"#,
            nested(depth - 2)
        )
    };
    for body in [nested(33), nested(126), nested(200), tags(33)] {
        raw(
            &app,
            Method::POST,
            "/api/v1/resources",
            "application/json",
            &body,
        )
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "more than 32 levels deep");
        raw(
            &app,
            Method::PATCH,
            &format!("/api/v1/resources/{user}"),
            "application/json",
            &body,
        )
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "more than 32 levels deep");
        let reply = raw(
            &app,
            Method::POST,
            "/scim/v2/home/Users",
            "application/scim+json",
            &body,
        )
        .await;
        assert_scim_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "invalidSyntax",
            "more than 32 levels deep",
        );
        let chunk = app.chunk(op, 0, &format!("{body}\n")).await;
        chunk.assert_problem(StatusCode::BAD_REQUEST, "could not be read");
        let reason = chunk.json["errors"][0]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.contains("more than 32 levels deep"),
            "{}",
            chunk.text
        );
    }
    // 32 levels are read (and refused for what they say, not for their depth).
    let reply = raw(
        &app,
        Method::POST,
        "/api/v1/resources",
        "application/json",
        &tags(32),
    )
    .await;
    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "tags");
    assert_eq!(app.fingerprint().await, before);
}

/// Times no backend stores alike: before PostgreSQL's range, past SQLite's four-digit text order,
/// year 0 (here by its offset).
const UNSTORABLE: [&str; 3] = [
    "-262143-01-01T00:00:00Z",
    "+10000-01-01T00:00:00Z",
    "0001-01-01T00:30:00+01:00",
];

async fn datetimes_outside_the_storable_range_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "u").await;
    let group = app.group("home", "g").await;
    let op = app
        .post(
            "/api/v1/operations",
            json!({"type": "full-update", "target": "resources", "source_system": "home"}),
        )
        .await;
    let op = op.json["id"].as_i64().expect("operation id");
    let before = app.fingerprint().await;
    let field = "outside the times roster stores";
    for at in UNSTORABLE {
        for (method, path, body) in [
            (
                Method::POST,
                "/api/v1/resources".to_owned(),
                json!({"type": "user", "source_system": "home", "identifier": "x", "expires_at": at}),
            ),
            (
                Method::PATCH,
                format!("/api/v1/resources/{user}"),
                json!({"expires_at": at}),
            ),
            (
                Method::POST,
                "/api/v1/tokens".to_owned(),
                json!({"name": "t", "scopes": ["read"], "expires_at": at}),
            ),
            (
                Method::POST,
                "/api/v1/operations".to_owned(),
                json!({"type": "partial-update", "target": "resources", "source_system": "home",
                    "resources": [{"identifier": "r", "type": "user", "expires_at": at}]}),
            ),
        ] {
            let reply = app.call(method.clone(), &path, Some(body)).await;
            reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, field);
            reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "expires_at");
        }
        let line = json!({"identifier": "r", "type": "user", "expires_at": at});
        let chunk = app.chunk(op, 0, &format!("{line}\n")).await;
        chunk.assert_problem(StatusCode::BAD_REQUEST, "could not be read");
        let reason = chunk.json["errors"][0]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains(field), "{}", chunk.text);
        let query = url::form_urlencoded::byte_serialize(at.as_bytes()).collect::<String>();
        for (path, param) in [
            (
                format!("/api/v1/resources?expires_before={query}"),
                "expires_before",
            ),
            (
                format!("/api/v1/groups/{group}/members?as_of={query}"),
                "as_of",
            ),
            (format!("/api/v1/audit?since={query}"), "since"),
            (format!("/api/v1/audit?until={query}"), "until"),
        ] {
            let reply = app.get(&path).await;
            reply.assert_problem(StatusCode::BAD_REQUEST, field);
            reply.assert_problem(StatusCode::BAD_REQUEST, param);
        }
        let filter =
            url::form_urlencoded::byte_serialize(format!("meta.created gt \"{at}\"").as_bytes())
                .collect::<String>();
        let reply = app
            .get(&format!("/scim/v2/home/Users?filter={filter}"))
            .await;
        assert_scim_error(&reply, StatusCode::BAD_REQUEST, "invalidFilter", at);
    }
    assert_eq!(app.fingerprint().await, before);

    // The last time roster stores is stored, and compared as a time on both backends: it is not
    // before 2030, and the account stays active.
    let last = app
        .create(
            json!({"type": "user", "source_system": "home", "identifier": "late",
                       "expires_at": "9999-12-31T23:59:59Z"}),
        )
        .await;
    let soon = app
        .get("/api/v1/resources?expires_before=2030-01-01T00:00:00Z")
        .await;
    assert_eq!(soon.status, StatusCode::OK, "{}", soon.text);
    assert_eq!(soon.json["items"], json!([]), "{}", soon.text);
    let later = app
        .get("/api/v1/resources?expires_before=9999-12-31T23:59:59.5Z")
        .await;
    assert_eq!(
        later.json["items"][0]["id"],
        last.as_str(),
        "{}",
        later.text
    );
    // Once the expiry sweep has deactivated an account that expired long ago, it has looked at
    // `last` too.
    let expired = app
        .create(
            json!({"type": "user", "source_system": "home", "identifier": "expired",
                   "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    let swept = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let read = app.get(&format!("/api/v1/resources/{expired}")).await;
            if read.json["active"] == false {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(swept.is_ok(), "the expiry sweep never ran");
    let read = app.get(&format!("/api/v1/resources/{last}")).await;
    assert_eq!(read.json["active"], true, "{}", read.text);
}

async fn forged_scim_cursor_times_are_invalid_cursors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for name in ["a", "b", "c"] {
        let reply = app
            .post("/scim/v2/home/Users", json!({"userName": name}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let before = app.fingerprint().await;
    use base64::Engine as _;
    let base64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for sort in ["meta.created", "meta.lastModified"] {
        let first = format!("/scim/v2/home/Users?sortBy={sort}&count=1");
        let page = app.get(&format!("{first}&cursor=")).await;
        let next = page.json["nextCursor"].as_str().expect("a next cursor");
        let mut state: serde_json::Value =
            serde_json::from_slice(&base64.decode(next).expect("base64")).expect("json");
        for key in [
            "-262143-01-01 00:00:00+00",
            "+10000-01-01 00:00:00+00",
            "0000-06-01 00:00:00+00:00",
            "2026-02-30 00:00:00+00",
            "yesterday",
        ] {
            state["a"]["key"] = json!(key);
            let forged = base64.encode(state.to_string());
            let reply = app.get(&format!("{first}&cursor={forged}")).await;
            assert_scim_error(&reply, StatusCode::BAD_REQUEST, "invalidCursor", "cursor");
        }
    }
    assert_eq!(app.fingerprint().await, before);
}

async fn purge_retention_is_bounded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("home", "u").await;
    let group = app.group("home", "g").await;
    app.put(&format!("/api/v1/groups/{group}/members/{user}"), None)
        .await;
    app.delete(&format!("/api/v1/groups/{group}/members/{user}"))
        .await;
    let before = app.fingerprint().await;
    for days in [36_501_u64, 4_294_967_295] {
        app.post(
            "/api/v1/operations",
            json!({"type": "purge", "retention_days": days}),
        )
        .await
        .assert_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("retention_days must be at most 36500 (a hundred years), not {days}"),
        );
    }
    // Not a u32 at all: refused as it is read.
    for days in ["4294967296", "-1", "1e400"] {
        let reply = raw(
            &app,
            Method::POST,
            "/api/v1/operations",
            "application/json",
            &format!(r#"{{"type": "purge", "retention_days": {days}}}"#),
        )
        .await;
        let status = if days == "1e400" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        reply.assert_problem(status, "");
    }
    assert_eq!(app.fingerprint().await, before);
    // A hundred years is taken, and keeps what ended just now.
    let kept = app
        .post(
            "/api/v1/operations",
            json!({"type": "purge", "retention_days": 36_500}),
        )
        .await;
    assert_eq!(kept.status, StatusCode::CREATED, "{}", kept.text);
    assert_eq!(kept.json["counts"]["removed"], 0, "{}", kept.text);
    assert_eq!(
        app.scalar("SELECT count(*) FROM group_member", &[]).await,
        1
    );
}

/// Past the edge's checks (here by calling the store directly), a value PostgreSQL refuses — a
/// NUL, a time out of its range — is the request's fault: a 400, not a 500.
async fn values_the_database_refuses_are_bad_requests(backend: Backend) {
    use roster::domain::audit::AuditFilter;
    use roster::domain::page::{ListKind, PageRequest};
    use roster::domain::resource::ResourceFilter;
    use roster::error::ApiError;
    use roster::store::StoreError;
    let app = TestApp::spawn(backend).await;
    let group = app.group("home", "g").await;
    let before = app.fingerprint().await;
    let page = PageRequest::parse(ListKind::Resources, None, None).unwrap();
    let nul = ResourceFilter {
        source_system: Some("a\0b".to_owned()),
        ..ResourceFilter::default()
    };
    let ancient = chrono::NaiveDate::from_ymd_opt(-262_143, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap()
        .and_utc();
    let audit = AuditFilter {
        since: Some(ancient),
        ..AuditFilter::default()
    };
    let results = [
        app.store.list_resources(&nul, &page).await.map(|_| ()),
        app.store
            .members_at(
                group.parse().map(roster::domain::ResourceId).unwrap(),
                ancient,
                None,
                &page,
            )
            .await
            .map(|_| ()),
        app.store
            .list_audit(
                &audit,
                &PageRequest::parse(ListKind::Audit, None, None).unwrap(),
            )
            .await
            .map(|_| ()),
    ];
    for result in results {
        match (backend, result) {
            // SQLite stores both, as text.
            (Backend::Sqlite, Ok(())) => {}
            (Backend::Postgres, Err(e @ StoreError::BadValue(_))) => {
                let api = ApiError::from(e);
                assert_eq!(api.status(), StatusCode::BAD_REQUEST);
                assert!(
                    api.to_string().contains("cannot store or compare a value"),
                    "{api}"
                );
            }
            (backend, other) => panic!("{backend:?}: {other:?}"),
        }
    }
    assert_eq!(app.fingerprint().await, before);
}

async fn client_request_ids_are_bounded_in_the_audit_trail(backend: Backend) {
    use tower::ServiceExt;
    let app = TestApp::spawn(backend).await;
    let long = "r".repeat(60_000);
    let just_too_long = "a".repeat(129);
    let cases: [(&[u8], bool); 6] = [
        (long.as_bytes(), false),
        (just_too_long.as_bytes(), false),
        (b"has spaces", false),
        (b"<script>", false),
        (b"id-\xff", false),
        (b"client-42:a.b_c", true),
    ];
    for (i, (sent, kept)) in cases.into_iter().enumerate() {
        let body = json!({"type": "user", "source_system": "home", "identifier": format!("u{i}")});
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/resources")
            .header(header::AUTHORIZATION, format!("Bearer {}", app.admin))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", sent)
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        if kept {
            assert_eq!(echoed.as_bytes(), sent);
        } else {
            assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed:.80}");
        }
        let stored = app
            .text(
                "SELECT request_id FROM audit WHERE action = 'resource.create' \
                 ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await;
        assert_eq!(stored.as_deref(), Some(echoed.as_str()));
    }
    let longest = app
        .scalar(
            "SELECT CAST(max(length(request_id)) AS BIGINT) FROM audit",
            &[],
        )
        .await;
    assert!(
        longest <= 128,
        "an audit row holds a request id of {longest} characters"
    );
}
