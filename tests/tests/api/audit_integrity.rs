//! The usage report against raw aggregates over the same audit rows, and the audit log's
//! hash chains checked by the real `lanyard-server audit verify` after tampering.

use std::time::Duration;

use lanyard_server::auth::Role;
use lanyard_server::db::usage::DURATION_BOUNDS;
use lanyard_tests::{TestApp, binary, unique};
use reqwest::Method;
use serde_json::{Value, json};

async fn token(app: &TestApp, subject: &str, role: Role) -> String {
    app.token_for(subject, role, None, Duration::from_secs(3600))
        .await
}

/// Traffic of several kinds: support sessions of two people on two cases of two customers,
/// a service's customer credentials, successes (cold and cached), and denials (a person
/// asking for someone else's session). Returns the customers.
async fn generate_traffic(app: &TestApp) -> Vec<String> {
    let customers = vec![unique("acme"), unique("globex")];
    for c in &customers {
        app.create_customer(c).await;
        app.register_role(c, "readonly").await;
    }
    let alice = token(app, "alice", Role::Support).await;
    let bob = token(app, "bob", Role::Support).await;
    let billing = token(app, "billing-job", Role::Service).await;
    let mut sessions = Vec::new();
    for (who, customer, case) in [
        (&alice, &customers[0], "CS-100"),
        (&bob, &customers[0], "CS-100"),
        (&bob, &customers[1], "CS-200"),
    ] {
        let (status, s) = app
            .call(
                Method::POST,
                "/v1/sessions",
                Some(who),
                Some(
                    json!({ "kind": "support", "customer": customer, "role": "readonly",
                             "case_id": case, "reason": "report test" }),
                ),
            )
            .await;
        assert_eq!(status, 201, "{s}");
        sessions.push((who.clone(), s["id"].as_str().unwrap().to_owned()));
    }
    let mut tasks = Vec::new();
    for round in 0..40 {
        for (i, (who, id)) in sessions.iter().enumerate() {
            let (http, url) = (
                app.http.clone(),
                app.url(&format!("/v1/sessions/{id}/credentials")),
            );
            // Every fifth round, the session is asked for by someone else: denied.
            let who = if round % 5 == 4 {
                sessions[(i + 1) % sessions.len()].0.clone()
            } else {
                who.clone()
            };
            tasks.push(tokio::spawn(async move {
                let response = http.post(url).bearer_auth(who).send().await.unwrap();
                (response.status(), response.text().await.unwrap())
            }));
        }
        let (http, url, billing) = (
            app.http.clone(),
            app.url(&format!("/v1/customers/{}/credentials", customers[1])),
            billing.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let response = http.post(url).bearer_auth(billing).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }));
    }
    let mut denied = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        let status = status.as_u16();
        assert!(
            status == 200 || status == 404 || status == 403,
            "{status} {body}"
        );
        denied += usize::from(status != 200);
    }
    assert!(denied > 0, "the traffic includes denials");
    customers
}

/// The report's figures for one group, as comparable values.
fn figures(row: &Value) -> Value {
    json!([
        row["total_requests"],
        row["successful_requests"],
        row["success_rate"],
        row["avg_duration_ms"],
        row["p95_duration_ms"],
        row["cache_hits"],
        row["cache_hit_rate"],
        row["user_count"],
        row["users"]
    ])
}

/// The same figures, computed straight from the audit rows.
async fn raw(
    app: &TestApp,
    column: &str,
    since: &str,
    customer: Option<&str>,
) -> Vec<(String, Value)> {
    #[allow(clippy::type_complexity)]
    let rows: Vec<(String, i64, i64, i64, i64, i64, Option<i64>, Option<i32>, Vec<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {column}, count(*), count(*) FILTER (WHERE outcome = 'success'),
                    count(*) FILTER (WHERE cache_hit), count(cache_hit), count(duration_ms),
                    sum(duration_ms)::int8,
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY lanyard_duration_bucket(duration_ms)),
                    array_agg(DISTINCT actor COLLATE \"C\" ORDER BY actor COLLATE \"C\")
             FROM (SELECT *, coalesce(case_id, '') AS case_key,
                          coalesce(detail->>'tier', '') AS tier_key FROM audit_event) e
             WHERE action = 'credentials.issue' AND profile IS NOT NULL
               AND customer_id IS NOT NULL AND occurred_at >= $1::date
               AND ($2::text IS NULL OR customer_id = $2)
             GROUP BY 1 ORDER BY {column} COLLATE \"C\""
        )))
        .bind(since)
        .bind(customer)
        .fetch_all(&app.db)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(key, n, ok, hits, lookups, dcount, dsum, p95, users)| {
            let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
            (
                key,
                json!([
                    n,
                    ok,
                    ratio(ok, n).unwrap_or(0.0),
                    dsum.and_then(|s| ratio(s, dcount)),
                    p95,
                    hits,
                    ratio(hits, lookups),
                    users.len(),
                    users
                ]),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_figure_of_the_usage_report_equals_a_raw_aggregate_of_the_audit_rows() {
    let app = TestApp::spawn().await;
    let customers = generate_traffic(&app).await;
    let auditor = token(&app, "carol", Role::Auditor).await;

    for (group_by, field, column) in [
        ("profile", "profile", "profile"),
        ("customer", "customer", "customer_id"),
        ("case", "case_id", "case_key"),
        ("actor", "actor", "actor"),
        ("tier", "tier", "tier_key"),
    ] {
        for customer in [None, Some(customers[0].as_str())] {
            let path = match customer {
                None => format!("/v1/reports/usage?days=7&group_by={group_by}"),
                Some(c) => format!("/v1/reports/usage?days=7&group_by={group_by}&customer={c}"),
            };
            let (status, report) = app.call(Method::GET, &path, Some(&auditor), None).await;
            assert_eq!(status, 200, "{report}");
            let since = report["since"].as_str().unwrap();
            let expected = raw(&app, column, since, customer).await;
            let got: Vec<(String, Value)> = report["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| (row[field].as_str().unwrap_or("").to_owned(), figures(row)))
                .collect();
            assert_eq!(got, expected, "group_by={group_by} customer={customer:?}");
            assert!(!got.is_empty());
        }
    }

    // The tree layout, for people.
    let text = app
        .http
        .get(app.url("/v1/reports/usage?days=1"))
        .bearer_auth(&auditor)
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let profile = format!("Profile: support-{}-CS-100", customers[0]);
    assert!(text.contains(&profile), "{text}");
    assert!(text.contains("└─ Users: alice, bob (2 total)"), "{text}");
}

#[tokio::test]
async fn the_usage_report_is_for_admins_and_auditors_within_their_customers() {
    let app = TestApp::spawn().await;
    let customers = generate_traffic(&app).await;
    for role in [Role::Support, Role::Service] {
        let t = token(&app, "someone", role).await;
        let (status, body) = app
            .call(Method::GET, "/v1/reports/usage", Some(&t), None)
            .await;
        assert_eq!(status, 403, "{body}");
    }
    let limited = app
        .token_for(
            "dan",
            Role::Auditor,
            Some(vec![&customers[1]]),
            Duration::from_secs(600),
        )
        .await;
    let (status, report) = app
        .call(
            Method::GET,
            "/v1/reports/usage?group_by=customer",
            Some(&limited),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let seen: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["customer"].as_str().unwrap())
        .collect();
    assert_eq!(seen, [customers[1].as_str()]);
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/reports/usage?customer={}", customers[0]),
            Some(&limited),
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "another customer reads like one that does not exist"
    );
    for bad in [
        "days=0",
        "days=367",
        "days=x",
        "group_by=color",
        "customer=NO",
        "extra=1",
    ] {
        let (status, body) = app
            .call(
                Method::GET,
                &format!("/v1/reports/usage?{bad}"),
                Some(&app.admin_token),
                None,
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["detail"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn the_duration_buckets_agree_between_rust_and_sql() {
    let app = TestApp::spawn().await;
    let bounds: Vec<i32> = sqlx::query_scalar("SELECT unnest(lanyard_duration_bounds())")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(bounds, DURATION_BOUNDS);
}

/// `lanyard-server audit verify` against the test database: exit code and output.
fn verify(app: &TestApp) -> (i32, String) {
    let out = std::process::Command::new(binary("lanyard-server"))
        .args(["audit", "verify"])
        .env("LANYARD_DATABASE_URL", &app.database_url)
        .env("LANYARD_DATA_DIR", app.data_dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn audit_verify_passes_a_clean_chain_and_names_the_row_that_was_changed() {
    let app = TestApp::spawn().await;
    generate_traffic(&app).await;
    let (code, out) = verify(&app);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit chain intact"), "{out}");
    let chained: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_event WHERE chain_id IS NOT NULL")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(out.contains(&format!("checked {chained} rows")), "{out}");

    // Change one credential row in the middle of a writer's chain.
    let (id, chain): (i64, uuid::Uuid) = sqlx::query_as(
        "SELECT id, chain_id FROM audit_event
         WHERE action = 'credentials.issue' AND chain_id <> '00000000-0000-0000-0000-000000000001'
         ORDER BY chain_id, seq OFFSET 5 LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query("UPDATE audit_event SET actor = 'mallory' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    let (code, out) = verify(&app);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!("BROKEN: row {id} (chain {chain}")),
        "{out}"
    );
    assert!(out.contains("was changed"), "{out}");
    assert_eq!(out.matches("BROKEN:").count(), 1, "{out}");
}

#[tokio::test]
async fn audit_verify_finds_removed_rows_in_the_middle_and_at_the_end() {
    let app = TestApp::spawn().await;
    generate_traffic(&app).await;
    // An administrative row in the middle of the admin chain: the next row is named.
    let (removed, next): (i64, i64) = sqlx::query_as(
        "SELECT a.id, b.id FROM audit_event a JOIN audit_event b
           ON b.chain_id = a.chain_id AND b.seq = a.seq + 1
         WHERE a.chain_id = '00000000-0000-0000-0000-000000000001' AND a.seq = 2",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM audit_event WHERE id = $1")
        .bind(removed)
        .execute(&app.db)
        .await
        .unwrap();
    // The newest row of a writer's chain: the chain's head no longer matches.
    let (last, chain): (i64, uuid::Uuid) = sqlx::query_as(
        "SELECT id, chain_id FROM audit_event
         WHERE chain_id <> '00000000-0000-0000-0000-000000000001'
         ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM audit_event WHERE id = $1")
        .bind(last)
        .execute(&app.db)
        .await
        .unwrap();
    let (code, out) = verify(&app);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("BROKEN: row {next} (chain 00000000-0000-0000-0000-000000000001 of admin, seq 3): seq 3 follows seq 1")), "{out}");
    assert!(out.contains(&format!("BROKEN: chain {chain}")), "{out}");
    assert!(out.contains("rows at its end were removed"), "{out}");
}

#[tokio::test]
async fn retention_removes_old_rows_and_the_chains_still_verify() {
    let app = TestApp::spawn().await;
    generate_traffic(&app).await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event")
        .fetch_one(&app.db)
        .await
        .unwrap();
    // Cut in the middle of the traffic.
    let cutoff: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT occurred_at FROM audit_event ORDER BY occurred_at OFFSET (SELECT count(*) / 2 FROM audit_event) LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let pruned = lanyard_server::audit::retention::prune(&app.db, cutoff)
        .await
        .unwrap();
    let older: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event WHERE occurred_at < $1")
        .bind(cutoff)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(older, 0, "every row older than the cutoff is gone");
    assert_eq!(pruned.rows as i64, before - after);
    assert!(after > 0 && after < before, "{before} -> {after}");
    let anchors: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_chain_prune")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(anchors as usize, pruned.chains);
    assert!(anchors >= 1);

    let (code, out) = verify(&app);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("checked {after} rows")), "{out}");

    // A second pass with the same cutoff finds nothing more.
    let again = lanyard_server::audit::retention::prune(&app.db, cutoff)
        .await
        .unwrap();
    assert_eq!(again.rows, 0);

    // Removing the first remaining row of a pruned chain (one that goes on) is still found.
    let (first, chain): (i64, uuid::Uuid) = sqlx::query_as(
        "SELECT e.id, e.chain_id FROM audit_event e JOIN audit_chain_prune p
           ON p.chain_id = e.chain_id AND e.seq = p.pruned_seq + 1
         WHERE EXISTS (SELECT 1 FROM audit_event n WHERE n.chain_id = e.chain_id AND n.seq = e.seq + 1)
         LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM audit_event WHERE id = $1")
        .bind(first)
        .execute(&app.db)
        .await
        .unwrap();
    let (code, out) = verify(&app);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("(chain {chain}")), "{out}");
    assert!(out.contains("the rows between were removed"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_passes_while_requests_keep_writing_and_flags_rows_inserted_around_the_broker()
{
    let app = TestApp::spawn().await;
    generate_traffic(&app).await;
    let customer = unique("live");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let service = token(&app, "live-job", Role::Service).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (http, url, service, stop) = (
            app.http.clone(),
            app.url(&format!("/v1/customers/{customer}/credentials")),
            service.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut ok = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http.post(&url).bearer_auth(&service).send().await.unwrap();
                assert_eq!(r.status(), 200);
                ok += 1;
            }
            ok
        }));
    }
    // Verify several times while batches keep committing.
    for _ in 0..3 {
        let (code, out) = tokio::task::spawn_blocking({
            let url = app.database_url.clone();
            let dir = app.data_dir.path().to_owned();
            move || {
                let out = std::process::Command::new(binary("lanyard-server"))
                    .args(["audit", "verify"])
                    .env("LANYARD_DATABASE_URL", url)
                    .env("LANYARD_DATA_DIR", dir)
                    .output()
                    .unwrap();
                (
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            }
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{out}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap();
    }
    assert!(total > 0);

    // A row written around the broker (no chain) after the chains began is reported.
    sqlx::query(
        "INSERT INTO audit_event (actor, action, outcome) VALUES ('mallory', 'customer.create', 'success')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (code, out) = verify(&app);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("BROKEN: 1 rows without a chain"), "{out}");
}
