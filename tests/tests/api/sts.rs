//! AWS STS failing the broker: unreachable, stuck, throttling. What moto cannot be made to do
//! comes from a fault proxy in front of it, or from a stand-in that answers as STS does.

use std::time::Duration;

use lanyard_server::auth::Role;
use lanyard_tests::fault::{socket_of, through};
use lanyard_tests::{FakeBroker, FakeReply, FaultProxy, TestApp, moto_url};
use reqwest::Method;
use serde_json::{Value, json};

/// An app whose STS (moto) is reached through a fault proxy, a customer with a verified role,
/// alice's support token and a session of hers that has no cached credentials yet.
async fn app_behind_sts_proxy(request_timeout_secs: u64) -> (TestApp, FaultProxy, String, Value) {
    let proxy = FaultProxy::start(socket_of(&moto_url(), 80).await).await;
    let endpoint = through(&moto_url(), proxy.addr());
    let app = TestApp::spawn_with(|s| {
        s.aws_endpoint_url = Some(endpoint);
        s.request_timeout_secs = Some(request_timeout_secs);
    })
    .await;
    let (alice, session) = support_session(&app).await;
    (app, proxy, alice, session)
}

async fn support_session(app: &TestApp) -> (String, Value) {
    let customer = format!("acme-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let alice = app
        .token_for("alice", Role::Support, None, Duration::from_secs(3600))
        .await;
    let (status, session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&alice),
            Some(json!({
                "kind": "support", "customer": customer, "role": "readonly",
                "case_id": "CS-1", "reason": "sts faults"
            })),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    (alice, session)
}

async fn credentials(app: &TestApp, token: &str, session: &Value) -> (u16, Value) {
    let path = format!(
        "/v1/sessions/{}/credentials",
        session["id"].as_str().unwrap()
    );
    app.call(Method::POST, &path, Some(token), None).await
}

/// The audit row of the last credential request: outcome and error code.
async fn last_outcome(app: &TestApp) -> (String, Option<String>) {
    sqlx::query_as(
        "SELECT outcome, error_code FROM audit_event
         WHERE action = 'credentials.issue' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_unreachable_sts_is_a_503_naming_it_and_the_broker_recovers_without_a_restart() {
    let (app, proxy, alice, session) = app_behind_sts_proxy(30).await;
    proxy.cut().await;
    let (status, problem) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["aws_error_code"], "Unreachable", "{problem}");
    assert!(problem.get("AccessKeyId").is_none());
    assert_eq!(
        last_outcome(&app).await,
        ("error".to_owned(), Some("Unreachable".to_owned()))
    );
    proxy.restore();
    let (status, creds) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200, "{creds}");
}

#[tokio::test]
async fn a_stuck_sts_answers_503_at_the_request_timeout() {
    let (app, proxy, alice, session) = app_behind_sts_proxy(2).await;
    proxy.hold();
    let (status, problem) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:lanyard:problem:timeout", "{problem}");
    assert!(problem.get("AccessKeyId").is_none());
    proxy.restore();
    let answered = lanyard_tests::eventually(Duration::from_secs(20), || async {
        credentials(&app, &alice, &session).await.0 == 200
    })
    .await;
    assert!(
        answered,
        "the broker did not recover once STS answered again"
    );
}

#[tokio::test]
async fn sts_throttling_is_a_503_with_its_code_and_no_credentials() {
    let throttling = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
        <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>\
        </Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>";
    let sts = FakeBroker::serve(move |_| FakeReply {
        status: 400,
        headers: vec![("content-type".into(), "text/xml".into())],
        body: throttling.to_owned(),
    })
    .await;
    // The role is registered (verified against moto) by one instance; another instance on
    // the same database, whose STS throttles, is asked for the credentials.
    let a = TestApp::spawn().await;
    let (alice, session) = support_session(&a).await;
    let key = a.data_dir.path().join("signing-key.pem");
    let db_url = a.database_url.clone();
    let b = TestApp::spawn_with(|s| {
        s.database_url = Some(db_url.as_str().into());
        s.signing_key_file = Some(key.clone());
        s.aws_endpoint_url = Some(sts.url.clone());
    })
    .await;
    let response = b
        .send(
            Method::POST,
            &format!(
                "/v1/sessions/{}/credentials",
                session["id"].as_str().unwrap()
            ),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(response.status(), 503);
    // When to ask again: after the SDK's own retries, two seconds.
    assert_eq!(response.headers()["retry-after"], "2");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["aws_error_code"], "Throttling", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Rate exceeded")
    );
    assert_eq!(
        last_outcome(&b).await,
        ("error".to_owned(), Some("Throttling".to_owned()))
    );
    // Asked again: still refused, and the calls stay bounded (no retry storm): the SDK's
    // standard retries (3 attempts) per AssumeRole, and the broker's own identity asked once.
    let (status, _) = credentials(&b, &alice, &session).await;
    assert_eq!(status, 503);
    let calls = |action: &str| {
        sts.requests()
            .iter()
            .filter(|r| r.contains(&format!("Action={action}&")))
            .count()
    };
    assert!(
        (2..=6).contains(&calls("AssumeRole")),
        "{} AssumeRole calls",
        calls("AssumeRole")
    );
    assert!(
        calls("GetCallerIdentity") <= 3,
        "{} GetCallerIdentity calls",
        calls("GetCallerIdentity")
    );
}
