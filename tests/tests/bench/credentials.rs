//! Benchmarks P1 and P3: the cached credential path.
//!
//! P1: the real `lanyard-server` (release build) beside two baselines, on the same machine,
//! in the same run, under the same load generator (64 concurrent keep-alive connections),
//! rounds alternating: a bare axum handler, and the same handler committing an equally wide
//! audit row through the server's own group-commit writer. So the broker's own overhead
//! (P1b) and the audit row's cost are separate numbers; P1c splits the CPU per request.
//! P3: two in-process brokers, audit on and audit off (a writer that writes nothing, built
//! only with the `bench-unaudited` feature).
//!
//! Run them with `tests/bench P1 P3` (`BENCH_SECS` sets the measured seconds per target and
//! round, default 5; `BENCH_ROUNDS` the number of alternating rounds, default 3).
//!
//! Goals (issue "Sessions and credential brokering"): at least half the bare handler's
//! requests per second, p99 at most 5 ms, server RSS at most 64 MB.
//!
//! Every Lanyard request here is a full credential request: token verification and its
//! revocation check, the session's grant, the cached credentials, and an audit row committed
//! (group commit) before the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lanyard_server::audit::AuditWriter;
use lanyard_server::auth::Role;
use lanyard_tests::TestApp;

use crate::table::{self, Row};
use serde_json::{Value, json};

/// Concurrent connections (the goal is stated for 64; `BENCH_CONNECTIONS` changes it).
pub fn connections() -> usize {
    table::env_or("BENCH_CONNECTIONS", 64)
}
/// Alternating rounds of baseline and credential path (`BENCH_ROUNDS`, default 3).
pub fn rounds_wanted() -> usize {
    table::env_or("BENCH_ROUNDS", 3)
}
const WARMUP: Duration = Duration::from_secs(2);

pub struct Figures {
    /// CPU seconds each meter counted during the measured seconds.
    pub cpu: Vec<f64>,
    pub requests: usize,
    pub errors: usize,
    /// Successful answers over the whole run, warm-up and the last in-flight requests
    /// included: what the audit log must hold one row for each of.
    pub answered: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Reads a component's CPU time so far, in seconds.
pub type Meter = Box<dyn Fn() -> f64 + Send + Sync>;

/// Drives `connections()` concurrent loops of `method` on `urls` (spread evenly) for `secs`, after a warm-up;
/// `meters` are read when the measured seconds start and end.
pub async fn load(
    method: reqwest::Method,
    urls: Vec<String>,
    token: Option<String>,
    secs: u64,
    meters: &[Meter],
) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections())
        .build()
        .unwrap();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..connections() {
        // Connections spread over the targets in turn.
        let url = urls[n % urls.len()].clone();
        let (client, token, method) = (client.clone(), token.clone(), method.clone());
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(65_536);
            let mut errors = 0;
            let mut answered = 0;
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
                answered += usize::from(ok);
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors, answered)
        }));
    }
    tokio::time::sleep(WARMUP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let cpu_before: Vec<f64> = meters.iter().map(|m| m()).collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = meters
        .iter()
        .zip(cpu_before)
        .map(|(m, before)| m() - before)
        .collect();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    let mut answered = 0;
    for task in tasks {
        let (latencies, e, a) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
        answered += a;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Figures {
        cpu,
        requests: all.len(),
        errors,
        answered,
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    }
}

/// A baseline: a bare axum handler answering a credential-sized JSON document, on its own
/// runtime with as many worker threads as the server's default. With `audit_database`, it
/// first commits an audit row as wide as the credential path's through the server's own
/// group-commit writer (`lanyard_server::audit::AuditWriter`) on that migrated database.
fn start_bare_handler(audit_database: Option<String>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name(BARE_THREADS)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let body = json!({
                "Version": 1, "AccessKeyId": "ASIA0000000000000000",
                "SecretAccessKey": "x".repeat(40), "SessionToken": "y".repeat(600),
                "Expiration": "2026-11-26T12:00:00Z"
            });
            let audit = match audit_database {
                Some(url) => Some(AuditWriter::start(
                    sqlx::PgPool::connect(&url).await.unwrap(),
                    Duration::from_secs(5),
                    lanyard_server::metrics::Metrics::new().unwrap(),
                )),
                None => None,
            };
            let session = uuid::Uuid::new_v4();
            let app = axum::Router::new().route(
                "/bare",
                axum::routing::post(move || {
                    let (body, audit) = (body.clone(), audit.clone());
                    async move {
                        if let Some(audit) = audit {
                            audit
                                .record(crate::levers::credential_event(0, session))
                                .await
                                .unwrap();
                        }
                        axum::Json(body)
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}/bare")
}

/// One round: each target measured once, one after the other.
struct Round {
    bare: Figures,
    audited: Figures,
    lanyard: Figures,
}

/// The audit writer's totals from the server's Prometheus metrics.
#[derive(Clone, Copy)]
pub struct AuditBatches {
    pub batches: f64,
    pub events: f64,
    pub seconds: f64,
}

impl std::ops::Sub for AuditBatches {
    type Output = AuditBatches;
    fn sub(self, before: AuditBatches) -> AuditBatches {
        AuditBatches {
            batches: self.batches - before.batches,
            events: self.events - before.events,
            seconds: self.seconds - before.seconds,
        }
    }
}

pub async fn audit_batches(metrics_addr: &str) -> AuditBatches {
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    AuditBatches {
        batches: value("lanyard_audit_batch_events_count"),
        events: value("lanyard_audit_batch_events_sum"),
        seconds: value("lanyard_audit_commit_duration_seconds_sum"),
    }
}

/// The bare handler's runtime threads are named so, to tell their CPU time apart.
const BARE_THREADS: &str = "bare-handler";

/// User and system CPU seconds in a `/proc/.../stat` file.
pub fn stat_cpu(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0; // the process or thread has gone
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

/// CPU seconds of this process's threads: the bare handler's (`bare`) or all the others
/// (the load generator).
fn own_threads_cpu(bare: bool) -> f64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            (comm.trim() == BARE_THREADS) == bare
        })
        .map(|task| stat_cpu(&task.path().join("stat").to_string_lossy()))
        .sum()
}

/// CPU seconds of the Postgres backends connected to any of `databases` (found by their
/// process titles, `postgres: ... <user> <database> ...`).
pub fn postgres_cpu(databases: &[String]) -> f64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.starts_with("postgres:")
                && cmdline.split(' ').any(|w| databases.iter().any(|d| d == w))
        })
        .map(|p| stat_cpu(&p.path().join("stat").to_string_lossy()))
        .sum()
}

/// The middle value (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with tests/bench P1"]
async fn p1_cached_credential_path_beside_bare_handlers() {
    let secs: u64 = table::env_or("BENCH_SECS", 5);
    let data_dir = tempfile::tempdir().unwrap();
    let db_url = lanyard_tests::fresh_database_url();
    let metrics_addr = crate::fixture::free_addr();
    let server = crate::fixture::start_server(
        &db_url,
        data_dir.path(),
        &[("LANYARD_METRICS_ADDR", &metrics_addr)],
    );
    let admin = server.issue_token("ops", "admin");
    let alice = server.issue_token("alice", "support");
    let http = reqwest::Client::new();
    let post = |token: &str, path: &str, body: Value| {
        http.post(server.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let customer = crate::fixture::customer_with_role(&server, &admin).await;
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
    let bare_url = start_bare_handler(None);
    let audit_db = lanyard_tests::database::fresh_migrated_database_url().await;
    let _audit_db_guard = lanyard_tests::TestDatabase::adopt(&audit_db);
    let audited_bare_url = start_bare_handler(Some(audit_db.clone()));
    let pid = server.child.id();
    let name = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    let databases = vec![name(&db_url), name(&audit_db)];
    let meters: Vec<Meter> = vec![
        Box::new(|| own_threads_cpu(false)),
        Box::new(|| own_threads_cpu(true)),
        Box::new(move || stat_cpu(&format!("/proc/{pid}/stat"))),
        Box::new(move || postgres_cpu(&databases)),
    ];
    let health = load(
        Method::GET,
        vec![server.url("/healthz")],
        None,
        secs,
        &meters,
    )
    .await;
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let commits = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // The baseline and the credential path alternate, round after round, so that a change
    // in the machine's speed during the run (other tenants, CPU frequency) weighs on both
    // alike; each round's ratio is of two neighbouring measurements.
    let mut rounds = Vec::new();
    let mut lanyard_requests = 0;
    // The first request above, then every successful answer of the runs.
    let mut lanyard_answered = 1;
    let mut lanyard_errors = 0;
    let audit_before = audit_batches(&metrics_addr).await;
    let commits_before = commits().await;
    for _ in 0..rounds_wanted() {
        let bare = load(Method::POST, vec![bare_url.clone()], None, secs, &meters).await;
        let audited = load(
            Method::POST,
            vec![audited_bare_url.clone()],
            None,
            secs,
            &meters,
        )
        .await;
        let lanyard = load(
            Method::POST,
            vec![server.url(&path)],
            Some(alice.clone()),
            secs,
            &meters,
        )
        .await;
        lanyard_requests += lanyard.requests;
        lanyard_answered += lanyard.answered;
        lanyard_errors += lanyard.errors;
        rounds.push(Round {
            bare,
            audited,
            lanyard,
        });
    }
    // The statistics collector reports with a delay of up to a second or so.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let commits_during = commits().await - commits_before;
    let audit_during = audit_batches(&metrics_addr).await - audit_before;
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
        "{} connections, {} rounds of {secs} s per target, each after {WARMUP:?} warm-up, {} CPUs",
        connections(),
        rounds.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<32} {:>10} {:>8} {:>10} {:>10} {:>10} {:>8}",
        "target", "req/s", "errors", "p50 ms", "p99 ms", "max ms", "ratio"
    );
    let row = |name: &str, f: &Figures, ratio: Option<f64>| {
        println!(
            "{name:<32} {:>10.0} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>8}",
            f.rps,
            f.errors,
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            ratio.map_or(String::new(), |r| format!("{r:.2}"))
        );
        assert!(f.requests > 0);
    };
    row("lanyard /healthz (HTTP stack)", &health, None);
    let mut ratios = Vec::new();
    let mut audited_ratios = Vec::new();
    let mut p99s = Vec::new();
    for (n, r) in rounds.iter().enumerate() {
        let ratio = r.lanyard.rps / r.bare.rps;
        ratios.push(ratio);
        audited_ratios.push(r.lanyard.rps / r.audited.rps);
        p99s.push(r.lanyard.p99_ms);
        row(
            &format!("round {}: bare axum handler", n + 1),
            &r.bare,
            None,
        );
        row(
            &format!("round {}: bare handler + audit", n + 1),
            &r.audited,
            Some(r.audited.rps / r.bare.rps),
        );
        row(
            &format!("round {}: lanyard cached creds", n + 1),
            &r.lanyard,
            Some(ratio),
        );
    }
    println!(
        "CPU µs per request, median of rounds: {:<16} {:>8} {:>8} {:>8} {:>8}",
        "", "loadgen", "bare", "lanyard", "postgres"
    );
    type Pick = fn(&Round) -> &Figures;
    let targets: [(&str, Pick); 3] = [
        ("bare axum handler", |r| &r.bare),
        ("bare handler + audit row", |r| &r.audited),
        ("lanyard cached creds", |r| &r.lanyard),
    ];
    // Per target, the median over rounds of each meter's CPU µs per request.
    let mut cpu_of = Vec::new();
    for (name, pick) in targets {
        let per_request: Vec<f64> = (0..meters.len())
            .map(|m| {
                let cpu = rounds
                    .iter()
                    .map(pick)
                    .map(|f| f.cpu[m] * 1e6 / (f.requests as f64).max(1.0));
                median(cpu.collect())
            })
            .collect();
        let cells: Vec<String> = per_request.iter().map(|v| format!("{v:>8.1}")).collect();
        println!("{name:<55} {}", cells.join(" "));
        cpu_of.push(per_request);
    }
    let (ratio, audited_ratio, p99) = (median(ratios), median(audited_ratios), median(p99s));
    println!(
        "lanyard / bare throughput, median of rounds: {ratio:.2} (goal ≥ 0.50); p99, median of rounds: {p99:.2} ms (goal ≤ 5); server RSS {} MB now, {} MB peak (goal ≤ 64)",
        rss / 1024,
        peak / 1024
    );
    let rps = |pick: Pick| median(rounds.iter().map(pick).map(|f| f.rps).collect());
    let p50 = median(rounds.iter().map(|r| r.lanyard.p50_ms).collect());
    table::report(Row {
        id: "P1",
        what: "cached credential path vs bare axum (64 conns)",
        figure: format!(
            "{:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms, RSS {} MB",
            rps(|r| &r.lanyard),
            peak / 1024
        ),
        baseline: format!("bare axum {:.0} req/s", rps(|r| &r.bare)),
        ratio: Some(ratio),
        goal: "≥ 0.50, p99 ≤ 5 ms, RSS ≤ 64 MB",
        met: Some(ratio >= 0.5 && p99 <= 5.0 && peak <= 64 * 1024),
    });
    table::report(Row {
        id: "P1b",
        what: "cached credential path vs bare axum + same audit row",
        figure: format!("{:.0} req/s", rps(|r| &r.lanyard)),
        baseline: format!(
            "bare + group-commit audit row {:.0} req/s",
            rps(|r| &r.audited)
        ),
        ratio: Some(audited_ratio),
        goal: "",
        met: None,
    });
    // Meters: 0 load generator, 1 bare handler threads, 2 server process, 3 Postgres.
    let (bare_cpu, audited_cpu, lanyard_cpu) = (&cpu_of[0], &cpu_of[1], &cpu_of[2]);
    table::report(Row {
        id: "P1c",
        what: "CPU µs per request: handler + Postgres (+ load generator)",
        figure: format!(
            "lanyard {:.1} + PG {:.1} (+ loadgen {:.1})",
            lanyard_cpu[2], lanyard_cpu[3], lanyard_cpu[0]
        ),
        baseline: format!(
            "bare {:.1} (+ {:.1}); bare+audit {:.1} + PG {:.1} (+ {:.1})",
            bare_cpu[1], bare_cpu[0], audited_cpu[1], audited_cpu[3], audited_cpu[0]
        ),
        ratio: Some((lanyard_cpu[2] + lanyard_cpu[3]) / (audited_cpu[1] + audited_cpu[3])),
        goal: "",
        met: None,
    });
    println!(
        "audit rows for issued credentials: {audited}, successful answers: {lanyard_answered} (warm-up included)"
    );
    println!(
        "database transactions during the credential runs: {commits_during} ({:.3} per request)",
        commits_during as f64 / (lanyard_requests as f64).max(1.0)
    );
    println!(
        "audit group commits: {:.0}, {:.1} events and {:.2} ms each on average",
        audit_during.batches,
        audit_during.events / audit_during.batches.max(1.0),
        audit_during.seconds * 1000.0 / audit_during.batches.max(1.0)
    );
    assert!(
        !server.log().contains("\"level\":\"ERROR\""),
        "{}",
        server.log()
    );
    assert_eq!(lanyard_errors, 0);
    // One audit row per credential answered, no more and no fewer: the rows were committed
    // before the answers (fail-closed), so every task having finished means every row is in.
    assert_eq!(audited as usize, lanyard_answered);
}

/// A support session on `app` (customer, role and session created through the API): its
/// credentials URL, a token of its engineer, and that one first request filled the cache.
pub async fn cached_session(app: &TestApp) -> (String, String) {
    let customer = lanyard_tests::unique("bench");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let engineer = app.token(Role::Support, None).await;
    let (status, session) = app
        .call(
            reqwest::Method::POST,
            "/v1/sessions",
            Some(&engineer),
            Some(
                json!({ "kind": "support", "customer": customer, "role": "readonly",
                         "case_id": "BENCH-3", "reason": "benchmark",
                         "duration_seconds": 3600 }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let path = format!(
        "/v1/sessions/{}/credentials",
        session["id"].as_str().unwrap()
    );
    let (status, body) = app
        .call(reqwest::Method::POST, &path, Some(&engineer), None)
        .await;
    assert_eq!(status, 200, "{body}");
    (app.url(&path), engineer)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with tests/bench P3"]
async fn p3_audit_on_vs_off() {
    let secs: u64 = table::env_or("BENCH_SECS", 5);
    // Both in process, on this test's runtime beside the load generator: the same harness
    // for both, so only the audit row differs.
    let on = TestApp::spawn().await;
    let off = TestApp::spawn_unaudited().await;
    let (on_url, on_token) = cached_session(&on).await;
    let (off_url, off_token) = cached_session(&off).await;
    let mut rounds = Vec::new();
    let mut answered = 1; // the request that filled the cache
    for _ in 0..rounds_wanted() {
        let unaudited = load(
            reqwest::Method::POST,
            vec![off_url.clone()],
            Some(off_token.clone()),
            secs,
            &[],
        )
        .await;
        let audited = load(
            reqwest::Method::POST,
            vec![on_url.clone()],
            Some(on_token.clone()),
            secs,
            &[],
        )
        .await;
        assert_eq!(audited.errors + unaudited.errors, 0);
        answered += audited.answered;
        rounds.push((audited, unaudited));
    }
    let m = |f: fn(&(Figures, Figures)) -> f64| median(rounds.iter().map(f).collect());
    let ratio = m(|(on, off)| on.rps / off.rps);
    table::report(Row {
        id: "P3",
        what: "cached credential path: audit on vs off (in process)",
        figure: format!(
            "on {:.0} req/s, p99 {:.2} ms",
            m(|r| r.0.rps),
            m(|r| r.0.p99_ms)
        ),
        baseline: format!(
            "off {:.0} req/s, p99 {:.2} ms",
            m(|r| r.1.rps),
            m(|r| r.1.p99_ms)
        ),
        ratio: Some(ratio),
        goal: "",
        met: None,
    });
    let rows = |app: &TestApp| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM audit_event WHERE action = 'credentials.issue'",
            )
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    // The switch did what it says, and only where asked.
    assert_eq!(rows(&off).await, 0);
    assert_eq!(rows(&on).await as usize, answered);
}
