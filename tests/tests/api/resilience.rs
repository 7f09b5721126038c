//! Resilience of the credential path: when Postgres goes away under load, the broker fails
//! closed (503, never credentials without a committed audit row, even for sessions whose
//! credentials are cached), answers before its request timeout, and serves again within
//! seconds once Postgres is back, without a restart. Faults are injected with
//! [`lanyard_tests::FaultProxy`] between the app and the real Postgres.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanyard_server::auth::Role;
use lanyard_tests::{FaultProxy, TestApp, database_server_url};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Connection;

/// Request timeout of the app under test: "no hang" means an answer before it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent client loops hammering the credentials endpoint.
const CLIENTS: usize = 32;
/// Responses of each kind to see in a phase before moving on.
const ENOUGH: usize = 64;
/// "Serves again within seconds": the first 200 after `restore` comes before this.
const RECOVERY: Duration = Duration::from_secs(10);

/// An app whose every database connection goes through a fault proxy in front of the test
/// Postgres (as in operations.rs), and the URL of its database that bypasses the proxy.
async fn app_behind_database_proxy() -> (TestApp, FaultProxy, String) {
    let server = database_server_url();
    let (_, rest) = server.split_once("://").unwrap();
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let lookup = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    let postgres = tokio::net::lookup_host(lookup.as_str())
        .await
        .unwrap()
        .find(SocketAddr::is_ipv4)
        .unwrap();
    let proxy = FaultProxy::start(postgres).await;
    let direct = lanyard_tests::fresh_database_url();
    let proxied = direct.replacen(host_port, &proxy.addr().to_string(), 1);
    assert_ne!(proxied, direct);
    let app = TestApp::spawn_with(|s| {
        s.database_url = Some(SecretString::from(proxied.as_str()));
        s.request_timeout_secs = Some(REQUEST_TIMEOUT.as_secs());
    })
    .await;
    assert!(
        proxy.open_connections() > 0,
        "the app goes through the proxy"
    );
    (app, proxy, direct)
}

/// Where the test is: requests are classified by the phase they started and ended in.
const BEFORE: u8 = 0;
const CUTTING: u8 = 1;
const DOWN: u8 = 2;
const RESTORED: u8 = 3;

/// One answer (or failure to get one) of the credentials endpoint.
#[derive(Debug)]
struct Sample {
    phases: (u8, u8),
    elapsed: Duration,
    /// `Err` when no HTTP response arrived (connection error, client timeout).
    status: Result<u16, String>,
    request_id: Option<String>,
    content_type: Option<String>,
    retry_after: Option<String>,
    access_key_id: Option<String>,
    problem_type: Option<String>,
}

#[derive(Default)]
struct Tally {
    samples: Mutex<Vec<Sample>>,
    /// Counted live, for the test to wait on: 200s, and anything else, started and
    /// answered within one phase.
    ok: [AtomicUsize; 4],
    failed: [AtomicUsize; 4],
}

async fn one_request(client: &reqwest::Client, url: &str, token: &str, phase: &AtomicU8) -> Sample {
    let start_phase = phase.load(Ordering::SeqCst);
    let started = Instant::now();
    let result = client.post(url).bearer_auth(token).send().await;
    let mut sample = Sample {
        phases: (start_phase, start_phase),
        elapsed: Duration::ZERO,
        status: Err(String::new()),
        request_id: None,
        content_type: None,
        retry_after: None,
        access_key_id: None,
        problem_type: None,
    };
    match result {
        Err(e) => sample.status = Err(format!("{e:?}")),
        Ok(response) => {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            sample.status = Ok(response.status().as_u16());
            sample.request_id = header("x-request-id");
            sample.content_type = header("content-type");
            sample.retry_after = header("retry-after");
            match response.json::<Value>().await {
                Ok(body) if sample.status == Ok(200) => {
                    sample.access_key_id = body["AccessKeyId"].as_str().map(str::to_owned);
                }
                Ok(body) => sample.problem_type = body["type"].as_str().map(str::to_owned),
                Err(e) => sample.problem_type = Some(format!("unreadable body: {e}")),
            }
        }
    }
    sample.elapsed = started.elapsed();
    sample.phases.1 = phase.load(Ordering::SeqCst);
    sample
}

/// Polls the live tally until `done`, failing with `what` (and the counts so far) after
/// `limit`.
async fn wait_until(what: &str, limit: Duration, tally: &Tally, done: impl Fn(&Tally) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(tally) {
        if Instant::now() >= deadline {
            let counts = summary(&tally.samples.lock().unwrap());
            panic!("timed out after {limit:?}: {what}; so far: {counts:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many requests got which answer, by the phases they started and ended in.
fn summary(samples: &[Sample]) -> BTreeMap<String, usize> {
    let name = |p: u8| ["before", "cutting", "down", "restored"][usize::from(p)];
    let mut counts = BTreeMap::new();
    for s in samples {
        let span = if s.phases.0 == s.phases.1 {
            name(s.phases.0).to_owned()
        } else {
            format!("{}->{}", name(s.phases.0), name(s.phases.1))
        };
        let what = match &s.status {
            Ok(status) => format!("{status} {}", s.problem_type.as_deref().unwrap_or("")),
            Err(_) => "no response".to_owned(),
        };
        *counts
            .entry(format!("{span}: {}", what.trim()))
            .or_default() += 1;
    }
    counts
}

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Postgres host gone: connections closed, new ones refused.
    Refused,
    /// A pooler in front of a dead Postgres: connections accepted, then closed at once.
    AcceptedThenClosed,
}

/// Drives `CLIENTS` loops of credential requests for a session whose credentials are
/// already cached, through an outage of the database; checks every answer and the audit
/// trail.
async fn credentials_through_an_outage(outage: Outage) {
    let (app, proxy, direct_url) = app_behind_database_proxy().await;
    // A connection of the test's own, past the proxy, held to the end: while the app's are
    // cut the database would otherwise be idle, and `tests/run` started elsewhere meanwhile
    // drops idle test databases.
    let mut direct = sqlx::PgConnection::connect(&direct_url).await.unwrap();
    let customer = format!("acme-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let alice = app
        .token_for("alice", Role::Support, None, Duration::from_secs(3600))
        .await;
    let (status, session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&alice),
            Some(json!({
                "kind": "support", "customer": customer, "role": "readonly",
                "case_id": "CS-4242", "reason": "database outage drill",
                "duration_seconds": 1800
            })),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let path = format!(
        "/v1/sessions/{}/credentials",
        session["id"].as_str().unwrap()
    );
    let url = app.url(&path);
    // Warm the cache: from here on, every request could be answered without AWS.
    let (status, warm) = app.call(Method::POST, &path, Some(&alice), None).await;
    assert_eq!(status, 200, "{warm}");
    let cached_key = warm["AccessKeyId"].as_str().unwrap().to_owned();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        // Longer than the server's own timeout, so a hang shows up as a slow sample.
        .timeout(REQUEST_TIMEOUT + Duration::from_secs(10))
        .build()
        .unwrap();
    let tally = Arc::new(Tally::default());
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, alice) = (client.clone(), url.clone(), alice.clone());
            let (tally, phase, stop) = (tally.clone(), phase.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let sample = one_request(&client, &url, &alice, &phase).await;
                    if sample.phases.0 == sample.phases.1 {
                        let counter = if sample.status == Ok(200) {
                            &tally.ok
                        } else {
                            &tally.failed
                        };
                        counter[usize::from(sample.phases.0)].fetch_add(1, Ordering::SeqCst);
                    }
                    tally.samples.lock().unwrap().push(sample);
                }
            })
        })
        .collect();

    wait_until(
        "credentials are served before the outage",
        Duration::from_secs(30),
        &tally,
        |t| t.ok[usize::from(BEFORE)].load(Ordering::SeqCst) >= ENOUGH,
    )
    .await;

    phase.store(CUTTING, Ordering::SeqCst);
    match outage {
        Outage::Refused => proxy.cut().await,
        Outage::AcceptedThenClosed => proxy.cut_accepting().await,
    }
    phase.store(DOWN, Ordering::SeqCst);
    wait_until(
        "requests are refused while the database is unreachable",
        Duration::from_secs(60),
        &tally,
        |t| t.failed[usize::from(DOWN)].load(Ordering::SeqCst) >= ENOUGH,
    )
    .await;

    proxy.restore();
    let restored = Instant::now();
    phase.store(RESTORED, Ordering::SeqCst);
    wait_until(
        "credentials are served again after the database returns",
        RECOVERY + Duration::from_secs(20),
        &tally,
        |t| t.ok[usize::from(RESTORED)].load(Ordering::SeqCst) >= 1,
    )
    .await;
    let recovered_after = restored.elapsed();
    wait_until(
        "credentials keep being served after the database returns",
        Duration::from_secs(30),
        &tally,
        |t| t.ok[usize::from(RESTORED)].load(Ordering::SeqCst) >= ENOUGH,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in loops {
        tokio::time::timeout(REQUEST_TIMEOUT * 3, task)
            .await
            .expect("client loops stop")
            .unwrap();
    }
    let samples = std::mem::take(&mut *tally.samples.lock().unwrap());

    let counts = summary(&samples);
    let slowest = samples.iter().map(|s| s.elapsed).max().unwrap();
    eprintln!(
        "{outage:?}: {} requests; first 200 {recovered_after:?} after restore; slowest \
         {slowest:?}\n{counts:#?}",
        samples.len()
    );

    // Every request was answered, before the request timeout.
    let unanswered: Vec<&Sample> = samples.iter().filter(|s| s.status.is_err()).collect();
    assert!(unanswered.is_empty(), "no response: {unanswered:#?}");
    let slow: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.elapsed >= REQUEST_TIMEOUT)
        .collect();
    assert!(
        slow.is_empty(),
        "answered after the request timeout: {slow:#?}"
    );
    // Every failure is a 503 `unavailable` problem saying when to ask again (never a 500,
    // never a timeout).
    let bad: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.status != Ok(200)
                && (s.status != Ok(503)
                    || s.content_type.as_deref() != Some("application/problem+json")
                    || s.retry_after.as_deref() != Some("1")
                    || s.problem_type.as_deref() != Some("urn:lanyard:problem:unavailable"))
        })
        .collect();
    assert!(bad.is_empty(), "not 200 nor 503 unavailable: {bad:#?}");
    // With the database unreachable for the whole request, nothing can be audited: no 200.
    let ok_while_down: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.phases == (DOWN, DOWN) && s.status == Ok(200))
        .collect();
    assert!(
        ok_while_down.is_empty(),
        "credentials handed out while the database was unreachable: {ok_while_down:#?}"
    );
    assert!(
        recovered_after < RECOVERY,
        "first credentials {recovered_after:?} after the database returned"
    );
    // All from the cache: the outage did not make anyone call AWS again.
    assert!(
        samples
            .iter()
            .filter_map(|s| s.access_key_id.as_deref())
            .all(|k| k == cached_key),
        "a 200 carried other credentials than the cached ones"
    );

    // The audit trail, read from Postgres directly (not through the proxy): every 200 has
    // exactly one committed success row, for the keys it handed out.
    let served: Vec<(&str, &str)> = samples
        .iter()
        .filter(|s| s.status == Ok(200))
        .map(|s| {
            (
                s.request_id.as_deref().expect("x-request-id on every 200"),
                s.access_key_id
                    .as_deref()
                    .expect("AccessKeyId in every 200"),
            )
        })
        .collect();
    let refused: Vec<&str> = samples
        .iter()
        .filter(|s| s.status != Ok(200))
        .map(|s| s.request_id.as_deref().expect("x-request-id on every 503"))
        .collect();
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT request_id, outcome, detail->>'access_key_id' FROM audit_event
         WHERE action = 'credentials.issue' AND session_id = $1::uuid
           AND request_id IS NOT NULL",
    )
    .bind(session["id"].as_str().unwrap())
    .fetch_all(&mut direct)
    .await
    .unwrap();
    let mut audited: HashMap<&str, Vec<(&str, Option<&str>)>> = HashMap::new();
    for (request_id, outcome, key) in &rows {
        audited
            .entry(request_id.as_str())
            .or_default()
            .push((outcome.as_str(), key.as_deref()));
    }
    let unaudited: Vec<String> = served
        .iter()
        .filter(|(id, key)| audited.get(id) != Some(&vec![("success", Some(*key))]))
        .map(|(id, key)| format!("{id} ({key}): {:?}", audited.get(id)))
        .collect();
    assert!(
        unaudited.is_empty(),
        "{} of {} 200s lack exactly one committed success audit row with their keys: {:#?}",
        unaudited.len(),
        served.len(),
        &unaudited[..unaudited.len().min(20)]
    );
    // Allowed (fail closed), reported: a 503 whose row did commit (the commit ack was lost).
    let committed_but_refused = refused
        .iter()
        .filter(|id| {
            audited
                .get(*id)
                .is_some_and(|r| r.iter().any(|(o, _)| *o == "success"))
        })
        .count();
    eprintln!(
        "{outage:?}: {} 200s, all audited; {} 503s, {committed_but_refused} of them with a \
         committed success row",
        served.len(),
        refused.len()
    );
    direct.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_never_hands_out_credentials_without_an_audit_row() {
    credentials_through_an_outage(Outage::Refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_front_end_without_a_backend_never_hands_out_unaudited_credentials() {
    credentials_through_an_outage(Outage::AcceptedThenClosed).await;
}
