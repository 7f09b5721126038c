//! Authentication and the role × endpoint permission matrix.

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
        nbf: None,
        exp: now + exp_offset,
        src: None,
    }
}

#[tokio::test]
async fn missing_malformed_expired_tampered_foreign_and_revoked_tokens_get_401() {
    // Token state is kept for a minute: only the database's notification can make the
    // revocation below take effect within 1 s.
    let app = TestApp::spawn_with(|s| s.auth_cache_ms = Some(60_000)).await;
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

/// A token signed with the broker's own key whose claims say something else than its
/// record (another role, subject, customer limit or expiry), or that is dated ahead, is
/// refused: a token means what its row says.
#[tokio::test]
async fn tokens_that_disagree_with_their_record_or_are_dated_ahead_get_401() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    let keys = TokenKeys::load(&app.config).unwrap();
    let support = app
        .token_for(
            "sam",
            Role::Support,
            Some(vec!["acme-corp"]),
            std::time::Duration::from_secs(3600),
        )
        .await;
    let recorded = keys.verify(&support).unwrap();
    let (status, _) = app
        .call(Method::GET, "/v1/customers", Some(&support), None)
        .await;
    assert_eq!(status, 200, "the token as issued works");
    let forged = |edit: &dyn Fn(&mut Claims)| {
        let mut claims = recorded.clone();
        edit(&mut claims);
        keys.sign(&claims).unwrap()
    };
    for (why, token) in [
        ("role", forged(&|c| c.role = "admin".into())),
        ("subject", forged(&|c| c.sub = "root".into())),
        ("customers", forged(&|c| c.customers = None)),
        ("expiry", forged(&|c| c.exp += 86_400)),
    ] {
        let response = app
            .send(Method::GET, "/v1/customers", Some(&token), None)
            .await;
        assert_eq!(
            response.status(),
            401,
            "a token with another {why} was accepted"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("does not match"),
            "{why}: {body}"
        );
    }
    let now = chrono::Utc::now().timestamp();
    assert_unauthorized(
        &app,
        Some(&forged(&|c| c.iat = now + 3600)),
        "not valid yet",
    )
    .await;
    assert_unauthorized(
        &app,
        Some(&forged(&|c| c.nbf = Some(now + 3600))),
        "not valid yet",
    )
    .await;
    // Within the clock leeway, a little ahead is fine.
    let token = forged(&|c| c.nbf = Some(now + 5));
    let (status, _) = app
        .call(Method::GET, "/v1/customers", Some(&token), None)
        .await;
    assert_eq!(status, 200);
}

/// The statuses a role gets, in the order support, service, auditor, admin.
type Expect = [u16; 4];
const ROLES: [Role; 4] = [Role::Support, Role::Service, Role::Auditor, Role::Admin];

/// One row of the role matrix: an operation of the OpenAPI document (method and path
/// template), the request made for it, and what each role gets.
struct Check {
    method: Method,
    template: &'static str,
    /// The path with its parameters filled in (`{sid}` is alice's session of the run).
    path: String,
    body: Option<serde_json::Value>,
    expect: Expect,
}

/// Every operation of the OpenAPI document: a route added without a row here fails
/// `each_role_gets_exactly_the_operations_of_the_document_it_is_allowed`.
fn matrix(sid: &str) -> Vec<Check> {
    const OK: u16 = 200;
    const NEW: u16 = 201;
    let role_body = json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" });
    let support_session = json!({
        "kind": "support", "customer": "acme-corp", "role": "readonly",
        "case_id": "CS-1", "reason": "matrix"
    });
    let customer_session =
        json!({ "kind": "customer", "customer": "acme-corp", "role": "readonly" });
    let check = |method: Method,
                 template: &'static str,
                 path: &str,
                 body: Option<serde_json::Value>,
                 expect: Expect| Check {
        method,
        template,
        path: path.replace("{sid}", sid),
        body,
        expect,
    };
    vec![
        check(Method::GET, "/healthz", "/healthz", None, [OK, OK, OK, OK]),
        check(Method::GET, "/readyz", "/readyz", None, [OK, OK, OK, OK]),
        check(
            Method::GET,
            "/v1/auth/whoami",
            "/v1/auth/whoami",
            None,
            [OK, OK, OK, OK],
        ),
        // The token exchange takes no bearer token (the subject token is the credential):
        // whatever the role, a request without the form is 415, and this broker trusts no
        // issuer (tests/tests/api/identity.rs exchanges real tokens).
        check(
            Method::POST,
            "/v1/auth/token",
            "/v1/auth/token",
            None,
            [415, 415, 415, 415],
        ),
        // Public too; this broker has no single sign-on.
        check(
            Method::GET,
            "/v1/auth/sso",
            "/v1/auth/sso",
            None,
            [404, 404, 404, 404],
        ),
        check(
            Method::GET,
            "/v1/customers",
            "/v1/customers",
            None,
            [OK, OK, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/customers/{id}",
            "/v1/customers/acme-corp",
            None,
            [OK, OK, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/customers/{id}/roles",
            "/v1/customers/acme-corp/roles",
            None,
            [OK, OK, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/customers/{id}/roles/{name}",
            "/v1/customers/acme-corp/roles/readonly",
            None,
            [OK, OK, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/customers/{id}/onboarding",
            "/v1/customers/acme-corp/onboarding",
            None,
            [403, 403, 403, OK],
        ),
        check(
            Method::POST,
            "/v1/customers",
            "/v1/customers",
            Some(json!({ "id": "new-one" })),
            [403, 403, 403, NEW],
        ),
        check(
            Method::POST,
            "/v1/customers/{id}/disable",
            "/v1/customers/acme-corp/disable",
            None,
            [403, 403, 403, OK],
        ),
        check(
            Method::POST,
            "/v1/customers/{id}/enable",
            "/v1/customers/acme-corp/enable",
            None,
            [403, 403, 403, OK],
        ),
        check(
            Method::PUT,
            "/v1/customers/{id}/approval",
            "/v1/customers/acme-corp/approval",
            Some(json!({ "requires_approval": false })),
            [403, 403, 403, OK],
        ),
        check(
            Method::POST,
            "/v1/customers/{id}/external-id/rotate",
            "/v1/customers/acme-corp/external-id/rotate",
            None,
            [403, 403, 403, OK],
        ),
        check(
            Method::PUT,
            "/v1/customers/{id}/roles/{name}",
            "/v1/customers/acme-corp/roles/readonly",
            Some(role_body),
            [403, 403, 403, OK],
        ),
        check(
            Method::POST,
            "/v1/customers/{id}/roles/{name}/verify",
            "/v1/customers/acme-corp/roles/readonly/verify",
            None,
            [403, 403, 403, OK],
        ),
        // Without required_actions and without a body: 400 for whoever may ask.
        check(
            Method::POST,
            "/v1/customers/{id}/roles/{name}/validate",
            "/v1/customers/acme-corp/roles/readonly/validate",
            None,
            [400, 400, 403, 400],
        ),
        check(
            Method::POST,
            "/v1/sessions",
            "/v1/sessions",
            Some(support_session),
            [NEW, 403, 403, NEW],
        ),
        check(
            Method::POST,
            "/v1/sessions",
            "/v1/sessions",
            Some(customer_session),
            [403, NEW, 403, NEW],
        ),
        check(
            Method::GET,
            "/v1/sessions",
            "/v1/sessions",
            None,
            [OK, OK, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/sessions/{id}",
            "/v1/sessions/{sid}",
            None,
            [404, 404, OK, OK],
        ),
        check(
            Method::POST,
            "/v1/sessions/{id}/credentials",
            "/v1/sessions/{sid}/credentials",
            None,
            [404, 404, 403, OK],
        ),
        check(
            Method::POST,
            "/v1/customers/{id}/credentials",
            "/v1/customers/acme-corp/credentials",
            None,
            [403, OK, 403, OK],
        ),
        check(
            Method::GET,
            "/v1/audit",
            "/v1/audit",
            None,
            [403, 403, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/audit",
            "/v1/audit?format=csv",
            None,
            [403, 403, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/audit",
            "/v1/audit?format=ndjson",
            None,
            [403, 403, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/reports/usage",
            "/v1/reports/usage",
            None,
            [403, 403, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/reports/usage",
            "/v1/reports/usage?customer=acme-corp",
            None,
            [403, 403, OK, OK],
        ),
        // Approvals: alice's session needs none (409 for whoever may decide).
        check(
            Method::POST,
            "/v1/sessions/{id}/approve",
            "/v1/sessions/{sid}/approve",
            None,
            [409, 403, 403, 409],
        ),
        check(
            Method::POST,
            "/v1/sessions/{id}/deny",
            "/v1/sessions/{sid}/deny",
            Some(json!({ "comment": "matrix" })),
            [409, 403, 403, 409],
        ),
        check(
            Method::GET,
            "/v1/approvals",
            "/v1/approvals",
            None,
            [OK, 403, 403, OK],
        ),
        // Another case than the session's: the close ends nothing the rows below use.
        check(
            Method::POST,
            "/v1/cases/{case_id}/close",
            "/v1/cases/CS-other/close",
            None,
            [403, 403, 403, OK],
        ),
        check(
            Method::GET,
            "/v1/webhooks",
            "/v1/webhooks",
            None,
            [403, 403, OK, OK],
        ),
        check(
            Method::GET,
            "/v1/webhooks/deliveries",
            "/v1/webhooks/deliveries",
            None,
            [403, 403, OK, OK],
        ),
        // Last: it ends the session the rows above use.
        check(
            Method::DELETE,
            "/v1/sessions/{id}",
            "/v1/sessions/{sid}",
            None,
            [404, 404, 403, OK],
        ),
    ]
}

/// The operations (method, path template) of the committed OpenAPI document.
fn documented_operations() -> std::collections::BTreeSet<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../../openapi/lanyard.json")).unwrap();
    let mut operations = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// Every operation of the OpenAPI document against every role: 403 where the role may not
/// act, 404 for a session the caller may not see, never 401 or 5xx. The matrix is checked
/// against the document first: an operation without a row (a new route) fails the test, and
/// so does a row for an operation the document does not have.
#[tokio::test]
async fn each_role_gets_exactly_the_operations_of_the_document_it_is_allowed() {
    let covered: std::collections::BTreeSet<(String, String)> = matrix("sid")
        .iter()
        .map(|c| (c.method.to_string(), c.template.to_owned()))
        .collect();
    let documented = documented_operations();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "operations without a row in the role matrix: {missing:?}"
    );
    let stale: Vec<_> = covered.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "matrix rows for operations the document lacks: {stale:?}"
    );

    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    app.register_role("acme-corp", "readonly").await;
    let alice = app
        .token_for(
            "alice",
            Role::Support,
            None,
            std::time::Duration::from_secs(3600),
        )
        .await;
    let support_session = json!({
        "kind": "support", "customer": "acme-corp", "role": "readonly",
        "case_id": "CS-1", "reason": "matrix"
    });
    for (i, role) in ROLES.into_iter().enumerate() {
        let token = app
            .token_for(
                &format!("{role:?}-user").to_lowercase(),
                role,
                None,
                std::time::Duration::from_secs(3600),
            )
            .await;
        // A live session of alice's for each role's run (the last row revokes it).
        let (status, session) = app
            .call(
                Method::POST,
                "/v1/sessions",
                Some(&alice),
                Some(support_session.clone()),
            )
            .await;
        assert_eq!(status, 201, "{session}");
        for check in matrix(session["id"].as_str().unwrap()) {
            let response = app
                .send(
                    check.method.clone(),
                    &check.path,
                    Some(&token),
                    check.body.clone(),
                )
                .await;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_eq!(
                status, check.expect[i],
                "{role:?} {} {}: {text}",
                check.method, check.path
            );
        }
        // Undo the creation so the next role's run sees the same state.
        sqlx::query("DELETE FROM customer WHERE id = 'new-one'")
            .execute(&app.db)
            .await
            .unwrap();
    }
}

/// A token limited to some customers gets exactly the answer a customer that does not exist
/// gets, 404 with the same text, on every route that names a customer: it cannot even learn
/// which other customers there are.
#[tokio::test]
async fn customer_limited_tokens_get_404_for_every_other_customer_on_every_route() {
    let app = TestApp::spawn().await;
    for id in ["acme-corp", "globex"] {
        app.create_customer(id).await;
        app.register_role(id, "readonly").await;
    }
    let alice = app
        .token_for(
            "alice",
            Role::Support,
            None,
            std::time::Duration::from_secs(3600),
        )
        .await;
    let (status, globex_session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&alice),
            Some(json!({
                "kind": "support", "customer": "globex", "role": "readonly",
                "case_id": "CS-9", "reason": "scope"
            })),
        )
        .await;
    assert_eq!(status, 201, "{globex_session}");
    let sid = globex_session["id"].as_str().unwrap();
    let routes = |customer: &str| -> Vec<(Method, String, Option<serde_json::Value>, Vec<Role>)> {
        let all = ROLES.to_vec();
        vec![
            (
                Method::GET,
                format!("/v1/customers/{customer}"),
                None,
                all.clone(),
            ),
            (
                Method::GET,
                format!("/v1/customers/{customer}/roles"),
                None,
                all.clone(),
            ),
            (
                Method::GET,
                format!("/v1/customers/{customer}/roles/readonly"),
                None,
                all.clone(),
            ),
            (
                Method::GET,
                format!("/v1/customers/{customer}/onboarding"),
                None,
                vec![Role::Admin],
            ),
            (
                Method::POST,
                "/v1/customers".into(),
                Some(json!({ "id": customer })),
                vec![Role::Admin],
            ),
            (
                Method::POST,
                format!("/v1/customers/{customer}/disable"),
                None,
                vec![Role::Admin],
            ),
            (
                Method::POST,
                format!("/v1/customers/{customer}/external-id/rotate"),
                None,
                vec![Role::Admin],
            ),
            (
                Method::PUT,
                format!("/v1/customers/{customer}/roles/readonly"),
                Some(json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" })),
                vec![Role::Admin],
            ),
            (
                Method::POST,
                format!("/v1/customers/{customer}/roles/readonly/verify"),
                None,
                vec![Role::Admin],
            ),
            (
                Method::POST,
                "/v1/sessions".into(),
                Some(json!({
                    "kind": "support", "customer": customer, "role": "readonly",
                    "case_id": "CS-1", "reason": "scope"
                })),
                vec![Role::Support, Role::Admin],
            ),
            (
                Method::POST,
                "/v1/sessions".into(),
                Some(json!({ "kind": "customer", "customer": customer, "role": "readonly" })),
                vec![Role::Service, Role::Admin],
            ),
            (
                Method::GET,
                format!("/v1/sessions?customer={customer}"),
                None,
                all.clone(),
            ),
            (
                Method::POST,
                format!("/v1/customers/{customer}/credentials"),
                None,
                vec![Role::Service, Role::Admin],
            ),
            (
                Method::PUT,
                format!("/v1/customers/{customer}/approval"),
                Some(json!({ "requires_approval": false })),
                vec![Role::Admin],
            ),
            (
                Method::GET,
                format!("/v1/audit?customer={customer}"),
                None,
                vec![Role::Auditor, Role::Admin],
            ),
            (
                Method::GET,
                format!("/v1/audit?customer={customer}&format=ndjson"),
                None,
                vec![Role::Auditor, Role::Admin],
            ),
            (
                Method::GET,
                format!("/v1/reports/usage?customer={customer}"),
                None,
                vec![Role::Auditor, Role::Admin],
            ),
        ]
    };
    for role in ROLES {
        let limited = app.token(role, Some(vec!["acme-corp"])).await;
        for ((method, path, body, allowed), (_, missing_path, missing_body, _)) in
            routes("globex").into_iter().zip(routes("nonexistent"))
        {
            if !allowed.contains(&role) {
                continue;
            }
            let before = app.snapshot_except(&["audit_event"]).await;
            let (status, problem) = app
                .call(method.clone(), &path, Some(&limited), body.clone())
                .await;
            assert_eq!(status, 404, "{role:?} {method} {path}: {problem}");
            // The same token naming a customer that does not exist gets the same answer.
            let (missing_status, missing) = app
                .call(method.clone(), &missing_path, Some(&limited), missing_body)
                .await;
            assert_eq!(missing_status, 404);
            assert_eq!(
                problem["detail"].as_str().unwrap().replace("globex", "X"),
                missing["detail"]
                    .as_str()
                    .unwrap()
                    .replace("nonexistent", "X"),
                "{role:?} {method} {path}: an unseen customer reads like a missing one"
            );
            assert_eq!(
                app.snapshot_except(&["audit_event"]).await,
                before,
                "{role:?} {method} {path} changed something"
            );
        }
        // A session of another customer: as if it did not exist.
        for (method, path) in [
            (Method::GET, format!("/v1/sessions/{sid}")),
            (Method::POST, format!("/v1/sessions/{sid}/credentials")),
            (Method::DELETE, format!("/v1/sessions/{sid}")),
            (Method::POST, format!("/v1/sessions/{sid}/approve")),
            (Method::POST, format!("/v1/sessions/{sid}/deny")),
        ] {
            let (status, problem) = app.call(method.clone(), &path, Some(&limited), None).await;
            assert_eq!(status, 404, "{role:?} {method} {path}: {problem}");
        }
    }
    // The customer list leaves the others out.
    let limited = app.token(Role::Auditor, Some(vec!["acme-corp"])).await;
    let (_, list) = app
        .call(Method::GET, "/v1/customers", Some(&limited), None)
        .await;
    let ids: Vec<&str> = list["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme-corp"]);
}
