//! AWS STS failing the broker: unreachable, stuck, throttling. What moto cannot be made to do
//! comes from a fault proxy in front of it, or from a stand-in that answers as STS does.

use std::time::Duration;

use lanyard_tests::fault::{socket_of, through};
use lanyard_tests::faults::{
    StandInSts, StsAnswer, credentials_path, support_session, support_sessions,
};
use lanyard_tests::{FaultProxy, TestApp, moto_url};
use reqwest::Method;
use serde_json::Value;

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
    let (alice, session) = support_session(&app, "sts faults").await;
    (app, proxy, alice, session)
}

async fn credentials(app: &TestApp, token: &str, session: &Value) -> (u16, Value) {
    app.call(Method::POST, &credentials_path(session), Some(token), None)
        .await
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

/// A second instance on `a`'s database and signing key whose STS is `sts`.
async fn instance_behind(a: &TestApp, sts: &StandInSts) -> TestApp {
    let key = a.data_dir.path().join("signing-key.pem");
    let db_url = a.database_url.clone();
    TestApp::spawn_with(|s| {
        s.database_url = Some(db_url.as_str().into());
        s.signing_key_file = Some(key.clone());
        s.aws_endpoint_url = Some(sts.url.clone());
    })
    .await
}

#[tokio::test]
async fn sts_throttling_is_a_503_with_its_code_and_no_credentials() {
    let sts = StandInSts::start(StsAnswer::Throttling).await;
    // The role is registered (verified against moto) by one instance; another instance on
    // the same database, whose STS throttles, is asked for the credentials.
    let a = TestApp::spawn().await;
    let (alice, session) = support_session(&a, "sts faults").await;
    let b = instance_behind(&a, &sts).await;
    let response = b
        .send(
            Method::POST,
            &credentials_path(&session),
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
    assert!(
        (2..=6).contains(&sts.calls("AssumeRole")),
        "{} AssumeRole calls",
        sts.calls("AssumeRole")
    );
    assert!(
        sts.calls("GetCallerIdentity") <= 3,
        "{} GetCallerIdentity calls",
        sts.calls("GetCallerIdentity")
    );
}

#[tokio::test]
async fn a_broker_that_cannot_learn_its_identity_asks_once_not_once_per_waiting_request() {
    // A freshly started instance whose STS throttles, asked for 16 sessions' credentials at
    // once: every request needs the broker's own identity first (GetCallerIdentity). The one
    // that asks fails; the 15 waiting on it must take that failure, not ask again each.
    let sts = StandInSts::start(StsAnswer::Throttling).await;
    let a = TestApp::spawn().await;
    let (alice, sessions) = support_sessions(&a, "sts faults", 16).await;
    let b = instance_behind(&a, &sts).await;
    let paths: Vec<String> = sessions.iter().map(credentials_path).collect();
    let answers = futures::future::join_all(
        paths
            .iter()
            .map(|path| b.send(Method::POST, path, Some(&alice), None)),
    )
    .await;
    for response in &answers {
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
    }
    // One call, with the SDK's own retries (3 attempts at most).
    assert!(
        sts.calls("GetCallerIdentity") <= 3,
        "{} GetCallerIdentity calls for 16 waiting requests",
        sts.calls("GetCallerIdentity")
    );
}
