//! Benchmark: the cached credential path of the real `lanyard-server` (release build)
//! beside a bare axum handler, on the same machine, in the same run, under the same load
//! generator (64 concurrent keep-alive connections).
//!
//! Run it with `tests/run --release --test bench -- --ignored --nocapture`
//! (`BENCH_SECS` sets the measured seconds per target, default 10).
//!
//! Goals (issue "Sessions and credential brokering"): at least half the bare handler's
//! requests per second, p99 at most 5 ms, server RSS at most 64 MB.
//!
//! Every Lanyard request here is a full credential request: token verification and its
//! revocation check, the session's grant read from Postgres, the cached credentials, and an
//! audit row committed (group commit) before the answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lanyard_tests::{ServerProcess, fresh_database_url, moto_url};
use serde_json::{Value, json};

/// Concurrent connections (the goal is stated for 64; `BENCH_CONNECTIONS` changes it).
fn connections() -> usize {
    std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}
const WARMUP: Duration = Duration::from_secs(2);

struct Figures {
    requests: usize,
    errors: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Drives `connections()` concurrent loops of POST `url` for `secs`, after a warm-up.
async fn load(method: reqwest::Method, url: String, token: Option<String>, secs: u64) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections())
        .build()
        .unwrap();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections() {
        let (client, url, token, method) =
            (client.clone(), url.clone(), token.clone(), method.clone());
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(65_536);
            let mut errors = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut req = client.request(method.clone(), &url);
                if let Some(token) = &token {
                    req = req.bearer_auth(token);
                }
                let started = Instant::now();
                let ok = match req.send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(WARMUP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Figures {
        requests: all.len(),
        errors,
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    }
}

/// The baseline: a bare axum handler answering a credential-sized JSON document, on its own
/// runtime with as many worker threads as the server's default.
fn start_bare_handler() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let body = json!({
                "Version": 1, "AccessKeyId": "ASIA0000000000000000",
                "SecretAccessKey": "x".repeat(40), "SessionToken": "y".repeat(600),
                "Expiration": "2026-11-26T12:00:00Z"
            });
            let app = axum::Router::new().route(
                "/bare",
                axum::routing::post(move || {
                    let body = body.clone();
                    async move { axum::Json(body) }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}/bare")
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with tests/run --release --test bench -- --ignored --nocapture"]
async fn cached_credential_path_beside_a_bare_handler() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let data_dir = tempfile::tempdir().unwrap();
    let db_url = fresh_database_url();
    let moto = moto_url();
    let server = ServerProcess::start(&[
        ("LANYARD_DATABASE_URL", &db_url),
        ("LANYARD_DATA_DIR", data_dir.path().to_str().unwrap()),
        ("LANYARD_AWS_ENDPOINT_URL", &moto),
        ("LANYARD_TRUST_CHECK", "warn"),
        // Per-request lines off (lanyard_server::http), startup lines on.
        (
            "RUST_LOG",
            "warn,lanyard_server=info,lanyard_server::http=warn",
        ),
    ]);
    let admin = server.issue_token("ops", "admin");
    let alice = server.issue_token("alice", "support");
    let http = reqwest::Client::new();
    let post = |token: &str, path: &str, body: Value| {
        http.post(server.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let customer = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    assert_eq!(
        post(&admin, "/v1/customers", json!({ "id": customer }))
            .await
            .unwrap()
            .status(),
        201
    );
    let role = http
        .put(server.url(&format!("/v1/customers/{customer}/roles/readonly")))
        .bearer_auth(&admin)
        .json(&json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" }))
        .send()
        .await
        .unwrap();
    assert_eq!(role.status(), 200);
    let session: Value = post(
        &alice,
        "/v1/sessions",
        json!({ "kind": "support", "customer": customer, "role": "readonly",
                "case_id": "BENCH-1", "reason": "benchmark", "duration_seconds": 3600 }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let path = format!(
        "/v1/sessions/{}/credentials",
        session["id"].as_str().unwrap()
    );
    let first = post(&alice, &path, Value::Null).await.unwrap();
    assert_eq!(first.status(), 200, "{:?}", first.text().await);

    use reqwest::Method;
    let bare = load(Method::POST, start_bare_handler(), None, secs).await;
    let pid = server.child.id();
    let health = load(Method::GET, server.url("/healthz"), None, secs).await;
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let commits = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let commits_before = commits().await;
    let lanyard = load(Method::POST, server.url(&path), Some(alice.clone()), secs).await;
    // The statistics collector reports with a delay of up to a second or so.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let commits_during = commits().await - commits_before;
    let rss = rss_kb(pid, "VmRSS:");
    let peak = rss_kb(pid, "VmHWM:");

    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action = 'credentials.issue' AND outcome = 'success'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    println!();
    println!(
        "{} connections, {secs} s measured after {WARMUP:?} warm-up, {} CPUs",
        connections(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<32} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "target", "req/s", "errors", "p50 ms", "p99 ms", "max ms"
    );
    for (name, f) in [
        ("bare axum handler", &bare),
        ("lanyard /healthz (HTTP stack)", &health),
        ("lanyard cached credentials", &lanyard),
    ] {
        println!(
            "{name:<32} {:>10.0} {:>8} {:>10.2} {:>10.2} {:>10.2}",
            f.rps, f.errors, f.p50_ms, f.p99_ms, f.max_ms
        );
        assert!(f.requests > 0);
    }
    println!(
        "lanyard / bare throughput: {:.2} (goal ≥ 0.50); p99 {:.2} ms (goal ≤ 5); server RSS {} MB now, {} MB peak (goal ≤ 64)",
        lanyard.rps / bare.rps,
        lanyard.p99_ms,
        rss / 1024,
        peak / 1024
    );
    println!("audit rows for issued credentials: {audited} (every request audited)");
    println!(
        "database transactions during the credential run: {commits_during} ({:.2} per request)",
        commits_during as f64 / (lanyard.requests as f64).max(1.0)
    );
    assert!(
        !server.log().contains("\"level\":\"ERROR\""),
        "{}",
        server.log()
    );
    assert_eq!(lanyard.errors, 0);
    assert!(audited as usize >= lanyard.requests);
}
