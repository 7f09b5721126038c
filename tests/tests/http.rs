//! HTTP hygiene: problem+json for every error, body limit, request ids, health, metrics,
//! and the OpenAPI document kept in step with the code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lanyard_tests::TestApp;
use reqwest::Method;
use serde_json::json;

async fn problem(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:lanyard:problem:")
    );
    (status, body)
}

#[tokio::test]
async fn oversized_malformed_and_mistyped_bodies_get_problem_documents_and_change_nothing() {
    let app = TestApp::spawn().await;
    let before = app.snapshot().await;
    let big = json!({ "id": "acme-corp", "display_name": "x".repeat(1024 * 1024) });
    let (status, _) = problem(
        app.send(
            Method::POST,
            "/v1/customers",
            Some(&app.admin_token),
            Some(big),
        )
        .await,
    )
    .await;
    assert_eq!(status, 413);

    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = app
            .http
            .post(app.url("/v1/customers"))
            .bearer_auth(&app.admin_token)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let (status, _) = problem(raw("{\"id\": ", Some("application/json")).await.unwrap()).await;
    assert_eq!(status, 400);
    let (status, _) = problem(raw("{\"id\": \"acme-corp\"}", None).await.unwrap()).await;
    assert_eq!(status, 415);
    let (status, _) = problem(raw("[1, 2]", Some("application/json")).await.unwrap()).await;
    assert_eq!(status, 422);
    let (status, _) = problem(raw("{\"id\": 7}", Some("application/json")).await.unwrap()).await;
    assert_eq!(status, 422);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_problem_documents() {
    let app = TestApp::spawn().await;
    let (status, _) = problem(app.send(Method::GET, "/v1/nothing-here", None, None).await).await;
    assert_eq!(status, 404);
    let (status, _) = problem(
        app.send(
            Method::DELETE,
            "/v1/customers",
            Some(&app.admin_token),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 405);
    let (status, body) = problem(
        app.send(
            Method::GET,
            "/v1/customers?surprise=1",
            Some(&app.admin_token),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_and_named_in_problems() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-abc-123");
    let response = app.send(Method::GET, "/v1/customers", None, None).await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    // Readiness follows the database: close the pool's database and it reports 503.
    app.db.close().await;
    let (status, _) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_labelled_by_route() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    app.admin(Method::GET, "/v1/customers/acme-corp", None)
        .await;
    let text = reqwest::get(format!("http://{}/metrics", app.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"lanyard_http_requests_total{method="GET",route="/v1/customers/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("lanyard_http_request_duration_seconds_bucket"));
    assert!(
        !text.contains("acme-corp"),
        "raw paths must not become labels"
    );
    let (status, _) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 404, "metrics are not on the API listener");
}

#[tokio::test]
async fn served_openapi_document_equals_the_committed_file() {
    let app = TestApp::spawn().await;
    let served: serde_json::Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value =
        serde_json::from_str(include_str!("../../openapi/lanyard.json")).unwrap();
    assert_eq!(
        served, committed,
        "openapi/lanyard.json is stale: run `cargo run -p lanyard-server -- openapi > openapi/lanyard.json`"
    );
    assert_eq!(served["openapi"].as_str().unwrap(), "3.1.0");
    let docs = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}
