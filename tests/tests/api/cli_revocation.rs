//! Revocation reaching laptops: the local cache serves credentials only while the broker
//! said at most `LANYARD_REVOCATION_CHECK_SECS` ago that they were not revoked, so an
//! admin's revoke stops the engineer's `aws` calls within that window; `lanyard check` says
//! "revoked"; inside the window a warm cache asks the broker nothing.

use std::time::{Duration, Instant};

use lanyard_server::auth::Role;
use lanyard_tests::{CliHome, Run, TestApp, credential_requests, logged_in_support, unique};
use reqwest::Method;
use serde_json::Value;

/// The environment variable, and the short window the tests use so that passing it is quick.
const WINDOW_ENV: &str = "LANYARD_REVOCATION_CHECK_SECS";
const SHORT: &str = "2";

/// The real `aws` with the revocation window `window` (which reaches `lanyard
/// credential-process` through the environment, as it would on a laptop).
async fn aws(home: &CliHome, window: &str, args: &[&str]) -> Run {
    let mut cmd = home.command("aws");
    cmd.args(args).env(WINDOW_ENV, window);
    CliHome::run(cmd, None).await
}

async fn caller(home: &CliHome, window: &str, profile: &str) -> Run {
    aws(
        home,
        window,
        &["sts", "get-caller-identity", "--profile", profile],
    )
    .await
}

async fn process(home: &CliHome, window: &str, profile: &str) -> Run {
    home.lanyard_env(
        &["credential-process", "--profile", profile],
        &[(WINDOW_ENV, window)],
        None,
    )
    .await
}

fn assert_one_clear_line(run: &Run) {
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stdout.is_empty(), "stdout must stay empty: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line on stderr: {run:?}");
    assert!(run.stderr.starts_with("lanyard: "), "{run:?}");
}

async fn session_of(app: &TestApp, case: &str) -> String {
    let (_, sessions) = app
        .admin(Method::GET, &format!("/v1/sessions?case_id={case}"), None)
        .await;
    sessions["sessions"][0]["id"].as_str().unwrap().to_owned()
}

async fn broker_down(app: &TestApp) {
    app.stop();
    let base = app.base.clone();
    assert!(
        lanyard_tests::eventually(Duration::from_secs(10), || {
            let base = base.clone();
            async move { reqwest::get(format!("{base}/healthz")).await.is_err() }
        })
        .await,
        "the broker still answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revoke_stops_the_engineers_aws_calls_once_the_check_window_has_passed() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    home.lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await
        .ok();
    let profile = format!("support-{customer}-{case}");
    caller(&home, SHORT, &profile).await.ok();
    let id = session_of(&app, &case).await;
    let check = home.lanyard(&["check", "--profile", &profile]).await;
    assert!(
        check.ok().contains("\nSession: active (the broker says)\n"),
        "{check:?}"
    );

    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, 200);

    // Within the window the cache may still serve; once it has passed, the next aws call
    // asks the broker and fails with its 410, as one line of lanyard's.
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let run = caller(&home, SHORT, &profile).await;
        if run.code != 0 {
            break run;
        }
        assert!(Instant::now() < deadline, "aws still works: {run:?}");
    };
    assert!(
        failed.stderr.contains(&format!(
            "lanyard: profile {profile}: session {id} was revoked at "
        )) && failed.stderr.contains("HTTP 410"),
        "{failed:?}"
    );
    // The cache no longer holds them: every later call says the same, window or not.
    let again = caller(&home, "3600", &profile).await;
    assert_ne!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("was revoked"), "{again:?}");

    // `lanyard check` reports it, with what AWS still honours.
    let check = home.lanyard(&["check", "--profile", &profile]).await;
    let out = check.ok();
    assert!(out.contains("\nSession: revoked at "), "{check:?}");
    assert!(out.contains(" by "), "{check:?}");
    assert!(
        out.contains("Lanyard hands out no more credentials for it"),
        "{check:?}"
    );
    assert!(out.contains("\nCache: empty"), "{check:?}");
    let json: Value = serde_json::from_str(
        home.lanyard(&["--output", "json", "check", "--profile", &profile])
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(json["session_status"], "revoked", "{json}");
    assert!(json["revoked_at"].is_string(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_revoked_session_at_once_and_drops_its_cached_credentials() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    home.lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await
        .ok();
    let profile = format!("support-{customer}-{case}");
    process(&home, "3600", &profile).await.ok();
    let id = session_of(&app, &case).await;
    app.admin(Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    let check = home.lanyard(&["check", "--profile", &profile]).await;
    let out = check.ok();
    assert!(out.contains("\nSession: revoked at "), "{check:?}");
    assert!(
        out.contains("AWS honours those issued before until "),
        "{check:?}"
    );
    assert!(out.contains("\nCache: dropped now"), "{check:?}");
    // Even with the longest window, nothing is served from the cache now.
    let run = process(&home, "3600", &profile).await;
    assert_one_clear_line(&run);
    assert!(run.stderr.contains("was revoked"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_cache_within_the_window_asks_the_broker_nothing_and_beyond_it_nothing_is_served_offline()
 {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    home.lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await
        .ok();
    let profile = format!("support-{customer}-{case}");
    let first = process(&home, "3600", &profile).await;
    let first: Value = serde_json::from_str(first.ok()).unwrap();

    // Past the window (0: at once) with the broker up: it is asked whether anything was
    // revoked, not for credentials; the cache serves the same ones.
    let checked = home
        .lanyard_env(
            &["--debug", "credential-process", "--profile", &profile],
            &[(WINDOW_ENV, "0")],
            None,
        )
        .await;
    assert_eq!(serde_json::from_str::<Value>(checked.ok()).unwrap(), first);
    assert!(checked.stderr.contains("/v1/auth/whoami"), "{checked:?}");
    assert_eq!(credential_requests(&app.db, &case).await, 1);

    // Another of the engineer's sessions revoked: one refetch, which gets the same
    // credentials (the session itself is live).
    let other = unique("CS");
    home.lanyard(&["support-access", "--customer", &customer, "--case", &other])
        .await
        .ok();
    let other_id = session_of(&app, &other).await;
    app.admin(Method::DELETE, &format!("/v1/sessions/{other_id}"), None)
        .await;
    let refetched = process(&home, "0", &profile).await;
    assert_eq!(
        serde_json::from_str::<Value>(refetched.ok()).unwrap()["AccessKeyId"],
        first["AccessKeyId"]
    );
    assert_eq!(credential_requests(&app.db, &case).await, 2);

    // With the broker gone, a warm cache inside the window still serves: it asked nothing.
    broker_down(&app).await;
    let offline = process(&home, "3600", &profile).await;
    assert_eq!(serde_json::from_str::<Value>(offline.ok()).unwrap(), first);
    let via_aws = caller(&home, "3600", &profile).await;
    assert!(via_aws.ok().contains("support."), "{via_aws:?}");

    // Beyond the window, offline: refused, saying why, and aws shows it.
    let refused = process(&home, "0", &profile).await;
    assert_one_clear_line(&refused);
    for expected in [
        &format!("lanyard: profile {profile}: "),
        "cached credentials are served only within 0 s",
        "LANYARD_REVOCATION_CHECK_SECS",
        "cannot reach the broker",
    ] {
        assert!(
            refused.stderr.contains(expected),
            "{expected:?}: {refused:?}"
        );
    }
    let aws_refused = caller(&home, "0", &profile).await;
    assert_ne!(aws_refused.code, 0, "{aws_refused:?}");
    assert!(
        aws_refused
            .stderr
            .contains("cached credentials are served only within 0 s"),
        "{aws_refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_gets_nothing_from_the_cache_once_the_window_has_passed() {
    let app = TestApp::spawn().await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let token = app
        .token_for("batch-job", Role::Service, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    home.lanyard(&["setup-customer", "--customer", &customer])
        .await
        .ok();
    let profile = format!("customer-{customer}");
    process(&home, "3600", &profile).await.ok();

    let jti = lanyard_tests::jwt_claims(&token)["jti"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    lanyard_server::registry::tokens::revoke(&app.db, "test", jti)
        .await
        .unwrap();
    let refused = lanyard_tests::eventually(Duration::from_secs(5), || async {
        app.call(Method::GET, "/v1/auth/whoami", Some(&token), None)
            .await
            .0
            == 401
    })
    .await;
    assert!(refused, "the broker still takes the token");
    let run = process(&home, "0", &profile).await;
    assert_one_clear_line(&run);
    assert!(
        run.stderr
            .contains("the broker refuses the token, so cached credentials are not served")
            && run.stderr.contains("HTTP 401"),
        "{run:?}"
    );
}
