//! Fault drills under load, shared by the API tests and the fault benchmarks (F1–F4):
//!
//! - [`StandInSts`], an STS of the test's own that answers as STS does, or throttles, or
//!   fails with 5xx, on command, and counts the calls it got by the answer it gave;
//! - [`Load`], concurrent client loops of credential requests whose every answer is kept as
//!   a [`Sample`], with the phase of the drill it started and ended in;
//! - [`audit_check`], the audit trail of what a drill handed out;
//! - [`credentials_through_a_database_outage`], the database outage drill: a
//!   [`FaultProxy`] between the application and Postgres cut under load, then restored.
//!
//! (The TCP fault proxy itself is [`crate::fault`].)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanyard_server::auth::Role;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::app::{TestApp, unique};
use crate::cli_home::{FakeBroker, FakeReply};
use crate::database::{database_server_url, fresh_database_url};
use crate::fault::{FaultProxy, socket_of, through};

/// Request timeout of the application in a drill: "no hang" means an answer before it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent client loops of a drill.
pub const CLIENTS: usize = 32;
/// Responses of each kind to see in a phase before moving on.
pub const ENOUGH: usize = 64;
/// "Serves again within seconds": the first 200 after the fault ends comes before this.
pub const RECOVERY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// A stand-in STS
// ---------------------------------------------------------------------------------------

/// How the [`StandInSts`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StsAnswer {
    /// As STS does: AssumeRole gives fresh credentials, GetCallerIdentity names an IAM user.
    Healthy,
    /// 400 `Throttling` ("Rate exceeded"), as STS over its request rate.
    Throttling,
    /// 500 `InternalFailure` and 503 `ServiceUnavailable`, in turn.
    ServerErrors,
}

/// The AWS error codes of a faulty [`StsAnswer`].
pub fn error_codes(answer: StsAnswer) -> &'static [&'static str] {
    match answer {
        StsAnswer::Healthy => &[],
        StsAnswer::Throttling => &["Throttling"],
        StsAnswer::ServerErrors => &["InternalFailure", "ServiceUnavailable"],
    }
}

/// An STS of the test's own (the Query protocol over plain HTTP on loopback), for what moto
/// cannot be made to do: throttle, fail, recover. Point the application's
/// `aws_endpoint_url` at [`StandInSts::url`].
pub struct StandInSts {
    pub url: String,
    answer: Arc<Mutex<StsAnswer>>,
    /// Calls per (Action, answer given).
    calls: Arc<Mutex<BTreeMap<(String, StsAnswer), usize>>>,
    _server: FakeBroker,
}

const STS_XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const ACCOUNT: &str = "111122223333";

impl StandInSts {
    /// Starts a stand-in answering `answer` until told otherwise.
    pub async fn start(answer: StsAnswer) -> StandInSts {
        let answer = Arc::new(Mutex::new(answer));
        let calls = Arc::new(Mutex::new(BTreeMap::new()));
        let (current, counts) = (answer.clone(), calls.clone());
        let served = AtomicUsize::new(0);
        let server = FakeBroker::serve_requests(move |_, request| {
            let n = served.fetch_add(1, Ordering::SeqCst);
            let form = form_fields(request);
            let action = form.get("Action").cloned().unwrap_or_default();
            // Read and counted under one lock: a call is answered as it is counted.
            let answer = *current.lock().unwrap();
            *counts.lock().unwrap().entry((action, answer)).or_insert(0) += 1;
            sts_reply(answer, &form, n)
        })
        .await;
        StandInSts {
            url: server.url.clone(),
            answer,
            calls,
            _server: server,
        }
    }

    /// From now on, answers every call so.
    pub fn answer(&self, answer: StsAnswer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Calls of `action` (`AssumeRole`, `GetCallerIdentity`) so far.
    pub fn calls(&self, action: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|((a, _), _)| a == action)
            .map(|(_, n)| n)
            .sum()
    }

    /// Calls of `action` that were given `answer`.
    pub fn calls_answered(&self, action: &str, answer: StsAnswer) -> usize {
        self.calls
            .lock()
            .unwrap()
            .get(&(action.to_owned(), answer))
            .copied()
            .unwrap_or(0)
    }
}

/// The form fields of a Query-protocol request (head and body, as [`FakeBroker`] keeps it).
fn form_fields(request: &str) -> HashMap<String, String> {
    let body = request.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = urlencoding::decode(&v.replace('+', " "))
                .map_or_else(|_| v.to_owned(), |v| v.into_owned());
            (k.to_owned(), v)
        })
        .collect()
}

/// What STS answers `form` (the `n`th call) with, when it answers `answer`.
fn sts_reply(answer: StsAnswer, form: &HashMap<String, String>, n: usize) -> FakeReply {
    let request_id = format!("00000000-0000-4000-8000-{n:012}");
    let xml = |status: u16, body: String| FakeReply {
        status,
        headers: vec![("content-type".into(), "text/xml".into())],
        body,
    };
    let error = |status: u16, kind: &str, code: &str, message: &str| {
        xml(
            status,
            format!(
                "<ErrorResponse xmlns=\"{STS_XMLNS}\"><Error><Type>{kind}</Type>\
                 <Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>{request_id}</RequestId></ErrorResponse>"
            ),
        )
    };
    let field = |name: &str| form.get(name).map_or("", String::as_str);
    match (answer, field("Action")) {
        (StsAnswer::Throttling, _) => error(400, "Sender", "Throttling", "Rate exceeded"),
        (StsAnswer::ServerErrors, _) if n.is_multiple_of(2) => error(
            500,
            "Receiver",
            "InternalFailure",
            "The request processing has failed because of an unknown error.",
        ),
        (StsAnswer::ServerErrors, _) => error(
            503,
            "Receiver",
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ),
        (StsAnswer::Healthy, "AssumeRole") => {
            let seconds: i64 = field("DurationSeconds").parse().unwrap_or(3600);
            let expiration = (chrono::Utc::now() + chrono::Duration::seconds(seconds))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let role = field("RoleArn").rsplit('/').next().unwrap_or("role");
            let name = field("RoleSessionName");
            let source_identity = match field("SourceIdentity") {
                "" => String::new(),
                s => format!("<SourceIdentity>{s}</SourceIdentity>"),
            };
            xml(
                200,
                format!(
                    "<AssumeRoleResponse xmlns=\"{STS_XMLNS}\"><AssumeRoleResult>\
                     {source_identity}<AssumedRoleUser>\
                     <Arn>arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{name}</Arn>\
                     <AssumedRoleId>AROASTANDIN000000000:{name}</AssumedRoleId>\
                     </AssumedRoleUser><Credentials>\
                     <AccessKeyId>ASIASTANDIN{n:09}</AccessKeyId>\
                     <SecretAccessKey>{secret}</SecretAccessKey>\
                     <SessionToken>FwoGZXIvYXdzEStandIn{n:09}{padding}</SessionToken>\
                     <Expiration>{expiration}</Expiration></Credentials>\
                     <PackedPolicySize>6</PackedPolicySize></AssumeRoleResult>\
                     <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
                     </AssumeRoleResponse>",
                    secret = "s".repeat(40),
                    padding = "t".repeat(300),
                ),
            )
        }
        (StsAnswer::Healthy, "GetCallerIdentity") => xml(
            200,
            format!(
                "<GetCallerIdentityResponse xmlns=\"{STS_XMLNS}\"><GetCallerIdentityResult>\
                 <Arn>arn:aws:iam::{ACCOUNT}:user/lanyard-broker</Arn>\
                 <UserId>AIDASTANDIN000000000</UserId><Account>{ACCOUNT}</Account>\
                 </GetCallerIdentityResult>\
                 <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
                 </GetCallerIdentityResponse>"
            ),
        ),
        (StsAnswer::Healthy, other) => error(
            400,
            "Sender",
            "InvalidAction",
            &format!("the stand-in STS does not do '{other}'"),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Sessions and the load of credential requests
// ---------------------------------------------------------------------------------------

/// A customer with a verified role, alice's support token and `n` open support sessions of
/// hers (opened for `reason`), none with credentials yet.
pub async fn support_sessions(app: &TestApp, reason: &str, n: usize) -> (String, Vec<Value>) {
    let customer = unique("acme");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let alice = app
        .token_for("alice", Role::Support, None, Duration::from_secs(3600))
        .await;
    let mut sessions = Vec::with_capacity(n);
    for case in 1..=n {
        let (status, session) = app
            .call(
                Method::POST,
                "/v1/sessions",
                Some(&alice),
                Some(json!({
                    "kind": "support", "customer": customer, "role": "readonly",
                    "case_id": format!("CS-{case}"), "reason": reason
                })),
            )
            .await;
        assert_eq!(status, 201, "{session}");
        sessions.push(session);
    }
    (alice, sessions)
}

/// [`support_sessions`] with one session.
pub async fn support_session(app: &TestApp, reason: &str) -> (String, Value) {
    let (alice, mut sessions) = support_sessions(app, reason, 1).await;
    (alice, sessions.remove(0))
}

/// The credential request path of a session (its JSON as the API returned it).
pub fn credentials_path(session: &Value) -> String {
    format!(
        "/v1/sessions/{}/credentials",
        session["id"].as_str().unwrap()
    )
}

/// Where a drill is: each request is classified by the phase it started and ended in.
pub const BEFORE: u8 = 0;
/// The fault is being put in place (a cut waits for open connections to close).
pub const ENTERING: u8 = 1;
/// The fault holds.
pub const FAULT: u8 = 2;
/// The fault is over.
pub const RESTORED: u8 = 3;
const PHASE_NAMES: [&str; 4] = ["before", "entering", "fault", "restored"];

/// One answer (or failure to get one) of the credentials endpoint.
#[derive(Debug)]
pub struct Sample {
    /// Which client loop sent it.
    pub client: usize,
    pub phases: (u8, u8),
    pub finished: Instant,
    pub elapsed: Duration,
    /// `Err` when no HTTP response arrived (connection error, client timeout).
    pub status: Result<u16, String>,
    pub request_id: Option<String>,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    /// Credentials in the answer, whatever its status.
    pub access_key_id: Option<String>,
    pub problem_type: Option<String>,
    pub aws_error_code: Option<String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status == Ok(200)
    }

    pub fn started(&self) -> Instant {
        self.finished - self.elapsed
    }

    /// Started and answered while the drill was in `phase`.
    pub fn within(&self, phase: u8) -> bool {
        self.phases == (phase, phase)
    }

    /// A 503 without credentials that says when to ask again (`Retry-After`, in whole
    /// seconds).
    pub fn unavailable_with_retry_after(&self) -> bool {
        self.status == Ok(503)
            && self.access_key_id.is_none()
            && self
                .retry_after
                .as_deref()
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|s| s > 0)
    }
}

/// The answers of a [`Load`] so far, and live counts to wait on.
#[derive(Default)]
pub struct Tally {
    samples: Mutex<Vec<Sample>>,
    /// 200s, and anything else, started and answered within one phase.
    ok: [AtomicUsize; 4],
    failed: [AtomicUsize; 4],
}

impl Tally {
    /// 200s started and answered within `phase`.
    pub fn ok(&self, phase: u8) -> usize {
        self.ok[usize::from(phase)].load(Ordering::SeqCst)
    }

    /// Other answers (and failures to answer) started and answered within `phase`.
    pub fn failed(&self, phase: u8) -> usize {
        self.failed[usize::from(phase)].load(Ordering::SeqCst)
    }

    /// Client loops that got a 200 answered in `phase`.
    pub fn clients_served(&self, phase: u8) -> usize {
        let samples = self.samples.lock().unwrap();
        let served: HashSet<usize> = samples
            .iter()
            .filter(|s| s.ok() && s.phases.1 == phase)
            .map(|s| s.client)
            .collect();
        served.len()
    }
}

/// Concurrent client loops of credential requests, each request kept as a [`Sample`].
pub struct Load {
    tally: Arc<Tally>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

/// The client gives up later than the server's own timeout, so a hang shows as a slow sample.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(REQUEST_TIMEOUT.as_secs() + 10);

impl Load {
    /// Starts `clients` loops, loop `i` POSTing to `urls[i % urls.len()]` with `token`, back
    /// to back, the drill being in `phase`.
    pub fn start(clients: usize, urls: &[String], token: &str, phase: u8) -> Load {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap();
        let tally = Arc::new(Tally::default());
        let phase = Arc::new(AtomicU8::new(phase));
        let stop = Arc::new(AtomicBool::new(false));
        let loops = (0..clients)
            .map(|i| {
                let (client, url, token) = (
                    client.clone(),
                    urls[i % urls.len()].clone(),
                    token.to_owned(),
                );
                let (tally, phase, stop) = (tally.clone(), phase.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let sample = one_request(i, &client, &url, &token, &phase).await;
                        if sample.phases.0 == sample.phases.1 {
                            let counter = if sample.ok() {
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
        Load {
            tally,
            phase,
            stop,
            loops,
        }
    }

    /// Moves the drill to `phase`; returns the instant it did.
    pub fn enter(&self, phase: u8) -> Instant {
        let now = Instant::now();
        self.phase.store(phase, Ordering::SeqCst);
        now
    }

    /// Polls the live tally until `done`, failing with `what` (and the counts so far) after
    /// `limit`.
    pub async fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&Tally) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.tally) {
            if Instant::now() >= deadline {
                let counts = summary(&self.tally.samples.lock().unwrap());
                panic!("timed out after {limit:?}: {what}; so far: {counts:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the loops (each finishes its request in flight) and returns every sample.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.loops {
            tokio::time::timeout(CLIENT_TIMEOUT * 2, task)
                .await
                .expect("client loops stop")
                .unwrap();
        }
        std::mem::take(&mut *self.tally.samples.lock().unwrap())
    }
}

async fn one_request(
    client_index: usize,
    client: &reqwest::Client,
    url: &str,
    token: &str,
    phase: &AtomicU8,
) -> Sample {
    let start_phase = phase.load(Ordering::SeqCst);
    let started = Instant::now();
    let result = client.post(url).bearer_auth(token).send().await;
    let mut sample = Sample {
        client: client_index,
        phases: (start_phase, start_phase),
        finished: started,
        elapsed: Duration::ZERO,
        status: Err(String::new()),
        request_id: None,
        content_type: None,
        retry_after: None,
        access_key_id: None,
        problem_type: None,
        aws_error_code: None,
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
                Ok(body) => {
                    let text = |key: &str| body[key].as_str().map(str::to_owned);
                    sample.access_key_id = text("AccessKeyId");
                    sample.problem_type = text("type");
                    sample.aws_error_code = text("aws_error_code");
                }
                Err(e) => sample.problem_type = Some(format!("unreadable body: {e}")),
            }
        }
    }
    sample.finished = Instant::now();
    sample.elapsed = sample.finished - started;
    sample.phases.1 = phase.load(Ordering::SeqCst);
    sample
}

/// How many requests got which answer, by the phases they started and ended in.
pub fn summary(samples: &[Sample]) -> BTreeMap<String, usize> {
    let name = |p: u8| PHASE_NAMES[usize::from(p)];
    let mut counts = BTreeMap::new();
    for s in samples {
        let span = if s.phases.0 == s.phases.1 {
            name(s.phases.0).to_owned()
        } else {
            format!("{}->{}", name(s.phases.0), name(s.phases.1))
        };
        let what = match &s.status {
            Ok(status) => format!(
                "{status} {} {}",
                s.problem_type.as_deref().unwrap_or(""),
                s.aws_error_code.as_deref().unwrap_or("")
            ),
            Err(_) => "no response".to_owned(),
        };
        *counts
            .entry(format!("{span}: {}", what.trim()))
            .or_default() += 1;
    }
    counts
}

/// The time from `since` to the first 200 answered after it.
pub fn first_ok_after(samples: &[Sample], since: Instant) -> Option<Duration> {
    samples
        .iter()
        .filter(|s| s.ok() && s.finished >= since)
        .map(|s| s.finished - since)
        .min()
}

// ---------------------------------------------------------------------------------------
// The audit trail of a drill
// ---------------------------------------------------------------------------------------

/// What the audit log holds for the answers of a drill.
#[derive(Debug)]
pub struct AuditCheck {
    /// 200s.
    pub served: usize,
    /// Other answers.
    pub refused: usize,
    /// 200s without exactly one committed success row carrying their keys.
    pub unaudited: Vec<String>,
    /// Refusals whose success row did commit (the commit ack was lost): allowed (fail
    /// closed), reported.
    pub committed_but_refused: usize,
}

/// Reads the credential-issue rows of the drill's database (through `db`, which must not
/// pass the fault) and checks every 200 of `samples` against them.
pub async fn audit_check(samples: &[Sample], db: &mut sqlx::PgConnection) -> AuditCheck {
    let served: Vec<(&str, &str)> = samples
        .iter()
        .filter(|s| s.ok())
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
        .filter(|s| !s.ok())
        .map(|s| s.request_id.as_deref().expect("x-request-id on every 503"))
        .collect();
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT request_id, outcome, detail->>'access_key_id' FROM audit_event
         WHERE action = 'credentials.issue' AND request_id IS NOT NULL",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let mut audited: HashMap<&str, Vec<(&str, Option<&str>)>> = HashMap::new();
    for (request_id, outcome, key) in &rows {
        audited
            .entry(request_id.as_str())
            .or_default()
            .push((outcome.as_str(), key.as_deref()));
    }
    let unaudited = served
        .iter()
        .filter(|(id, key)| audited.get(id) != Some(&vec![("success", Some(*key))]))
        .map(|(id, key)| format!("{id} ({key}): {:?}", audited.get(id)))
        .collect();
    let committed_but_refused = refused
        .iter()
        .filter(|id| {
            audited
                .get(*id)
                .is_some_and(|r| r.iter().any(|(o, _)| *o == "success"))
        })
        .count();
    AuditCheck {
        served: served.len(),
        refused: refused.len(),
        unaudited,
        committed_but_refused,
    }
}

impl AuditCheck {
    /// Every 200 has exactly one committed success row with its keys.
    pub fn assert_all_audited(&self) {
        assert!(
            self.unaudited.is_empty(),
            "{} of {} 200s lack exactly one committed success audit row with their keys: {:#?}",
            self.unaudited.len(),
            self.served,
            &self.unaudited[..self.unaudited.len().min(20)]
        );
    }
}

// ---------------------------------------------------------------------------------------
// The database outage drill
// ---------------------------------------------------------------------------------------

/// An app whose every database connection goes through a fault proxy in front of the test
/// Postgres, and the URL of its database that bypasses the proxy.
pub async fn app_behind_database_proxy() -> (TestApp, FaultProxy, String) {
    let proxy = FaultProxy::start(socket_of(&database_server_url(), 5432).await).await;
    let direct = fresh_database_url();
    let proxied = through(&direct, proxy.addr());
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

/// How the database goes away.
#[derive(Debug, Clone, Copy)]
pub enum Outage {
    /// Postgres host gone (or restarting): connections closed, new ones refused.
    Refused,
    /// A pooler in front of a dead Postgres: connections accepted, then closed at once.
    AcceptedThenClosed,
}

/// What a database outage drill saw.
#[derive(Debug)]
pub struct OutageReport {
    pub outage: Outage,
    pub samples: Vec<Sample>,
    /// From the database's return to the first 200 after it.
    pub recovered_after: Duration,
    /// The credentials cached before the outage: every 200 carries them.
    pub cached_key: String,
    pub audit: AuditCheck,
}

/// Drives [`CLIENTS`] loops of credential requests for a session whose credentials are
/// already cached, through an outage of the database lasting at least `at_least` (and
/// until [`ENOUGH`] requests were refused); reads the audit trail past the proxy.
pub async fn credentials_through_a_database_outage(
    outage: Outage,
    at_least: Duration,
) -> OutageReport {
    let (app, proxy, direct_url) = app_behind_database_proxy().await;
    // A connection of the drill's own, past the proxy, held to the end: while the app's are
    // cut the database would otherwise be idle, and `tests/run` started elsewhere meanwhile
    // drops idle test databases.
    let mut direct = sqlx::PgConnection::connect(&direct_url).await.unwrap();
    let (alice, session) = support_session(&app, "database outage drill").await;
    let path = credentials_path(&session);
    // Warm the cache: from here on, every request could be answered without AWS.
    let (status, warm) = app.call(Method::POST, &path, Some(&alice), None).await;
    assert_eq!(status, 200, "{warm}");
    let cached_key = warm["AccessKeyId"].as_str().unwrap().to_owned();

    let load = Load::start(CLIENTS, &[app.url(&path)], &alice, BEFORE);
    load.wait_until(
        "credentials are served before the outage",
        Duration::from_secs(30),
        |t| t.ok(BEFORE) >= ENOUGH,
    )
    .await;

    load.enter(ENTERING);
    match outage {
        Outage::Refused => proxy.cut().await,
        Outage::AcceptedThenClosed => proxy.cut_accepting().await,
    }
    let down = load.enter(FAULT);
    load.wait_until(
        "requests are refused while the database is unreachable",
        Duration::from_secs(60),
        |t| t.failed(FAULT) >= ENOUGH,
    )
    .await;
    // A timed phase: the outage lasts as long as asked, whatever the pace of the refusals.
    tokio::time::sleep_until((down + at_least).into()).await;

    // The phase first: a request that started before the restore counts as in the fault.
    let restored = load.enter(RESTORED);
    proxy.restore();
    load.wait_until(
        "credentials are served again after the database returns",
        RECOVERY + Duration::from_secs(20),
        |t| t.ok(RESTORED) >= 1,
    )
    .await;
    load.wait_until(
        "credentials keep being served after the database returns",
        Duration::from_secs(30),
        |t| t.ok(RESTORED) >= ENOUGH,
    )
    .await;
    let samples = load.stop().await;
    let recovered_after = first_ok_after(&samples, restored).expect("a 200 after the restore");

    let slowest = samples.iter().map(|s| s.elapsed).max().unwrap();
    eprintln!(
        "{outage:?}: {} requests; first 200 {recovered_after:?} after restore; slowest \
         {slowest:?}\n{:#?}",
        samples.len(),
        summary(&samples)
    );
    let audit = audit_check(&samples, &mut direct).await;
    eprintln!(
        "{outage:?}: {} 200s, {} unaudited; {} 503s, {} of them with a committed success row",
        audit.served,
        audit.unaudited.len(),
        audit.refused,
        audit.committed_but_refused
    );
    direct.close().await.unwrap();
    OutageReport {
        outage,
        samples,
        recovered_after,
        cached_key,
        audit,
    }
}

impl OutageReport {
    /// Whether a refusal is what a database outage must give: a 503 `unavailable` problem
    /// saying when to ask again (never a 500, never a timeout).
    pub fn is_proper_refusal(s: &Sample) -> bool {
        s.unavailable_with_retry_after()
            && s.content_type.as_deref() == Some("application/problem+json")
            && s.retry_after.as_deref() == Some("1")
            && s.problem_type.as_deref() == Some("urn:lanyard:problem:unavailable")
    }

    /// Non-200 answers (all of them caused by the outage), and how many of them are proper
    /// refusals.
    pub fn refusals(&self) -> (usize, usize) {
        let refused: Vec<&Sample> = self.samples.iter().filter(|s| !s.ok()).collect();
        let proper = refused
            .iter()
            .filter(|s| Self::is_proper_refusal(s))
            .count();
        (refused.len(), proper)
    }

    /// The broker failed closed and came back: every request answered before the request
    /// timeout, every failure a 503 with `Retry-After`, no 200 while the database was
    /// unreachable, the first 200 within [`RECOVERY`] of its return, every 200 from the
    /// cache and with exactly one committed audit row.
    pub fn assert_held(&self) {
        let samples = &self.samples;
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
        let bad: Vec<&Sample> = samples
            .iter()
            .filter(|s| !s.ok() && !Self::is_proper_refusal(s))
            .collect();
        assert!(bad.is_empty(), "not 200 nor 503 unavailable: {bad:#?}");
        // With the database unreachable for the whole request, nothing can be audited: no 200.
        let ok_while_down: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.within(FAULT) && s.ok())
            .collect();
        assert!(
            ok_while_down.is_empty(),
            "credentials handed out while the database was unreachable: {ok_while_down:#?}"
        );
        assert!(
            self.recovered_after < RECOVERY,
            "first credentials {:?} after the database returned",
            self.recovered_after
        );
        // All from the cache: the outage did not make anyone call AWS again.
        assert!(
            samples
                .iter()
                .filter_map(|s| s.access_key_id.as_deref())
                .all(|k| k == self.cached_key),
            "a 200 carried other credentials than the cached ones"
        );
        self.audit.assert_all_audited();
    }
}
