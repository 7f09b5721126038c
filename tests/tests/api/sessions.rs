//! Sessions and credentials, end to end against moto: what the broker sends to STS, the
//! cache and single-flight, the audit trail, revocation across instances, expiry, and AWS
//! refusals.

use std::time::{Duration, Instant};

use lanyard_server::auth::Role;
use lanyard_tests::{TestApp, recorded_assume_roles, unique};
use reqwest::Method;
use serde_json::{Value, json};

/// A customer with a verified role `readonly`; returns the customer's JSON.
async fn customer_with_role(app: &TestApp) -> Value {
    let id = unique("acme");
    let customer = app.create_customer(&id).await;
    app.register_role(&id, "readonly").await;
    customer
}

async fn token(app: &TestApp, subject: &str, role: Role) -> String {
    app.token_for(subject, role, None, Duration::from_secs(3600))
        .await
}

async fn open_support(app: &TestApp, token: &str, customer: &str, case: &str, secs: i64) -> Value {
    let (status, session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(token),
            Some(json!({
                "kind": "support", "customer": customer, "role": "readonly",
                "case_id": case, "reason": "customer reports failing uploads",
                "duration_seconds": secs
            })),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    session
}

async fn credentials(app: &TestApp, token: &str, session: &Value) -> (u16, Value) {
    app.call(
        Method::POST,
        &format!(
            "/v1/sessions/{}/credentials",
            session["id"].as_str().unwrap()
        ),
        Some(token),
        None,
    )
    .await
}

fn tags(
    call: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    (1..=50)
        .map_while(|n| {
            let key = call.get(&format!("Tags.member.{n}.Key"))?;
            let value = call.get(&format!("Tags.member.{n}.Value"))?;
            Some((key.clone(), value.clone()))
        })
        .collect()
}

#[tokio::test]
async fn support_session_credentials_carry_the_case_context_to_aws() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let case = unique("CS");
    let session = open_support(&app, &alice, id, &case, 1800).await;
    assert_eq!(session["profile_name"], format!("support-{id}-{case}"));
    assert_eq!(session["status"], "active");
    assert_eq!(session["requested_by"], "alice");

    let (status, creds) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200, "{creds}");
    let keys: Vec<&String> = creds.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "AccessKeyId",
            "Expiration",
            "SecretAccessKey",
            "SessionToken",
            "Version"
        ]
    );
    assert_eq!(creds["Version"], 1);
    let expiration = creds["Expiration"].as_str().unwrap();
    assert!(expiration.ends_with('Z'), "{expiration}");
    let expiration = chrono::DateTime::parse_from_rfc3339(expiration).unwrap();
    let session_end =
        chrono::DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap()).unwrap();
    assert!(expiration <= session_end);
    assert!(session_end - expiration < chrono::Duration::seconds(5));

    // Exactly what went to STS.
    let calls = recorded_assume_roles(&format!("support.{case}.alice")).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(
        call["RoleArn"],
        "arn:aws:iam::111122223333:role/LanyardAccess"
    );
    assert_eq!(
        call["ExternalId"],
        customer["external_id"].as_str().unwrap()
    );
    assert_eq!(call["RoleSessionName"], format!("support.{case}.alice"));
    assert_eq!(call["SourceIdentity"], "alice");
    let duration: i64 = call["DurationSeconds"].parse().unwrap();
    assert!((1790..=1800).contains(&duration), "{duration}");
    // The credentials last about as long as the session, so they are cut at its end too
    // (clocks and STS's start differ by a little).
    let policy: Value = serde_json::from_str(&call["Policy"]).unwrap();
    assert_eq!(policy["Statement"][1]["Effect"], "Deny", "{policy}");
    let tags = tags(call);
    assert_eq!(tags["lanyard-session-id"], session["id"].as_str().unwrap());
    assert_eq!(tags["lanyard-case-id"], case);
    assert_eq!(tags["lanyard-kind"], "support");
    assert_eq!(tags["lanyard-customer"], id);

    // The second request is served from the cache: same keys, no new AssumeRole.
    let (status, again) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200);
    assert_eq!(again["AccessKeyId"], creds["AccessKeyId"]);
    assert_eq!(
        recorded_assume_roles(&format!("support.{case}.alice"))
            .await
            .len(),
        1
    );

    // Audited, both times; the issue is recorded; the secret is stored nowhere.
    let audit: Vec<(String, Option<bool>, Option<String>)> = sqlx::query_as(
        "SELECT outcome, cache_hit, case_id FROM audit_event
         WHERE action = 'credentials.issue' AND session_id = $1::uuid ORDER BY id",
    )
    .bind(session["id"].as_str().unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            ("success".into(), Some(false), Some(case.clone())),
            ("success".into(), Some(true), Some(case.clone()))
        ]
    );
    let issued: Vec<String> = sqlx::query_scalar(
        "SELECT access_key_id FROM credential_issue WHERE session_id = $1::uuid",
    )
    .bind(session["id"].as_str().unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(issued, [creds["AccessKeyId"].as_str().unwrap()]);
    let everything = app.snapshot().await;
    assert!(!everything.contains(creds["SecretAccessKey"].as_str().unwrap()));
    assert!(!everything.contains(creds["SessionToken"].as_str().unwrap()));

    let (_, shown) = app
        .call(
            Method::GET,
            &format!("/v1/sessions/{}", session["id"].as_str().unwrap()),
            Some(&alice),
            None,
        )
        .await;
    assert!(shown["credentials_valid_until"].is_string(), "{shown}");
}

#[tokio::test]
async fn a_session_ending_sooner_than_sts_allows_gets_a_deny_after_end_policy() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let case = unique("CS");
    let session = open_support(&app, &alice, id, &case, 300).await;
    let (status, creds) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200, "{creds}");

    let calls = recorded_assume_roles(&format!("support.{case}.alice")).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["DurationSeconds"], "900");
    let policy: Value = serde_json::from_str(&calls[0]["Policy"]).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // A policy holding only the Deny would grant nothing: it must allow, then cut off.
    assert_eq!(policy["Statement"][0]["Effect"], "Allow");
    assert_eq!(policy["Statement"][1]["Effect"], "Deny");
    assert_eq!(policy["Statement"][1]["Action"], "*");
    assert_eq!(
        policy["Statement"][1]["Condition"]["DateGreaterThan"]["aws:CurrentTime"],
        end
    );
    // What the client is told is the real end, not STS's 15 minutes.
    assert_eq!(creds["Expiration"], end);
}

#[tokio::test]
async fn bad_session_requests_get_a_reason_and_change_nothing() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    // A role that allows only customer sessions, and a disabled customer.
    let (status, body) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{id}/roles/batch"),
            Some(json!({ "role_arn": "arn:aws:iam::111122223333:role/Batch", "session_kinds": ["customer"] })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let off = unique("off");
    app.create_customer(&off).await;
    app.register_role(&off, "readonly").await;
    let (status, _) = app
        .admin(Method::POST, &format!("/v1/customers/{off}/disable"), None)
        .await;
    assert_eq!(status, 200);

    let support = token(&app, "alice", Role::Support).await;
    let service = token(&app, "billing", Role::Service).await;
    let auditor = token(&app, "audit", Role::Auditor).await;
    let before = app.snapshot_except(&["audit_event"]).await;
    let denials_before = denied_opens(&app).await;
    let base = json!({ "kind": "support", "customer": id, "role": "readonly",
                       "case_id": "CS-1", "reason": "r" });
    let with = |patch: Value| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (&support, with(json!({ "case_id": null })), 400, "case_id"),
        (
            &support,
            with(json!({ "case_id": "CS 1/2" })),
            400,
            "case_id",
        ),
        (&support, with(json!({ "reason": null })), 400, "reason"),
        (&support, with(json!({ "reason": "  " })), 400, "reason"),
        (
            &support,
            with(json!({ "duration_seconds": 30 })),
            400,
            "duration_seconds",
        ),
        (
            &support,
            with(json!({ "duration_seconds": 3601 })),
            400,
            "duration_seconds",
        ),
        (
            &support,
            with(json!({ "customer": "Not An Id" })),
            400,
            "customer",
        ),
        (&support, with(json!({ "role": "nosuch" })), 404, "role"),
        (
            &support,
            with(json!({ "customer": "nobody-here" })),
            404,
            "customer",
        ),
        (
            &support,
            with(json!({ "role": "batch" })),
            409,
            "does not allow support",
        ),
        (&support, with(json!({ "customer": off })), 409, "disabled"),
        (&service, base.clone(), 403, "role"),
        (&auditor, base.clone(), 403, "role"),
        (
            &support,
            with(json!({ "kind": "customer", "case_id": null })),
            403,
            "role",
        ),
        (&support, with(json!({ "kind": "admin" })), 422, "admin"),
        (&support, with(json!({ "extra": true })), 422, "extra"),
    ];
    let refusals = cases
        .iter()
        .filter(|(_, _, want, _)| [403, 404, 409].contains(want))
        .count() as i64;
    for (token, body, want, mentions) in cases {
        let (status, problem) = app
            .call(
                Method::POST,
                "/v1/sessions",
                Some(token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, want, "{body} → {problem}");
        assert!(
            problem.to_string().contains(mentions),
            "{body} → {problem} should mention {mentions}"
        );
    }
    // Nothing changed, except that each refusal (not each malformed request) was audited.
    assert_eq!(app.snapshot_except(&["audit_event"]).await, before);
    assert_eq!(denied_opens(&app).await - denials_before, refusals);
}

async fn denied_opens(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action = 'session.open' AND outcome = 'denied'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn two_hundred_concurrent_cold_requests_cause_one_assume_role() {
    let app = TestApp::spawn_with(|s| s.db_max_connections = Some(16)).await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let case = unique("CS");
    let session = open_support(&app, &alice, id, &case, 1800).await;
    let sid = session["id"].as_str().unwrap().to_owned();

    let mut tasks = Vec::new();
    for _ in 0..200 {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/sessions/{sid}/credentials"));
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            let response = http.post(url).bearer_auth(alice).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }));
    }
    let mut keys = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        keys.insert(body["AccessKeyId"].as_str().unwrap().to_owned());
    }
    assert_eq!(keys.len(), 1, "every request got the same credentials");
    assert_eq!(
        recorded_assume_roles(&format!("support.{case}.alice"))
            .await
            .len(),
        1
    );
    let (rows, misses): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE NOT cache_hit) FROM audit_event
         WHERE action = 'credentials.issue' AND outcome = 'success' AND session_id = $1::uuid",
    )
    .bind(&sid)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((rows, misses), (200, 1));
    assert_eq!(app.count("credential_issue").await, 1);
}

#[tokio::test]
async fn only_the_owner_or_an_admin_gets_a_sessions_credentials() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let bob = token(&app, "bob", Role::Support).await;
    let session = open_support(&app, &alice, id, &unique("CS"), 1800).await;
    let sid = session["id"].as_str().unwrap();

    // Bob does not even learn that the session exists; the attempt is audited all the same.
    let (status, problem) = credentials(&app, &bob, &session).await;
    assert_eq!(status, 404, "{problem}");
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/sessions/{sid}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 404, "bob does not even see alice's session");
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{sid}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, listed) = app
        .call(Method::GET, "/v1/sessions", Some(&bob), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["sessions"], json!([]));

    let (status, creds) = credentials(&app, &app.admin_token, &session).await;
    assert_eq!(status, 200, "{creds}");
    let denied: (String, Option<String>) = sqlx::query_as(
        "SELECT actor, error_code FROM audit_event
         WHERE action = 'credentials.issue' AND outcome = 'denied' AND session_id = $1::uuid",
    )
    .bind(sid)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(denied, ("bob".into(), Some("Forbidden".into())));

    // Filters.
    let (_, mine) = app
        .call(
            Method::GET,
            &format!("/v1/sessions?customer={id}&active=true&kind=support"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(mine["sessions"].as_array().unwrap().len(), 1, "{mine}");
    let (_, none) = app
        .call(
            Method::GET,
            &format!("/v1/sessions?customer={id}&active=false"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(none["sessions"], json!([]));
}

/// How long the instances of the revocation tests keep what they read: far beyond the 1 s
/// they get to refuse, so that only the notification (LISTEN/NOTIFY) can explain a refusal.
const LONG_AUTH_CACHE_MS: u64 = 60_000;

/// Two instances on one database and one signing key, each acting on what it read for a
/// minute unless told otherwise.
async fn two_instances() -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(|s| s.auth_cache_ms = Some(LONG_AUTH_CACHE_MS)).await;
    let b = a
        .spawn_beside(|s| s.auth_cache_ms = Some(LONG_AUTH_CACHE_MS))
        .await;
    (a, b)
}

#[tokio::test]
async fn a_revoked_session_is_refused_by_another_instance_at_once() {
    let (a, b) = two_instances().await;
    let customer = customer_with_role(&a).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&a, "alice", Role::Support).await;
    let session = open_support(&a, &alice, id, &unique("CS"), 1800).await;
    let sid = session["id"].as_str().unwrap();

    // Instance B has the credentials cached.
    let (status, creds) = credentials(&b, &alice, &session).await;
    assert_eq!(status, 200, "{creds}");
    let (status, revoked) = a
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{sid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], "alice");
    // The bound on what revocation can do, stated plainly.
    let parse = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let gap = parse(&revoked["credentials_valid_until"]) - parse(&creds["Expiration"]);
    assert!(gap.num_seconds().abs() <= 1, "{revoked} vs {creds}");

    // B holds the session's grant and credentials in its caches for a minute; told by the
    // database, it must refuse within 1 s.
    let revoked_at = Instant::now();
    let refused = lanyard_tests::eventually(Duration::from_secs(1), || async {
        credentials(&b, &alice, &session).await.0 != 200
    })
    .await;
    assert!(
        refused,
        "instance B still issued credentials 1 s after the revocation"
    );
    println!(
        "instance B refused {:?} after the revocation",
        revoked_at.elapsed()
    );
    let (status, problem) = credentials(&b, &alice, &session).await;
    assert_eq!(status, 410, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("revoked"), "{detail}");
    assert!(detail.contains("keep working until"), "{detail}");
    let (status, _) = a
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{sid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 409, "already revoked");
    let code: Option<String> = sqlx::query_scalar(
        "SELECT error_code FROM audit_event WHERE action = 'credentials.issue' AND outcome = 'denied'",
    )
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!(code.as_deref(), Some("SessionRevoked"));
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let session = open_support(&app, &alice, id, &unique("CS"), 60).await;
    // Let the session's minute pass without waiting for it: move it into the past.
    sqlx::query(
        "UPDATE session SET created_at = now() - interval '2 minutes',
                            expires_at = now() - interval '1 minute' WHERE id = $1::uuid",
    )
    .bind(session["id"].as_str().unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    let (status, problem) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 410, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("expired"));
    let (_, shown) = app
        .call(
            Method::GET,
            &format!("/v1/sessions/{}", session["id"].as_str().unwrap()),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(shown["status"], "expired");
}

#[tokio::test]
async fn services_get_customer_credentials_through_one_reused_session() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let billing = token(&app, "billing-job", Role::Service).await;
    let path = format!("/v1/customers/{id}/credentials");

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = app.http.clone();
        let url = app.url(&path);
        let billing = billing.clone();
        tasks.push(tokio::spawn(async move {
            let response = http.post(url).bearer_auth(billing).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["Version"], 1);
    }
    let sessions: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT kind, profile_name, requested_by FROM session WHERE customer_id = $1",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        sessions,
        [(
            "customer".into(),
            format!("customer-{id}"),
            "billing-job".into()
        )]
    );
    let calls = recorded_assume_roles(&format!("customer.{id}.billing-job")).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["SourceIdentity"], "billing-job");

    // Naming the role works too; a support token may not do this; a bad body is refused.
    let (status, _) = app
        .call(
            Method::POST,
            &path,
            Some(&billing),
            Some(json!({ "role": "readonly" })),
        )
        .await;
    assert_eq!(status, 200);
    let support = token(&app, "alice", Role::Support).await;
    let (status, _) = app.call(Method::POST, &path, Some(&support), None).await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(
            Method::POST,
            &path,
            Some(&billing),
            Some(json!({ "role": "nosuch" })),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            Method::POST,
            &path,
            Some(&billing),
            Some(json!({ "rolle": "readonly" })),
        )
        .await;
    assert_eq!(status, 422);
    // Revoking the service's session ends that session only: the next request opens a new
    // one (a service is cut off by revoking its token or disabling the customer).
    let first: String = sqlx::query_scalar("SELECT id::text FROM session WHERE customer_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/sessions/{first}"), None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = app.call(Method::POST, &path, Some(&billing), None).await;
    assert_eq!(status, 200, "{body}");
    let live: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM session WHERE customer_id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0], first);
    let (status, _) = app
        .admin(Method::POST, &format!("/v1/customers/{id}/disable"), None)
        .await;
    assert_eq!(status, 200);
    let (status, problem) = app.call(Method::POST, &path, Some(&billing), None).await;
    assert_eq!(status, 409, "{problem}");

    // An oversized body gets a problem document like everywhere else.
    let response = app
        .http
        .post(app.url(&path))
        .bearer_auth(&billing)
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

/// With moto's IAM checks on: credentials come through while the role's trust policy holds
/// the customer's external ID; once the customer changes it, the client gets a problem
/// document naming AWS's error code, and the denial is audited.
#[tokio::test]
async fn an_aws_denial_reaches_the_client_as_a_named_error_and_is_audited() {
    use lanyard_tests::{PrivateMoto, ServerProcess};
    let moto = PrivateMoto::start().await;
    let root = ("testing", "testing");
    let (key_id, secret) = moto.user_allowed("broker", "sts:*");
    let customer_admin = moto.user_allowed("customer-admin", "iam:*");

    let data_dir = tempfile::tempdir().unwrap();
    let db_url = lanyard_tests::fresh_database_url();
    let server = ServerProcess::start(&[
        ("LANYARD_DATABASE_URL", db_url.as_str()),
        ("LANYARD_DATA_DIR", data_dir.path().to_str().unwrap()),
        ("LANYARD_AWS_ENDPOINT_URL", moto.url.as_str()),
        ("LANYARD_TRUST_CHECK", "warn"),
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_REGION", "us-east-1"),
    ]);
    let admin = server.issue_token("ops", "admin");
    let alice = server.issue_token("alice", "support");
    let http = reqwest::Client::new();
    let call = |token: &str, method: Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, server.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let response = req.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };

    let (status, customer) = call(
        &admin,
        Method::POST,
        "/v1/customers",
        Some(json!({ "id": "acme-corp" })),
    )
    .await;
    assert_eq!(status, 201, "{customer}");
    let (_, doc) = call(
        &admin,
        Method::GET,
        "/v1/customers/acme-corp/onboarding",
        None,
    )
    .await;
    let role = moto
        .aws(
            root,
            &[
                "iam",
                "create-role",
                "--role-name",
                "LanyardAccess",
                "--assume-role-policy-document",
                &doc["trust_policy"].to_string(),
            ],
        )
        .unwrap();
    let role_arn = role["Role"]["Arn"].as_str().unwrap().to_owned();
    moto.enable_auth().await;

    let (status, role) = call(
        &admin,
        Method::PUT,
        "/v1/customers/acme-corp/roles/readonly",
        Some(json!({ "role_arn": role_arn })),
    )
    .await;
    assert_eq!(
        (status, role["status"].as_str()),
        (200, Some("verified")),
        "{role}"
    );
    let (status, session) = call(
        &alice,
        Method::POST,
        "/v1/sessions",
        Some(
            json!({ "kind": "support", "customer": "acme-corp", "role": "readonly",
                     "case_id": "CS-1", "reason": "r", "duration_seconds": 1800 }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let creds_path = format!(
        "/v1/sessions/{}/credentials",
        session["id"].as_str().unwrap()
    );
    let (status, creds) = call(&alice, Method::POST, &creds_path, None).await;
    assert_eq!(status, 200, "{creds}");

    // The customer's administrator now requires another external ID. The next session
    // needs its own AssumeRole, which AWS now denies.
    let wrong = doc["trust_policy"].to_string().replace(
        customer["external_id"].as_str().unwrap(),
        "someone-elses-id",
    );
    moto.aws(
        (&customer_admin.0, &customer_admin.1),
        &[
            "iam",
            "update-assume-role-policy",
            "--role-name",
            "LanyardAccess",
            "--policy-document",
            &wrong,
        ],
    )
    .unwrap();
    let (status, session) = call(
        &alice,
        Method::POST,
        "/v1/sessions",
        Some(
            json!({ "kind": "support", "customer": "acme-corp", "role": "readonly",
                     "case_id": "CS-2", "reason": "r" }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let creds_path = format!(
        "/v1/sessions/{}/credentials",
        session["id"].as_str().unwrap()
    );
    for attempt in 0..2 {
        let (status, problem) = call(&alice, Method::POST, &creds_path, None).await;
        assert_eq!(status, 502, "attempt {attempt}: {problem}");
        assert_eq!(problem["type"], "urn:lanyard:problem:aws-error");
        assert_eq!(problem["aws_error_code"], "AccessDenied");
        assert!(problem["detail"].as_str().unwrap().contains("AccessDenied"));
    }
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let audited: Vec<(String, Option<String>, Option<bool>)> = sqlx::query_as(
        "SELECT outcome, error_code, cache_hit FROM audit_event
         WHERE action = 'credentials.issue' AND case_id = 'CS-2' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // The second attempt was answered from the short AccessDenied cache.
    assert_eq!(
        audited,
        [
            ("denied".into(), Some("AccessDenied".into()), Some(false)),
            ("denied".into(), Some("AccessDenied".into()), Some(true)),
        ]
    );
    assert!(!server.log().contains(&secret));
    assert!(
        !server
            .log()
            .contains(creds["SecretAccessKey"].as_str().unwrap())
    );
}

/// A revocation that lands while STS is still answering: the credentials it returns are
/// never handed out (nor cached), and the waiting request learns the session ended.
#[tokio::test]
async fn credentials_in_flight_when_the_session_is_revoked_are_not_handed_out() {
    use lanyard_tests::FaultProxy;
    let moto: std::net::SocketAddr = lanyard_tests::moto_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let sts = FaultProxy::start(moto).await;
    let endpoint = format!("http://{}", sts.addr());
    let app = TestApp::spawn_with(|s| s.aws_endpoint_url = Some(endpoint.clone())).await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let session = open_support(&app, &alice, id, &unique("CS"), 1800).await;
    let sid = session["id"].as_str().unwrap().to_owned();

    sts.hold();
    let in_flight = {
        let (http, url, alice) = (
            app.http.clone(),
            app.url(&format!("/v1/sessions/{sid}/credentials")),
            alice.clone(),
        );
        tokio::spawn(async move {
            let response = http.post(url).bearer_auth(alice).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        })
    };
    sts.held().await; // The AssumeRole is on its way and parked.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{sid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200);
    sts.restore();
    let (status, problem) = in_flight.await.unwrap();
    assert_eq!(status, 410, "{problem}");
    assert_eq!(
        app.count("credential_issue").await,
        0,
        "nothing was recorded as issued"
    );
    let (status, _) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn credentials_for_a_customer_that_does_not_exist_get_404() {
    let app = TestApp::spawn().await;
    let service = token(&app, "billing-job", Role::Service).await;
    let before = app.snapshot_except(&["audit_event"]).await;
    for body in [None, Some(json!({ "role": "readonly" }))] {
        let (status, problem) = app
            .call(
                Method::POST,
                "/v1/customers/no-such-customer/credentials",
                Some(&service),
                body.clone(),
            )
            .await;
        assert_eq!(status, 404, "{body:?}: {problem}");
        assert_eq!(
            problem["detail"],
            "customer 'no-such-customer' does not exist"
        );
    }
    assert_eq!(app.snapshot_except(&["audit_event"]).await, before);
}

/// An admin who fetches credentials for someone else's session gets credentials of their own,
/// from an AssumeRole that names the admin: the customer's CloudTrail shows who really used
/// them, and the audit trail agrees. The owner's cached credentials are never handed over.
#[tokio::test]
async fn an_admin_using_someone_elses_session_gets_credentials_in_their_own_name() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let root = token(&app, "root-admin", Role::Admin).await;
    let case = unique("CS");
    let session = open_support(&app, &alice, id, &case, 1800).await;
    let sid = session["id"].as_str().unwrap();

    let (status, hers) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200, "{hers}");
    let (status, his) = credentials(&app, &root, &session).await;
    assert_eq!(status, 200, "{his}");
    assert_ne!(
        his["AccessKeyId"], hers["AccessKeyId"],
        "the admin got alice's credentials"
    );
    // Each keeps their own cache entry: asking again changes nothing.
    let (_, again) = credentials(&app, &root, &session).await;
    assert_eq!(again["AccessKeyId"], his["AccessKeyId"]);
    let (_, hers_again) = credentials(&app, &alice, &session).await;
    assert_eq!(hers_again["AccessKeyId"], hers["AccessKeyId"]);

    let calls = recorded_assume_roles(&case).await;
    assert_eq!(calls.len(), 2, "one AssumeRole each: {calls:?}");
    let admin_call = calls
        .iter()
        .find(|c| c["SourceIdentity"] == "root-admin")
        .unwrap_or_else(|| panic!("no AssumeRole in the admin's name: {calls:?}"));
    assert_eq!(
        admin_call["RoleSessionName"],
        format!("support.{case}.root-admin")
    );
    assert_eq!(tags(admin_call)["lanyard-session-owner"], "alice");
    assert_eq!(tags(admin_call)["lanyard-session-id"], sid);

    // The audit trail names the same person and the exact values AWS got.
    let rows: Vec<(String, Option<bool>, Value)> = sqlx::query_as(
        "SELECT actor, cache_hit, detail FROM audit_event
         WHERE action = 'credentials.issue' AND session_id = $1::uuid ORDER BY id",
    )
    .bind(sid)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let (actor, hit, detail) = &rows[1];
    assert_eq!((actor.as_str(), *hit), ("root-admin", Some(false)));
    assert_eq!(detail["access_key_id"], his["AccessKeyId"]);
    assert_eq!(detail["source_identity"], "root-admin");
    assert_eq!(
        detail["role_session_name"],
        format!("support.{case}.root-admin")
    );
    assert_eq!(detail["session_owner"], "alice");
    let (actor, _, detail) = &rows[0];
    assert_eq!(actor, "alice");
    assert_eq!(detail["source_identity"], "alice");
    assert!(detail.get("session_owner").is_none());
    let issued: Vec<String> = sqlx::query_scalar(
        "SELECT actor FROM credential_issue WHERE session_id = $1::uuid ORDER BY id",
    )
    .bind(sid)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(issued, ["alice", "root-admin"]);
}

/// Subjects longer than AWS's 64 characters that differ only at the end (long e-mail
/// addresses, CI workflow references) still reach CloudTrail as different SourceIdentity and
/// RoleSessionName values, each within AWS's rules, each found in the audit rows.
#[tokio::test]
async fn long_subjects_that_differ_only_at_the_end_stay_apart_in_cloudtrail() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let stem = format!("repo:acme/{}:ref:refs/heads/main:", "x".repeat(44));
    let subjects = [format!("{stem}job-a"), format!("{stem}job-b")];
    assert!(subjects.iter().all(|s| s.len() == 80));
    let case = unique("CS");
    let mut seen = Vec::new();
    for subject in &subjects {
        let token = token(&app, subject, Role::Support).await;
        let session = open_support(&app, &token, id, &case, 1800).await;
        let (status, creds) = credentials(&app, &token, &session).await;
        assert_eq!(status, 200, "{creds}");
        let detail: Value = sqlx::query_scalar(
            "SELECT detail FROM audit_event
             WHERE action = 'credentials.issue' AND actor = $1 AND outcome = 'success'",
        )
        .bind(subject)
        .fetch_one(&app.db)
        .await
        .unwrap();
        let key = creds["AccessKeyId"].as_str().unwrap();
        let call = recorded_assume_roles(&case)
            .await
            .into_iter()
            .find(|c| c["SourceIdentity"] == detail["source_identity"])
            .unwrap_or_else(|| panic!("the audited SourceIdentity was not sent: {detail}"));
        assert_eq!(
            call["RoleSessionName"],
            detail["role_session_name"].as_str().unwrap()
        );
        assert_eq!(detail["access_key_id"], key);
        for value in [&call["SourceIdentity"], &call["RoleSessionName"]] {
            assert!((2..=64).contains(&value.len()), "{value}");
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)),
                "{value}"
            );
            assert!(!value.starts_with("aws:"));
        }
        seen.push((
            call["SourceIdentity"].clone(),
            call["RoleSessionName"].clone(),
        ));
    }
    assert_ne!(seen[0].0, seen[1].0, "same SourceIdentity for two people");
    assert_ne!(seen[0].1, seen[1].1, "same RoleSessionName for two people");
}

/// The instance's listening connection dies (a database restart, a pooler): it reconnects by
/// itself, forgets what it cached meanwhile, and hears of revocations again.
#[tokio::test]
async fn the_revocation_listener_reconnects_and_revocations_reach_the_instance_again() {
    let (a, b) = two_instances().await;
    let customer = customer_with_role(&a).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&a, "alice", Role::Support).await;
    let session = open_support(&a, &alice, id, &unique("CS"), 1800).await;
    let sid = session["id"].as_str().unwrap();
    let db_name = a.database_url.rsplit('/').next().unwrap().to_owned();
    let listeners = || {
        let (db, name) = (a.db.clone(), db_name.clone());
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND query ILIKE 'LISTEN%'",
            )
            .bind(name)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert!(
        lanyard_tests::eventually(Duration::from_secs(10), || async { listeners().await == 2 })
            .await,
        "both instances listen"
    );
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(&db_name)
    .fetch_all(&a.db)
    .await
    .unwrap();
    assert_eq!(killed, [true, true]);
    // B serves (and caches) the session while its listener is gone...
    let (status, creds) = credentials(&b, &alice, &session).await;
    assert_eq!(status, 200, "{creds}");
    // ...and listens again.
    assert!(
        lanyard_tests::eventually(Duration::from_secs(15), || async { listeners().await == 2 })
            .await,
        "the listeners did not come back"
    );
    let (status, _) = a
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{sid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let refused = lanyard_tests::eventually(Duration::from_secs(1), || async {
        credentials(&b, &alice, &session).await.0 == 410
    })
    .await;
    assert!(
        refused,
        "B still issued credentials 1 s after the revocation"
    );
}

/// Only the audit write fails (a trigger refuses new `credentials.issue` rows while every read
/// works, the database included): credential requests get 503 and no credentials, cached or
/// not, and succeed again once the audit log takes rows.
#[tokio::test]
async fn no_credentials_leave_while_only_the_audit_write_fails() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let case = unique("CS");
    let session = open_support(&app, &alice, id, &case, 1800).await;
    // Cached: the next request needs nothing but the audit row.
    let (status, before) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200, "{before}");
    for sql in [
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN RAISE EXCEPTION 'audit log refuses writes'; END $$",
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event FOR EACH ROW
         WHEN (NEW.action = 'credentials.issue') EXECUTE FUNCTION refuse_audit()",
    ] {
        sqlx::query(sql).execute(&app.db).await.unwrap();
    }
    let response = app
        .send(
            Method::POST,
            &format!(
                "/v1/sessions/{}/credentials",
                session["id"].as_str().unwrap()
            ),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(response.status(), 503);
    let text = response.text().await.unwrap();
    assert!(text.contains("urn:lanyard:problem:unavailable"), "{text}");
    for secret in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(
        !text.contains(before["SecretAccessKey"].as_str().unwrap()),
        "{text}"
    );
    sqlx::query("DROP TRIGGER refuse_audit ON audit_event")
        .execute(&app.db)
        .await
        .unwrap();
    let (status, after) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["AccessKeyId"], before["AccessKeyId"]);
    assert_eq!(
        lanyard_tests::credential_requests(&app.db, &case).await,
        2,
        "the refused request left no row, the two answered ones did"
    );
}

/// A service opens its customer session explicitly (not through a credential request): the
/// session has the customer profile, no case, and its credentials name the service.
#[tokio::test]
async fn a_customer_session_opened_through_the_sessions_api_gives_credentials_to_its_service() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let service = token(&app, "etl-job", Role::Service).await;
    let (status, session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&service),
            Some(
                json!({ "kind": "customer", "customer": id, "role": "readonly",
                         "reason": "nightly export", "duration_seconds": 3600 }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["kind"], "customer");
    assert_eq!(session["profile_name"], format!("customer-{id}"));
    assert_eq!(session["case_id"], Value::Null);
    assert_eq!(session["reason"], "nightly export");
    let (status, creds) = credentials(&app, &service, &session).await;
    assert_eq!(status, 200, "{creds}");
    let calls = recorded_assume_roles(&format!("customer.{id}.etl-job")).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["SourceIdentity"], "etl-job");
    assert_eq!(tags(&calls[0])["lanyard-kind"], "customer");
    // A case belongs to support sessions only.
    let (status, problem) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&service),
            Some(json!({ "kind": "customer", "customer": id, "role": "readonly", "case_id": "CS-1" })),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "case_id");
}

/// What the broker checks on every credential request, not only when the session opened: a
/// role that failed its last verification, or no longer allows the session's kind, gives no
/// credentials (409, audited), even to a session that already had some.
#[tokio::test]
async fn credentials_stop_when_the_role_fails_verification_or_stops_allowing_the_kind() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let session = open_support(&app, &alice, id, &unique("CS"), 1800).await;
    let (status, _) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200);

    // The role now allows customer sessions only.
    let (status, role) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{id}/roles/readonly"),
            Some(
                json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                         "session_kinds": ["customer"] }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["status"], "verified");
    let (status, problem) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not allow support sessions")
    );

    // Support allowed again, but the last verification failed (as a changed trust policy
    // makes it fail; moto cannot be told to refuse here, so the role's recorded status is
    // what the broker reads).
    app.register_role(id, "readonly").await;
    let (status, _) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200);
    sqlx::query(
        "UPDATE role SET status = 'failed', verified_at = NULL, verified_external_id = NULL, last_error = 'AccessDenied' WHERE customer_id = $1",
    )
    .bind(id)
    .execute(&app.db)
    .await
    .unwrap();
    let refused = lanyard_tests::eventually(Duration::from_secs(2), || async {
        credentials(&app, &alice, &session).await.0 == 409
    })
    .await;
    assert!(
        refused,
        "credentials were still issued for a role whose verification failed"
    );
    let codes: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT error_code FROM audit_event WHERE action = 'credentials.issue'
         AND outcome = 'denied' ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(
        codes.contains(&Some("SessionKindNotAllowed".into())),
        "{codes:?}"
    );
    assert!(codes.contains(&Some("RoleNotVerified".into())), "{codes:?}");
}

/// A role's scoped-down session policy, as large as a role may have one, reaches AssumeRole
/// with the broker's own statement that ends the credentials with the session, within
/// STS's 2,048 characters.
#[tokio::test]
async fn the_roles_session_policy_reaches_assume_role_with_the_session_end() {
    let app = TestApp::spawn().await;
    let id = unique("acme");
    app.create_customer(&id).await;
    let policy = lanyard_tests::session_policy_of(1536);
    let sid = policy["Statement"][0]["Sid"].clone();
    let (status, role) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{id}/roles/readonly"),
            Some(json!({
                "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                "session_policy": policy,
            })),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    let alice = token(&app, "alice", Role::Support).await;
    let case = unique("CS");
    let session = open_support(&app, &alice, &id, &case, 1800).await;
    let (status, _) = credentials(&app, &alice, &session).await;
    assert_eq!(status, 200);
    let calls = recorded_assume_roles(&case).await;
    assert_eq!(calls.len(), 1);
    let policy: Value = serde_json::from_str(&calls[0]["Policy"]).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements[0]["Sid"], sid, "{policy}");
    assert_eq!(statements[0]["Action"], "logs:Get*");
    assert_eq!(statements[1]["Sid"], "LanyardSessionEnd", "{policy}");
    assert!(calls[0]["Policy"].len() <= 2048);
}

/// Customer credentials without a role name need exactly one role for customer sessions.
#[tokio::test]
async fn customer_credentials_without_a_role_need_exactly_one_eligible_role() {
    let app = TestApp::spawn().await;
    let id = unique("acme");
    app.create_customer(&id).await;
    let service = token(&app, "etl-job", Role::Service).await;
    let path = format!("/v1/customers/{id}/credentials");
    let (status, problem) = app.call(Method::POST, &path, Some(&service), None).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("has no verified role")
    );
    for name in ["readonly", "deploy"] {
        app.register_role(&id, name).await;
    }
    let (status, problem) = app.call(Method::POST, &path, Some(&service), None).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("several roles")
    );
    let (status, creds) = app
        .call(
            Method::POST,
            &path,
            Some(&service),
            Some(json!({ "role": "deploy" })),
        )
        .await;
    assert_eq!(status, 200, "{creds}");
}

/// The revocation epoch clients check before serving cached credentials: it moves when a
/// session of the caller's is revoked (by anyone), and only then.
#[tokio::test]
async fn whoami_tells_when_a_session_of_the_caller_was_last_revoked() {
    let app = TestApp::spawn().await;
    let customer = customer_with_role(&app).await;
    let id = customer["id"].as_str().unwrap();
    let alice = token(&app, "alice", Role::Support).await;
    let epoch = |token: String| {
        let app = &app;
        async move {
            let (status, me) = app
                .call(Method::GET, "/v1/auth/whoami", Some(&token), None)
                .await;
            assert_eq!(status, 200, "{me}");
            me["revocation_epoch"].as_i64().unwrap()
        }
    };
    assert_eq!(epoch(alice.clone()).await, 0);
    let first = open_support(&app, &alice, id, &unique("CS"), 1800).await;
    let second = open_support(&app, &alice, id, &unique("CS"), 1800).await;
    assert_eq!(epoch(alice.clone()).await, 0, "opening revokes nothing");
    let before = chrono::Utc::now().timestamp_millis();
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/v1/sessions/{}", first["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let after_first = epoch(alice.clone()).await;
    assert!(after_first >= before - 1000, "{after_first} vs {before}");
    // Another person's revocation does not move alice's epoch.
    let bob = token(&app, "bob", Role::Support).await;
    let bobs = open_support(&app, &bob, id, &unique("CS"), 1800).await;
    app.admin(
        Method::DELETE,
        &format!("/v1/sessions/{}", bobs["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(epoch(alice.clone()).await, after_first);
    app.call(
        Method::DELETE,
        &format!("/v1/sessions/{}", second["id"].as_str().unwrap()),
        Some(&alice),
        None,
    )
    .await;
    assert!(epoch(alice).await >= after_first);
}
