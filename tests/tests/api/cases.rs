//! Case-bound access through the API: access tiers (what reaches AWS), two-person approval
//! (who may decide, when the clock starts, expiry), closing a case on every instance, and
//! the bad inputs that must change nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lanyard_server::auth::Role;
use lanyard_tests::{TestApp, eventually, recorded_assume_roles, unique};
use reqwest::Method;
use serde_json::{Value, json};

const READ_ONLY: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";
const S3_FULL: &str = "arn:aws:iam::aws:policy/AmazonS3FullAccess";

/// A customer with a verified role `ops` that has a `read` tier and a `write` tier that needs
/// approval; returns the customer id.
async fn customer_with_tiers(app: &TestApp) -> String {
    let id = unique("acme");
    app.create_customer(&id).await;
    let (status, role) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{id}/roles/ops"),
            Some(json!({
                "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                "session_policy": { "Statement": { "Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*" } },
                "tiers": {
                    "read": { "policy_arns": [READ_ONLY] },
                    "write": {
                        "session_policy": { "Version": "2012-10-17", "Statement": {
                            "Effect": "Allow", "Action": "s3:PutObject", "Resource": "*" } },
                        "policy_arns": [S3_FULL],
                        "max_duration_seconds": 1800,
                        "requires_approval": true
                    }
                }
            })),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["status"], "verified", "{role}");
    assert_eq!(role["tiers"]["write"]["requires_approval"], true, "{role}");
    assert_eq!(role["tiers"]["read"]["policy_arns"], json!([READ_ONLY]));
    id
}

async fn act(app: &TestApp, token: &str, session: &Value, what: &str) -> (u16, Value) {
    let id = session["id"].as_str().unwrap();
    match what {
        "credentials" | "approve" | "deny" => {
            let body = (what != "credentials").then(|| json!({ "comment": "CAB change CHG-42" }));
            app.call(
                Method::POST,
                &format!("/v1/sessions/{id}/{what}"),
                Some(token),
                body,
            )
            .await
        }
        _ => {
            app.call(
                Method::GET,
                &format!("/v1/sessions/{id}"),
                Some(token),
                None,
            )
            .await
        }
    }
}

fn tags(call: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    (1..=50)
        .map_while(|n| {
            let key = call.get(&format!("Tags.member.{n}.Key"))?;
            let value = call.get(&format!("Tags.member.{n}.Value"))?;
            Some((key.clone(), value.clone()))
        })
        .collect()
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_write_tier_session_waits_for_a_second_person_and_carries_tier_and_approver_to_aws() {
    let app = TestApp::spawn().await;
    let customer = customer_with_tiers(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let case = unique("CS");
    let (status, pending) = app
        .request_support(&alice, &customer, "ops", &case, Some("write"), 1200)
        .await;
    assert_eq!(status, 201, "{pending}");
    assert_eq!(pending["status"], "pending_approval");
    assert_eq!(pending["tier"], "write");
    assert_eq!(pending["approval"]["status"], "pending");
    assert_eq!(pending["duration_seconds"], 1200);

    // No credentials while pending, and nothing was asked of AWS.
    let (status, problem) = act(&app, &alice, &pending, "credentials").await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("waiting for approval"),
        "{problem}"
    );
    assert!(
        recorded_assume_roles(&format!("support.{case}.alice"))
            .await
            .is_empty()
    );

    // Nobody approves their own request, an admin token of the same person included; an
    // auditor or a service may not approve at all.
    for token in [
        alice.clone(),
        app.person("alice", Role::Admin).await,
        app.person("carol", Role::Auditor).await,
        app.person("batch", Role::Service).await,
    ] {
        let (status, problem) = act(&app, &token, &pending, "approve").await;
        assert!([403, 404].contains(&status), "{status} {problem}");
    }
    let (_, still) = act(&app, &alice, &pending, "show").await;
    assert_eq!(still["status"], "pending_approval", "{still}");

    // Bob, another support engineer, sees the request in the queue and approves it.
    let bob = app.person("bob", Role::Support).await;
    let (status, queue) = app
        .call(Method::GET, "/v1/approvals", Some(&bob), None)
        .await;
    assert_eq!(status, 200, "{queue}");
    assert!(
        queue["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == pending["id"]),
        "{queue}"
    );
    let approved_at = chrono::Utc::now();
    let (status, active) = act(&app, &bob, &pending, "approve").await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["status"], "active");
    assert_eq!(active["approval"]["status"], "approved");
    assert_eq!(active["approval"]["decided_by"], "bob");
    assert_eq!(active["approval"]["comment"], "CAB change CHG-42");
    // The clock starts at the approval.
    let starts =
        (time(&active["expires_at"]).with_timezone(&chrono::Utc) - approved_at).num_seconds();
    assert!((1195..=1205).contains(&starts), "{active}");

    // Decided once: a second approval or a denial is refused.
    let carol = app.person("carol", Role::Support).await;
    for what in ["approve", "deny"] {
        let (status, problem) = act(&app, &carol, &pending, what).await;
        assert_eq!(status, 409, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("already approved by bob"),
            "{problem}"
        );
    }

    let (status, creds) = act(&app, &alice, &pending, "credentials").await;
    assert_eq!(status, 200, "{creds}");
    let calls = recorded_assume_roles(&format!("support.{case}.alice")).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    let sent = tags(call);
    assert_eq!(sent.get("lanyard:tier").map(String::as_str), Some("write"));
    assert_eq!(
        sent.get("lanyard:approver").map(String::as_str),
        Some("bob")
    );
    assert_eq!(
        call.get("PolicyArns.member.1.arn").map(String::as_str),
        Some(S3_FULL),
        "{call:?}"
    );
    let policy: Value = serde_json::from_str(call.get("Policy").unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Action"], "s3:PutObject", "{policy}");

    // The approval is in the audit trail and the credentials' audit row names the tier.
    let approval: (String, Value) = sqlx::query_as(
        "SELECT actor, detail FROM audit_event WHERE action = 'session.approve'
         AND session_id = $1::uuid",
    )
    .bind(pending["id"].as_str().unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(approval.0, "bob");
    assert_eq!(approval.1["requested_by"], "alice");
    assert_eq!(approval.1["tier"], "write");

    // A read-tier session needs nobody: active at once, its managed policy sent.
    let read_case = unique("CS");
    let (status, read) = app
        .request_support(&alice, &customer, "ops", &read_case, Some("read"), 1200)
        .await;
    assert_eq!(status, 201, "{read}");
    assert_eq!(read["status"], "active");
    assert!(read.get("approval").is_none(), "{read}");
    let (status, _) = act(&app, &alice, &read, "credentials").await;
    assert_eq!(status, 200);
    let calls = recorded_assume_roles(&format!("support.{read_case}.alice")).await;
    assert_eq!(
        calls[0].get("PolicyArns.member.1.arn").map(String::as_str),
        Some(READ_ONLY)
    );
    // Beside the managed policy the inline one only cuts the session off: an Allow of
    // everything there would undo ReadOnlyAccess (any session policy's Allow counts).
    let inline: Value = serde_json::from_str(calls[0].get("Policy").unwrap()).unwrap();
    let effects: Vec<&str> = inline["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Effect"].as_str().unwrap())
        .collect();
    assert_eq!(effects, ["Deny"], "{inline}");
    assert_eq!(
        tags(&calls[0]).get("lanyard:approver"),
        None,
        "nobody approved it"
    );

    // The usage report groups by tier.
    let admin = app.admin_token.clone();
    let report = lanyard_tests::eventually(Duration::from_secs(5), || async {
        let (_, report) = app
            .call(
                Method::GET,
                &format!("/v1/reports/usage?group_by=tier&customer={customer}"),
                Some(&admin),
                None,
            )
            .await;
        report["rows"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["tier"] == "read"))
    })
    .await;
    assert!(report, "the usage report has no read-tier row");
    let (_, report) = app
        .call(
            Method::GET,
            &format!("/v1/reports/usage?group_by=tier&customer={customer}"),
            Some(&admin),
            None,
        )
        .await;
    let by_tier: BTreeMap<String, i64> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tier"].as_str().unwrap_or("(base)").to_owned(),
                r["total_requests"].as_i64().unwrap(),
            )
        })
        .collect();
    // The write tier: one refusal while pending and one success.
    assert_eq!(
        by_tier,
        BTreeMap::from([("read".to_owned(), 1), ("write".to_owned(), 2)]),
        "{report}"
    );
}

#[tokio::test]
async fn a_denied_or_expired_request_never_gets_credentials() {
    let app = TestApp::spawn_with(|s| s.approval_window_secs = Some(10)).await;
    let customer = customer_with_tiers(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let carol = app.person("carol", Role::Admin).await;

    let (_, denied) = app
        .request_support(&alice, &customer, "ops", &unique("CS"), Some("write"), 1200)
        .await;
    let (status, after) = act(&app, &carol, &denied, "deny").await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["status"], "denied");
    assert_eq!(after["approval"]["decided_by"], "carol");
    let (status, problem) = act(&app, &alice, &denied, "credentials").await;
    assert_eq!(status, 410, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("denied by carol: CAB change CHG-42"),
        "{detail}"
    );
    let before = app.snapshot_except(&["audit_event"]).await;
    let (status, problem) = act(&app, &carol, &denied, "approve").await;
    assert_eq!(status, 409, "{problem}");
    // A denied request never started: it cannot be revoked either (it stays `denied`).
    let (status, problem) = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", denied["id"].as_str().unwrap()),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(app.snapshot_except(&["audit_event"]).await, before);

    // Nobody decides within the window: the request expires.
    let (_, lapsed) = app
        .request_support(&alice, &customer, "ops", &unique("CS"), Some("write"), 1200)
        .await;
    let started = Instant::now();
    let expired = eventually(Duration::from_secs(15), || async {
        act(&app, &alice, &lapsed, "show").await.1["status"] == "expired"
    })
    .await;
    assert!(expired, "still pending after {:?}", started.elapsed());
    // The lapse is announced once (session.ended), by the sweeper, within seconds.
    let announced = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM event_outbox WHERE type = 'session.ended' AND session_id = $1::uuid",
        )
        .bind(lapsed["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap()
            == 1
    })
    .await;
    assert!(announced, "no session.ended for the lapsed request");
    let before = app.snapshot_except(&["audit_event"]).await;
    let (status, problem) = act(&app, &carol, &lapsed, "approve").await;
    assert_eq!(status, 410, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("expired unapproved"),
        "{problem}"
    );
    assert_eq!(app.snapshot_except(&["audit_event"]).await, before);
    let (status, _) = act(&app, &alice, &lapsed, "credentials").await;
    assert_eq!(status, 410);
    // Each refusal is audited as denied.
    let refusals: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action = 'session.approve' AND outcome = 'denied'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(refusals, 2);
}

#[tokio::test]
async fn a_customer_can_require_approval_for_every_support_session() {
    let app = TestApp::spawn().await;
    let customer = customer_with_tiers(&app).await;
    let support = app.person("alice", Role::Support).await;
    let (status, problem) = app
        .call(
            Method::PUT,
            &format!("/v1/customers/{customer}/approval"),
            Some(&support),
            Some(json!({ "requires_approval": true })),
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    let (status, shown) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{customer}/approval"),
            Some(json!({ "requires_approval": true })),
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["requires_approval"], true);
    // The base grant and a tier that needs nobody both wait now.
    for tier in [None, Some("read")] {
        let (status, session) = app
            .request_support(&support, &customer, "ops", &unique("CS"), tier, 1200)
            .await;
        assert_eq!(status, 201, "{session}");
        assert_eq!(session["status"], "pending_approval", "{tier:?}: {session}");
        let (status, _) = act(&app, &support, &session, "credentials").await;
        assert_eq!(status, 409);
    }
    // Services are not held: a batch job cannot wait for a person.
    let (status, session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&app.person("batch", Role::Service).await),
            Some(json!({ "kind": "customer", "customer": customer, "role": "ops" })),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["status"], "active");
    let (_, off) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{customer}/approval"),
            Some(json!({ "requires_approval": false })),
        )
        .await;
    assert_eq!(off["requires_approval"], false);
    let (_, session) = app
        .request_support(&support, &customer, "ops", &unique("CS"), None, 1200)
        .await;
    assert_eq!(session["status"], "active");
}

#[tokio::test]
async fn bad_tiers_and_unknown_tiers_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let customer = customer_with_tiers(&app).await;
    let alice = app.person("alice", Role::Support).await;
    let before = app.snapshot().await;
    let big =
        json!({ "Statement": { "Effect": "Allow", "Action": "s".repeat(2000), "Resource": "*" } });
    for (tiers, why) in [
        (
            json!({ "write": { "session_policy": big } }),
            "leave room within STS",
        ),
        (
            json!({ "write": { "policy_arns": ["arn:aws:iam::aws:role/NotAPolicy"] } }),
            "managed policy ARN",
        ),
        (
            json!({ "write": { "policy_arns": [READ_ONLY], "max_duration_seconds": 7200 } }),
            "max_session_seconds",
        ),
        (
            json!({ "write": { "max_duration_seconds": 600 } }),
            "neither session_policy nor policy_arns",
        ),
        // A tier that needs approval on a role whose base grant is the whole role: asking
        // for no tier would skip the approval.
        (
            json!({ "write": { "policy_arns": [S3_FULL], "requires_approval": true } }),
            "narrow the base grant",
        ),
        (json!({ "Write Tier": {} }), "tier name"),
        (json!({ "write": { "requires_approval": "yes" } }), ""),
        (json!({ "write": { "surprise": 1 } }), ""),
    ] {
        let (status, problem) = app
            .admin(
                Method::PUT,
                &format!("/v1/customers/{customer}/roles/ops"),
                Some(json!({
                    "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                    "tiers": tiers
                })),
            )
            .await;
        assert!([400, 422].contains(&status), "{tiers}: {status} {problem}");
        assert!(problem.to_string().contains(why), "{tiers}: {problem}");
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused role changed something"
    );
    let before = app.snapshot_except(&["audit_event"]).await;

    for (tier, duration, why) in [
        ("admin", 600, "has no tier 'admin' (it has: read, write)"),
        ("NOPE!", 600, "tier"),
        ("write", 3600, "max_duration_seconds"),
    ] {
        let (status, problem) = app
            .call(
                Method::POST,
                "/v1/sessions",
                Some(&alice),
                Some(json!({
                    "kind": "support", "customer": customer, "role": "ops",
                    "case_id": "CS-1", "reason": "r", "tier": tier,
                    "duration_seconds": duration
                })),
            )
            .await;
        assert_eq!(status, 400, "{tier}: {problem}");
        assert!(problem.to_string().contains(why), "{tier}: {problem}");
    }
    assert_eq!(app.snapshot_except(&["audit_event"]).await, before);
}

#[tokio::test]
async fn closing_a_case_ends_its_sessions_on_every_instance() {
    let a = TestApp::spawn_with(|s| s.auth_cache_ms = Some(60_000)).await;
    let b = a.spawn_beside(|s| s.auth_cache_ms = Some(60_000)).await;
    let customer = customer_with_tiers(&a).await;
    let alice = a.person("alice", Role::Support).await;
    let dave = a.person("dave", Role::Support).await;
    let case = unique("CS");
    let other_case = unique("CS");
    let (_, live) = a
        .request_support(&alice, &customer, "ops", &case, Some("read"), 1200)
        .await;
    let (_, pending) = a
        .request_support(&dave, &customer, "ops", &case, Some("write"), 1200)
        .await;
    let (_, other) = a
        .request_support(&alice, &customer, "ops", &other_case, None, 1200)
        .await;
    // Instance B holds the live session's grant and credentials in its caches.
    for session in [&live, &other] {
        let (status, creds) = act(&b, &alice, session, "credentials").await;
        assert_eq!(status, 200, "{creds}");
    }

    let support = a.person("bob", Role::Support).await;
    let (status, _) = a
        .call(
            Method::POST,
            &format!("/v1/cases/{case}/close"),
            Some(&support),
            None,
        )
        .await;
    assert_eq!(status, 403, "support may not close cases");
    let (status, closed) = a
        .admin(Method::POST, &format!("/v1/cases/{case}/close"), None)
        .await;
    assert_eq!(status, 200, "{closed}");
    let closed_at = Instant::now();
    let mut ended: Vec<&str> = closed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    ended.sort_unstable();
    let mut expected = vec![
        live["id"].as_str().unwrap(),
        pending["id"].as_str().unwrap(),
    ];
    expected.sort_unstable();
    assert_eq!(ended, expected, "{closed}");
    assert!(
        closed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "revoked" && s["revoked_by"] == "tester"),
        "{closed}"
    );

    // B refuses within the revocation bound (its cache would otherwise hold for a minute).
    let refused = eventually(Duration::from_secs(1), || async {
        act(&b, &alice, &live, "credentials").await.0 == 410
    })
    .await;
    assert!(
        refused,
        "instance B still issued credentials after the close"
    );
    println!(
        "instance B refused {:?} after the close",
        closed_at.elapsed()
    );
    // The pending request cannot be approved any more; the other case is untouched.
    let (status, _) = act(&b, &alice, &pending, "approve").await;
    assert_eq!(status, 410);
    let (status, _) = act(&b, &alice, &other, "credentials").await;
    assert_eq!(status, 200);
    // A closed case stays closed: no new session opens on it (no case system here to say
    // it was reopened).
    let before = a.snapshot_except(&["audit_event"]).await;
    let (status, problem) = a
        .request_support(&alice, &customer, "ops", &case, None, 1200)
        .await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("was closed at"),
        "{problem}"
    );
    assert_eq!(a.snapshot_except(&["audit_event"]).await, before);
    // Closing again ends nothing more.
    let (status, again) = a
        .admin(Method::POST, &format!("/v1/cases/{case}/close"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["sessions"], json!([]));
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action = 'session.revoke' AND case_id = $1",
    )
    .bind(&case)
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!(audited, 2);
}
