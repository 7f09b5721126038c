//! Benchmarks P2 and P5: cold credentials asked for many times at once, and how many of
//! those requests go further than they must.
//!
//! - P2: 1,000 concurrent cold `POST /v1/sessions/{id}/credentials` for one support session
//!   (the application in process, its default pool of 16 database connections) → the
//!   AssumeRole calls that reached STS, counted in moto's request recording. Baseline: the
//!   1,000 requests, one call each for a broker without single-flight. Also every request
//!   answered 200 with the same credentials and audited, and the burst's wall time beside
//!   one cold request alone (for a session of its own) in the same run.
//! - P5: 100 parallel cold `lanyard credential-process --profile P` runs of the real CLI
//!   binary (one HOME, an empty cache, a session the broker has issued nothing for yet) →
//!   the credential requests the broker audited. Baseline: the 100 runs, one request each
//!   without the CLI's per-profile lock. Also every run printed valid credential JSON, and
//!   the runs' wall time beside one cold run alone (a profile of its own).
//!
//! Run them with `tests/bench P2 P5`. Goal (DESIGN: "concurrent requests for the same session
//! share one AssumeRole call"; the CLI's cache lock): one call, one request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_tests::cloudwatch::{credentials_path, support_session};
use lanyard_tests::{
    TestApp, credential_requests, logged_in_support, recorded_assume_roles, unique,
};
use reqwest::Method;
use serde_json::Value;

use crate::table::{Row, ms, report};

const BURST: usize = 1_000;
const RUNS: usize = 100;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: tests/bench P2"]
async fn p2_a_thousand_concurrent_cold_requests_for_one_session() {
    // The server's default pool (the harness's default is smaller).
    let app = TestApp::spawn_with(|s| s.db_max_connections = Some(16)).await;

    // The baseline of the wall time: one cold request alone, for a session of its own.
    let (_, alone) = support_session(&app, &unique("CS")).await;
    let started = Instant::now();
    let (status, body) = app
        .admin(Method::POST, &credentials_path(&alone), None)
        .await;
    let one_cold = started.elapsed();
    assert_eq!(status, 200, "{body}");

    // The burst: every request connected and waiting at the gate, then all at once.
    let case = unique("CS");
    let (_, session) = support_session(&app, &case).await;
    let url = app.url(&credentials_path(&session));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let gate = Arc::new(tokio::sync::Barrier::new(BURST + 1));
    let tasks: Vec<_> = (0..BURST)
        .map(|_| {
            let (http, url, token, gate) = (
                http.clone(),
                url.clone(),
                app.admin_token.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                gate.wait().await;
                match http.post(url).bearer_auth(token).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let text = response.text().await.unwrap_or_default();
                        (status, text)
                    }
                    Err(e) => (0, e.to_string()),
                }
            })
        })
        .collect();
    gate.wait().await;
    let started = Instant::now();
    let mut answers = Vec::with_capacity(BURST);
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let burst = started.elapsed();

    let ok = answers.iter().filter(|(status, _)| *status == 200).count();
    let keys: std::collections::BTreeSet<String> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .filter_map(|(_, text)| {
            let doc: Value = serde_json::from_str(text).ok()?;
            Some(doc["AccessKeyId"].as_str()?.to_owned())
        })
        .collect();
    // The case is this test's own, and so is every AssumeRole of that session.
    let calls = recorded_assume_roles(&case).await.len();
    // One audit row per vend, cache hit or not.
    let audited = credential_requests(&app.db, &case).await;

    println!();
    println!(
        "{BURST} concurrent cold requests: {ok} answered 200 in {burst:?} ({} distinct key \
         ids); {calls} AssumeRole call(s); {audited} audited; one cold request alone took \
         {one_cold:?}",
        keys.len()
    );
    report(Row {
        id: "P2",
        what: "AssumeRole calls, 1,000 concurrent cold requests of one session",
        figure: format!("{calls} call(s)"),
        baseline: format!("{BURST} requests (a call each without single-flight)"),
        ratio: Some(calls as f64 / BURST as f64),
        goal: "1 call",
        met: Some(calls == 1),
    });
    report(Row {
        id: "P2",
        what: "cold requests answered 200",
        figure: format!("{ok}"),
        baseline: format!("{BURST} sent"),
        ratio: Some(ok as f64 / BURST as f64),
        goal: "all",
        met: Some(ok == BURST),
    });
    report(Row {
        id: "P2",
        what: "wall time of the 1,000-request burst",
        figure: ms(burst.as_secs_f64()),
        baseline: format!("{}: one cold request alone", ms(one_cold.as_secs_f64())),
        ratio: Some(burst.as_secs_f64() / one_cold.as_secs_f64()),
        goal: "",
        met: None,
    });

    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {BURST} requests failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        (1..=10).contains(&calls),
        "{calls} AssumeRole calls for {BURST} concurrent cold requests"
    );
    assert!(
        (1..=calls).contains(&keys.len()),
        "{} key ids from {calls} calls",
        keys.len()
    );
    assert_eq!(audited, BURST as i64, "every vend audited");
}

/// The fields of a credential_process document, checked: version 1, non-empty keys and
/// token, an RFC 3339 expiration in the future. Returns the access key id.
fn credential_document(stdout: &str) -> Result<String, String> {
    let doc: Value = serde_json::from_str(stdout).map_err(|e| format!("{e}: {stdout:?}"))?;
    let text = |field: &str| {
        doc[field]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("no {field} in {doc}"))
    };
    if doc["Version"] != 1 {
        return Err(format!("Version is not 1 in {doc}"));
    }
    text("SecretAccessKey")?;
    text("SessionToken")?;
    let expiration = chrono::DateTime::parse_from_rfc3339(text("Expiration")?)
        .map_err(|e| format!("Expiration: {e}"))?;
    if expiration <= chrono::Utc::now() {
        return Err(format!("expired credentials: {doc}"));
    }
    Ok(text("AccessKeyId")?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: tests/bench P5"]
async fn p5_a_hundred_parallel_cold_credential_process_runs() {
    let (app, home, customer, _) = logged_in_support().await;
    // `support-access` opens the session and writes the profile; it asks for no credentials.
    let open = |case: String| {
        let home = &home;
        let customer = customer.as_str();
        async move {
            home.lanyard(&["support-access", "--customer", customer, "--case", &case])
                .await
                .ok();
            (format!("support-{customer}-{case}"), case)
        }
    };

    // The baseline of the wall time: one cold run alone, for a profile of its own.
    let (profile_alone, _) = open(unique("CS")).await;
    let started = Instant::now();
    let run = home
        .lanyard(&["credential-process", "--profile", &profile_alone])
        .await;
    let one_cold = started.elapsed();
    credential_document(run.ok()).unwrap();

    let (profile, case) = open(unique("CS")).await;
    assert_eq!(
        credential_requests(&app.db, &case).await,
        0,
        "cold: the broker has issued nothing for the session yet"
    );
    let args = ["credential-process", "--profile", profile.as_str()];
    let started = Instant::now();
    let runs = futures::future::join_all((0..RUNS).map(|_| home.lanyard(&args))).await;
    let wall = started.elapsed();
    let requests = credential_requests(&app.db, &case).await;

    let documents: Vec<Result<String, String>> = runs
        .iter()
        .map(|run| {
            if run.code == 0 {
                credential_document(&run.stdout)
            } else {
                Err(format!("exit {}: {}", run.code, run.stderr))
            }
        })
        .collect();
    let valid = documents.iter().filter(|d| d.is_ok()).count();
    let keys: std::collections::BTreeSet<&String> = documents.iter().flatten().collect();

    println!();
    println!(
        "{RUNS} parallel cold credential-process runs: {valid} printed valid credentials in \
         {wall:?} ({} distinct key ids); the broker saw {requests} credential request(s); one \
         cold run alone took {one_cold:?}",
        keys.len()
    );
    report(Row {
        id: "P5",
        what: "broker credential requests, 100 parallel cold credential-process",
        figure: format!("{requests} request(s)"),
        baseline: format!("{RUNS} runs (a request each without the CLI's lock)"),
        ratio: Some(requests as f64 / RUNS as f64),
        goal: "1 request",
        met: Some(requests == 1),
    });
    report(Row {
        id: "P5",
        what: "cold credential-process runs printing valid credentials",
        figure: format!("{valid}"),
        baseline: format!("{RUNS} runs"),
        ratio: Some(valid as f64 / RUNS as f64),
        goal: "all",
        met: Some(valid == RUNS),
    });
    report(Row {
        id: "P5",
        what: "wall time of the 100 parallel runs",
        figure: ms(wall.as_secs_f64()),
        baseline: format!("{}: one cold run alone", ms(one_cold.as_secs_f64())),
        ratio: Some(wall.as_secs_f64() / one_cold.as_secs_f64()),
        goal: "",
        met: None,
    });

    let invalid: Vec<&String> = documents.iter().filter_map(|d| d.as_ref().err()).collect();
    assert!(
        invalid.is_empty(),
        "{} of {RUNS} runs printed no valid credentials, e.g. {:?}",
        invalid.len(),
        invalid.first()
    );
    assert!(
        (1..=5).contains(&requests),
        "{requests} credential requests for {RUNS} parallel cold runs"
    );
    assert!(keys.len() as i64 <= requests, "{keys:?}");
}
