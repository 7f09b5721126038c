//! Authentication and the role × endpoint permission matrix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lanyard_server::auth::Role;
use lanyard_server::auth::token::{AUDIENCE, Claims, ISSUER, TokenKeys};
use lanyard_tests::TestApp;
use reqwest::Method;
use serde_json::json;

async fn assert_unauthorized(app: &TestApp, token: Option<&str>, why: &str) {
    let before = app.snapshot().await;
    let response = app
        .send(
            Method::POST,
            "/v1/customers",
            token,
            Some(json!({ "id": "sneaky" })),
        )
        .await;
    assert_eq!(response.status(), 401, "{why}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains(why), "{body}");
    assert_eq!(
        app.snapshot().await,
        before,
        "{why}: a rejected request changed rows"
    );
}

fn claims(role: &str, exp_offset: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "mallory".into(),
        role: role.into(),
        customers: None,
        jti: uuid::Uuid::new_v4(),
        iat: now - 10,
        exp: now + exp_offset,
    }
}

#[tokio::test]
async fn missing_malformed_expired_tampered_foreign_and_revoked_tokens_get_401() {
    let app = TestApp::spawn().await;
    assert_unauthorized(&app, None, "missing bearer token").await;
    assert_unauthorized(&app, Some("not-a-jwt"), "malformed").await;

    let keys = TokenKeys::load_or_generate(&app.config).unwrap();
    let expired = keys.sign(&claims("admin", -300)).unwrap();
    assert_unauthorized(&app, Some(&expired), "expired").await;

    // Same signature, payload changed to claim more: the signature no longer matches.
    let support = app.token(Role::Support, None).await;
    let parts: Vec<&str> = support.split('.').collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(engine.decode(parts[1]).unwrap())
        .unwrap()
        .replace("\"support\"", "\"admin\"");
    let tampered = format!("{}.{}.{}", parts[0], engine.encode(payload), parts[2]);
    assert_unauthorized(&app, Some(&tampered), "signature").await;

    let other_dir = tempfile::tempdir().unwrap();
    let mut other_config = app.config.clone();
    other_config.data_dir = other_dir.path().to_path_buf();
    let foreign = TokenKeys::load_or_generate(&other_config)
        .unwrap()
        .sign(&claims("admin", 300))
        .unwrap();
    assert_unauthorized(&app, Some(&foreign), "signature").await;

    // Signed with the right key but never recorded (e.g. a leaked key used offline).
    let unrecorded = keys.sign(&claims("admin", 300)).unwrap();
    assert_unauthorized(&app, Some(&unrecorded), "not known").await;

    // A token in use (so cached by the server) stops working within 1 s of its revocation,
    // even when the revocation comes from elsewhere (here: straight in the database).
    let admin2 = app.token(Role::Admin, None).await;
    let (status, _) = app
        .call(Method::GET, "/v1/customers", Some(&admin2), None)
        .await;
    assert_eq!(status, 200);
    let jti = keys.verify(&admin2).unwrap().jti;
    let mut conn = app.db.acquire().await.unwrap();
    lanyard_server::db::tokens::revoke(&mut conn, jti)
        .await
        .unwrap();
    drop(conn);
    let revoked = lanyard_tests::eventually(std::time::Duration::from_secs(1), || async {
        app.call(Method::GET, "/v1/customers", Some(&admin2), None)
            .await
            .0
            == 401
    })
    .await;
    assert!(revoked, "the revoked token still worked after 1 s");
    assert_unauthorized(&app, Some(&admin2), "revoked").await;
}

/// Every endpoint against every role: 403 where the role may not act, never 401 or 5xx.
#[tokio::test]
async fn each_role_gets_exactly_the_endpoints_it_is_allowed() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    app.register_role("acme-corp", "readonly").await;
    let role_body = json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" });
    // (method, path, body, roles allowed besides admin)
    let endpoints: Vec<(Method, &str, Option<serde_json::Value>, Vec<Role>)> = vec![
        (
            Method::GET,
            "/v1/customers",
            None,
            vec![Role::Support, Role::Auditor],
        ),
        (
            Method::GET,
            "/v1/customers/acme-corp",
            None,
            vec![Role::Support, Role::Auditor],
        ),
        (
            Method::GET,
            "/v1/customers/acme-corp/roles",
            None,
            vec![Role::Support, Role::Auditor],
        ),
        (
            Method::GET,
            "/v1/customers/acme-corp/roles/readonly",
            None,
            vec![Role::Support, Role::Auditor],
        ),
        (
            Method::GET,
            "/v1/customers/acme-corp/onboarding",
            None,
            vec![],
        ),
        (
            Method::POST,
            "/v1/customers",
            Some(json!({ "id": "new-one" })),
            vec![],
        ),
        (
            Method::POST,
            "/v1/customers/acme-corp/disable",
            None,
            vec![],
        ),
        (Method::POST, "/v1/customers/acme-corp/enable", None, vec![]),
        (
            Method::POST,
            "/v1/customers/acme-corp/external-id/rotate",
            None,
            vec![],
        ),
        (
            Method::PUT,
            "/v1/customers/acme-corp/roles/readonly",
            Some(role_body.clone()),
            vec![],
        ),
        (
            Method::POST,
            "/v1/customers/acme-corp/roles/readonly/verify",
            None,
            vec![],
        ),
        (Method::GET, "/v1/audit", None, vec![Role::Auditor]),
        (
            Method::GET,
            "/v1/audit?format=csv",
            None,
            vec![Role::Auditor],
        ),
    ];
    for role in [Role::Support, Role::Service, Role::Auditor, Role::Admin] {
        let token = app.token(role, None).await;
        for (method, path, body, allowed) in &endpoints {
            let (status, problem) = app
                .call(method.clone(), path, Some(&token), body.clone())
                .await;
            let may = role == Role::Admin || allowed.contains(&role);
            if may {
                assert!(
                    (200..300).contains(&status),
                    "{role:?} {method} {path}: {status} {problem}"
                );
            } else {
                assert_eq!(status, 403, "{role:?} {method} {path}: {problem}");
            }
        }
        // Undo the creation so the next role's run sees the same state.
        sqlx::query("DELETE FROM customer WHERE id = 'new-one'")
            .execute(&app.db)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn customer_limited_admin_tokens_cannot_reach_other_customers() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    app.create_customer("globex").await;
    let limited = app.token(Role::Admin, Some(vec!["acme-corp"])).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/customers/globex/disable",
            Some(&limited),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/customers",
            Some(&limited),
            Some(json!({ "id": "initech" })),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/customers/acme-corp/disable",
            Some(&limited),
            None,
        )
        .await;
    assert_eq!(status, 200);
}
