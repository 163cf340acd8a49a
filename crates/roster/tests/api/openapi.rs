//! The OpenAPI document describes every route, and every documented route is served.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::{Method, StatusCode};
use std::collections::BTreeSet;

on_both_backends!(
    openapi_lists_every_route,
    every_documented_route_is_served,
    docs_page_renders,
    health_and_readiness_answer,
    every_refusal_is_documented_with_its_body,
);

const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/api/v1/resources"),
    ("post", "/api/v1/resources"),
    ("get", "/api/v1/resources/lookup"),
    ("get", "/api/v1/resources/{id}"),
    ("patch", "/api/v1/resources/{id}"),
    ("delete", "/api/v1/resources/{id}"),
    ("post", "/api/v1/resources/{id}/restore"),
    ("get", "/api/v1/resources/{id}/groups"),
    ("get", "/api/v1/groups/{id}/members"),
    ("get", "/api/v1/groups/{id}/members/{member_id}"),
    ("put", "/api/v1/groups/{id}/members/{member_id}"),
    ("delete", "/api/v1/groups/{id}/members/{member_id}"),
    ("get", "/api/v1/groups/{id}/members/{member_id}/paths"),
    ("get", "/api/v1/groups/cycles"),
    ("get", "/api/v1/operations"),
    ("get", "/api/v1/operations/{id}"),
    ("post", "/api/v1/operations"),
    ("delete", "/api/v1/operations/{id}"),
    ("put", "/api/v1/operations/{id}/chunks/{n}"),
    ("post", "/api/v1/operations/{id}/complete"),
    ("get", "/api/v1/operations/{id}/preview"),
    ("post", "/api/v1/operations/{id}/approve"),
    ("post", "/api/v1/operations/{id}/reject"),
    ("get", "/api/v1/operations/{id}/rejections"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("get", "/api/v1/tokens/{id}"),
    ("delete", "/api/v1/tokens/{id}"),
    ("get", "/api/v1/audit"),
    ("put", "/api/v1/resources/{id}/prime"),
    ("put", "/api/v1/resources/{id}/parent"),
    ("get", "/api/v1/resources/{id}/identity"),
    ("get", "/api/v1/resources/{id}/related"),
    ("post", "/api/v1/resources/{id}/actions/deactivate"),
    ("post", "/api/v1/resources/{id}/actions/activate"),
    ("get", "/api/v1/sources/{source_system}"),
    ("put", "/api/v1/sources/{source_system}"),
    ("post", "/api/v1/unified-groups"),
    ("get", "/api/v1/unified-groups/{id}/links"),
    ("put", "/api/v1/unified-groups/{id}/links/{group_id}"),
    ("delete", "/api/v1/unified-groups/{id}/links/{group_id}"),
    ("get", "/api/v1/unified-groups/{id}/members"),
    ("get", "/api/v1/unified-groups/{id}/plan"),
    ("get", "/api/v1/correlation/rules"),
    ("post", "/api/v1/correlation/rules"),
    ("put", "/api/v1/correlation/rules/{id}"),
    ("delete", "/api/v1/correlation/rules/{id}"),
    ("post", "/api/v1/correlation/runs"),
    ("get", "/api/v1/correlation/cases"),
    ("get", "/api/v1/changes"),
    ("get", "/api/v1/changes/stream"),
    ("get", "/api/v1/changes/head"),
    ("get", "/api/v1/export"),
    ("get", "/api/v1/resources/{id}/history"),
    ("post", "/api/v1/subscriptions"),
    ("get", "/api/v1/subscriptions"),
    ("get", "/api/v1/subscriptions/{id}"),
    ("delete", "/api/v1/subscriptions/{id}"),
    ("post", "/api/v1/subscriptions/{id}/resume"),
    ("get", "/scim/v2/{source_system}/Users"),
    ("post", "/scim/v2/{source_system}/Users"),
    ("get", "/scim/v2/{source_system}/Users/{id}"),
    ("put", "/scim/v2/{source_system}/Users/{id}"),
    ("patch", "/scim/v2/{source_system}/Users/{id}"),
    ("delete", "/scim/v2/{source_system}/Users/{id}"),
    ("get", "/scim/v2/{source_system}/Groups"),
    ("post", "/scim/v2/{source_system}/Groups"),
    ("get", "/scim/v2/{source_system}/Groups/{id}"),
    ("put", "/scim/v2/{source_system}/Groups/{id}"),
    ("patch", "/scim/v2/{source_system}/Groups/{id}"),
    ("delete", "/scim/v2/{source_system}/Groups/{id}"),
    ("post", "/scim/v2/{source_system}/.search"),
    ("post", "/scim/v2/{source_system}/Bulk"),
    ("post", "/scim/v2/{source_system}/Users/.search"),
    ("post", "/scim/v2/{source_system}/Groups/.search"),
    ("get", "/scim/v2/{source_system}/ServiceProviderConfig"),
    ("get", "/scim/v2/{source_system}/ResourceTypes"),
    ("get", "/scim/v2/{source_system}/Schemas"),
    ("get", "/scim/v2/{source_system}/ResourceTypes/{id}"),
    ("get", "/scim/v2/{source_system}/Schemas/{id}"),
    ("get", "/metrics"),
];

/// Every (method, path) pair the OpenAPI document lists.
pub async fn documented_routes(app: &TestApp) -> BTreeSet<(String, String)> {
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.json["openapi"], "3.1.0");
    let mut routes = BTreeSet::new();
    for (path, item) in doc.json["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                routes.insert((method.clone(), path.clone()));
            }
        }
    }
    routes
}

async fn openapi_lists_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let documented = documented_routes(&app).await;
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);
}

async fn every_documented_route_is_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = uuid::Uuid::now_v7();
    for (method, path) in documented_routes(&app).await {
        let concrete = path
            .replace("{id}", &id.to_string())
            .replace("{member_id}", &id.to_string())
            .replace("{n}", "0");
        let concrete = if concrete.ends_with("/operations/") {
            concrete
        } else {
            concrete.replace(&format!("/operations/{id}"), "/operations/1")
        };
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let reply = app.call(method.clone(), &concrete, None).await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(
            !reply.text.contains("there is no route"),
            "{method} {path} is documented but not routed"
        );
        assert!(
            !reply.status.is_server_error(),
            "{method} {path}: {}",
            reply.text
        );
    }
}

async fn docs_page_renders(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let page = app.call_as(None, Method::GET, "/docs/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.text.contains("swagger"), "{}", page.text);
    let init = app
        .call_as(None, Method::GET, "/docs/swagger-initializer.js", None)
        .await;
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
}

async fn health_and_readiness_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let health = app.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = app.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(ready.json["backend"], expected);
}

/// Every refusal an operation documents carries its body: a problem document under `/api/v1`, a
/// SCIM error under `/scim/v2`; every secured operation documents 401 and 403, and every
/// reference in the document resolves.
async fn every_refusal_is_documented_with_its_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let document = app.get("/openapi.json").await.json;
    let mut pointers = Vec::new();
    collect_refs(&document, &mut pointers);
    for pointer in pointers {
        assert!(
            document.pointer(&pointer).is_some(),
            "{pointer} does not resolve"
        );
    }
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let (media, schema) = if path.starts_with("/scim/") {
            ("application/scim+json", "#/components/schemas/ScimError")
        } else {
            ("application/problem+json", "#/components/schemas/Problem")
        };
        for (method, operation) in item.as_object().expect("item") {
            let responses = operation["responses"].as_object().expect("responses");
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if secured {
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
            }
            for (status, response) in responses.iter().filter(|(s, _)| s.as_str() >= "400") {
                let response = response["$ref"]
                    .as_str()
                    .and_then(|r| document.pointer(r.trim_start_matches('#')))
                    .unwrap_or(response);
                let content = response["content"].as_object().expect("content");
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    vec![media],
                    "{method} {path} {status}"
                );
                assert_eq!(
                    content[media]["schema"]["$ref"], schema,
                    "{method} {path} {status}"
                );
            }
        }
    }
}

fn collect_refs(value: &serde_json::Value, pointers: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(serde_json::Value::as_str) {
                pointers.push(r.trim_start_matches('#').to_owned());
            }
            map.values().for_each(|v| collect_refs(v, pointers));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, pointers)),
        _ => {}
    }
}
