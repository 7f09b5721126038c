//! Benchmarks F1–F4: the credential path under steady load (32 concurrent client loops,
//! back to back) while a dependency fails, each figure beside its baseline.
//!
//! - **F1 STS throttling**, **F2 STS 5xx**: the application (in process) is pointed at a
//!   stand-in STS (`lanyard_tests::faults::StandInSts`) that answers `Throttling` (400), or
//!   `InternalFailure` (500) and `ServiceUnavailable` (503) in turn, for `BENCH_FAULT_SECS`
//!   (default 5), then answers as STS does again. The broker has vended once before (it
//!   knows its own identity); each client loop asks for the credentials of a session of its
//!   own that has none cached, so every request during the fault is an AssumeRole of its
//!   own. Figures: the share of answers during the fault that are 503 with
//!   `Retry-After` and no credentials (must be 100 %); the STS calls the broker made during
//!   the fault per client request, beside the SDK's retry budget of 3 attempts per call (no
//!   retry storm: calls ≤ requests × 3); the time from the fault's end to the first 200,
//!   without a restart (within 10 s), beside the `Retry-After` the broker asked for. Every
//!   session must get credentials again, each with its audit row.
//! - **F3 CloudWatch unreachable**: credential requests per second and p99 with CloudWatch
//!   publishing on (one-second windows) and its endpoint cut (a `FaultProxy` in front of
//!   moto), beside the same with it reachable, in alternating windows of `BENCH_SECS`
//!   (default 5) of one run. Must hold: every request a 200 with its audit row, PutMetricData
//!   failing during every cut; goals: throughput ratio ≥ 0.90, p99 ratio ≤ 1.10 (asserted
//!   only against gross effects: ≥ 0.5 and ≤ 2 × + 50 ms).
//! - **F4 Postgres restart under load**: the database outage drill of the api test
//!   `resilience::` (`lanyard_tests::faults::credentials_through_a_database_outage`): every
//!   connection of the application to Postgres goes through a `FaultProxy` that is cut (open
//!   connections closed, new ones refused, as during a restart) for at least
//!   `BENCH_FAULT_SECS`, then restored, while the clients ask for cached credentials.
//!   Figures: credentials handed out without a committed audit row (must be 0), the share of
//!   refusals that are 503 with `Retry-After` (must be 100 %), the time from the database's
//!   return to the first 200 (within 10 s).
//!
//! Run them with `tests/bench F` (or `tests/bench F1`, ...); in a debug build, for the logic
//! only: `tests/run --test bench -- --ignored --nocapture faults::`.

use std::time::{Duration, Instant};

use lanyard_tests::fault::{socket_of, through};
use lanyard_tests::faults::{
    BEFORE, CLIENTS, ENOUGH, FAULT, Load, Outage, RECOVERY, REQUEST_TIMEOUT, RESTORED, Sample,
    StandInSts, StsAnswer, audit_check, credentials_path, credentials_through_a_database_outage,
    error_codes, first_ok_after, summary, support_session, support_sessions,
};
use lanyard_tests::{FaultProxy, TestApp, eventually, moto_url};
use reqwest::Method;
use sqlx::Connection;

use crate::table::{Row, ms, report};

/// Attempts per STS call: the broker's SDK retry configuration (server/src/aws.rs,
/// `RetryConfig::standard().with_max_attempts(3)`).
const SDK_MAX_ATTEMPTS: usize = 3;
/// The broker asks for its own identity (GetCallerIdentity) again at most once a minute
/// after a failure (server/src/sts, `CALLER_RETRY`).
const CALLER_RETRY: Duration = Duration::from_secs(60);

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(crate::table::env_or(name, default))
}

/// How long a fault lasts (`BENCH_FAULT_SECS`, default 5).
fn fault_duration() -> Duration {
    env_secs("BENCH_FAULT_SECS", 5)
}

fn percent(part: usize, whole: usize) -> String {
    format!(
        "{:.1} % ({part} of {whole})",
        100.0 * part as f64 / whole.max(1) as f64
    )
}

/// Every request got an HTTP answer before the server's request timeout.
fn assert_answered_in_time(samples: &[Sample]) {
    let unanswered: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.status.is_err() || s.elapsed >= REQUEST_TIMEOUT)
        .collect();
    assert!(
        unanswered.is_empty(),
        "{} requests unanswered or answered after the request timeout: {:#?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(10)]
    );
}

/// F1 and F2: `fault` from the stand-in STS under load, then recovery.
async fn sts_fault(id: &str, label: &str, fault: StsAnswer) {
    let sts = StandInSts::start(StsAnswer::Healthy).await;
    let endpoint = sts.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.aws_endpoint_url = Some(endpoint);
        s.request_timeout_secs = Some(REQUEST_TIMEOUT.as_secs());
    })
    .await;
    let (alice, sessions) = support_sessions(&app, "sts fault benchmark", CLIENTS).await;
    // A broker that has not vended yet: the fault meets its first GetCallerIdentity (asked
    // once, its failure shared by the requests waiting on it and remembered for a minute) and
    // every AssumeRole. The client loops' sessions have no credentials yet.
    let urls: Vec<String> = sessions
        .iter()
        .map(|s| app.url(&credentials_path(s)))
        .collect();

    sts.answer(fault);
    let load = Load::start(CLIENTS, &urls, &alice, FAULT);
    let fault_began = Instant::now();
    load.wait_until(
        "requests are refused while STS fails",
        fault_duration() + Duration::from_secs(60),
        |t| t.failed(FAULT) >= ENOUGH,
    )
    .await;
    // A timed phase: the fault lasts as long as asked, whatever the pace of the refusals.
    tokio::time::sleep_until((fault_began + fault_duration()).into()).await;
    let restored = load.enter(RESTORED);
    sts.answer(StsAnswer::Healthy);
    let fault_lasted = restored - fault_began;
    load.wait_until(
        "every session gets credentials once STS answers again",
        RECOVERY + Duration::from_secs(20),
        |t| t.clients_served(RESTORED) == CLIENTS,
    )
    .await;
    let samples = load.stop().await;

    let codes = error_codes(fault);
    let proper = |s: &Sample| {
        s.unavailable_with_retry_after()
            && s.aws_error_code
                .as_deref()
                .is_some_and(|c| codes.contains(&c))
    };
    let in_fault: Vec<&Sample> = samples.iter().filter(|s| s.within(FAULT)).collect();
    let refused_properly = in_fault.iter().filter(|s| proper(s)).count();
    let handed_out = in_fault
        .iter()
        .filter(|s| s.ok() || s.access_key_id.is_some())
        .count();
    // Requests started during the fault: every STS call answered with the fault was made
    // for one of them.
    let requests = samples.iter().filter(|s| s.phases.0 == FAULT).count();
    let assume_roles = sts.calls_answered("AssumeRole", fault);
    let identities = sts.calls_answered("GetCallerIdentity", fault);
    let calls = assume_roles + identities;
    let per_request = calls as f64 / requests.max(1) as f64;
    let identity_bound =
        SDK_MAX_ATTEMPTS * (1 + (fault_lasted.as_secs() / CALLER_RETRY.as_secs()) as usize);
    let calls_bounded = assume_roles <= requests * SDK_MAX_ATTEMPTS && identities <= identity_bound;
    let recovered_after = first_ok_after(&samples, restored);
    let retry_after: u32 = in_fault
        .iter()
        .find_map(|s| s.retry_after.as_deref()?.parse().ok())
        .unwrap_or(0);

    println!();
    println!(
        "{id} STS {label}: fault {fault_lasted:?}, {} requests in all, {requests} started \
         during the fault; STS calls answered with the fault: {assume_roles} AssumeRole, \
         {identities} GetCallerIdentity; first 200 {recovered_after:?} after the fault\n{:#?}",
        samples.len(),
        summary(&samples)
    );
    report(Row {
        id,
        what: &format!("STS {label}: answers during the fault that are 503 + Retry-After"),
        figure: percent(refused_properly, in_fault.len()),
        baseline: "100 %, no credentials".to_owned(),
        ratio: Some(refused_properly as f64 / in_fault.len().max(1) as f64),
        goal: "= 100 %",
        met: Some(refused_properly == in_fault.len() && handed_out == 0),
    });
    report(Row {
        id,
        what: &format!("STS {label}: STS calls per client request during the fault"),
        figure: format!("{per_request:.2} ({calls} calls, {requests} requests)"),
        baseline: format!("{SDK_MAX_ATTEMPTS} (SDK max attempts)"),
        ratio: Some(per_request / SDK_MAX_ATTEMPTS as f64),
        goal: "ratio ≤ 1.00",
        met: Some(calls_bounded),
    });
    report(Row {
        id,
        what: &format!("STS {label}: fault end → first 200, no restart"),
        figure: recovered_after.map_or_else(|| "never".to_owned(), |d| ms(d.as_secs_f64())),
        baseline: format!("Retry-After {retry_after} s"),
        ratio: recovered_after
            .filter(|_| retry_after > 0)
            .map(|d| d.as_secs_f64() / f64::from(retry_after)),
        goal: "≤ 10 s",
        met: Some(recovered_after.is_some_and(|d| d < RECOVERY)),
    });

    assert_answered_in_time(&samples);
    // Whenever the broker refused (during the fault, or a request that straddled its end),
    // it was a 503 naming STS's error and saying when to ask again.
    let bad: Vec<&Sample> = samples.iter().filter(|s| !s.ok() && !proper(s)).collect();
    assert!(
        bad.is_empty(),
        "not 200 nor 503 {codes:?} with Retry-After: {:#?}",
        &bad[..bad.len().min(10)]
    );
    assert!(in_fault.len() >= ENOUGH, "{} answers", in_fault.len());
    assert_eq!(handed_out, 0, "credentials handed out while STS failed");
    assert!(
        calls_bounded,
        "{assume_roles} AssumeRole calls for {requests} requests (at most \
         {SDK_MAX_ATTEMPTS} each), {identities} GetCallerIdentity (at most {identity_bound})"
    );
    let recovered_after = recovered_after.expect("a 200 after the fault");
    assert!(
        recovered_after < RECOVERY,
        "first credentials {recovered_after:?} after STS answered again"
    );
    let mut db = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    audit_check(&samples, &mut db).await.assert_all_audited();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: tests/bench F1"]
async fn f1_sts_throttling_is_503_with_retry_after_bounded_calls_and_recovery() {
    sts_fault("F1", "throttling", StsAnswer::Throttling).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: tests/bench F2"]
async fn f2_sts_5xx_is_503_with_retry_after_bounded_calls_and_recovery() {
    sts_fault("F2", "5xx", StsAnswer::ServerErrors).await;
}

/// Requests per second (200s started and answered inside `windows`) and their p99.
fn throughput(samples: &[Sample], windows: &[(Instant, Instant)]) -> (f64, Duration) {
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| {
            s.ok()
                && windows
                    .iter()
                    .any(|(from, to)| s.started() >= *from && s.finished <= *to)
        })
        .map(|s| s.elapsed)
        .collect();
    latencies.sort();
    let seconds: f64 = windows.iter().map(|(f, t)| (*t - *f).as_secs_f64()).sum();
    let p99 = latencies
        .get((latencies.len() as f64 * 0.99) as usize)
        .or(latencies.last())
        .copied()
        .unwrap_or_default();
    (latencies.len() as f64 / seconds, p99)
}

/// Measures for `length`: returns when it started and ended.
async fn window(length: Duration) -> (Instant, Instant) {
    let from = Instant::now();
    tokio::time::sleep(length).await;
    (from, Instant::now())
}

const PUBLISHED: &str = "lanyard_cloudwatch_published_datums_total";
const FAILURES: &str = "lanyard_cloudwatch_publish_failures_total";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: tests/bench F3"]
async fn f3_an_unreachable_cloudwatch_costs_vends_nothing() {
    const ROUNDS: usize = 2;
    let length = env_secs("BENCH_SECS", 5);
    let proxy = FaultProxy::start(socket_of(&moto_url(), 80).await).await;
    let endpoint = through(&moto_url(), proxy.addr());
    let namespace = format!("LanyardBench/{}", uuid::Uuid::new_v4().simple());
    let app = TestApp::spawn_with(|s| {
        s.cloudwatch_namespace = Some(namespace);
        s.cloudwatch_endpoint_url = Some(endpoint);
        s.cloudwatch_flush_secs = Some(1);
    })
    .await;
    let (alice, session) = support_session(&app, "cloudwatch fault benchmark").await;
    let path = credentials_path(&session);
    let (status, warm) = app.call(Method::POST, &path, Some(&alice), None).await;
    assert_eq!(status, 200, "{warm}");
    let publishing = eventually(Duration::from_secs(20), || async {
        app.metric(PUBLISHED).await > 0.0
    })
    .await;
    assert!(publishing, "CloudWatch publishing works before the fault");

    let load = Load::start(CLIENTS, &[app.url(&path)], &alice, BEFORE);
    // Warm-up: connections opened, the runtime's threads busy.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut reachable, mut unreachable, mut publish_failed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        reachable.push(window(length).await);
        let failures = app.metric(FAILURES).await;
        load.enter(FAULT);
        proxy.cut().await;
        unreachable.push(window(length).await);
        // Outside the measured window: the publisher did try, and fail.
        publish_failed.push(
            eventually(Duration::from_secs(30), || async {
                app.metric(FAILURES).await > failures
            })
            .await,
        );
        proxy.restore();
        load.enter(RESTORED);
    }
    let samples = load.stop().await;
    let (rps_up, p99_up) = throughput(&samples, &reachable);
    let (rps_down, p99_down) = throughput(&samples, &unreachable);
    let rps_ratio = rps_down / rps_up;
    let p99_ratio = p99_down.as_secs_f64() / p99_up.as_secs_f64().max(1e-6);

    println!();
    println!(
        "F3: {ROUNDS} rounds of {length:?} reachable, {length:?} unreachable; {} requests; \
         PutMetricData failed during each cut: {publish_failed:?}\n{:#?}",
        samples.len(),
        summary(&samples)
    );
    report(Row {
        id: "F3",
        what: "CloudWatch unreachable: credential requests/s",
        figure: format!("{rps_down:.0}/s"),
        baseline: format!("{rps_up:.0}/s reachable"),
        ratio: Some(rps_ratio),
        goal: "≥ 0.90",
        met: Some(rps_ratio >= 0.90),
    });
    report(Row {
        id: "F3",
        what: "CloudWatch unreachable: credential request p99",
        figure: ms(p99_down.as_secs_f64()),
        baseline: format!("{} reachable", ms(p99_up.as_secs_f64())),
        ratio: Some(p99_ratio),
        goal: "≤ 1.10",
        met: Some(p99_ratio <= 1.10),
    });

    assert!(
        publish_failed.iter().all(|f| *f),
        "PutMetricData did not fail while CloudWatch was unreachable: {publish_failed:?}"
    );
    let errors: Vec<&Sample> = samples.iter().filter(|s| !s.ok()).collect();
    assert!(
        errors.is_empty(),
        "{} requests failed: {:#?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    let mut db = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    audit_check(&samples, &mut db).await.assert_all_audited();
    // Gross effects only (the goals above are the benchmark's): a vend that waited on the
    // publisher would halve the throughput and multiply the tail.
    assert!(rps_ratio >= 0.5, "throughput ratio {rps_ratio:.2}");
    assert!(
        p99_down <= p99_up * 2 + Duration::from_millis(50),
        "p99 {p99_down:?} unreachable against {p99_up:?} reachable"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: tests/bench F4"]
async fn f4_postgres_restart_under_load_fails_closed_and_recovers() {
    let drill = credentials_through_a_database_outage(Outage::Refused, fault_duration()).await;
    let (refused, proper) = drill.refusals();
    let unaudited = drill.audit.unaudited.len();
    report(Row {
        id: "F4",
        what: "Postgres restart: credentials without a committed audit row",
        figure: format!("{unaudited} of {} 200s", drill.audit.served),
        baseline: "0".to_owned(),
        ratio: None,
        goal: "= 0",
        met: Some(unaudited == 0),
    });
    report(Row {
        id: "F4",
        what: "Postgres restart: refusals that are 503 + Retry-After",
        figure: percent(proper, refused),
        baseline: "100 %".to_owned(),
        ratio: Some(proper as f64 / refused.max(1) as f64),
        goal: "= 100 %",
        met: Some(proper == refused),
    });
    report(Row {
        id: "F4",
        what: "Postgres restart: database back → first 200, no restart",
        figure: ms(drill.recovered_after.as_secs_f64()),
        baseline: "Retry-After 1 s".to_owned(),
        // The baseline is one second.
        ratio: Some(drill.recovered_after.as_secs_f64()),
        goal: "≤ 10 s",
        met: Some(drill.recovered_after < RECOVERY),
    });
    assert!(refused >= ENOUGH, "{refused} refusals");
    drill.assert_held();
}
