//! Usage metrics: credential requests counted into CloudWatch statistic sets (published to
//! moto, read back with GetMetricStatistics) and Prometheus counters on the metrics
//! listener; a dead CloudWatch endpoint costs the credential path nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lanyard_tests::cloudwatch::{
    CASE, PublishedVends, cloudwatch_client, credentials_path, drive, namespace, sample, scrape,
    statistics, support_session, vends_published,
};
use lanyard_tests::{FaultProxy, ServerProcess, TestApp, eventually, moto_url};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_requests_cost_a_few_put_metric_data_calls_and_add_up_exactly() {
    const REQUESTS: usize = 10_000;
    let PublishedVends { took, calls } = vends_published(REQUESTS).await;
    println!(
        "{REQUESTS} requests in {took:?}: {} PutMetricData calls ({calls:?} datums)",
        calls.len()
    );
    assert!(calls.len() <= 10, "{} PutMetricData calls", calls.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_cloudwatch_costs_credential_requests_nothing() {
    let moto: std::net::SocketAddr = moto_url().trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(moto).await;
    let ns = namespace();
    let app = TestApp::spawn_with(|s| {
        s.cloudwatch_namespace = Some(ns.clone());
        s.cloudwatch_endpoint_url = Some(format!("http://{}", proxy.addr()));
        s.cloudwatch_flush_secs = Some(1);
    })
    .await;
    let (_, session) = support_session(&app, CASE).await;
    let path = credentials_path(&session);

    // CloudWatch reachable: a baseline, and proof that publishing works through the proxy.
    let baseline = drive(&app, &path, 400, 8).await;
    assert!(baseline.iter().all(|(s, _)| *s == 200));
    let published = eventually(Duration::from_secs(20), || async {
        sample(
            &scrape(&app).await,
            "lanyard_cloudwatch_published_datums_total",
        )
        .is_some_and(|n| n > 0.0)
    })
    .await;
    assert!(published, "{}", scrape(&app).await);

    // First CloudWatch swallows calls without answering, then it refuses connections.
    proxy.hold();
    let under_outage = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (under_outage, stop) = (under_outage.clone(), stop.clone());
        let (url, token) = (app.url(&path), app.admin_token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = http.post(&url).bearer_auth(&token).send().await.unwrap();
                let status = response.status().as_u16();
                let _ = response.bytes().await.unwrap();
                under_outage
                    .lock()
                    .unwrap()
                    .push((status, started.elapsed()));
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(20), proxy.held())
        .await
        .expect("a PutMetricData call is stuck in the proxy");
    let stuck_from = under_outage.lock().unwrap().len();
    let served = eventually(Duration::from_secs(30), || async {
        under_outage.lock().unwrap().len() >= stuck_from + 300
    })
    .await;
    assert!(
        served,
        "requests keep being answered while PutMetricData hangs"
    );
    proxy.cut().await;
    let failures = |text: &str| sample(text, "lanyard_cloudwatch_publish_failures_total");
    let dropped = |text: &str| sample(text, "lanyard_cloudwatch_dropped_datums_total");
    let seen_failures = std::sync::Mutex::new(Vec::new());
    let degraded = eventually(Duration::from_secs(90), || async {
        let text = scrape(&app).await;
        let f = failures(&text).unwrap_or(0.0);
        let mut seen = seen_failures.lock().unwrap();
        if seen.last() != Some(&f) {
            seen.push(f);
        }
        seen.iter().filter(|f| **f > 0.0).count() >= 2 && dropped(&text).unwrap_or(0.0) > 0.0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let text = scrape(&app).await;
    let seen_failures = seen_failures.into_inner().unwrap();
    assert!(
        degraded,
        "failures seen {seen_failures:?}, dropped {:?}",
        dropped(&text)
    );

    let outage = under_outage.lock().unwrap().clone();
    assert!(outage.len() > 50, "only {} requests", outage.len());
    assert!(
        outage.iter().all(|(s, _)| *s == 200),
        "every request succeeded"
    );
    let median = |v: &[(u16, Duration)]| {
        let mut l: Vec<Duration> = v.iter().map(|(_, d)| *d).collect();
        l.sort();
        l[l.len() / 2]
    };
    let slowest = outage.iter().map(|(_, d)| *d).max().unwrap();
    println!(
        "baseline median {:?}; during the outage {} requests, median {:?}, slowest {slowest:?}; \
         failures {seen_failures:?}, dropped {:?}",
        median(&baseline),
        outage.len(),
        median(&outage),
        dropped(&text)
    );
    // The SDK gives up on an attempt after 3 s (connect) to 10 s: a request that waited on
    // the publisher would show it.
    assert!(slowest < Duration::from_secs(1), "slowest {slowest:?}");
    assert!(
        median(&outage) < median(&baseline) * 5 + Duration::from_millis(50),
        "median {:?} against {:?}",
        median(&outage),
        median(&baseline)
    );

    // Back again: what is still buffered goes out.
    let before = sample(&text, "lanyard_cloudwatch_published_datums_total").unwrap();
    proxy.restore();
    drive(&app, &path, 10, 2).await;
    let resumed = eventually(Duration::from_secs(90), || async {
        sample(
            &scrape(&app).await,
            "lanyard_cloudwatch_published_datums_total",
        )
        .is_some_and(|n| n > before)
    })
    .await;
    assert!(resumed, "{}", scrape(&app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_credential_requests_sts_calls_and_sessions() {
    let ns = namespace();
    let app = TestApp::spawn_with(|s| {
        s.cloudwatch_namespace = Some(ns.clone());
        s.cloudwatch_flush_secs = Some(1);
    })
    .await;
    let text = scrape(&app).await;
    for name in [
        "lanyard_credential_requests_total",
        "lanyard_credential_cache_hits_total",
        "lanyard_credential_cache_misses_total",
        "lanyard_sts_calls_total",
        "lanyard_sts_call_duration_seconds",
        "lanyard_active_sessions",
        "lanyard_cloudwatch_published_datums_total",
        "lanyard_cloudwatch_publish_failures_total",
        "lanyard_cloudwatch_dropped_datums_total",
        "lanyard_cloudwatch_pending_datums",
        "lanyard_audit_batch_events",
        "lanyard_audit_commit_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    let sts_before = sample(&text, "lanyard_sts_calls_total{outcome=\"success\"}").unwrap_or(0.0);

    let (_, session) = support_session(&app, CASE).await;
    let path = credentials_path(&session);
    for _ in 0..5 {
        let (status, body) = app.admin(Method::POST, &path, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/sessions/{session}"), None)
        .await;
    assert!((200..300).contains(&status), "revoked: {status}");
    let (status, _) = app.admin(Method::POST, &path, None).await;
    assert_eq!(status, 410, "a revoked session gets no credentials");

    let text = scrape(&app).await;
    let value = |series: &str| sample(&text, series);
    assert_eq!(
        value("lanyard_credential_requests_total{outcome=\"success\"}"),
        Some(5.0)
    );
    assert_eq!(
        value("lanyard_credential_requests_total{outcome=\"denied\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("lanyard_credential_requests_total{outcome=\"error\"}"),
        Some(0.0)
    );
    assert_eq!(value("lanyard_credential_cache_misses_total"), Some(1.0));
    assert_eq!(value("lanyard_credential_cache_hits_total"), Some(4.0));
    // Registering the role verified it (with and without the external ID), and the first
    // credential request assumed it.
    let sts = value("lanyard_sts_calls_total{outcome=\"success\"}").unwrap();
    assert!(sts >= sts_before + 2.0, "{sts} AssumeRole calls");
    let timed = value("lanyard_sts_call_duration_seconds_count").unwrap();
    let all_sts: f64 = ["success", "denied", "throttled", "error"]
        .iter()
        .filter_map(|o| value(&format!("lanyard_sts_calls_total{{outcome=\"{o}\"}}")))
        .sum();
    assert_eq!(timed, all_sts, "every STS call is timed");

    // The session was active until revoked; the gauge is refreshed every 15 s.
    let (status, _) = app
        .admin(
            Method::POST,
            "/v1/sessions",
            Some(json!({
                "kind": "support", "customer": session_customer(&app, &session).await,
                "role": "readonly", "case_id": "CS-1", "reason": "gauge", "duration_seconds": 3600
            })),
        )
        .await;
    assert_eq!(status, 201);
    let counted = eventually(Duration::from_secs(40), || async {
        sample(&scrape(&app).await, "lanyard_active_sessions") == Some(1.0)
    })
    .await;
    assert!(counted, "{}", scrape(&app).await);

    let published = eventually(Duration::from_secs(30), || async {
        sample(
            &scrape(&app).await,
            "lanyard_cloudwatch_published_datums_total",
        )
        .is_some_and(|n| n >= 6.0)
    })
    .await;
    let text = scrape(&app).await;
    assert!(published, "{text}");
    assert_eq!(
        sample(&text, "lanyard_cloudwatch_publish_failures_total"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "lanyard_cloudwatch_dropped_datums_total"),
        Some(0.0)
    );
    // Both outcomes reached CloudWatch.
    let client = cloudwatch_client().await;
    let customer = session_customer(&app, &session).await;
    let profile = format!("support-{customer}-{CASE}");
    for (outcome, n) in [("success", 5.0), ("denied", 1.0)] {
        let dims = [
            ("Customer", customer.as_str()),
            ("Profile", profile.as_str()),
            ("Kind", "support"),
            ("Outcome", outcome),
        ];
        let arrived = eventually(Duration::from_secs(30), || async {
            statistics(&client, &ns, "CredentialRequests", &dims)
                .await
                .0
                == n
        })
        .await;
        assert!(
            arrived,
            "{outcome}: {:?}",
            statistics(&client, &ns, "CredentialRequests", &dims).await
        );
    }
}

async fn session_customer(app: &TestApp, session: &str) -> String {
    let (status, body) = app
        .admin(Method::GET, &format!("/v1/sessions/{session}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["customer"].as_str().unwrap().to_owned()
}

/// The real server publishing to `cloudwatch` (a fault proxy in front of moto) under
/// namespace `ns`, with `env` added, and `requests` credential requests of one support
/// session answered. Returns the server and the session's customer.
async fn server_publishing_through(
    cloudwatch: &str,
    ns: &str,
    env: &[(&str, &str)],
    requests: usize,
) -> (ServerProcess, tempfile::TempDir, String) {
    let moto = moto_url();
    let data_dir = tempfile::tempdir().unwrap();
    let db_url = lanyard_tests::fresh_database_url();
    let mut all = vec![
        ("LANYARD_DATABASE_URL", db_url.as_str()),
        ("LANYARD_DATA_DIR", data_dir.path().to_str().unwrap()),
        ("LANYARD_AWS_ENDPOINT_URL", moto.as_str()),
        ("LANYARD_TRUST_CHECK", "warn"),
        ("LANYARD_CLOUDWATCH_NAMESPACE", ns),
        ("LANYARD_CLOUDWATCH_ENDPOINT_URL", cloudwatch),
        ("LANYARD_SHUTDOWN_GRACE_SECS", "2"),
    ];
    all.extend_from_slice(env);
    let server = ServerProcess::start(&all);
    let admin = server.issue_token("ops", "admin");
    let http = reqwest::Client::new();
    let call = |method: Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, server.url(path)).bearer_auth(&admin);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    let customer = format!("cw-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let created = call(
        Method::POST,
        "/v1/customers",
        Some(json!({ "id": customer })),
    );
    assert_eq!(created.await.unwrap().status(), 201);
    let role = call(
        Method::PUT,
        &format!("/v1/customers/{customer}/roles/readonly"),
        Some(json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" })),
    );
    assert_eq!(role.await.unwrap().status(), 200);
    let session: Value = call(
        Method::POST,
        "/v1/sessions",
        Some(
            json!({ "kind": "support", "customer": customer, "role": "readonly",
                     "case_id": CASE, "reason": "shutdown flush", "duration_seconds": 3600 }),
        ),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let path = credentials_path(session["id"].as_str().unwrap());
    for _ in 0..requests {
        let response = call(Method::POST, &path, None).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    (server, data_dir, customer)
}

/// Sends SIGTERM and waits for the exit, off the runtime; returns the server, its status
/// and how long stopping took.
async fn terminate(
    mut server: ServerProcess,
) -> (ServerProcess, std::process::ExitStatus, Duration) {
    let started = Instant::now();
    let (server, status) = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    })
    .await
    .unwrap();
    (server, status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_under_way_at_shutdown_is_finished_not_sent_twice() {
    let proxy = FaultProxy::start(moto_url().trim_start_matches("http://").parse().unwrap()).await;
    let cloudwatch = format!("http://{}", proxy.addr());
    let ns = namespace();
    // One-second windows, and every chunk to and from CloudWatch two seconds late.
    proxy.delay(Duration::from_secs(2));
    let (server, _data_dir, customer) = server_publishing_through(
        &cloudwatch,
        &ns,
        &[("LANYARD_CLOUDWATCH_FLUSH_SECS", "1")],
        3,
    )
    .await;
    let profile = format!("support-{customer}-{CASE}");
    let dims = [
        ("Customer", customer.as_str()),
        ("Profile", profile.as_str()),
        ("Kind", "support"),
        ("Outcome", "success"),
    ];
    // Asked directly: the requests have reached CloudWatch, and the answer to that call is
    // still on its way back through the proxy when the server is told to stop.
    let client = cloudwatch_client().await;
    let arrived = eventually(Duration::from_secs(30), || async {
        statistics(&client, &ns, "CredentialRequests", &dims)
            .await
            .0
            >= 3.0
    })
    .await;
    assert!(arrived);
    let (server, status, took) = terminate(server).await;
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    // Once the server has exited, nothing more can arrive: each request counted once.
    let (sum, count) = statistics(&client, &ns, "CredentialRequests", &dims).await;
    assert_eq!((sum, count), (3.0, 3.0), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_cloudwatch_delays_shutdown_by_at_most_the_flush_budget() {
    let proxy = FaultProxy::start(moto_url().trim_start_matches("http://").parse().unwrap()).await;
    proxy.hold();
    let cloudwatch = format!("http://{}", proxy.addr());
    let ns = namespace();
    let (server, _data_dir, _customer) = server_publishing_through(&cloudwatch, &ns, &[], 3).await;

    // The default window is a minute: only the shutdown flush can send these requests, and
    // CloudWatch swallows the call without answering.
    let (server, status, took) = terminate(server).await;
    assert!(status.success(), "{status:?}\n{}", server.log());
    println!("stopped in {took:?} with CloudWatch stuck");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let gave_up = server.log().lines().any(|line| {
        serde_json::from_str::<Value>(line).is_ok_and(|v| {
            v["message"] == "CloudWatch datums not sent before shutdown" && v["datums"] == 3
        })
    });
    assert!(gave_up, "{}", server.log());
}
