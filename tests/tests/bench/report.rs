//! Benchmark: the 30-day usage report over 10 million audit rows, beside the raw GROUP BY
//! over the same rows, in the same run.
//!
//! Run it with `tests/bench P6`
//! (`REPORT_BENCH_ROWS` changes the row count, default 10,000,000; generating them takes a
//! few minutes). Goal (issue "Audit queries, usage reports..."): the report answers in 50 ms
//! or less.
//!
//! The rows are generated in SQL: 200 customers, each with a customer profile used by two
//! services; 40 support cases a day spread over 40 engineers; 2 % denied, 90 % of the
//! successes from the cache. Each chunk of rows is folded into the rollups by the audit
//! writer's own statement parts, and the report's figures are checked against the raw
//! aggregate before timing.

use std::time::{Duration, Instant};

use lanyard_server::auth::Role;
use lanyard_server::db::usage::upsert_ctes;
use lanyard_tests::TestApp;
use reqwest::Method;
use serde_json::Value;

use crate::table::{self, Row};

fn rows() -> i64 {
    crate::table::env_or("REPORT_BENCH_ROWS", 10_000_000)
}

async fn generate(app: &TestApp, n: i64) {
    let mut conn = app.db.acquire().await.unwrap();
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    // Reproducible data: random() follows the seed in this session.
    sqlx::query("SELECT setseed(0.42)")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The rows in chunks; each chunk's statement folds the rows it inserted into the
    // rollups with the audit writer's own expressions (`usage::upsert_ctes`), so the report
    // below reads rollups as the server keeps them, not as this benchmark would.
    const CHUNK: i64 = 1_000_000;
    let mut first = 1;
    while first <= n {
        let last = (first + CHUNK - 1).min(n);
        let sql = format!(
            "WITH ev AS (
                 INSERT INTO audit_event (occurred_at, request_id, actor, actor_role, action,
                                          customer_id, role_name, session_id, case_id, profile,
                                          source_ip, user_agent, outcome, error_code,
                                          duration_ms, cache_hit)
                 SELECT date_trunc('day', now()) - make_interval(days => day)
                    + make_interval(secs => (g * 7) % 86400),
                'req-' || g, actor, 'support', 'credentials.issue', customer, 'readonly',
                NULL, case_id, profile, '10.0.0.1', 'aws-cli/2', outcome,
                CASE WHEN outcome = 'denied' THEN 'Forbidden' END,
                CASE WHEN outcome = 'denied' THEN 1
                     WHEN hit THEN (g % 6)::int
                     ELSE 100 + ((g * 13) % 1400)::int END,
                CASE WHEN outcome = 'success' THEN hit END
         FROM (SELECT g, day, support,
                      'cust-' || CASE WHEN support THEN (day * 40 + task) % 200 ELSE cust END AS customer,
                      CASE WHEN support THEN 'CS-' || (day * 40 + task) END AS case_id,
                      CASE WHEN support
                           THEN 'support-cust-' || ((day * 40 + task) % 200) || '-CS-' || (day * 40 + task)
                           ELSE 'customer-cust-' || cust END AS profile,
                      CASE WHEN support THEN 'eng-' || ((day * 40 + task + who) % 40)
                           ELSE 'svc-' || cust || '-' || (who % 2) END AS actor,
                      CASE WHEN r < 0.02 THEN 'denied' ELSE 'success' END AS outcome,
                      r >= 0.02 + 0.098 AS hit
               FROM (SELECT g, floor(random() * 30)::int AS day, random() < 0.4 AS support,
                            floor(random() * 40)::int AS task, floor(random() * 200)::int AS cust,
                            floor(random() * 3)::int AS who, random() AS r
                     FROM generate_series($1::int8, $2::int8) AS g) s) t
                 RETURNING occurred_at, customer_id, profile, case_id, actor, action, outcome,
                           cache_hit, duration_ms
             ), {}
             SELECT count(*) FROM ev",
            upsert_ctes()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(first)
            .bind(last)
            .execute(&mut *conn)
            .await
            .unwrap();
        first = last + 1;
    }
    for table in [
        "audit_event",
        "usage_rollup",
        "usage_profile_duration",
        "usage_actor_duration",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}
fn median(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    (ms(&samples[samples.len() / 2]), ms(samples.last().unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with tests/bench P6"]
async fn p6_thirty_day_usage_report_over_ten_million_rows() {
    let app = TestApp::spawn().await;
    let n = rows();
    let started = Instant::now();
    generate(&app, n).await;
    let generated = started.elapsed();
    let rollup_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_rollup")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let auditor = app
        .token_for("bench", Role::Auditor, None, Duration::from_secs(3600))
        .await;

    // The figures first: the report must equal the raw aggregate.
    let (status, report) = app
        .call(
            Method::GET,
            "/v1/reports/usage?days=30",
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let since = report["since"].as_str().unwrap().to_owned();
    let raw_sql = "SELECT profile, count(*), count(*) FILTER (WHERE outcome = 'success'),
                          sum(duration_ms)::float8 / nullif(count(duration_ms), 0),
                          percentile_disc(0.95) WITHIN GROUP (ORDER BY lanyard_duration_bucket(duration_ms)),
                          count(*) FILTER (WHERE cache_hit)::float8 / nullif(count(cache_hit), 0),
                          count(DISTINCT actor)
                   FROM audit_event
                   WHERE action = 'credentials.issue' AND profile IS NOT NULL
                     AND occurred_at >= $1::date
                   GROUP BY profile ORDER BY profile COLLATE \"C\"";
    let raw_started = Instant::now();
    #[allow(clippy::type_complexity)]
    let raw: Vec<(String, i64, i64, Option<f64>, Option<i32>, Option<f64>, i64)> =
        sqlx::query_as(raw_sql)
            .bind(&since)
            .fetch_all(&app.db)
            .await
            .unwrap();
    let raw_time = raw_started.elapsed();
    let got: Vec<&Value> = report["rows"].as_array().unwrap().iter().collect();
    assert_eq!(got.len(), raw.len());
    for (row, (profile, total, ok, avg, p95, hit_rate, users)) in got.iter().zip(&raw) {
        assert_eq!(row["profile"].as_str().unwrap(), profile);
        assert_eq!(row["total_requests"].as_i64().unwrap(), *total);
        assert_eq!(row["successful_requests"].as_i64().unwrap(), *ok);
        assert_eq!(row["p95_duration_ms"].as_i64(), p95.map(i64::from));
        assert_eq!(row["user_count"].as_i64().unwrap(), *users);
        assert_eq!(row["avg_duration_ms"].as_f64(), *avg, "{row}");
        assert_eq!(row["cache_hit_rate"].as_f64(), *hit_rate, "{row}");
    }

    // Timings: the report through the real HTTP API (JSON), and its SQL alone.
    let mut http = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let response = app
            .send(
                Method::GET,
                "/v1/reports/usage?days=30",
                Some(&auditor),
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        http.push(t.elapsed());
    }
    let mut sql = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        lanyard_server::db::usage::report(
            &app.db,
            since.parse().unwrap(),
            lanyard_server::db::usage::GroupBy::Profile,
            None,
            None,
        )
        .await
        .unwrap();
        sql.push(t.elapsed());
    }
    let raw_again = {
        let t = Instant::now();
        sqlx::query(raw_sql)
            .bind(&since)
            .fetch_all(&app.db)
            .await
            .unwrap();
        t.elapsed()
    };
    let (http_median, http_max) = median(http);
    let (sql_median, sql_max) = median(sql);
    println!();
    println!(
        "{n} audit rows ({} report groups, {rollup_rows} rollup rows of counts), generated in {:.0} s",
        raw.len(),
        generated.as_secs_f64()
    );
    println!(
        "{:<44} {:>10} {:>10}",
        "30-day usage report", "median ms", "max ms"
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "GET /v1/reports/usage (rollups, over HTTP)", http_median, http_max
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "report query alone (rollups)", sql_median, sql_max
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "raw GROUP BY over audit_event (2 runs)",
        raw_time.as_secs_f64() * 1000.0,
        raw_again.as_secs_f64() * 1000.0
    );
    println!("goal: report ≤ 50 ms");
    let raw_best = raw_time.min(raw_again).as_secs_f64() * 1000.0;
    table::report(Row {
        id: "P6",
        what: "30-day usage report over HTTP (median of 30)",
        figure: format!("{http_median:.1} ms (max {http_max:.1}), {n} rows"),
        baseline: format!("raw GROUP BY {raw_best:.0} ms"),
        ratio: Some(http_median / raw_best),
        goal: "≤ 50 ms",
        met: Some(http_median <= 50.0),
    });
}
