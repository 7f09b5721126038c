//! Customers over HTTP: creation with a generated external ID, listing, disabling,
//! onboarding documents and external-ID rotation.

use lanyard_server::auth::Role;
use lanyard_tests::TestApp;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn creating_a_customer_generates_its_external_id_and_audits_it() {
    let app = TestApp::spawn().await;
    let body = app.create_customer("acme-corp").await;
    assert_eq!(body["id"], "acme-corp");
    assert_eq!(body["status"], "pending");
    let ext = body["external_id"].as_str().unwrap();
    let hex = ext
        .strip_prefix("Lanyard-acme-corp-")
        .expect("documented prefix");
    assert_eq!(hex.len(), 32);
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );

    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_event WHERE customer_id = 'acme-corp'")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(actions, ["customer.create"]);
}

#[tokio::test]
async fn external_ids_are_unique_and_use_the_configured_prefix() {
    let app = TestApp::spawn_with(|s| s.external_id_prefix = Some("Acme".into())).await;
    let a = app.create_customer("one").await;
    let b = app.create_customer("two").await;
    assert!(a["external_id"].as_str().unwrap().starts_with("Acme-one-"));
    assert_ne!(a["external_id"], b["external_id"]);
}

#[tokio::test]
async fn a_caller_cannot_choose_the_external_id() {
    let app = TestApp::spawn().await;
    let before = app.snapshot().await;
    let (status, body) = app
        .admin(
            Method::POST,
            "/v1/customers",
            Some(json!({ "id": "acme-corp", "external_id": "mine" })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("external_id"),
        "{body}"
    );
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn duplicate_and_invalid_customer_ids_are_rejected_without_changes() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    let before = app.snapshot().await;
    let (status, body) = app
        .admin(
            Method::POST,
            "/v1/customers",
            Some(json!({ "id": "acme-corp" })),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    for bad in ["Acme", "a", "-acme", "acme_corp", "ac me", &"x".repeat(64)] {
        let (status, body) = app
            .admin(Method::POST, "/v1/customers", Some(json!({ "id": bad })))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], "id");
    }
    let (status, _) = app
        .admin(
            Method::POST,
            "/v1/customers",
            Some(json!({ "id": "ok-id", "display_name": "" })),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn list_and_show_respect_the_token_customer_limit() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    app.create_customer("globex").await;
    let limited = app.token(Role::Support, Some(vec!["acme-corp"])).await;
    let (status, body) = app
        .call(Method::GET, "/v1/customers", Some(&limited), None)
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme-corp"]);
    let (status, body) = app
        .call(Method::GET, "/v1/customers/globex", Some(&limited), None)
        .await;
    // Another customer reads exactly like one that does not exist.
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "customer 'globex' does not exist");
    let (status, body) = app
        .call(Method::GET, "/v1/customers/acme-corp", Some(&limited), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.admin(Method::GET, "/v1/customers/nobody", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app
        .admin(Method::GET, "/v1/customers?status=bogus", None)
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .admin(Method::GET, "/v1/customers?status=pending", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["customers"].as_array().unwrap().len(), 2);

    // A service lists the customers it may reach (a batch job loops over them).
    let service = app.token(Role::Service, Some(vec!["acme-corp"])).await;
    let (status, body) = app
        .call(Method::GET, "/v1/customers", Some(&service), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let listed = body["customers"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["id"], "acme-corp");
}

#[tokio::test]
async fn disabling_and_enabling_a_customer_is_recorded() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    let (status, body) = app
        .admin(Method::POST, "/v1/customers/acme-corp/disable", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "disabled");
    assert!(body["disabled_at"].is_string());
    let (_, body) = app
        .admin(Method::POST, "/v1/customers/acme-corp/enable", None)
        .await;
    assert_eq!(body["status"], "pending", "no verified role yet");
    app.register_role("acme-corp", "readonly").await;
    app.admin(Method::POST, "/v1/customers/acme-corp/disable", None)
        .await;
    let (_, body) = app
        .admin(Method::POST, "/v1/customers/acme-corp/enable", None)
        .await;
    assert_eq!(body["status"], "active");
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action IN ('customer.disable', 'customer.enable')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(n, 4);
}

#[tokio::test]
async fn onboarding_document_holds_the_trust_policy_and_template() {
    let app = TestApp::spawn_with(|s| {
        s.broker_principal_arn = Some("arn:aws:iam::999988887777:role/LanyardBroker".into());
        s.onboarding_template_url =
            Some("https://bucket.s3.amazonaws.com/customer-role.yaml".into());
    })
    .await;
    let customer = app.create_customer("acme-corp").await;
    let (status, doc) = app
        .admin(Method::GET, "/v1/customers/acme-corp/onboarding", None)
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["external_id"], customer["external_id"]);
    let statement = &doc["trust_policy"]["Statement"][0];
    assert_eq!(
        statement["Principal"]["AWS"],
        "arn:aws:iam::999988887777:role/LanyardBroker"
    );
    assert_eq!(
        statement["Condition"]["StringEquals"]["sts:ExternalId"],
        customer["external_id"]
    );
    let actions = statement["Action"].as_array().unwrap();
    for action in ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"] {
        assert!(actions.iter().any(|a| a == action), "{action}");
    }
    assert_eq!(
        doc["cloudformation_template"].as_str().unwrap(),
        include_str!("../../../deploy/aws/customer-role.yaml")
    );
    assert_eq!(
        doc["cloudformation_parameters"]["ExternalId"],
        customer["external_id"]
    );
    let link = doc["quick_create_url"].as_str().unwrap();
    assert!(
        link.contains("templateURL=https%3A%2F%2Fbucket.s3.amazonaws.com"),
        "{link}"
    );
    assert!(link.contains(&format!(
        "param_ExternalId={}",
        customer["external_id"].as_str().unwrap()
    )));

    let support = app.token(Role::Support, None).await;
    let (status, _) = app
        .call(
            Method::GET,
            "/v1/customers/acme-corp/onboarding",
            Some(&support),
            None,
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn onboarding_names_the_broker_identity_from_sts_when_not_configured() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    let (status, doc) = app
        .admin(Method::GET, "/v1/customers/acme-corp/onboarding", None)
        .await;
    assert_eq!(status, 200, "{doc}");
    // moto's GetCallerIdentity answers with its fixed account 123456789012.
    let principal = doc["broker_principal_arn"].as_str().unwrap();
    assert!(principal.contains("123456789012"), "{principal}");
    assert!(doc["quick_create_url"].is_null());
}

#[tokio::test]
async fn rotation_keeps_the_old_external_id_until_a_role_verifies_with_the_new_one() {
    let app = TestApp::spawn().await;
    let customer = app.create_customer("acme-corp").await;
    let old = customer["external_id"].as_str().unwrap().to_owned();
    let (status, rotated) = app
        .admin(
            Method::POST,
            "/v1/customers/acme-corp/external-id/rotate",
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["external_id"], old.as_str());
    let new = rotated["pending_external_id"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    let (_, doc) = app
        .admin(Method::GET, "/v1/customers/acme-corp/onboarding", None)
        .await;
    assert_eq!(doc["external_id"], new.as_str());
    assert_eq!(doc["accepted_external_ids"], json!([old, new]));
    assert_eq!(
        doc["trust_policy"]["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
        json!([old, new])
    );

    // moto accepts any external ID, so the pending one (tried first) verifies and becomes current.
    app.register_role("acme-corp", "readonly").await;
    let (_, after) = app
        .admin(Method::GET, "/v1/customers/acme-corp", None)
        .await;
    assert_eq!(after["external_id"], new.as_str());
    assert!(after["pending_external_id"].is_null());
    let retired: String = sqlx::query_scalar("SELECT state FROM external_id WHERE value = $1")
        .bind(&old)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(retired, "retired");
}

#[tokio::test]
async fn disabling_enabling_rotating_or_onboarding_an_unknown_customer_is_a_404_that_changes_nothing()
 {
    let app = TestApp::spawn().await;
    let before = app.snapshot().await;
    for path in [
        "/v1/customers/nobody/disable",
        "/v1/customers/nobody/enable",
        "/v1/customers/nobody/external-id/rotate",
    ] {
        let (status, body) = app.admin(Method::POST, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["detail"], "customer 'nobody' does not exist", "{path}");
    }
    for path in [
        "/v1/customers/nobody/onboarding",
        "/v1/customers/nobody/roles",
    ] {
        let (status, body) = app.admin(Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(app.snapshot().await, before);
}
