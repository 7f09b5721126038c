//! Benchmark S1, the soak: the real `lanyard-server` under a steady, moderate load for a long
//! time, to show that nothing accumulates: memory, file descriptors, database connections,
//! errors, unaudited credentials.
//!
//! The server runs on a fresh database with moto as STS. Several engineers (support tokens)
//! work on a few customers: every second one of them opens a new support session and, once
//! [`LIVE_SESSIONS`] are live, the oldest session is revoked (by its owner or by an admin,
//! in turn). [`WORKERS`] keep-alive connections ask for credentials at `SOAK_RATE` requests
//! per second in total, paced by timers (not as fast as possible): mostly for live sessions
//! (cached credentials; the first request of each new session calls STS) and one request in
//! [`REVOKED_SHARE`] for a recently revoked session, which must be refused (410; these are
//! expected refusals, not errors). Once a second the server's RSS, its open file descriptors
//! and its Postgres connections are sampled.
//!
//! Run it with `tests/bench S1` (release, 20 minutes), or for a quick check of the logic
//! `SOAK_SECS=60 tests/run --test bench -- --ignored --nocapture s1_`. `SOAK_SECS` is the
//! duration (default 1200), `SOAK_RATE` the credential requests per second (default 300).
//!
//! What must hold (issue 13, "Soak"), comparing the mean of the last minute with the mean of
//! the first minute after a one-minute warm-up (with `SOAK_SECS` under 300: the last fifth
//! of the run with the second fifth, the first being the warm-up):
//! - S1: server RSS at most 1.2 × (see [`RSS_TOLERANCE`]);
//! - S1b: open file descriptors at most [`FD_SLACK`] more;
//! - S1c: the server's Postgres connections at most [`CONNECTION_SLACK`] more;
//! - S1d: no unexpected failure at all (a transport error, an unexpected status, a revoked
//!   session served after its revocation was answered, a live session refused);
//! - S1e: one `credentials.issue` success audit row per credential handed out, and one
//!   `SessionRevoked` denial row per refusal.
//!
//! S1f reports the request rate achieved against `SOAK_RATE` (not asserted: a slow machine
//! soaks at a lower rate, which the row shows).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanyard_tests::unique;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use crate::table;

/// Engineers (support tokens) opening sessions, in turn.
const ENGINEERS: usize = 6;
/// Customers, each with one role; sessions go to them in turn.
const CUSTOMERS: usize = 3;
/// Live sessions kept: past this, each new session revokes the oldest.
const LIVE_SESSIONS: usize = 16;
/// One new session (and, in steady state, one revocation) per this period.
const CHURN_EVERY: Duration = Duration::from_secs(1);
/// Connections (tasks, one keep-alive connection each) asking for credentials; together
/// they make `SOAK_RATE` requests per second. A fixed number, so that the server's open
/// file descriptors do not depend on how the load generator's pool happens to grow.
const WORKERS: usize = 16;
/// One credential request in this many goes to a recently revoked session.
const REVOKED_SHARE: u64 = 20;
/// Recently revoked sessions kept as targets of such requests.
const REVOKED_KEPT: usize = 8;
/// Last-window RSS at most this times the first window's. Over 20 minutes at 300 requests
/// per second (360,000 requests, 1,200 sessions opened and revoked) a leak of 20 bytes per
/// request or 6 KB per session would add about 7 MB, over a fifth of the server's RSS at
/// rest (tens of MB): caught. What legitimately still grows after the warm-up (allocator
/// arenas and free lists settling, caches reaching their working size) is far below 20 %.
const RSS_TOLERANCE: f64 = 1.2;
/// Open descriptors of the last window at most this many more than in the first: the server
/// holds one per client connection ([`WORKERS`] + 2 here), per database connection (see
/// below) and per pooled connection to STS, and the last two may legitimately differ by a
/// few between windows. A leak of one per revocation or per session would add hundreds.
const FD_SLACK: f64 = 10.0;
/// Postgres connections of the last window at most this many more than in the first: the
/// pool may open one or two more after a burst and keep them until they idle out.
const CONNECTION_SLACK: f64 = 3.0;

/// A session the soak opened, and the engineer (index) who owns it.
#[derive(Clone)]
struct Session {
    id: String,
    owner: usize,
}

#[derive(Default)]
struct Sessions {
    /// Oldest first.
    live: VecDeque<Session>,
    /// Revoked sessions (newest last) and when their revocation was answered.
    recently_revoked: VecDeque<(Session, Instant)>,
    /// Every session whose revocation was asked for, answered or not.
    revoking: HashSet<String>,
}

#[derive(Default)]
struct Counts {
    /// Credential requests sent.
    requests: AtomicU64,
    /// Credentials handed out (200 with a credential document).
    vends: AtomicU64,
    /// Credential requests refused with 410 because the session was revoked.
    refusals: AtomicU64,
    opened: AtomicU64,
    revoked: AtomicU64,
    errors: AtomicU64,
}

struct Soak {
    base: String,
    admin: String,
    /// Support tokens, one per engineer.
    engineers: Vec<String>,
    customers: Vec<String>,
    rate: f64,
    sessions: Mutex<Sessions>,
    counts: Counts,
    /// The first unexpected failures, for the report.
    error_samples: Mutex<Vec<String>>,
}

/// When the measured run starts and ends.
#[derive(Clone, Copy)]
struct Run {
    start: Instant,
    end: Instant,
}

/// A well-mixed index below `len` from a counter (no random numbers needed).
fn pick(n: u64, len: usize) -> usize {
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize % len
}

impl Soak {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn error(&self, what: String) {
        self.counts.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.error_samples.lock().unwrap();
        if samples.len() < 20 {
            samples.push(what);
        }
    }

    /// Engineer `n % ENGINEERS` opens a support session with customer `n % CUSTOMERS`.
    async fn open_session(&self, http: &reqwest::Client, n: usize) {
        let owner = n % ENGINEERS;
        let answer = http
            .post(self.url("/v1/sessions"))
            .bearer_auth(&self.engineers[owner])
            .json(
                &json!({ "kind": "support", "customer": self.customers[n % CUSTOMERS],
                           "role": "readonly", "case_id": format!("SOAK-{n}"),
                           "reason": "soak", "duration_seconds": 3600 }),
            )
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return self.error(format!("opening a session: {e}")),
        };
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        match body["id"].as_str() {
            Some(id) if status == 201 => {
                self.counts.opened.fetch_add(1, Ordering::Relaxed);
                let session = Session {
                    id: id.to_owned(),
                    owner,
                };
                self.sessions.lock().unwrap().live.push_back(session);
            }
            _ => self.error(format!("opening a session: {status} {body}")),
        }
    }

    /// Revokes the oldest live session once more than [`LIVE_SESSIONS`] are live: by its
    /// owner for even `n`, by an admin for odd.
    async fn revoke_oldest(&self, http: &reqwest::Client, n: usize) {
        let oldest = {
            let mut sessions = self.sessions.lock().unwrap();
            if sessions.live.len() <= LIVE_SESSIONS {
                return;
            }
            let oldest = sessions.live.pop_front().unwrap();
            sessions.revoking.insert(oldest.id.clone());
            oldest
        };
        let token = if n.is_multiple_of(2) {
            &self.engineers[oldest.owner]
        } else {
            &self.admin
        };
        let answer = http
            .delete(self.url(&format!("/v1/sessions/{}", oldest.id)))
            .bearer_auth(token)
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return self.error(format!("revoking {}: {e}", oldest.id)),
        };
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if status == 200 && body["status"] == "revoked" {
            self.counts.revoked.fetch_add(1, Ordering::Relaxed);
            let mut sessions = self.sessions.lock().unwrap();
            sessions
                .recently_revoked
                .push_back((oldest, Instant::now()));
            if sessions.recently_revoked.len() > REVOKED_KEPT {
                sessions.recently_revoked.pop_front();
            }
        } else {
            self.error(format!("revoking {}: {status} {body}", oldest.id));
        }
    }

    /// One credential request: for a live session, or (one in [`REVOKED_SHARE`]) for a
    /// recently revoked one, which must be refused.
    async fn credential_request(&self, http: &reqwest::Client) {
        let n = self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let (session, revoked_at) = {
            let sessions = self.sessions.lock().unwrap();
            let revoked = &sessions.recently_revoked;
            if n.is_multiple_of(REVOKED_SHARE) && !revoked.is_empty() {
                let (session, at) = &revoked[pick(n, revoked.len())];
                (session.clone(), Some(*at))
            } else if sessions.live.is_empty() {
                drop(sessions);
                return self.error("no live session to ask credentials for".to_owned());
            } else {
                (sessions.live[pick(n, sessions.live.len())].clone(), None)
            }
        };
        let sent = Instant::now();
        let answer = http
            .post(self.url(&format!("/v1/sessions/{}/credentials", session.id)))
            .bearer_auth(&self.engineers[session.owner])
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return self.error(format!("credentials for {}: {e}", session.id)),
        };
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        match status.as_u16() {
            200 if body["AccessKeyId"].is_string() => {
                self.counts.vends.fetch_add(1, Ordering::Relaxed);
                // Asked only after the revocation was answered: the instance that revoked
                // never serves it again (no cached grant outlives the revocation).
                if let Some(at) = revoked_at {
                    self.error(format!(
                        "credentials for {} sent {:?} after its revocation",
                        session.id,
                        sent - at
                    ));
                }
            }
            // Refused: expected for a revoked session, and for a live one whose revocation
            // began while this request was on its way.
            410 if revoked_at.is_some()
                || self.sessions.lock().unwrap().revoking.contains(&session.id) =>
            {
                self.counts.refusals.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.error(format!(
                "credentials for {} (revoked: {}): {status} {body}",
                session.id,
                revoked_at.is_some()
            )),
        }
    }
}

/// Worker `i` of [`WORKERS`]: its share of the rate on one keep-alive connection, its ticks
/// offset from the others' so that the requests are spread evenly.
async fn worker(soak: Arc<Soak>, run: Run, i: usize) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let period = Duration::from_secs_f64(WORKERS as f64 / soak.rate);
    let first = run.start + period.mul_f64(i as f64 / WORKERS as f64);
    let mut ticks = tokio::time::interval_at(first, period);
    // A tick missed while a request is slow is skipped: the rate drops, no burst follows.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        if ticks.tick().await >= run.end {
            return;
        }
        soak.credential_request(&http).await;
    }
}

/// Opens a session every [`CHURN_EVERY`] and revokes the oldest beyond [`LIVE_SESSIONS`].
async fn churn(soak: Arc<Soak>, run: Run, mut n: usize) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut ticks = tokio::time::interval_at(run.start + CHURN_EVERY, CHURN_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        if ticks.tick().await >= run.end {
            return;
        }
        soak.open_session(&http, n).await;
        soak.revoke_oldest(&http, n).await;
        n += 1;
    }
}

/// One sample of the server's resources.
struct Sample {
    /// Seconds since the soak started.
    at: f64,
    rss_kb: f64,
    fds: f64,
    connections: f64,
}

/// Samples the server once a second until the soak ends; Postgres connections are those of
/// its database, this sampler's own excluded.
async fn sample(run: Run, pid: u32, pool: sqlx::PgPool, database: String) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval_at(run.start, Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let at = ticks.tick().await;
        if at > run.end {
            return samples;
        }
        let connections: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_one(&pool)
        .await
        .unwrap();
        samples.push(Sample {
            at: (at - run.start).as_secs_f64(),
            rss_kb: crate::credentials::rss_kb(pid, "VmRSS:") as f64,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count() as f64,
            connections: connections as f64,
        });
    }
}

/// The mean of `field` over the samples taken in `[from, to]` seconds.
fn mean(samples: &[Sample], from: f64, to: f64, field: fn(&Sample) -> f64) -> f64 {
    let values: Vec<f64> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .map(field)
        .collect();
    assert!(!values.is_empty(), "no samples between {from} s and {to} s");
    values.iter().sum::<f64>() / values.len() as f64
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark (20 minutes): run with tests/bench S1"]
async fn s1_soak_steady_load_with_new_and_revoked_sessions() {
    let secs = table::env_or("SOAK_SECS", 1200);
    let rate = table::env_or("SOAK_RATE", 300) as f64;
    assert!(secs >= 10 && rate > 0.0, "SOAK_SECS ≥ 10 and SOAK_RATE > 0");
    // The comparison window: a minute, or a fifth of a short run; the first is the warm-up.
    let window = (secs as f64 / 5.0).min(60.0);
    let window_name = if window == 60.0 {
        "minute".to_owned()
    } else {
        format!("{window:.0} s")
    };

    let data_dir = tempfile::tempdir().unwrap();
    let db_url = lanyard_tests::fresh_database_url();
    let server = crate::fixture::start_server(&db_url, data_dir.path(), &[]);
    let admin = server.issue_token("ops", "admin");
    let engineers: Vec<String> = (0..ENGINEERS)
        .map(|i| server.issue_token(&format!("engineer-{i}"), "support"))
        .collect();
    let http = reqwest::Client::new();
    let mut customers = Vec::new();
    for _ in 0..CUSTOMERS {
        let customer = unique("soak");
        let created = http
            .post(server.url("/v1/customers"))
            .bearer_auth(&admin)
            .json(&json!({ "id": customer }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{:?}", created.text().await);
        let role = http
            .put(server.url(&format!("/v1/customers/{customer}/roles/readonly")))
            .bearer_auth(&admin)
            .json(&json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" }))
            .send()
            .await
            .unwrap();
        assert_eq!(role.status(), 200, "{:?}", role.text().await);
        customers.push(customer);
    }
    let database = db_url.rsplit('/').next().unwrap().to_owned();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db_url)
        .await
        .unwrap();

    let soak = Arc::new(Soak {
        base: server.base.clone(),
        admin,
        engineers,
        customers,
        rate,
        sessions: Mutex::default(),
        counts: Counts::default(),
        error_samples: Mutex::default(),
    });
    // The live sessions the load starts on.
    for n in 0..LIVE_SESSIONS {
        soak.open_session(&http, n).await;
    }
    assert_eq!(soak.sessions.lock().unwrap().live.len(), LIVE_SESSIONS);

    let start = Instant::now();
    let run = Run {
        start,
        end: start + Duration::from_secs(secs),
    };
    let sampler = tokio::spawn(sample(run, server.child.id(), pool.clone(), database));
    let churner = tokio::spawn(churn(soak.clone(), run, LIVE_SESSIONS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| tokio::spawn(worker(soak.clone(), run, i)))
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    churner.await.unwrap();
    let samples = sampler.await.unwrap();
    let elapsed = (Instant::now() - run.start).as_secs_f64();

    // Every answer is in, and every answer's audit row committed before it was sent.
    let (audited, audited_refusals, cold): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE outcome = 'success'),
                count(*) FILTER (WHERE outcome = 'denied' AND error_code = 'SessionRevoked'),
                count(*) FILTER (WHERE outcome = 'success' AND NOT cache_hit)
         FROM audit_event WHERE action = 'credentials.issue'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    let c = &soak.counts;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let (requests, vends, refusals) = (load(&c.requests), load(&c.vends), load(&c.refusals));
    let (opened, revoked, errors) = (load(&c.opened), load(&c.revoked), load(&c.errors));
    let secs_f = secs as f64;
    let (first, last) = ((window, 2.0 * window), (secs_f - window, secs_f));
    let rss = (
        mean(&samples, first.0, first.1, |s| s.rss_kb),
        mean(&samples, last.0, last.1, |s| s.rss_kb),
    );
    let fds = (
        mean(&samples, first.0, first.1, |s| s.fds),
        mean(&samples, last.0, last.1, |s| s.fds),
    );
    let connections = (
        mean(&samples, first.0, first.1, |s| s.connections),
        mean(&samples, last.0, last.1, |s| s.connections),
    );
    let achieved = requests as f64 / secs_f;

    println!();
    println!(
        "soak: {secs} s at {rate} credential requests/s over {WORKERS} connections, \
         {ENGINEERS} engineers, {CUSTOMERS} customers, {LIVE_SESSIONS} live sessions, \
         one opened every {CHURN_EVERY:?}; windows of {window:.0} s ({elapsed:.1} s until the last answer)"
    );
    println!(
        "credential requests {requests}: {vends} served ({cold} called STS), {refusals} refused as revoked; \
         sessions opened {opened} ({LIVE_SESSIONS} of them before the run), revoked {revoked}; errors {errors}"
    );
    println!(
        "server RSS {:.1} → {:.1} MB, open fds {:.1} → {:.1}, Postgres connections {:.1} → {:.1} \
         (first → last {window_name}); samples: {}",
        rss.0 / 1024.0,
        rss.1 / 1024.0,
        fds.0,
        fds.1,
        connections.0,
        connections.1,
        samples.len()
    );
    for error in soak.error_samples.lock().unwrap().iter() {
        println!("error: {error}");
    }

    let rss_ratio = rss.1 / rss.0;
    table::report(table::Row {
        id: "S1",
        what: &format!("soak: server RSS, last {window_name}"),
        figure: format!("{:.1} MB", rss.1 / 1024.0),
        baseline: format!(
            "{:.1} MB, first {window_name} after warm-up",
            rss.0 / 1024.0
        ),
        ratio: Some(rss_ratio),
        goal: "≤ 1.20",
        met: Some(rss_ratio <= RSS_TOLERANCE),
    });
    table::report(table::Row {
        id: "S1b",
        what: &format!("soak: open file descriptors, last {window_name}"),
        figure: format!("{:.1}", fds.1),
        baseline: format!("{:.1}, first {window_name} after warm-up", fds.0),
        ratio: Some(fds.1 / fds.0),
        goal: "≤ first + 10",
        met: Some(fds.1 <= fds.0 + FD_SLACK),
    });
    table::report(table::Row {
        id: "S1c",
        what: &format!("soak: Postgres connections, last {window_name}"),
        figure: format!("{:.1}", connections.1),
        baseline: format!("{:.1}, first {window_name} after warm-up", connections.0),
        ratio: Some(connections.1 / connections.0),
        goal: "≤ first + 3",
        met: Some(connections.1 <= connections.0 + CONNECTION_SLACK),
    });
    table::report(table::Row {
        id: "S1d",
        what: "soak: unexpected failures",
        figure: format!("{errors}"),
        baseline: format!(
            "{requests} credential requests ({refusals} refused as revoked), {opened} opens, {revoked} revocations"
        ),
        ratio: None,
        goal: "= 0",
        met: Some(errors == 0),
    });
    table::report(table::Row {
        id: "S1e",
        what: "soak: credentials.issue success audit rows",
        figure: format!("{audited} rows"),
        baseline: format!("{vends} credentials handed out"),
        ratio: Some(audited as f64 / (vends as f64).max(1.0)),
        goal: "= 1.00",
        met: Some(audited as u64 == vends),
    });
    table::report(table::Row {
        id: "S1f",
        what: "soak: credential requests per second achieved",
        figure: format!("{achieved:.1} req/s"),
        baseline: format!("{rate} req/s asked (SOAK_RATE)"),
        ratio: Some(achieved / rate),
        goal: "≥ 0.95",
        met: Some(achieved >= 0.95 * rate),
    });

    assert!(
        !server.log().contains("\"level\":\"ERROR\""),
        "{}",
        server.log()
    );
    assert_eq!(
        errors, 0,
        "unexpected failures (the first are printed above)"
    );
    assert!(
        opened > 0 && revoked > 0 && refusals > 0 && cold > 0,
        "the soak must open and revoke sessions, be refused for revoked ones and call STS"
    );
    assert_eq!(
        audited as u64, vends,
        "every credential handed out is audited"
    );
    assert_eq!(
        audited_refusals as u64, refusals,
        "every refusal of a revoked session is audited"
    );
    assert!(
        rss_ratio <= RSS_TOLERANCE,
        "server RSS grew from {:.1} to {:.1} MB",
        rss.0 / 1024.0,
        rss.1 / 1024.0
    );
    assert!(
        fds.1 <= fds.0 + FD_SLACK,
        "open file descriptors grew from {:.1} to {:.1}",
        fds.0,
        fds.1
    );
    assert!(
        connections.1 <= connections.0 + CONNECTION_SLACK,
        "Postgres connections grew from {:.1} to {:.1}",
        connections.0,
        connections.1
    );
}
