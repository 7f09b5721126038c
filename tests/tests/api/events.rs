//! Events and the case system, end to end against receivers that check every signature with
//! their own HMAC code (`lanyard_tests::receivers`): the outbox delivering signed events to
//! webhooks (through a receiver outage and a broker crash, each event once to an idempotent
//! receiver and in order per session), dead deliveries and how they are reported, the Slack
//! format; the case system asked before a support session opens, and closing a case with
//! its signature (forged, stale and replayed closes refused).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lanyard_server::auth::Role;
use lanyard_tests::receivers::{
    Case, CaseSystem, CasesConfig, ConfigFile, EventsConfig, Failure, Verdict, WebhookConfig,
    WebhookReceiver, signature,
};
use lanyard_tests::{TestApp, eventually, unique};
use reqwest::Method;
use serde_json::{Value, json};

/// Longest a delivery to a receiver that is up may take.
const SOON: Duration = Duration::from_secs(30);

/// How long the receiver of the outage test stays down: a minute unless
/// `LANYARD_TEST_WEBHOOK_DOWN_SECS` says otherwise.
fn outage() -> Duration {
    let secs = std::env::var("LANYARD_TEST_WEBHOOK_DOWN_SECS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("LANYARD_TEST_WEBHOOK_DOWN_SECS is a number of seconds")
        })
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// A customer with a verified role `ops` whose `write` tier needs a second person's
/// approval; returns the customer id.
async fn customer_with_role(app: &TestApp) -> String {
    let id = unique("acme");
    app.create_customer(&id).await;
    let (status, role) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{id}/roles/ops"),
            Some(json!({
                "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                "session_policy": { "Statement": { "Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*" } },
                "tiers": { "write": {
                    "policy_arns": ["arn:aws:iam::aws:policy/PowerUserAccess"],
                    "requires_approval": true
                } }
            })),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["status"], "verified", "{role}");
    id
}

/// Opens a support session that must open (or wait for approval); returns its id.
async fn opened(
    app: &TestApp,
    token: &str,
    customer: &str,
    case: &str,
    tier: Option<&str>,
) -> String {
    let (status, session) = app
        .request_support(token, customer, "ops", case, tier, 1800)
        .await;
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

/// `what` to session `id`: `revoke`, `approve`, `deny`, `credentials` or `show`.
async fn act(app: &TestApp, token: &str, id: &str, what: &str) -> (u16, Value) {
    let path = format!("/v1/sessions/{id}");
    match what {
        "revoke" => app.call(Method::DELETE, &path, Some(token), None).await,
        "show" => app.call(Method::GET, &path, Some(token), None).await,
        "approve" | "deny" => {
            let comment = json!({ "comment": "change CHG-42 approved in CAB" });
            app.call(
                Method::POST,
                &format!("{path}/{what}"),
                Some(token),
                Some(comment),
            )
            .await
        }
        _ => {
            app.call(Method::POST, &format!("{path}/{what}"), Some(token), None)
                .await
        }
    }
}

/// `what` to session `id`, which must succeed.
async fn done(app: &TestApp, token: &str, id: &str, what: &str) -> Value {
    let (status, body) = act(app, token, id, what).await;
    assert_eq!(status, 200, "{what} {id}: {body}");
    body
}

/// `GET /v1/webhooks/deliveries{query}` as admin.
async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, list) = app
        .admin(
            Method::GET,
            &format!("/v1/webhooks/deliveries{query}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    list["deliveries"].as_array().unwrap().clone()
}

/// One webhook's entry in `GET /v1/webhooks`.
async fn webhook_status(app: &TestApp, name: &str) -> Value {
    let (status, list) = app.admin(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(status, 200, "{list}");
    list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no webhook {name} in {list}"))
        .clone()
}

async fn metrics_text(app: &TestApp) -> String {
    app.http
        .get(format!("http://{}/metrics", app.metrics_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the series `name` that carries every label in `labels` (0 when absent).
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let rest = head.strip_prefix(name)?.strip_prefix('{')?;
            let set = rest.strip_suffix('}')?;
            let pairs: Vec<&str> = set.split(',').collect();
            labels
                .iter()
                .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
                .then(|| value.parse::<f64>().ok())?
        })
        .next()
        .unwrap_or(0.0)
}

/// `POST /v1/cases/{case}/close` with no token, as the case system sends it.
async fn close_as_case_system(
    app: &TestApp,
    case: &str,
    signature_header: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url(&format!("/v1/cases/{case}/close")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(value) = signature_header {
        request = request.header(signature::HEADER, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Checks what every `lanyard`-format delivery must be: signed with the receiver's secret
/// (and not valid under another), named by its body's id and type.
fn assert_well_formed(delivery: &lanyard_tests::receivers::Delivery, secret: &str) {
    assert_eq!(delivery.signature, Verdict::Valid, "{delivery:?}");
    let header = delivery.signature_header.as_deref();
    assert_eq!(
        signature::verify(
            &format!("{secret}-not"),
            header,
            delivery.raw_body.as_bytes(),
            signature::now()
        ),
        Verdict::Mismatch,
        "the signature does not depend on the secret: {delivery:?}"
    );
    assert_eq!(
        delivery.event_id.as_deref(),
        delivery.body["id"].as_str(),
        "Lanyard-Event-Id is not the body's id: {delivery:?}"
    );
    assert_eq!(
        delivery.event_type.as_deref(),
        delivery.body["type"].as_str(),
        "Lanyard-Event-Type is not the body's type: {delivery:?}"
    );
    let parsed: Result<lanyard_api::events::Event, _> =
        serde_json::from_value(delivery.body.clone());
    assert!(parsed.is_ok(), "{parsed:?}: {}", delivery.raw_body);
}

#[tokio::test]
async fn opened_and_revoked_sessions_reach_the_webhook_signed_and_named_by_their_event_id() {
    let receiver = WebhookReceiver::start();
    let file = EventsConfig::webhooks([receiver.config("ops-feed")]).write();
    let app = TestApp::spawn_with(|s| file.apply(s)).await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let case = unique("CS");
    let sid = opened(&app, &alice, &customer, &case, None).await;

    let open = receiver.wait_for(&sid, "session.opened", SOON).await;
    done(&app, &alice, &sid, "revoke").await;
    let revoked = receiver.wait_for(&sid, "session.revoked", SOON).await;
    for delivery in [&open, &revoked] {
        assert_well_formed(delivery, receiver.secret());
        assert_eq!(delivery.body["actor"], "alice");
        assert_eq!(delivery.body["case_id"], case.as_str());
        assert_eq!(delivery.body["session"]["customer"], customer.as_str());
        assert_eq!(delivery.body["session"]["requested_by"], "alice");
    }
    assert_eq!(open.body["session"]["status"], "active", "{:?}", open.body);
    assert_eq!(
        revoked.body["session"]["status"], "revoked",
        "{:?}",
        revoked.body
    );
    assert_eq!(revoked.body["session"]["revoked_by"], "alice");
    assert_ne!(open.event_id, revoked.event_id);
    let at = |d: &lanyard_tests::receivers::Delivery| {
        chrono::DateTime::parse_from_rfc3339(d.body["occurred_at"].as_str().unwrap()).unwrap()
    };
    assert!(at(&open) <= at(&revoked));
    assert_eq!(
        receiver.deliveries().len(),
        2,
        "{:#?}",
        receiver.deliveries()
    );

    // The broker's own account of it agrees, for admins and auditors (and nobody else),
    // once it has recorded the receiver's answer.
    assert!(
        eventually(SOON, || async {
            listed_states(&app, &sid).await == ["delivered", "delivered"]
        })
        .await,
        "{:?}",
        deliveries(&app, &format!("?session={sid}")).await
    );
    let listed = deliveries(&app, &format!("?session={sid}")).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    for d in &listed {
        assert_eq!(d["webhook"], "ops-feed", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_status"], 200, "{d}");
        assert!(d["delivered_at"].is_string(), "{d}");
    }
    let ids: BTreeSet<&str> = listed
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            open.event_id.as_deref().unwrap(),
            revoked.event_id.as_deref().unwrap()
        ])
    );
    let status = webhook_status(&app, "ops-feed").await;
    assert_eq!(
        (
            &status["delivered"],
            &status["pending"],
            &status["dead"],
            &status["format"]
        ),
        (&json!(2), &json!(0), &json!(0), &json!("lanyard")),
        "{status}"
    );
    let auditor = app.person("carol", Role::Auditor).await;
    let (status, _) = app
        .call(Method::GET, "/v1/webhooks", Some(&auditor), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(Method::GET, "/v1/webhooks/deliveries", Some(&alice), None)
        .await;
    assert_eq!(status, 403);
    let text = metrics_text(&app).await;
    assert_eq!(
        series(&text, "lanyard_events_total", &[("type", "session.opened")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            "lanyard_events_total",
            &[("type", "session.revoked")]
        ),
        1.0
    );
    assert_eq!(
        series(
            &text,
            "lanyard_webhook_attempts_total",
            &[("webhook", "ops-feed"), ("result", "delivered")]
        ),
        2.0,
        "{text}"
    );
}

async fn listed_states(app: &TestApp, sid: &str) -> Vec<String> {
    deliveries(app, &format!("?session={sid}"))
        .await
        .iter()
        .map(|d| d["state"].as_str().unwrap().to_owned())
        .collect()
}

/// A broker instance in a runtime of its own, so that it can crash: dropping the runtime
/// ends every task the instance started, its event deliverer included, the way a killed
/// process would. (`TestApp::stop` stops the listeners only; the deliverer would go on.)
struct Crashable {
    runtime: Option<tokio::runtime::Runtime>,
    app: Option<TestApp>,
}

impl Crashable {
    async fn spawn(file: &ConfigFile) -> Crashable {
        let path = file.path.clone();
        // Built and started on a thread of its own: `block_on` may not run on the test's.
        let (runtime, app) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let app = runtime.block_on(TestApp::spawn_with(|s| s.config = Some(path)));
            (runtime, app)
        })
        .await
        .unwrap();
        Crashable {
            runtime: Some(runtime),
            app: Some(app),
        }
    }

    fn app(&self) -> &TestApp {
        self.app.as_ref().unwrap()
    }

    /// Ends the instance at once, mid-whatever; returns what still owns its database.
    fn crash(mut self) -> TestApp {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        self.app.take().unwrap()
    }
}

impl Drop for Crashable {
    fn drop(&mut self) {
        // A runtime may not be dropped (blocking) inside the test's.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Deliveries the database holds for the outage test's webhook: (pending, most attempts).
async fn backlog(db: &sqlx::PgPool) -> (i64, i32) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'pending'), coalesce(max(attempts), 0)
         FROM webhook_delivery",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// The outage the issue describes: the receiver is down for a minute
/// (`LANYARD_TEST_WEBHOOK_DOWN_SECS`), the broker is killed and restarted while the events
/// wait, and afterwards a receiver that drops repeats by `Lanyard-Event-Id` has every event
/// exactly once, each session's in the order they were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_through_an_outage_and_a_broker_crash_each_arrive_once_in_order() {
    let started = Instant::now();
    let down_for = outage();
    let receiver = WebhookReceiver::start();
    receiver.go_down().await;
    let down_at = Instant::now();
    // Retries at most this far apart: about 30 of them while the receiver is down, far
    // below max_attempts, and it is back in business within seconds of coming up.
    let backoff_max = (down_for.as_secs() / 30).max(2);
    let file = EventsConfig::webhooks([WebhookConfig {
        backoff_max: Some(format!("{backoff_max}s")),
        max_attempts: Some(100),
        timeout: Some("2s".into()),
        ..receiver.config("ops-feed")
    }])
    .write();

    // Instance A writes the first half of a working day's events.
    let first = Crashable::spawn(&file).await;
    let a = first.app();
    let customer = customer_with_role(a).await;
    let alice = a.person("alice", Role::Support).await;
    let bob = a.person("bob", Role::Support).await;
    let (case_1, case_2, case_3) = (unique("CS"), unique("CS"), unique("CS"));
    let s1 = opened(a, &alice, &customer, &case_1, None).await;
    let s2 = opened(a, &alice, &customer, &case_1, Some("write")).await;
    done(a, &bob, &s2, "approve").await;
    let s3 = opened(a, &bob, &customer, &case_2, Some("write")).await;
    done(a, &alice, &s3, "deny").await;
    let s4 = opened(a, &alice, &customer, &case_2, None).await;
    done(a, &alice, &s4, "revoke").await;
    let s5 = opened(a, &bob, &customer, &case_2, None).await;
    // It keeps trying while the receiver is down. (The test watches the database through a
    // pool of its own: A's dies with A.)
    let watcher = sqlx::PgPool::connect(&a.database_url).await.unwrap();
    assert!(
        eventually(SOON, || async {
            let (pending, attempts) = backlog(&watcher).await;
            pending == 9 && attempts >= 1
        })
        .await,
        "instance A queued other events or made no attempt: {:?}",
        backlog(&watcher).await
    );
    let database_url = a.database_url.clone();
    let signing_key = a.data_dir.path().join("signing-key.pem");
    let crashed = first.crash();
    let health = crashed.url("/healthz");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let client = reqwest::Client::new();
            let probe = client.get(&health).timeout(Duration::from_secs(1));
            probe.send().await.is_err()
        })
        .await,
        "instance A still answers after its crash"
    );
    let (queued, attempts_before_crash) = backlog(&watcher).await;
    assert_eq!(queued, 9, "every event so far waits");
    println!(
        "instance A crashed {:?} into the outage with {queued} events queued",
        down_at.elapsed()
    );

    // Instance B, on the same database and configuration, takes over and adds the rest.
    let b = TestApp::spawn_with(|s| {
        file.apply(s);
        s.database_url = Some(database_url.as_str().into());
        s.signing_key_file = Some(signing_key.clone());
    })
    .await;
    done(&b, &b.admin_token, &s2, "revoke").await;
    let s6 = opened(&b, &alice, &customer, &case_3, None).await;
    let s7 = opened(&b, &bob, &customer, &case_3, None).await;
    let (status, closed) = b
        .admin(Method::POST, &format!("/v1/cases/{case_3}/close"), None)
        .await;
    assert_eq!(status, 200, "{closed}");
    // s5 runs out (moved into the past rather than waited for); B's sweeper notices.
    sqlx::query(
        "UPDATE session SET created_at = now() - interval '2 minutes',
                            expires_at = now() - interval '1 minute' WHERE id = $1::uuid",
    )
    .bind(&s5)
    .execute(&watcher)
    .await
    .unwrap();
    assert!(
        eventually(SOON, || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM event_outbox WHERE type = 'session.ended' AND session_id = $1::uuid",
            )
            .bind(&s5)
            .fetch_one(&watcher)
            .await
            .unwrap()
                == 1
        })
        .await,
        "no session.ended for the session that ran out"
    );
    done(&b, &alice, &s1, "revoke").await;

    // What was written, in order: the truth the receiver is compared with.
    let written: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT event_id::text, type, session_id::text FROM event_outbox ORDER BY id",
    )
    .fetch_all(&watcher)
    .await
    .unwrap();
    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        (s1.as_str(), vec!["session.opened", "session.revoked"]),
        (
            s2.as_str(),
            vec![
                "session.requested",
                "session.approved",
                "session.opened",
                "session.revoked",
            ],
        ),
        (s3.as_str(), vec!["session.requested", "session.denied"]),
        (s4.as_str(), vec!["session.opened", "session.revoked"]),
        (s5.as_str(), vec!["session.opened", "session.ended"]),
        (s6.as_str(), vec!["session.opened", "session.revoked"]),
        (s7.as_str(), vec!["session.opened", "session.revoked"]),
    ]);
    let per_session = |events: &[(String, String, Option<String>)]| {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, kind, session) in events {
            by.entry(session.clone().unwrap_or_else(|| "-".into()))
                .or_default()
                .push(kind.clone());
        }
        by
    };
    let mut want = per_session(&written);
    assert_eq!(want.remove("-"), Some(vec!["case.closed".to_owned()]));
    assert_eq!(
        want,
        expected
            .iter()
            .map(|(s, kinds)| (s.to_string(), kinds.iter().map(|k| k.to_string()).collect()))
            .collect::<BTreeMap<_, _>>(),
        "the broker wrote other events than the ones these actions cause"
    );
    assert_eq!(written.len(), 17);

    // The outage lasts its full length (the scenario, not a wait for some condition); then
    // nothing has arrived, every event waits, and B has kept retrying.
    let remaining = down_for.saturating_sub(down_at.elapsed());
    println!("events written; the receiver stays down {remaining:?} more");
    tokio::time::sleep(remaining).await;
    let (pending, attempts) = backlog(&watcher).await;
    assert_eq!(pending, 17, "a delivery ended while the receiver was down");
    assert!(
        attempts > attempts_before_crash,
        "instance B did not retry: {attempts} attempts"
    );
    assert!(receiver.deliveries().is_empty());

    receiver.come_up();
    let up_at = Instant::now();
    let events = receiver.wait_for_events(17, Duration::from_secs(120)).await;
    println!(
        "all 17 events arrived {:?} after the receiver came back ({} repeats dropped, {attempts} \
         attempts at most per delivery, {:?} in all)",
        up_at.elapsed(),
        receiver.duplicates(),
        started.elapsed()
    );
    for delivery in &receiver.deliveries() {
        assert_well_formed(delivery, receiver.secret());
    }
    let got: Vec<(String, String, Option<String>)> = events
        .iter()
        .map(|d| {
            (
                d.event_id.clone().unwrap(),
                d.event_type.clone().unwrap(),
                d.session_id.clone(),
            )
        })
        .collect();
    // Each event exactly once...
    let ids = |list: &[(String, String, Option<String>)]| {
        list.iter().map(|e| e.0.clone()).collect::<BTreeSet<_>>()
    };
    assert_eq!(ids(&got), ids(&written));
    assert_eq!(got.len(), written.len());
    // ... and each session's in the order they were written.
    assert_eq!(per_session(&got), per_session(&written));
    for (session, kinds) in &expected {
        assert_eq!(
            &receiver.session_events(session),
            kinds,
            "session {session}"
        );
    }
    let case_closed = events
        .iter()
        .find(|d| d.event_type.as_deref() == Some("case.closed"))
        .unwrap();
    let ended: BTreeSet<&str> = case_closed.body["ended_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ended, BTreeSet::from([s6.as_str(), s7.as_str()]));
    // The broker's books agree: everything delivered, nothing dead.
    assert!(
        eventually(SOON, || async {
            let status = webhook_status(&b, "ops-feed").await;
            status["delivered"] == 17 && status["pending"] == 0
        })
        .await,
        "{}",
        webhook_status(&b, "ops-feed").await
    );
    assert_eq!(webhook_status(&b, "ops-feed").await["dead"], 0);
    watcher.close().await;
    // B first: the database goes with the last of them.
    drop(b);
    drop(crashed);
}

/// At least once: a receiver too slow to answer within the webhook's timeout gets the
/// event again, and dropping repeats by `Lanyard-Event-Id` leaves it processed once.
#[tokio::test]
async fn an_event_delivered_again_after_a_timeout_carries_the_same_event_id() {
    let receiver = WebhookReceiver::start();
    let file = EventsConfig::webhooks([WebhookConfig {
        timeout: Some("1s".into()),
        backoff_max: Some("1s".into()),
        ..receiver.config("slow-feed")
    }])
    .write();
    let app = TestApp::spawn_with(|s| file.apply(s)).await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    receiver.answer_next_after(Duration::from_secs(5));
    let sid = opened(&app, &alice, &customer, &unique("CS"), None).await;
    done(&app, &alice, &sid, "revoke").await;
    receiver.wait_for(&sid, "session.revoked", SOON).await;

    let requests = receiver.deliveries();
    let kinds: Vec<&str> = requests
        .iter()
        .map(|d| d.event_type.as_deref().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["session.opened", "session.opened", "session.revoked"],
        "{requests:#?}"
    );
    assert_eq!(requests[0].event_id, requests[1].event_id);
    assert_eq!(requests[0].raw_body, requests[1].raw_body);
    for delivery in &requests {
        assert_well_formed(delivery, receiver.secret());
    }
    assert_eq!(receiver.duplicates(), 1);
    assert_eq!(
        receiver.session_events(&sid),
        ["session.opened", "session.revoked"]
    );
    assert!(
        eventually(SOON, || async {
            listed_states(&app, &sid).await == ["delivered", "delivered"]
        })
        .await
    );
    let listed = deliveries(&app, &format!("?session={sid}")).await;
    let attempts: Vec<(&str, &Value)> = listed
        .iter()
        .map(|d| (d["type"].as_str().unwrap(), &d["attempts"]))
        .collect();
    assert_eq!(
        attempts,
        [
            ("session.revoked", &json!(1)),
            ("session.opened", &json!(2))
        ]
    );
}

#[tokio::test]
async fn deliveries_a_receiver_keeps_refusing_end_dead_and_are_reported() {
    let receiver = WebhookReceiver::start();
    receiver.answer_with(500);
    let file = EventsConfig::webhooks([WebhookConfig {
        max_attempts: Some(3),
        backoff_max: Some("1s".into()),
        ..receiver.config("dead-end")
    }])
    .write();
    let app = TestApp::spawn_with(|s| file.apply(s)).await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let sid = opened(&app, &alice, &customer, &unique("CS"), None).await;
    done(&app, &alice, &sid, "revoke").await;

    assert!(
        eventually(Duration::from_secs(60), || async {
            deliveries(&app, "?state=dead").await.len() == 2
        })
        .await,
        "{:?}",
        deliveries(&app, "").await
    );
    let dead = deliveries(&app, "?state=dead").await;
    let kinds: BTreeSet<&str> = dead.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["session.opened", "session.revoked"]));
    for d in &dead {
        assert_eq!(d["webhook"], "dead-end", "{d}");
        assert_eq!(d["session_id"], sid.as_str(), "{d}");
        assert_eq!(d["attempts"], 3, "{d}");
        assert_eq!(d["last_status"], 500, "{d}");
        assert!(d["last_error"].as_str().unwrap().contains("500"), "{d}");
        assert_eq!(d["next_attempt_at"], Value::Null, "{d}");
        assert_eq!(d["delivered_at"], Value::Null, "{d}");
    }
    assert!(deliveries(&app, "?state=pending").await.is_empty());
    assert!(deliveries(&app, "?state=delivered").await.is_empty());
    let status = webhook_status(&app, "dead-end").await;
    assert_eq!(
        (&status["dead"], &status["pending"], &status["delivered"]),
        (&json!(2), &json!(0), &json!(0)),
        "{status}"
    );

    // The receiver saw three signed attempts at each, and the revocation only after the
    // opening had died: one session's events stay in order even when one of them fails.
    let requests = receiver.deliveries();
    assert_eq!(requests.len(), 6, "{requests:#?}");
    assert!(
        requests
            .iter()
            .all(|d| d.signature == Verdict::Valid && d.answered == 500)
    );
    let kinds: Vec<&str> = requests
        .iter()
        .map(|d| d.event_type.as_deref().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["session.opened"; 3]
            .into_iter()
            .chain(["session.revoked"; 3])
            .collect::<Vec<_>>()
    );
    assert!(receiver.events().is_empty());

    let text = metrics_text(&app).await;
    let attempts = |result: &str| {
        series(
            &text,
            "lanyard_webhook_attempts_total",
            &[("webhook", "dead-end"), ("result", result)],
        )
    };
    assert_eq!(attempts("dead"), 2.0, "{text}");
    assert_eq!(attempts("failed"), 4.0, "{text}");
    assert_eq!(attempts("delivered"), 0.0, "{text}");
    // The backlog gauge is refreshed every few seconds.
    assert!(
        eventually(SOON, || async {
            series(
                &metrics_text(&app).await,
                "lanyard_webhook_deliveries",
                &[("webhook", "dead-end"), ("state", "dead")],
            ) == 2.0
        })
        .await,
        "{}",
        metrics_text(&app).await
    );
}

#[tokio::test]
async fn a_slack_webhook_gets_a_one_line_text_of_the_event_types_it_asked_for() {
    let slack = WebhookReceiver::start();
    let feed = WebhookReceiver::start();
    let file = EventsConfig::webhooks([
        WebhookConfig {
            format: Some("slack".into()),
            events: Some(vec!["session.opened".into()]),
            ..slack.config("team-slack")
        },
        feed.config("feed"),
    ])
    .write();
    let app = TestApp::spawn_with(|s| file.apply(s)).await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let case = unique("CS");
    let sid = opened(&app, &alice, &customer, &case, None).await;
    done(&app, &alice, &sid, "revoke").await;
    feed.wait_for(&sid, "session.revoked", SOON).await;

    let got = slack.wait_for_events(1, SOON).await;
    let message = &got[0];
    assert_eq!(message.signature, Verdict::Valid, "{message:?}");
    assert_eq!(message.event_type.as_deref(), Some("session.opened"));
    let keys: Vec<&String> = message.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["text"], "{}", message.raw_body);
    let text = message.body["text"].as_str().unwrap();
    for part in ["alice", "opened", customer.as_str(), case.as_str()] {
        assert!(text.contains(part), "{part:?} missing from {text:?}");
    }
    assert!(!text.contains('{') && !text.contains('\n'), "{text:?}");
    // The opening's event id is the one the feed got.
    let opened_id = feed.wait_for(&sid, "session.opened", SOON).await.event_id;
    assert_eq!(message.event_id, opened_id);

    // The revocation was never queued for it: it asked for openings only.
    let queued = deliveries(&app, "?webhook=team-slack").await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["type"], "session.opened");
    let status = webhook_status(&app, "team-slack").await;
    assert_eq!(status["format"], "slack", "{status}");
    assert_eq!(status["events"], json!(["session.opened"]), "{status}");
    assert_eq!(slack.deliveries().len(), 1);
}

/// An application whose `[cases]` table points at `cases`, adjusted by `adjust`.
async fn app_with_cases(
    cases: &CaseSystem,
    adjust: impl FnOnce(&mut CasesConfig),
    webhooks: Vec<WebhookConfig>,
) -> (TestApp, ConfigFile) {
    let mut table = cases.config();
    adjust(&mut table);
    let file = EventsConfig {
        cases: Some(table),
        webhooks,
    }
    .write();
    let app = TestApp::spawn_with(|s| file.apply(s)).await;
    (app, file)
}

/// What the broker must have asked about a session `requester` wanted on `case`.
fn assert_asked(
    question: &lanyard_tests::receivers::CaseQuestion,
    case: &str,
    customer: &str,
    requester: &str,
) {
    assert_eq!(question.signature, Verdict::Valid, "{question:?}");
    assert_eq!(
        question.body,
        json!({
            "case_id": case, "customer": customer, "requester": requester,
            "reason": "customer reports failing uploads"
        })
    );
}

#[tokio::test]
async fn a_closed_or_unknown_case_refuses_the_support_session_naming_the_case() {
    let cases = CaseSystem::start();
    let (app, _file) = app_with_cases(&cases, |_| {}, Vec::new()).await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let (closed, unknown) = (unique("CS"), unique("CS"));
    cases.set(&closed, Case::Closed);

    for (case, word) in [(&closed, "closed"), (&unknown, "unknown")] {
        let (status, problem) = app
            .request_support(&alice, &customer, "ops", case, None, 1800)
            .await;
        assert_eq!(status, 403, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(case.as_str()) && detail.contains(word),
            "{detail}"
        );
    }
    assert_eq!(app.count("session").await, 0);
    let questions = cases.questions();
    assert_eq!(questions.len(), 2, "{questions:?}");
    assert_asked(&questions[0], &closed, &customer, "alice");
    assert_asked(&questions[1], &unknown, &customer, "alice");
}

#[tokio::test]
async fn an_open_case_gives_the_session_its_title_and_link() {
    let cases = CaseSystem::start();
    let (app, _file) = app_with_cases(&cases, |_| {}, Vec::new()).await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let case = unique("CS");
    let link = format!("https://helpdesk.example.com/cases/{case}");
    cases.open(&case, "Uploads fail with 503 since Tuesday", &link);

    let (status, session) = app
        .request_support(&alice, &customer, "ops", &case, None, 1800)
        .await;
    assert_eq!(status, 201, "{session}");
    let sid = session["id"].as_str().unwrap();
    let (_, shown) = act(&app, &alice, sid, "show").await;
    for view in [&session, &shown] {
        assert_eq!(
            view["case_title"], "Uploads fail with 503 since Tuesday",
            "{view}"
        );
        assert_eq!(view["case_url"], link.as_str(), "{view}");
        assert_eq!(view["case_check"], "open", "{view}");
        assert_eq!(view["status"], "active", "{view}");
    }
    let (status, creds) = act(&app, &alice, sid, "credentials").await;
    assert_eq!(status, 200, "{creds}");
    let questions = cases.questions();
    assert_eq!(questions.len(), 1, "{questions:?}");
    assert_asked(&questions[0], &case, &customer, "alice");

    // Customer sessions (services, batch jobs) have no case: the case system is not asked.
    let service = app.person("etl-job", Role::Service).await;
    let (status, session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&service),
            Some(json!({ "kind": "customer", "customer": customer, "role": "ops" })),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(cases.questions().len(), 1);
}

/// Audit rows of refused openings for `case` with `code`, newest first.
async fn refusals(app: &TestApp, case: &str, code: &str) -> Vec<Value> {
    let (status, page) = app
        .admin(
            Method::GET,
            &format!("/v1/audit?case_id={case}&action=session.open&outcome=denied"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["error_code"] == code)
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_unavailable_case_system_refuses_support_sessions_and_the_refusal_is_audited() {
    let cases = CaseSystem::start();
    let (app, _file) = app_with_cases(
        &cases,
        |c| {
            c.timeout = Some("1s".into());
            c.when_unavailable = Some("refuse".into());
        },
        Vec::new(),
    )
    .await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let case = unique("CS");
    cases.open(&case, "Uploads fail", "https://helpdesk.example.com/1");

    for failure in [Failure::Unavailable, Failure::Hanging] {
        cases.fail(failure);
        let asked = Instant::now();
        let (status, problem) = app
            .request_support(&alice, &customer, "ops", &case, None, 1800)
            .await;
        assert_eq!(status, 503, "{failure:?}: {problem}");
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{failure:?}: the 1 s timeout took {:?}",
            asked.elapsed()
        );
        assert!(!problem.to_string().contains(cases.secret()), "{problem}");
        // The support engineer learns why, and when to try again.
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("case system could not be asked about case {case}")),
            "{detail}"
        );
    }
    cases.fail(Failure::None);
    assert_eq!(app.count("session").await, 0);
    // The audit row says what went wrong too.
    let audited = refusals(&app, &case, "CaseSystemUnavailable").await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    let why = |e: &Value| {
        e["detail"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(why(&audited[1]).contains("503"), "{:?}", audited[1]);
    assert!(
        why(&audited[0]).contains("no answer within"),
        "{:?}",
        audited[0]
    );
    for event in &audited {
        assert_eq!(event["actor"], "alice", "{event}");
        assert_eq!(event["customer"], customer.as_str(), "{event}");
        assert!(!event.to_string().contains(cases.secret()), "{event}");
    }
    let questions = cases.questions();
    assert_eq!(questions.len(), 2, "{questions:?}");
    for question in &questions {
        assert_asked(question, &case, &customer, "alice");
    }

    // Back: the same request opens.
    let (status, session) = app
        .request_support(&alice, &customer, "ops", &case, None, 1800)
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["case_check"], "open");
}

#[tokio::test]
async fn an_unavailable_case_system_lets_sessions_open_flagged_when_configured_to_allow() {
    let cases = CaseSystem::start();
    let (app, _file) = app_with_cases(
        &cases,
        |c| c.when_unavailable = Some("allow".into()),
        Vec::new(),
    )
    .await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let case = unique("CS");
    cases.fail(Failure::Unavailable);

    let (status, session) = app
        .request_support(&alice, &customer, "ops", &case, None, 1800)
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["case_check"], "unavailable", "{session}");
    assert_eq!(session["case_title"], Value::Null, "{session}");
    let (status, creds) = act(&app, &alice, session["id"].as_str().unwrap(), "credentials").await;
    assert_eq!(status, 200, "{creds}");
    assert_eq!(cases.questions().len(), 1);
    assert_eq!(cases.questions()[0].signature, Verdict::Valid);
}

#[tokio::test]
async fn a_signed_close_from_the_case_system_ends_the_cases_sessions() {
    let cases = CaseSystem::start();
    let receiver = WebhookReceiver::start();
    let (app, _file) = app_with_cases(&cases, |_| {}, vec![receiver.config("feed")]).await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let bob = app.person("bob", Role::Support).await;
    let (case, other) = (unique("CS"), unique("CS"));
    cases.open(&case, "Uploads fail", "https://helpdesk.example.com/1");
    cases.open(&other, "Billing export", "https://helpdesk.example.com/2");
    let ours = [
        opened(&app, &alice, &customer, &case, None).await,
        opened(&app, &bob, &customer, &case, None).await,
    ];
    let theirs = opened(&app, &alice, &customer, &other, None).await;
    for (token, sid) in [(&alice, &ours[0]), (&bob, &ours[1]), (&alice, &theirs)] {
        assert_eq!(act(&app, token, sid, "credentials").await.0, 200);
    }

    let (header, body) = cases.signed_close(&case);
    let (status, closed) = close_as_case_system(&app, &case, Some(&header), &body).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["case_id"], case.as_str());
    let ended: BTreeSet<&str> = closed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "revoked", "{s}");
            assert_eq!(s["revoked_by"], "case-system", "{s}");
            s["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ended, BTreeSet::from([ours[0].as_str(), ours[1].as_str()]));

    for (token, sid) in [(&alice, &ours[0]), (&bob, &ours[1])] {
        let (status, problem) = act(&app, token, sid, "credentials").await;
        assert_eq!(status, 410, "{problem}");
    }
    assert_eq!(act(&app, &alice, &theirs, "credentials").await.0, 200);
    let (status, page) = app
        .admin(
            Method::GET,
            &format!("/v1/audit?case_id={case}&action=case.close"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["actor"], "case-system", "{page}");

    // Subscribers hear of it: each session revoked by the case system, then the case.
    for sid in &ours {
        let revoked = receiver.wait_for(sid, "session.revoked", SOON).await;
        assert_eq!(revoked.body["actor"], "case-system");
    }
    let all = receiver.wait_for_events(6, SOON).await;
    let case_closed = all
        .iter()
        .find(|d| d.event_type.as_deref() == Some("case.closed"))
        .unwrap_or_else(|| panic!("no case.closed in {all:#?}"));
    assert_well_formed(case_closed, receiver.secret());
    assert_eq!(case_closed.body["case_id"], case.as_str());
    let listed: BTreeSet<&str> = case_closed.body["ended_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listed, ended);
}

#[tokio::test]
async fn forged_stale_and_replayed_case_closes_are_refused_and_change_nothing() {
    let cases = CaseSystem::start();
    let (app, _file) = app_with_cases(&cases, |_| {}, Vec::new()).await;
    let customer = customer_with_role(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let (case, elsewhere) = (unique("CS"), unique("CS"));
    cases.open(&case, "Uploads fail", "https://helpdesk.example.com/1");
    cases.open(
        &elsewhere,
        "Billing export",
        "https://helpdesk.example.com/2",
    );
    let first = opened(&app, &alice, &customer, &case, None).await;
    let bystander = opened(&app, &alice, &customer, &elsewhere, None).await;

    let body = json!({ "case_id": case }).to_string();
    let forged = signature::sign(
        "not-the-case-systems-secret",
        signature::now(),
        body.as_bytes(),
    );
    let (stale, stale_body) = cases.signed_close_at(&case, signature::now() - 301);
    // Signed a little earlier than the real close below, which must not be its replay.
    let (other_case, other_body) = cases.signed_close_at(&case, signature::now() - 5);
    let before = app.snapshot_except(&["audit_event"]).await;
    for (what, header, body, path_case, status, says) in [
        (
            "forged",
            Some(forged.as_str()),
            body.as_str(),
            case.as_str(),
            401,
            "does not match",
        ),
        (
            "stale",
            Some(stale.as_str()),
            stale_body.as_str(),
            case.as_str(),
            401,
            "5 minutes",
        ),
        (
            "unsigned",
            None,
            body.as_str(),
            case.as_str(),
            401,
            signature::HEADER,
        ),
        // Signed for one case, sent to close another: the signature covers the case.
        (
            "another case's",
            Some(other_case.as_str()),
            other_body.as_str(),
            elsewhere.as_str(),
            400,
            case.as_str(),
        ),
    ] {
        let (got, problem) = close_as_case_system(&app, path_case, header, body).await;
        assert_eq!(got, status, "{what}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default().to_owned()
            + &problem["errors"].to_string();
        assert!(detail.contains(says), "{what}: {problem}");
    }
    assert_eq!(app.snapshot_except(&["audit_event"]).await, before);
    for sid in [&first, &bystander] {
        assert_eq!(act(&app, &alice, sid, "credentials").await.0, 200, "{sid}");
    }

    // The real thing works once...
    let (header, body) = cases.signed_close(&case);
    let (status, closed) = close_as_case_system(&app, &case, Some(&header), &body).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["sessions"][0]["id"], first.as_str(), "{closed}");
    assert_eq!(act(&app, &alice, &first, "credentials").await.0, 410);

    // ... and, replayed after a new session opened on the case, closes nothing.
    let second = opened(&app, &alice, &customer, &case, None).await;
    let before = app.snapshot_except(&["audit_event"]).await;
    let (status, problem) = close_as_case_system(&app, &case, Some(&header), &body).await;
    assert_eq!(status, 401, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("already used"),
        "{problem}"
    );
    assert_eq!(app.snapshot_except(&["audit_event"]).await, before);
    let (_, shown) = act(&app, &alice, &second, "show").await;
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(act(&app, &alice, &second, "credentials").await.0, 200);
    assert_eq!(act(&app, &alice, &bystander, "credentials").await.0, 200);
}
