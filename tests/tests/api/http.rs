//! HTTP hygiene: problem+json for every error, body limit, request ids, health, metrics,
//! and the OpenAPI document kept in step with the code.

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
        serde_json::from_str(include_str!("../../../openapi/lanyard.json")).unwrap();
    assert_eq!(
        served, committed,
        "openapi/lanyard.json is stale: run `cargo run -p lanyard-server -- openapi > openapi/lanyard.json`"
    );
    assert_eq!(served["openapi"].as_str().unwrap(), "3.1.0");
    let docs = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

/// A client that announces a body larger than the limit gets 413 before it sends a byte of
/// it (no waiting for a body that may never come).
#[tokio::test]
async fn a_content_length_above_the_limit_gets_413_before_the_body_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A long request timeout: waiting for the body would answer 503 only after it.
    let app = TestApp::spawn_with(|s| s.request_timeout_secs = Some(300)).await;
    let before = app.snapshot().await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/customers HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 10000000\r\n\r\n",
        app.addr, app.admin_token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // Read the answer; the body is never sent.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"status\":") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("larger than the limit"), "{text}");
    assert_eq!(app.snapshot().await, before);
}

/// Text that people read later (a customer's display name, a session's reason) may not hold
/// control characters or invisible formatting characters that make it display as something
/// else; the problem names the field, and nothing changes.
#[tokio::test]
async fn free_text_with_bidi_overrides_or_zero_width_characters_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    app.register_role("acme-corp", "readonly").await;
    let before = app.snapshot().await;
    for name in ["Acme\u{202e}proC", "Ac\u{200b}me", "Acme\u{1b}[2J"] {
        let (status, body) = problem(
            app.send(
                Method::POST,
                "/v1/customers",
                Some(&app.admin_token),
                Some(json!({ "id": "globex", "display_name": name })),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{name:?}: {body}");
        assert_eq!(body["errors"][0]["field"], "display_name", "{body}");
    }
    for reason in ["fix \u{2066}uploads\u{2069}", "x\u{feff}", "red\u{1b}[31m"] {
        let (status, body) = problem(
            app.send(
                Method::POST,
                "/v1/sessions",
                Some(&app.admin_token),
                Some(json!({
                    "kind": "support", "customer": "acme-corp", "role": "readonly",
                    "case_id": "CS-1", "reason": reason
                })),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{reason:?}: {body}");
        assert_eq!(body["errors"][0]["field"], "reason", "{body}");
    }
    assert_eq!(app.snapshot().await, before);
}

/// A test leaves no database behind: the harness drops the one its application ran on.
#[tokio::test]
async fn a_test_app_drops_its_database_when_it_goes() {
    let app = TestApp::spawn().await;
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let server = sqlx::PgPool::connect(&lanyard_tests::database_server_url())
        .await
        .unwrap();
    let exists = |name: String| {
        let server = server.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            )
            .bind(name)
            .fetch_one(&server)
            .await
            .unwrap()
        }
    };
    assert!(exists(name.clone()).await);
    drop(app);
    assert!(!exists(name).await, "the test database is still there");
}
