//! `GET /v1/audit` end to end: filters, cursor paging under concurrent writes, the NDJSON and
//! CSV exports, who may read what, and bad input. Events come from real API calls (customers,
//! roles verified against moto, sessions, credentials) and, for volume and exact times, from
//! rows inserted with SQL.

use std::collections::BTreeSet;
use std::time::Duration;

use lanyard_server::auth::Role;
use lanyard_tests::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

/// The fields of an event, in the order of the JSON objects and the CSV columns.
const FIELDS: [&str; 18] = [
    "id",
    "occurred_at",
    "request_id",
    "actor",
    "actor_role",
    "action",
    "customer",
    "role",
    "session_id",
    "case_id",
    "profile",
    "source_ip",
    "user_agent",
    "outcome",
    "error_code",
    "duration_ms",
    "cache_hit",
    "detail",
];

struct Answer {
    status: u16,
    content_type: String,
    disposition: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn get(app: &TestApp, token: Option<&str>, query: &str) -> Answer {
    let response = app
        .send(Method::GET, &format!("/v1/audit{query}"), token, None)
        .await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let disposition = header("content-disposition");
    Answer {
        status: response.status().as_u16(),
        content_type,
        disposition,
        body: response.text().await.unwrap(),
    }
}

/// One JSON page as admin; panics unless 200.
async fn page(app: &TestApp, query: &str) -> Value {
    let answer = get(app, Some(&app.admin_token), query).await;
    assert_eq!(answer.status, 200, "{query}: {}", answer.body);
    assert_eq!(answer.content_type, "application/json", "{query}");
    answer.json()
}

fn ids(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// The ids the database holds for a condition, newest first: the oracle the API is checked
/// against.
async fn ids_where(app: &TestApp, condition: &str) -> Vec<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM audit_event WHERE {condition} ORDER BY id DESC"
    )))
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// Inserts an audit row directly (volume, exact times, awkward text). Columns left out get
/// their defaults; `occurred_at` defaults to now.
async fn insert_event(app: &TestApp, row: Value) -> i64 {
    let mut row = row;
    let object = row.as_object_mut().unwrap();
    object.entry("actor").or_insert(json!("sql"));
    object.entry("action").or_insert(json!("test.event"));
    object.entry("outcome").or_insert(json!("success"));
    sqlx::query_scalar(
        "INSERT INTO audit_event (occurred_at, request_id, actor, actor_role, action,
                                  customer_id, role_name, session_id, case_id, profile,
                                  source_ip, user_agent, outcome, error_code, duration_ms,
                                  cache_hit, detail)
         SELECT coalesce(r.occurred_at, now()), r.request_id, r.actor, r.actor_role, r.action,
                r.customer_id, r.role_name, r.session_id, r.case_id, r.profile, r.source_ip,
                r.user_agent, r.outcome, r.error_code, r.duration_ms, r.cache_hit, r.detail
         FROM jsonb_populate_record(NULL::audit_event, $1) r
         RETURNING id",
    )
    .bind(row)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// `n` rows through one INSERT, spread over customers `acme-corp`, `globex` and none.
async fn insert_many(app: &TestApp, n: i64, action: &str) {
    sqlx::query(
        "INSERT INTO audit_event (actor, action, customer_id, outcome, user_agent)
         SELECT 'bulk-' || (i % 5), $2,
                (ARRAY['acme-corp', 'globex', NULL])[1 + i % 3],
                (ARRAY['success', 'denied', 'error'])[1 + (i / 3) % 3],
                'bulk agent ' || i
         FROM generate_series(1, $1) AS i",
    )
    .bind(n)
    .bind(action)
    .execute(&app.db)
    .await
    .unwrap();
}

/// Activity through the real API: two customers with verified roles, a support session on
/// `acme-corp` for case CS-1001 with credentials fetched from moto twice, a refused credential
/// request by someone else, and a customer session for a service on `globex`.
/// Returns the support session's id.
async fn real_activity(app: &TestApp) -> String {
    app.create_customer("acme-corp").await;
    app.create_customer("globex").await;
    app.register_role("acme-corp", "readonly").await;
    app.register_role("globex", "readonly").await;
    let alice = app
        .token_for("alice", Role::Support, None, Duration::from_secs(3600))
        .await;
    let bob = app
        .token_for("bob", Role::Support, None, Duration::from_secs(3600))
        .await;
    let billing = app
        .token_for("billing", Role::Service, None, Duration::from_secs(3600))
        .await;
    let (status, session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&alice),
            Some(json!({
                "kind": "support", "customer": "acme-corp", "role": "readonly",
                "case_id": "CS-1001", "reason": "customer reports failing uploads"
            })),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/sessions/{id}/credentials");
    for _ in 0..2 {
        let (status, creds) = app.call(Method::POST, &path, Some(&alice), None).await;
        assert_eq!(status, 200, "{creds}");
    }
    let (status, _) = app.call(Method::POST, &path, Some(&bob), None).await;
    assert_eq!(status, 404, "bob may not use alice's session");
    let (status, creds) = app
        .call(
            Method::POST,
            "/v1/customers/globex/credentials",
            Some(&billing),
            None,
        )
        .await;
    assert_eq!(status, 200, "{creds}");
    id
}

#[tokio::test]
async fn each_filter_narrows_to_exactly_the_matching_events() {
    let app = TestApp::spawn().await;
    let session = real_activity(&app).await;
    // Exact times for the half-open range, and an error outcome.
    let t0 = "2026-01-01T00:00:00Z";
    let t1 = "2026-01-01T01:00:00Z";
    let at_t0 = insert_event(&app, json!({ "occurred_at": t0 })).await;
    let inside = insert_event(
        &app,
        json!({ "occurred_at": "2026-01-01T00:59:59.999999Z" }),
    )
    .await;
    let at_t1 = insert_event(&app, json!({ "occurred_at": t1 })).await;
    insert_event(
        &app,
        json!({ "occurred_at": "2025-12-31T23:59:59Z", "outcome": "error",
                "error_code": "unavailable", "customer_id": "globex" }),
    )
    .await;
    let all = ids_where(&app, "true").await;
    assert_eq!(ids(&page(&app, "?limit=1000").await), all);

    // Each filter: the API returns exactly what the database says matches, a strict subset.
    let cases: Vec<(String, String)> = vec![
        ("?actor=alice".into(), "actor = 'alice'".into()),
        ("?actor=bob".into(), "actor = 'bob'".into()),
        (
            "?customer=acme-corp".into(),
            "customer_id = 'acme-corp'".into(),
        ),
        ("?customer=globex".into(), "customer_id = 'globex'".into()),
        ("?case_id=CS-1001".into(), "case_id = 'CS-1001'".into()),
        (
            format!("?session={session}"),
            format!("session_id = '{session}'"),
        ),
        (
            "?action=credentials.issue".into(),
            "action = 'credentials.issue'".into(),
        ),
        ("?outcome=success".into(), "outcome = 'success'".into()),
        ("?outcome=denied".into(), "outcome = 'denied'".into()),
        ("?outcome=error".into(), "outcome = 'error'".into()),
        (
            format!("?from={t0}&to={t1}"),
            format!("occurred_at >= '{t0}' AND occurred_at < '{t1}'"),
        ),
        (format!("?to={t0}"), format!("occurred_at < '{t0}'")),
        (
            // `+` offsets must be percent-encoded in a query string.
            "?from=2026-01-01T01:00:00%2B01:00".into(),
            format!("occurred_at >= '{t0}'"),
        ),
        (
            "?customer=acme-corp&action=credentials.issue&outcome=denied&actor=bob".into(),
            "customer_id = 'acme-corp' AND action = 'credentials.issue' \
             AND outcome = 'denied' AND actor = 'bob'"
                .into(),
        ),
        (
            "?customer=acme-corp&action=credentials.issue&outcome=success".into(),
            "customer_id = 'acme-corp' AND action = 'credentials.issue' \
             AND outcome = 'success'"
                .into(),
        ),
    ];
    for (query, condition) in &cases {
        let expected = ids_where(&app, condition).await;
        assert!(
            !expected.is_empty() && expected.len() < all.len(),
            "{query} does not narrow the test data: {expected:?}"
        );
        let got = page(&app, &format!("{query}&limit=1000")).await;
        assert_eq!(ids(&got), expected, "{query}");
        assert_eq!(got["next_cursor"], Value::Null, "{query}");
    }

    // The half-open range: `from` included, `to` excluded.
    assert_eq!(
        ids(&page(&app, &format!("?from={t0}&to={t1}")).await),
        [inside, at_t0]
    );
    assert!(
        !ids(&page(&app, &format!("?from={t0}")).await).is_empty()
            && ids(&page(&app, &format!("?from={t0}&to={t0}")).await).is_empty()
    );
    assert!(ids(&page(&app, &format!("?from={t1}&to={t1}")).await).is_empty());
    assert!(ids(&page(&app, &format!("?to={t1}")).await).contains(&inside));
    assert!(!ids(&page(&app, &format!("?to={t1}")).await).contains(&at_t1));

    // What the API reports for the real activity: alice's two credential fetches (the second
    // from the cache), bob's refusal, all carrying the case and the session.
    let issued = page(
        &app,
        &format!("?session={session}&action=credentials.issue"),
    )
    .await;
    let events = issued["events"].as_array().unwrap();
    let summary: Vec<(&str, &str, Value)> = events
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["cache_hit"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("bob", "denied", Value::Null),
            ("alice", "success", json!(true)),
            ("alice", "success", json!(false)),
        ]
    );
    let fetched = &events[2];
    let keys: BTreeSet<&str> = fetched
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(FIELDS));
    assert_eq!(fetched["customer"], "acme-corp");
    assert_eq!(fetched["role"], "readonly");
    assert_eq!(fetched["case_id"], "CS-1001");
    assert_eq!(fetched["profile"], "support-acme-corp-CS-1001");
    assert_eq!(fetched["actor_role"], "support");
    assert_eq!(fetched["source_ip"], "127.0.0.1");
    assert!(fetched["request_id"].is_string(), "{fetched}");
    assert!(fetched["duration_ms"].is_i64(), "{fetched}");
    assert!(fetched["detail"]["access_key_id"].is_string(), "{fetched}");
    chrono::DateTime::parse_from_rfc3339(fetched["occurred_at"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn paging_returns_every_event_once_newest_first_while_new_ones_arrive() {
    let app = TestApp::spawn().await;
    insert_many(&app, 300, "bulk.event").await;
    for (n, (filter, condition)) in [
        ("", "true"),
        ("&customer=acme-corp", "customer_id = 'acme-corp'"),
        (
            "&outcome=denied&action=bulk.event",
            "outcome = 'denied' AND action = 'bulk.event'",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let expected = ids_where(&app, condition).await;
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        let mut writer: Option<tokio::task::JoinHandle<u32>> = None;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            let query = match &cursor {
                Some(c) => format!("?limit=7{filter}&cursor={c}"),
                None => format!("?limit=7{filter}"),
            };
            let got = page(&app, &query).await;
            pages += 1;
            assert!(got["events"].as_array().unwrap().len() <= 7);
            seen.extend(ids(&got));
            if pages == 1 {
                // From now on another client keeps writing events that match every filter
                // while the pages are read.
                let (db, stop) = (app.db.clone(), stop.clone());
                writer = Some(tokio::spawn(async move {
                    let mut written = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        sqlx::query(
                            "INSERT INTO audit_event (actor, action, customer_id, outcome)
                             VALUES ('bulk-0', 'bulk.event', 'acme-corp', 'denied')",
                        )
                        .execute(&db)
                        .await
                        .unwrap();
                        written += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    written
                }));
            }
            if pages == 2 {
                // And a burst, through SQL and the API.
                insert_many(&app, 30, "bulk.event").await;
                app.create_customer(&format!("new-{n}")).await;
            }
            match got["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = writer.unwrap().await.unwrap();
        assert!(
            written >= 3,
            "{filter:?}: only {written} concurrent inserts"
        );
        assert_eq!(
            seen, expected,
            "filter {filter:?}: each event once, in order"
        );
        assert!(pages > 3, "{pages}");
        // A fresh listing starts with the new events.
        let first = ids(&page(&app, &format!("?limit=7{filter}")).await);
        assert!(first[0] > expected[0], "{filter:?}");
    }

    // A last page that is exactly full says so: no cursor to an empty page.
    let twenty_one = ids_where(&app, "customer_id = 'globex'").await.len() % 7;
    let extra = (7 - twenty_one) % 7;
    for _ in 0..extra {
        insert_event(&app, json!({ "customer_id": "globex" })).await;
    }
    let total = ids_where(&app, "customer_id = 'globex'").await.len();
    assert_eq!(total % 7, 0);
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let got = page(&app, &format!("?limit=7&customer=globex{cursor}")).await;
        pages += 1;
        assert_eq!(ids(&got).len(), 7, "no short or empty page");
        match got["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(pages, total / 7);
}

#[tokio::test]
async fn a_listing_waits_for_an_older_event_that_is_still_committing() {
    let app = TestApp::spawn().await;
    insert_many(&app, 5, "bulk.event").await;
    // A writer draws an id and has not committed yet; a later writer commits a newer one.
    let mut slow = app.db.begin().await.unwrap();
    let older: i64 = sqlx::query_scalar(
        "INSERT INTO audit_event (actor, action, outcome) VALUES ('slow', 'test.event', 'success')
         RETURNING id",
    )
    .fetch_one(&mut *slow)
    .await
    .unwrap();
    let newer = insert_event(&app, json!({ "actor": "fast" })).await;
    assert!(older < newer);
    let reader = {
        let (http, url, token) = (
            app.http.clone(),
            app.url("/v1/audit?limit=3"),
            app.admin_token.clone(),
        );
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        })
    };
    // The listing is waiting for the slow writer: a connection of the broker has asked,
    // again, whether that writer's transaction is still open (pg_stat_activity keeps each
    // connection's last statement).
    let waiting = lanyard_tests::eventually(Duration::from_secs(10), || {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND query LIKE $1",
            )
            // Bound, not in the statement: this query's own text must not match.
            .bind("%virtualtransaction = ANY%")
            .fetch_one(&db)
            .await
            .unwrap()
                > 0
        }
    })
    .await;
    assert!(
        waiting,
        "the listing never waited for the uncommitted writer"
    );
    assert!(
        !reader.is_finished(),
        "the listing answered while an older event was still committing"
    );
    slow.commit().await.unwrap();
    let (status, first) = reader.await.unwrap();
    assert_eq!(status, 200, "{first}");
    // Had the first page not waited, it would have held `newer` and the rows below `older`,
    // and the walk, going on below them, would never have shown `older`.
    assert_eq!(ids(&first)[..2], [newer, older]);

    // A writer that never finishes does not hold the audit log hostage: the listing answers
    // after a bounded wait (and cannot show that row, which is not committed).
    let mut stuck = app.db.begin().await.unwrap();
    sqlx::query("INSERT INTO audit_event (actor, action, outcome) VALUES ('stuck', 'x', 'error')")
        .execute(&mut *stuck)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let page = page(&app, "?limit=3").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(ids(&page)[0], newer);
    stuck.rollback().await.unwrap();
}

/// Parses CSV with Python's `csv` module: an independent RFC 4180 reader.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, io, json, sys\n\
             reader = csv.reader(io.TextIOWrapper(sys.stdin.buffer, encoding='utf-8', newline=''), strict=True)\n\
             json.dump(list(reader), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 on PATH (tests/run puts tests/.venv/bin there)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A JSON field as the CSV shows it: text as is (with `'` before a formula-like start),
/// numbers and booleans spelled out, null empty.
fn csv_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

#[tokio::test]
async fn ndjson_and_csv_exports_hold_the_same_events_as_the_json_pages() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    app.create_customer("globex").await;
    insert_many(&app, 40, "bulk.event").await;
    let awkward = [
        json!({ "actor": "=HYPERLINK(\"http://evil\",\"click\")", "customer_id": "acme-corp",
                "user_agent": "Mozilla/5.0 (X11, \"quoted\"),\r\nsecond line\nthird, line",
                "detail": { "note": "a, \"b\"\nc", "n": 1 } }),
        json!({ "actor": "+cmd", "user_agent": "-2+3", "case_id": "@SUM", "customer_id": "globex",
                "source_ip": "2001:db8::1", "duration_ms": 17, "cache_hit": false,
                "session_id": "0190f0c4-8a3f-7cc0-9d4e-5d1b2a3c4d5e", "request_id": "\tx" }),
        json!({ "actor": "ünïcødé ✓", "user_agent": "", "outcome": "error", "error_code": "x,y" }),
    ];
    for row in awkward {
        insert_event(&app, row).await;
    }
    let json_events = page(&app, "?limit=1000").await["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(json_events.len() > 40);

    let ndjson = get(&app, Some(&app.admin_token), "?format=ndjson").await;
    assert_eq!(ndjson.status, 200, "{}", ndjson.body);
    assert_eq!(ndjson.content_type, "application/x-ndjson");
    assert_eq!(
        ndjson.disposition.as_deref(),
        Some("attachment; filename=\"audit.ndjson\"")
    );
    assert!(ndjson.body.ends_with('\n'));
    let lines: Vec<Value> = ndjson
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, json_events);

    let csv = get(&app, Some(&app.admin_token), "?format=csv").await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(
        csv.content_type.starts_with("text/csv"),
        "{}",
        csv.content_type
    );
    assert_eq!(
        csv.disposition.as_deref(),
        Some("attachment; filename=\"audit.csv\"")
    );
    assert!(csv.body.ends_with("\r\n"));
    let records = parse_csv(&csv.body);
    assert_eq!(records[0], FIELDS);
    assert_eq!(records.len() - 1, json_events.len());
    for (record, event) in records[1..].iter().zip(&json_events) {
        for (i, field) in FIELDS.iter().enumerate() {
            let cell = &record[i];
            match *field {
                // Same instant; the spelling of fractions may differ.
                "occurred_at" => assert_eq!(
                    chrono::DateTime::parse_from_rfc3339(cell).unwrap(),
                    chrono::DateTime::parse_from_rfc3339(event[field].as_str().unwrap()).unwrap()
                ),
                "detail" if !cell.is_empty() => {
                    assert_eq!(serde_json::from_str::<Value>(cell).unwrap(), event[field]);
                }
                _ => assert_eq!(cell, &csv_cell(&event[field]), "{field} of {event}"),
            }
        }
    }
    // The formula guard, as a spreadsheet would see the cells.
    let by_actor = |actor: &str| {
        records
            .iter()
            .find(|r| r[3].trim_start_matches('\'') == actor)
            .unwrap()
            .clone()
    };
    let evil = by_actor("=HYPERLINK(\"http://evil\",\"click\")");
    assert_eq!(evil[3], "'=HYPERLINK(\"http://evil\",\"click\")");
    assert_eq!(
        evil[12],
        "Mozilla/5.0 (X11, \"quoted\"),\r\nsecond line\nthird, line"
    );
    let plus = by_actor("+cmd");
    assert_eq!(
        (&*plus[3], &*plus[12], &*plus[9], &*plus[2]),
        ("'+cmd", "'-2+3", "'@SUM", "'\tx")
    );

    // Exports honour the filters and a cursor, and `limit` when given.
    let acme = get(
        &app,
        Some(&app.admin_token),
        "?format=ndjson&customer=acme-corp",
    )
    .await;
    let acme_ids: Vec<i64> = acme
        .body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(acme_ids, ids_where(&app, "customer_id = 'acme-corp'").await);
    let first = page(&app, "?limit=5&customer=acme-corp").await;
    let rest = get(
        &app,
        Some(&app.admin_token),
        &format!(
            "?format=csv&customer=acme-corp&cursor={}",
            first["next_cursor"].as_str().unwrap()
        ),
    )
    .await;
    let rest_ids: Vec<i64> = parse_csv(&rest.body)[1..]
        .iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert_eq!([ids(&first), rest_ids].concat(), acme_ids);
    let three = get(&app, Some(&app.admin_token), "?format=csv&limit=3").await;
    assert_eq!(parse_csv(&three.body).len(), 4);

    // Nothing matching: a header alone, an empty NDJSON body.
    let none = get(&app, Some(&app.admin_token), "?format=csv&actor=nobody").await;
    assert_eq!((none.status, parse_csv(&none.body).len()), (200, 1));
    let none = get(&app, Some(&app.admin_token), "?format=ndjson&actor=nobody").await;
    assert_eq!((none.status, none.body.as_str()), (200, ""));
}

#[tokio::test]
async fn a_large_export_is_streamed_in_pieces_and_complete() {
    let app = TestApp::spawn().await;
    insert_many(&app, 100_000, "bulk.event").await;
    let response = app
        .send(
            Method::GET,
            "/v1/audit?format=ndjson&customer=acme-corp",
            Some(&app.admin_token.clone()),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    let mut response = response;
    let (mut chunks, mut lines, mut last_id, mut tail) = (0, 0, i64::MAX, String::new());
    while let Some(chunk) = response.chunk().await.unwrap() {
        chunks += 1;
        tail.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = tail.find('\n') {
            let event: Value = serde_json::from_str(&tail[..end]).unwrap();
            let id = event["id"].as_i64().unwrap();
            assert!(id < last_id, "newest first");
            assert_eq!(event["customer"], "acme-corp");
            last_id = id;
            lines += 1;
            tail.drain(..=end);
        }
    }
    assert!(tail.is_empty());
    assert_eq!(
        lines,
        ids_where(&app, "customer_id = 'acme-corp'").await.len()
    );
    assert!(
        chunks > 10,
        "the body came in {chunks} piece(s), not streamed"
    );
}

/// Opens an export on a raw connection and never reads it.
async fn stalled_export(app: &TestApp) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET /v1/audit?format=ndjson HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\r\n",
        app.addr, app.admin_token
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
}

/// An instance runs two exports at a time. Clients that open an export and never read it
/// lose their turn after the idle write time: the slot and its database connection are
/// released, a third export runs, the cut-off is counted in /metrics, and what the stalled
/// clients eventually read is a truncated transfer, never a complete-looking file.
#[tokio::test]
async fn exports_whose_clients_read_nothing_lose_their_slot_after_the_idle_time() {
    use tokio::io::AsyncReadExt;
    let app = TestApp::spawn_with(|s| {
        s.export_idle_secs = Some(2);
        s.request_timeout_secs = Some(120);
    })
    .await;
    // Enough rows (tens of MB) that the kernel's socket buffers cannot take them all.
    insert_many(&app, 100_000, "bulk.event").await;
    let total = ids_where(&app, "true").await.len();
    let cut = "lanyard_audit_exports_cut_total{reason=\"idle\"}";
    let mut stalled = vec![stalled_export(&app).await, stalled_export(&app).await];
    assert!(
        lanyard_tests::eventually(Duration::from_secs(10), || async {
            app.metric("lanyard_audit_exports_running").await == 2.0
        })
        .await,
        "both stalled exports started"
    );

    // A third export waits for a turn, and gets one when a stalled export is cut off.
    let third = app
        .send(
            Method::GET,
            "/v1/audit?format=ndjson",
            Some(&app.admin_token.clone()),
            None,
        )
        .await;
    assert_eq!(third.status(), 200);
    assert!(
        app.metric(cut).await >= 1.0,
        "the third export started before a stalled one was cut off"
    );
    let body = third.text().await.unwrap();
    assert_eq!(body.lines().count(), total, "the third export is complete");
    assert!(
        lanyard_tests::eventually(Duration::from_secs(10), || async {
            app.metric(cut).await == 2.0 && app.metric("lanyard_audit_exports_running").await == 0.0
        })
        .await,
        "both stalled exports were cut off and counted"
    );

    // What a stalled client reads in the end: no final chunk, so no client can take the
    // part for the whole.
    for socket in &mut stalled {
        let mut received = Vec::new();
        let _ = socket.read_to_end(&mut received).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{}",
            &text[..text.len().min(200)]
        );
        assert!(
            !text.ends_with("\r\n0\r\n\r\n"),
            "a cut-off export ended like a complete one"
        );
        assert!(
            text.matches('\n').count() < total,
            "a cut-off export held every row"
        );
    }
}

/// An export that runs past its total time is cut off even when its client keeps reading.
#[tokio::test]
async fn an_export_is_cut_off_at_its_total_time_even_while_read() {
    let app = TestApp::spawn_with(|s| {
        s.export_idle_secs = Some(1);
        s.export_max_secs = Some(1);
    })
    .await;
    insert_many(&app, 100_000, "bulk.event").await;
    let mut response = app
        .send(
            Method::GET,
            "/v1/audit?format=csv",
            Some(&app.admin_token.clone()),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    // Read steadily, a little at a time, until the transfer ends.
    let ended = loop {
        match response.chunk().await {
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(ended.is_err(), "the export ended as if complete");
    assert_eq!(
        app.metric("lanyard_audit_exports_cut_total{reason=\"deadline\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn only_admins_and_auditors_read_the_log_and_customer_limits_apply() {
    let app = TestApp::spawn().await;
    app.create_customer("acme-corp").await;
    app.create_customer("globex").await;
    insert_many(&app, 30, "bulk.event").await;
    for role in [Role::Support, Role::Service] {
        let token = app.token(role, None).await;
        for query in ["", "?format=csv", "?format=ndjson"] {
            let answer = get(&app, Some(&token), query).await;
            assert_eq!(answer.status, 403, "{role:?} {query}");
            assert_eq!(answer.content_type, "application/problem+json");
            assert!(!answer.body.contains("bulk"), "{}", answer.body);
        }
    }
    let answer = get(&app, None, "").await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.content_type, "application/problem+json");
    // Issuing a token is audited too: issue them all before counting.
    let auditor = app.token(Role::Auditor, None).await;
    let limited_auditor = app.token(Role::Auditor, Some(vec!["acme-corp"])).await;
    let limited_admin = app.token(Role::Admin, Some(vec!["acme-corp"])).await;
    let both = app
        .token(Role::Auditor, Some(vec!["acme-corp", "globex"]))
        .await;
    let everything = ids_where(&app, "true").await;
    for token in [&auditor, &app.admin_token] {
        let answer = get(&app, Some(token), "?limit=1000").await;
        assert_eq!(answer.status, 200);
        assert_eq!(ids(&answer.json()), everything);
    }

    // Limited to acme-corp: only its rows (not the ones without a customer), in every
    // format; another customer is a customer that does not exist (404).
    let acme_only = ids_where(&app, "customer_id = 'acme-corp'").await;
    for token in [&limited_auditor, &limited_admin] {
        let answer = get(&app, Some(token), "?limit=1000").await;
        assert_eq!(answer.status, 200);
        assert_eq!(ids(&answer.json()), acme_only);
        let answer = get(&app, Some(token), "?customer=acme-corp&limit=1000").await;
        assert_eq!(ids(&answer.json()), acme_only);
        let answer = get(&app, Some(token), "?customer=globex").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.json()["detail"], "customer 'globex' does not exist");
        let csv = get(&app, Some(token), "?format=csv").await;
        let customers: BTreeSet<String> = parse_csv(&csv.body)[1..]
            .iter()
            .map(|r| r[6].clone())
            .collect();
        assert_eq!(customers, BTreeSet::from(["acme-corp".to_owned()]));
        let ndjson = get(&app, Some(token), "?format=ndjson&customer=globex").await;
        assert_eq!(ndjson.status, 404);
        assert!(!ndjson.body.contains("bulk"), "{}", ndjson.body);
    }
    let answer = get(&app, Some(&both), "?limit=1000").await;
    assert_eq!(
        ids(&answer.json()),
        ids_where(&app, "customer_id IN ('acme-corp', 'globex')").await
    );
}

#[tokio::test]
async fn bad_parameters_get_a_400_problem_naming_them() {
    let app = TestApp::spawn().await;
    insert_many(&app, 3, "bulk.event").await;
    let before = app.snapshot().await;
    // (query, the parameter the problem must name)
    let cases = [
        ("?from=yesterday", "from"),
        ("?from=2026-11-25", "from"),
        ("?from=2026-11-25%2010:00:00Z", "from"),
        ("?to=2026-11-25T10:00:00", "to"),
        // An unencoded `+` arrives as a space: refused, with a hint.
        ("?from=2026-11-25T10:00:00+01:00", "from"),
        ("?from=2026-11-25T10:00:00Z&to=2026-11-25T09:00:00Z", "to"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?cursor=AAAAAAAAAAA", "cursor"),
        ("?cursor=AAAAAAAAAAAAAAAAAAAA", "cursor"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=-5", "limit"),
        ("?limit=ten", "limit"),
        ("?outcome=maybe", "outcome"),
        ("?outcome=", "outcome"),
        ("?format=xml", "format"),
        ("?session=not-a-uuid", "session"),
        ("?customer=ACME", "customer"),
        ("?case_id=%21", "case_id"),
        ("?action=Session.Open", "action"),
        ("?actor=", "actor"),
        ("?actor=a%01b", "actor"),
        ("?unknown=1", "unknown"),
        ("?limit=1&limit=2", "limit"),
    ];
    for (query, field) in cases {
        let answer = get(&app, Some(&app.admin_token), query).await;
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert_eq!(answer.content_type, "application/problem+json", "{query}");
        let problem = answer.json();
        assert_eq!(problem["status"], 400);
        let named = problem["errors"][0]["field"] == field
            || problem["detail"].as_str().unwrap().contains(field);
        assert!(named, "{query}: {problem}");
        if field == "from" && query.contains('+') {
            assert!(
                problem["detail"].as_str().unwrap().contains("%2B"),
                "{problem}"
            );
        }
    }
    assert_eq!(app.snapshot().await, before, "a bad query changed rows");
}
