//! Operations: listed newest first, filtered by type and status, read one at a time.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use axum::http::StatusCode;

on_both_backends!(
    operations_are_listed_newest_first_and_filtered,
    unknown_operation_is_404,
);

async fn operations_are_listed_newest_first_and_filtered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.group("home", "eng").await;
    for i in 0..4 {
        let u = app.user("home", &format!("u{i}")).await;
        app.put(&format!("/api/v1/groups/{group}/members/{u}"), None)
            .await;
    }
    app.delete(&format!("/api/v1/resources/{group}")).await;

    let all = app.get("/api/v1/operations?limit=3").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let ids: Vec<i64> = all.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(all.json["items"][0]["type"], "delete");
    assert_eq!(all.json["items"][0]["counts"]["removed"], 4);
    let next = all.json["next"].as_str().unwrap();
    let rest = app
        .get(&format!("/api/v1/operations?limit=3&cursor={next}"))
        .await;
    assert_eq!(rest.json["items"].as_array().unwrap().len(), 2);
    assert!(rest.json["next"].is_null());

    let partial = app.get("/api/v1/operations?type=partial-update").await;
    assert_eq!(partial.json["items"].as_array().unwrap().len(), 4);
    let complete = app.get("/api/v1/operations?status=complete").await;
    assert_eq!(complete.json["items"].as_array().unwrap().len(), 5);
    let running = app.get("/api/v1/operations?status=running").await;
    assert_eq!(running.json["items"].as_array().unwrap().len(), 0);
    app.get("/api/v1/operations?status=sleeping")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "sleeping");
}

async fn unknown_operation_is_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.get("/api/v1/operations/42")
        .await
        .assert_problem(StatusCode::NOT_FOUND, "42");
    app.get("/api/v1/operations/forty-two")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "forty-two");
}
