//! Usage metrics as a test sees them: credential requests driven at the application, what
//! reached CloudWatch (moto: GetMetricStatistics and the recorded PutMetricData calls), and
//! the Prometheus text of the metrics listener. Shared by the CloudWatch tests and the P7
//! benchmark.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use reqwest::Method;
use serde_json::json;

use crate::app::TestApp;
use crate::emulator::{moto_url, recorded_form_requests};
use crate::wait::eventually;

/// The case of the support sessions these tests open.
pub const CASE: &str = "CS-4242";

/// A namespace no other test (or earlier run) publishes to.
pub fn namespace() -> String {
    format!("LanyardTest/{}", uuid::Uuid::new_v4().simple())
}

/// A customer with a verified role and an open support session for `case`, as admin;
/// returns the customer and the session's id.
pub async fn support_session(app: &TestApp, case: &str) -> (String, String) {
    let customer = format!("cw-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let (status, session) = app
        .admin(
            Method::POST,
            "/v1/sessions",
            Some(json!({
                "kind": "support", "customer": customer, "role": "readonly",
                "case_id": case, "reason": "usage metrics test", "duration_seconds": 3600
            })),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    (customer, session["id"].as_str().unwrap().to_owned())
}

/// The credential request path of a session.
pub fn credentials_path(session: &str) -> String {
    format!("/v1/sessions/{session}/credentials")
}

/// Sends `total` credential requests from `loops` concurrent keep-alive clients, as admin;
/// returns each request's status and latency.
pub async fn drive(app: &TestApp, path: &str, total: usize, loops: usize) -> Vec<(u16, Duration)> {
    let claimed = Arc::new(AtomicUsize::new(0));
    let url = app.url(path);
    let mut tasks = Vec::new();
    for _ in 0..loops {
        let (claimed, url) = (claimed.clone(), url.clone());
        let token = app.admin_token.clone();
        let http = reqwest::Client::new();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while claimed.fetch_add(1, Ordering::Relaxed) < total {
                let started = Instant::now();
                let response = http.post(&url).bearer_auth(&token).send().await.unwrap();
                let status = response.status().as_u16();
                let _ = response.bytes().await.unwrap();
                out.push((status, started.elapsed()));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// A CloudWatch client on moto.
pub async fn cloudwatch_client() -> aws_sdk_cloudwatch::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    aws_sdk_cloudwatch::Client::new(&sdk)
}

/// GetMetricStatistics over the last and next hour for one dimension set: the total Sum and
/// SampleCount of all datapoints.
pub async fn statistics(
    client: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    dimensions: &[(&str, &str)],
) -> (f64, f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = client
        .get_metric_statistics()
        .namespace(namespace)
        .metric_name(metric)
        .set_dimensions(Some(
            dimensions
                .iter()
                .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
                .collect(),
        ))
        .start_time(DateTime::from_secs(now - 3600))
        .end_time(DateTime::from_secs(now + 3600))
        .period(60)
        .statistics(Statistic::Sum)
        .statistics(Statistic::SampleCount)
        .send()
        .await
        .unwrap();
    out.datapoints().iter().fold((0.0, 0.0), |(sum, count), p| {
        (
            sum + p.sum().unwrap_or(0.0),
            count + p.sample_count().unwrap_or(0.0),
        )
    })
}

/// The PutMetricData calls moto recorded for `namespace`, and the datums of each.
pub async fn recorded_put_metric_data(namespace: &str) -> Vec<usize> {
    recorded_form_requests()
        .await
        .into_iter()
        .filter(|(_, fields)| {
            fields.get("Action").map(String::as_str) == Some("PutMetricData")
                && fields.get("Namespace").map(String::as_str) == Some(namespace)
        })
        .map(|(_, fields)| {
            fields
                .keys()
                .filter(|k| k.starts_with("MetricData.member.") && k.ends_with(".MetricName"))
                .count()
        })
        .collect()
}

/// The Prometheus text of the application's metrics listener.
pub async fn scrape(app: &TestApp) -> String {
    reqwest::get(format!("http://{}/metrics", app.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one sample (`name` or `name{labels}`) in Prometheus text format.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// What [`vends_published`] measured.
pub struct PublishedVends {
    /// Wall time of the credential requests.
    pub took: Duration,
    /// The PutMetricData calls that reached CloudWatch, and the datums of each.
    pub calls: Vec<usize>,
}

/// `requests` credential requests ("vends") of one support session from 32 concurrent
/// clients, on an application publishing to CloudWatch (moto) under a namespace of its own;
/// then a graceful stop, which flushes the open window (the default window is a whole
/// minute). Checks that every request got credentials and that the figures add up exactly
/// (the Prometheus counter; CloudWatch's Sum and SampleCount of requests, their durations,
/// and the cache hits: every request but the first), and that each PutMetricData call stays
/// within CloudWatch's 1,000 datums.
pub async fn vends_published(requests: usize) -> PublishedVends {
    let ns = namespace();
    let app = TestApp::spawn_with(|s| {
        s.cloudwatch_namespace = Some(ns.clone());
        s.db_max_connections = Some(16);
    })
    .await;
    let (customer, session) = support_session(&app, CASE).await;
    let path = credentials_path(&session);

    let started = Instant::now();
    let results = drive(&app, &path, requests, 32).await;
    let took = started.elapsed();
    assert_eq!(results.len(), requests);
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, requests, "every request got credentials");

    let text = scrape(&app).await;
    assert_eq!(
        sample(
            &text,
            "lanyard_credential_requests_total{outcome=\"success\"}"
        ),
        Some(requests as f64)
    );

    app.stop();
    let client = cloudwatch_client().await;
    let profile = format!("support-{customer}-{CASE}");
    let dims = [
        ("Customer", customer.as_str()),
        ("Profile", profile.as_str()),
        ("Kind", "support"),
        ("Outcome", "success"),
    ];
    let expected = requests as f64;
    let arrived = eventually(Duration::from_secs(30), || async {
        statistics(&client, &ns, "CredentialRequests", &dims)
            .await
            .0
            >= expected
    })
    .await;
    let (sum, count) = statistics(&client, &ns, "CredentialRequests", &dims).await;
    assert!(arrived, "CloudWatch has Sum {sum} of {expected} requests");
    assert_eq!(sum, expected, "the Sum of CredentialRequests");
    assert_eq!(count, expected, "the SampleCount of CredentialRequests");
    let (_, timed) = statistics(&client, &ns, "CredentialRequestDuration", &dims).await;
    assert_eq!(timed, expected, "every request has a duration sample");
    // The first request assumed the role; every other one found its credentials cached.
    let (hits, _) = statistics(&client, &ns, "CredentialCacheHits", &dims).await;
    assert_eq!(hits, expected - 1.0, "cache hits");

    let calls = recorded_put_metric_data(&ns).await;
    assert!(!calls.is_empty(), "no PutMetricData call was recorded");
    assert!(calls.iter().all(|n| *n <= 1000), "{calls:?} datums");
    PublishedVends { took, calls }
}
