//! Roles: registration validates the ARN and verifies the role against the AWS endpoint
//! (moto), with the external ID, plus the confused-deputy check without it.

use lanyard_server::auth::Role;
use lanyard_tests::{PrivateMoto, ServerProcess, TestApp, recorded_assume_roles, unique};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn registering_a_role_verifies_it_with_the_external_id_and_activates_the_customer() {
    let app = TestApp::spawn().await;
    let customer = unique("acme");
    let created = app.create_customer(&customer).await;
    let role = app.register_role(&customer, "readonly").await;
    assert_eq!(role["status"], "verified", "{role}");
    assert!(role["verified_at"].is_string());
    // moto enforces no trust policy: the check without the external ID gets through, and
    // with LANYARD_TRUST_CHECK=warn the role is activated but flagged.
    assert_eq!(role["trust_check"], "open");
    assert!(
        role["last_error"]
            .as_str()
            .unwrap()
            .contains("confused-deputy")
    );

    let (_, cust) = app
        .admin(Method::GET, &format!("/v1/customers/{customer}"), None)
        .await;
    assert_eq!(cust["status"], "active");

    // What the broker really sent: one AssumeRole with the external ID, one without.
    let calls = recorded_assume_roles(&format!("lanyard-verify-{customer}")).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0]["RoleArn"],
        "arn:aws:iam::111122223333:role/LanyardAccess"
    );
    assert_eq!(
        calls[0]["ExternalId"],
        created["external_id"].as_str().unwrap()
    );
    assert_eq!(calls[0]["SourceIdentity"], "lanyard-verify");
    assert_eq!(calls[0]["DurationSeconds"], "900");
    assert!(!calls[1].contains_key("ExternalId"));

    let (status, listed) = app
        .admin(
            Method::GET,
            &format!("/v1/customers/{customer}/roles"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["roles"][0]["name"], "readonly");
    let audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, outcome FROM audit_event WHERE customer_id = $1 AND role_name = 'readonly' ORDER BY id",
    )
    .bind(&customer)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            ("role.register".to_owned(), "success".to_owned()),
            ("role.verify".to_owned(), "success".to_owned())
        ]
    );
}

#[tokio::test]
async fn an_open_trust_policy_blocks_activation_when_the_trust_check_is_enforced() {
    let app = TestApp::spawn_with(|s| {
        s.trust_check = Some(lanyard_server::config::TrustCheckMode::Enforce)
    })
    .await;
    app.create_customer("acme-corp").await;
    let (status, role) = app
        .admin(
            Method::PUT,
            "/v1/customers/acme-corp/roles/readonly",
            Some(json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" })),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["status"], "failed");
    assert_eq!(role["trust_check"], "open");
    assert!(
        role["last_error"]
            .as_str()
            .unwrap()
            .contains("without the external ID")
    );
    let (_, cust) = app
        .admin(Method::GET, "/v1/customers/acme-corp", None)
        .await;
    assert_eq!(cust["status"], "pending");
    // The stored result is what GET shows.
    let (_, shown) = app
        .admin(Method::GET, "/v1/customers/acme-corp/roles/readonly", None)
        .await;
    assert_eq!(shown["last_error"], role["last_error"]);
    let code: Option<String> = sqlx::query_scalar(
        "SELECT error_code FROM audit_event WHERE action = 'role.verify' AND outcome = 'error'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(code.as_deref(), Some("TrustPolicyOpen"));
}

#[tokio::test]
async fn malformed_role_requests_are_rejected_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    let before = app.snapshot().await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "readonly",
            json!({ "role_arn": "arn:aws:iam::1111:role/X" }),
            400,
            "role_arn",
        ),
        (
            "readonly",
            json!({ "role_arn": "arn:aws:iam::111122223333:user/X" }),
            400,
            "role_arn",
        ),
        (
            "readonly",
            json!({ "role_arn": "not an arn" }),
            400,
            "role_arn",
        ),
        (
            "Bad Name",
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X" }),
            400,
            "name",
        ),
        (
            "readonly",
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X", "max_session_seconds": 60 }),
            400,
            "max_session_seconds",
        ),
        (
            "readonly",
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X", "session_kinds": [] }),
            400,
            "session_kinds",
        ),
        (
            "readonly",
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X", "session_policy": "allow all" }),
            400,
            "session_policy",
        ),
        (
            "readonly",
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X", "session_policy": { "Statement": [], "Junk": 1 } }),
            400,
            "session_policy",
        ),
        (
            "readonly",
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X", "session_policy": { "Statement": "AAA" } }),
            400,
            "session_policy",
        ),
        (
            // One character over the limit that leaves room for the broker's statement
            // within STS's 2,048 (the largest accepted reaches AssumeRole: sessions.rs).
            "readonly",
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X",
                    "session_policy": lanyard_tests::session_policy_of(1537) }),
            400,
            "session_policy",
        ),
        (
            // Found by the fuzzer: Postgres jsonb refuses U+0000, which used to give a 500.
            "readonly",
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X",
                    "session_policy": { "Statement": { "Effect": "Allow", "Sid": "a\u{0}b" } } }),
            400,
            "session_policy",
        ),
    ];
    for (name, body, want, field) in cases {
        let (status, problem) = app
            .admin(
                Method::PUT,
                &format!(
                    "/v1/customers/acme-corp/roles/{}",
                    urlencoding::encode(name)
                ),
                Some(body),
            )
            .await;
        assert_eq!(status, want, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    for (body, want) in [
        (
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X", "surprise": true }),
            422,
        ),
        (
            json!({ "role_arn": "arn:aws:iam::111122223333:role/X", "session_kinds": ["admin"] }),
            422,
        ),
        (json!({}), 422),
    ] {
        let (status, problem) = app
            .admin(
                Method::PUT,
                "/v1/customers/acme-corp/roles/readonly",
                Some(body),
            )
            .await;
        assert_eq!(status, want, "{problem}");
    }
    let (status, _) = app
        .admin(
            Method::PUT,
            "/v1/customers/nobody/roles/readonly",
            Some(json!({ "role_arn": "arn:aws:iam::111122223333:role/X" })),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn re_verification_runs_again_and_only_admins_may_ask() {
    let app = TestApp::spawn().await;
    let customer = unique("initech");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let (status, role) = app
        .admin(
            Method::POST,
            &format!("/v1/customers/{customer}/roles/readonly/verify"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["status"], "verified");
    assert_eq!(
        recorded_assume_roles(&format!("lanyard-verify-{customer}"))
            .await
            .len(),
        4
    );
    let support = app.token(Role::Support, None).await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/customers/{customer}/roles/readonly/verify"),
            Some(&support),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("/v1/customers/{customer}/roles/nope/verify"),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// With moto's IAM checks on, a role whose trust policy requires the external ID is assumed;
/// one that requires another external ID is denied, and the denial is stored and audited.
#[tokio::test]
async fn verification_against_enforced_trust_policies_reports_the_aws_error() {
    let moto = PrivateMoto::start().await;
    let root = ("testing", "testing");
    let (key_id, secret) = moto.user_allowed("broker", "sts:*");

    let data_dir = tempfile::tempdir().unwrap();
    let db_url = lanyard_tests::fresh_database_url();
    let env = [
        ("LANYARD_DATABASE_URL", db_url.as_str()),
        ("LANYARD_DATA_DIR", data_dir.path().to_str().unwrap()),
        ("LANYARD_AWS_ENDPOINT_URL", moto.url.as_str()),
        ("LANYARD_TRUST_CHECK", "warn"),
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_REGION", "us-east-1"),
    ];
    let server = ServerProcess::start(&env);
    let token = server.issue_token("ops", "admin");
    let http = reqwest::Client::new();
    let call = |method: Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, server.url(path)).bearer_auth(&token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, customer) = call(
        Method::POST,
        "/v1/customers",
        Some(json!({ "id": "acme-corp" })),
    )
    .await;
    assert_eq!(status, 201, "{customer}");
    let (_, doc) = call(Method::GET, "/v1/customers/acme-corp/onboarding", None).await;
    assert_eq!(
        doc["broker_principal_arn"],
        "arn:aws:iam::123456789012:user/broker"
    );

    // The customer creates the role with the onboarding trust policy (same moto account).
    let trust = doc["trust_policy"].to_string();
    let role = moto
        .aws(
            root,
            &[
                "iam",
                "create-role",
                "--role-name",
                "LanyardAccess",
                "--assume-role-policy-document",
                &trust,
            ],
        )
        .unwrap();
    let role_arn = role["Role"]["Arn"].as_str().unwrap().to_owned();
    let wrong = doc["trust_policy"].to_string().replace(
        customer["external_id"].as_str().unwrap(),
        "someone-elses-id",
    );
    let other = moto
        .aws(
            root,
            &[
                "iam",
                "create-role",
                "--role-name",
                "Other",
                "--assume-role-policy-document",
                &wrong,
            ],
        )
        .unwrap();
    let other_arn = other["Role"]["Arn"].as_str().unwrap().to_owned();

    moto.enable_auth().await;

    let (status, ok) = call(
        Method::PUT,
        "/v1/customers/acme-corp/roles/readonly",
        Some(json!({ "role_arn": role_arn })),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["status"], "verified", "{ok}");

    let (status, denied) = call(
        Method::PUT,
        "/v1/customers/acme-corp/roles/other",
        Some(json!({ "role_arn": other_arn })),
    )
    .await;
    assert_eq!(status, 200, "{denied}");
    assert_eq!(denied["status"], "failed");
    assert!(
        denied["last_error"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{denied}"
    );
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let code: Option<String> = sqlx::query_scalar(
        "SELECT error_code FROM audit_event WHERE action = 'role.verify' AND role_name = 'other'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(code.as_deref(), Some("AccessDenied"));
    // No secret from the broker's AWS keys reached the log.
    assert!(!server.log().contains(&secret));
}

/// STS as AWS answers for two roles: `Strict`, whose trust policy requires the customer's
/// external ID (AssumeRole without it, or with another, is AccessDenied), and `Open`, whose
/// trust policy does not. moto cannot play `Strict`: it allows a call without the external
/// ID whatever the policy says, so this stand-in answers by the request's form fields.
async fn sts_with_trust_policies(external_id: String) -> lanyard_tests::FakeBroker {
    use lanyard_tests::{FakeBroker, FakeReply};
    fn xml(status: u16, body: String) -> FakeReply {
        FakeReply {
            status,
            headers: vec![("content-type".into(), "text/xml".into())],
            body,
        }
    }
    FakeBroker::serve_requests(move |_, request| {
        let body = request.split("\r\n\r\n").nth(1).unwrap_or_default();
        let form: std::collections::HashMap<String, String> = body
            .split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                let v = urlencoding::decode(&v.replace('+', " ")).ok()?.into_owned();
                Some((k.to_owned(), v))
            })
            .collect();
        const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
        match form.get("Action").map(String::as_str) {
            Some("GetCallerIdentity") => xml(
                200,
                format!(
                    "<GetCallerIdentityResponse xmlns=\"{NS}\"><GetCallerIdentityResult>\
                     <Arn>arn:aws:iam::123456789012:user/broker</Arn>\
                     <UserId>AIDAEXAMPLE</UserId><Account>123456789012</Account>\
                     </GetCallerIdentityResult></GetCallerIdentityResponse>"
                ),
            ),
            Some("AssumeRole") => {
                let arn = form.get("RoleArn").cloned().unwrap_or_default();
                let strict = arn.ends_with("/Strict");
                if strict && form.get("ExternalId") != Some(&external_id) {
                    return xml(
                        403,
                        format!(
                            "<ErrorResponse xmlns=\"{NS}\"><Error><Type>Sender</Type>\
                             <Code>AccessDenied</Code><Message>User: \
                             arn:aws:iam::123456789012:user/broker is not authorized to \
                             perform: sts:AssumeRole on resource: {arn}</Message></Error>\
                             <RequestId>1</RequestId></ErrorResponse>"
                        ),
                    );
                }
                let name = form.get("RoleSessionName").cloned().unwrap_or_default();
                let expires = (chrono::Utc::now() + chrono::Duration::hours(1))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                xml(
                    200,
                    format!(
                        "<AssumeRoleResponse xmlns=\"{NS}\"><AssumeRoleResult>\
                         <AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:{name}</AssumedRoleId>\
                         <Arn>arn:aws:sts::111122223333:assumed-role/x/{name}</Arn>\
                         </AssumedRoleUser><Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId>\
                         <SecretAccessKey>c2VjcmV0</SecretAccessKey>\
                         <SessionToken>dG9rZW4=</SessionToken><Expiration>{expires}</Expiration>\
                         </Credentials></AssumeRoleResult><ResponseMetadata>\
                         <RequestId>2</RequestId></ResponseMetadata></AssumeRoleResponse>"
                    ),
                )
            }
            _ => xml(400, String::new()),
        }
    })
    .await
}

/// A role whose trust policy requires the external ID passes the trust check (the probe
/// without it is denied) and is verified even where the check is enforced; one whose trust
/// policy lets anyone in is `open`, and blocked when enforced.
#[tokio::test]
async fn a_trust_policy_that_requires_the_external_id_passes_the_trust_check() {
    // The customer (and so its external ID) first, on an app talking to moto; then the
    // instance under test, on the same database, talks to the stand-in STS.
    let a = TestApp::spawn().await;
    let customer = a.create_customer("acme-corp").await;
    let external_id = customer["external_id"].as_str().unwrap().to_owned();
    let sts = sts_with_trust_policies(external_id.clone()).await;
    let (key, db_url) = (
        a.data_dir.path().join("signing-key.pem"),
        a.database_url.clone(),
    );
    let app = TestApp::spawn_with(|s| {
        s.database_url = Some(db_url.as_str().into());
        s.signing_key_file = Some(key.clone());
        s.aws_endpoint_url = Some(sts.url.clone());
        s.trust_check = Some(lanyard_server::config::TrustCheckMode::Enforce);
    })
    .await;
    let register = |name: &'static str, role: &'static str| {
        let app = &app;
        async move {
            app.admin(
                Method::PUT,
                &format!("/v1/customers/acme-corp/roles/{name}"),
                Some(json!({ "role_arn": format!("arn:aws:iam::111122223333:role/{role}") })),
            )
            .await
        }
    };
    let (status, strict) = register("strict", "Strict").await;
    assert_eq!(status, 200, "{strict}");
    assert_eq!(strict["trust_check"], "passed", "{strict}");
    assert_eq!(strict["status"], "verified", "{strict}");
    let (status, open) = register("open", "Open").await;
    assert_eq!(status, 200, "{open}");
    assert_eq!(open["trust_check"], "open", "{open}");
    assert_eq!(open["status"], "failed", "{open}");

    // What the broker sent: the external ID with the verifying call, none with the probe.
    let strict_calls: Vec<String> = sts
        .requests()
        .into_iter()
        .filter(|r| r.contains("Action=AssumeRole&") && r.contains("role%2FStrict"))
        .collect();
    assert_eq!(strict_calls.len(), 2, "{strict_calls:#?}");
    let with_id = strict_calls
        .iter()
        .filter(|r| r.contains(&format!("ExternalId={external_id}")))
        .count();
    assert_eq!(with_id, 1, "{strict_calls:#?}");
}

/// required_actions are checked as the role, with iam:SimulatePrincipalPolicy (a stand-in:
/// moto lacks that one call), when the role is verified; the result is stored per action and
/// shown with the role. Ad-hoc checks name their own actions and are not stored.
#[tokio::test]
async fn required_actions_are_checked_as_the_role_and_the_result_kept_per_action() {
    let iam = lanyard_tests::IamStandIn::start().await;
    iam.decide("s3:GetObject", "allowed");
    iam.decide("s3:ListBucket", "allowed");
    iam.decide("s3:DeleteObject", "explicitDeny");
    let url = iam.url();
    let app = TestApp::spawn_with(|s| s.iam_endpoint_url = Some(url)).await;
    let id = unique("acme");
    app.create_customer(&id).await;
    let arn = "arn:aws:iam::111122223333:role/LanyardAccess";
    let (status, role) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{id}/roles/readonly"),
            Some(json!({
                "role_arn": arn,
                "required_actions": ["s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:DeleteObject"]
            })),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["status"], "verified", "{role}");
    let decisions: Vec<(String, String)> = role["validation"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("s3:GetObject".into(), "allowed".into()),
            ("s3:ListBucket".into(), "allowed".into()),
            ("s3:PutObject".into(), "implicit_deny".into()),
            ("s3:DeleteObject".into(), "explicit_deny".into()),
        ]
    );
    // Asked about the role, with credentials of the role (moto's ASIA… key), not the
    // broker's own.
    let asked = iam.received();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].policy_source_arn, arn);
    assert!(asked[0].access_key_id.starts_with("ASIA"), "{asked:?}");
    assert_eq!(
        recorded_assume_roles(&format!("lanyard-validate-{id}"))
            .await
            .len(),
        1
    );

    // A support engineer checks other actions now; nothing is stored.
    let alice = app
        .token_for(
            "alice",
            Role::Support,
            None,
            std::time::Duration::from_secs(3600),
        )
        .await;
    let (status, adhoc) = app
        .call(
            Method::POST,
            &format!("/v1/customers/{id}/roles/readonly/validate"),
            Some(&alice),
            Some(json!({ "actions": ["s3:ListBucket", "iam:CreateUser"] })),
        )
        .await;
    assert_eq!(status, 200, "{adhoc}");
    assert_eq!(adhoc["results"][1]["decision"], "implicit_deny");
    let (_, shown) = app
        .admin(
            Method::GET,
            &format!("/v1/customers/{id}/roles/readonly"),
            None,
        )
        .await;
    assert_eq!(
        shown["validation"], role["validation"],
        "ad-hoc results are not stored"
    );

    // Bad input: nothing asked of AWS, nothing changed.
    let before = app.snapshot().await;
    for body in [
        json!({ "actions": [] }),
        json!({ "actions": ["not an action"] }),
        json!({ "actions": ["s3:GetObject", "s3:getobject"] }),
    ] {
        let (status, problem) = app
            .call(
                Method::POST,
                &format!("/v1/customers/{id}/roles/readonly/validate"),
                Some(&alice),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body}: {problem}");
    }
    assert_eq!(app.snapshot().await, before);
    assert_eq!(iam.received().len(), 2);
    let auditor = app.token(Role::Auditor, None).await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/customers/{id}/roles/readonly/validate"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(status, 403);
}
