//! `lanyard validate`: the role behind a profile checked with iam:SimulatePrincipalPolicy
//! (the IAM stand-in answers that one call; every other stays on moto), shown as a table or
//! JSON, with an exit status that says whether every action is allowed.

use std::time::Duration;

use lanyard_server::auth::Role;
use lanyard_tests::{CliHome, IamStandIn, Run, TestApp, unique};
use reqwest::Method;
use serde_json::{Value, json};

const REQUIRED: [&str; 4] = [
    "s3:GetObject",
    "s3:ListBucket",
    "s3:PutObject",
    "s3:DeleteObject",
];

/// A broker whose IAM calls go to `iam`, with a customer whose role `readonly` lists
/// [`REQUIRED`]. Returns (app, customer).
async fn broker_with_required_actions(iam: &IamStandIn) -> (TestApp, String) {
    let url = iam.url();
    let app = TestApp::spawn_with(|s| s.iam_endpoint_url = Some(url)).await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    let (status, role) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{customer}/roles/readonly"),
            Some(json!({
                "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                "required_actions": REQUIRED,
            })),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    (app, customer)
}

async fn home_of(app: &TestApp, subject: &str, role: Role) -> CliHome {
    let token = app
        .token_for(subject, role, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    home
}

/// The table's rows as (action, decision).
fn rows(run: &Run) -> Vec<(String, String)> {
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.split_whitespace().collect::<Vec<_>>() == ["ACTION", "DECISION"])
        .unwrap_or_else(|| panic!("no ACTION DECISION header: {run:?}"));
    lines[header + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cells.len(), 2, "{run:?}");
            (cells[0].to_owned(), cells[1].to_owned())
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, d)| ((*a).to_owned(), (*d).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_shows_allowed_and_denied_actions_and_fails_when_any_is_denied() {
    let iam = IamStandIn::start().await;
    iam.decide("s3:GetObject", "allowed");
    iam.decide("s3:ListBucket", "allowed");
    iam.decide("s3:DeleteObject", "explicitDeny");
    let (app, customer) = broker_with_required_actions(&iam).await;
    let alice = home_of(&app, "alice", Role::Support).await;
    let case = unique("CS");
    alice
        .lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await
        .ok();
    let profile = format!("support-{customer}-{case}");

    // The role's required actions, checked again now.
    let run = alice.lanyard(&["validate", "--profile", &profile]).await;
    assert_eq!(run.code, 1, "an action is denied: {run:?}");
    assert!(
        run.stdout
            .starts_with(&format!("Role readonly of {customer}, checked 20"))
            && run
                .stdout
                .lines()
                .next()
                .unwrap()
                .ends_with("(its required actions):"),
        "{run:?}"
    );
    assert_eq!(
        rows(&run),
        pairs(&[
            ("s3:GetObject", "allowed"),
            ("s3:ListBucket", "allowed"),
            ("s3:PutObject", "implicit_deny"),
            ("s3:DeleteObject", "explicit_deny"),
        ])
    );
    assert!(
        run.stdout
            .ends_with("\n2 of 4 actions are not allowed: s3:PutObject, s3:DeleteObject.\n"),
        "{run:?}"
    );
    assert!(run.stderr.is_empty(), "{run:?}");
    // Checked by the broker as the role, and the result kept on the role.
    assert_eq!(iam.received().last().unwrap().actions, REQUIRED);
    let (_, role) = app
        .admin(
            Method::GET,
            &format!("/v1/customers/{customer}/roles/readonly"),
            None,
        )
        .await;
    assert_eq!(
        role["validation"]["results"][3]["decision"],
        "explicit_deny"
    );
    let stored = role["validation"]["checked_at"].clone();

    // Actions named on the command line: all allowed, exit 0, nothing stored.
    let run = alice
        .lanyard(&[
            "validate",
            "--profile",
            &profile,
            "--actions",
            "s3:GetObject,s3:ListBucket",
        ])
        .await;
    assert!(
        run.ok().ends_with("\nAll 2 actions are allowed.\n"),
        "{run:?}"
    );
    assert!(run.stdout.contains("(the actions asked):"), "{run:?}");
    assert_eq!(
        rows(&run),
        pairs(&[("s3:GetObject", "allowed"), ("s3:ListBucket", "allowed")])
    );
    let (_, role) = app
        .admin(
            Method::GET,
            &format!("/v1/customers/{customer}/roles/readonly"),
            None,
        )
        .await;
    assert_eq!(role["validation"]["checked_at"], stored);

    // JSON, for scripts: the broker's validation and the verdict.
    let run = alice
        .lanyard(&[
            "--output",
            "json",
            "validate",
            "--profile",
            &profile,
            "--actions",
            "s3:GetObject,iam:CreateUser",
        ])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["profile"], profile.as_str());
    assert_eq!(out["customer"], customer.as_str());
    assert_eq!(out["role"], "readonly");
    assert_eq!(out["all_allowed"], false);
    assert_eq!(
        out["validation"]["results"],
        json!([
            {"action": "s3:GetObject", "decision": "allowed"},
            {"action": "iam:CreateUser", "decision": "implicit_deny"},
        ])
    );

    // A bad action is one line from the broker, nothing asked of AWS.
    let asked = iam.received().len();
    let run = alice
        .lanyard(&[
            "validate",
            "--profile",
            &profile,
            "--actions",
            "not an action",
        ])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("HTTP 400"), "{run:?}");
    assert_eq!(iam.received().len(), asked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_profile_without_a_role_validates_the_customers_one_role() {
    let iam = IamStandIn::start().await;
    for action in REQUIRED {
        iam.decide(action, "allowed");
    }
    let (app, customer) = broker_with_required_actions(&iam).await;
    let service = home_of(&app, "batch-job", Role::Service).await;
    service
        .lanyard(&["setup-customer", "--customer", &customer])
        .await
        .ok();
    let run = service
        .lanyard(&["validate", "--profile", &format!("customer-{customer}")])
        .await;
    assert!(
        run.ok().ends_with("\nAll 4 actions are allowed.\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .starts_with(&format!("Role readonly of {customer}, checked ")),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_cannot_run_says_why_and_exits_non_zero() {
    // No stand-in: moto does not answer iam:SimulatePrincipalPolicy.
    let app = TestApp::spawn().await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    let (status, role) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{customer}/roles/readonly"),
            Some(json!({
                "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                "required_actions": ["s3:GetObject"],
            })),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    let service = home_of(&app, "batch-job", Role::Service).await;
    service
        .lanyard(&["setup-customer", "--customer", &customer])
        .await
        .ok();
    let profile = format!("customer-{customer}");
    let run = service.lanyard(&["validate", "--profile", &profile]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(
        lines[0].starts_with(&format!(
            "lanyard: role readonly of {customer} could not be checked at "
        )),
        "{run:?}"
    );
    let json = service
        .lanyard(&["--output", "json", "validate", "--profile", &profile])
        .await;
    assert_eq!(json.code, 1, "{json:?}");
    let out: Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(out["validation"]["error"].is_string(), "{out}");
    assert_eq!(out["all_allowed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_has_help_that_names_its_exit_status() {
    let home = CliHome::new();
    let help = home.lanyard(&["validate", "--help"]).await;
    let text = help.ok().split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "--profile",
        "--actions",
        "required_actions",
        "Exit status 1",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
}
