//! I: two `lanyard-server` instances on one Postgres, behind one load generator.
//!
//! Both release servers run on the same database and data directory (the same signing key,
//! as two replicas behind a load balancer would), on the same two CPUs as the load generator
//! and Postgres. Figures, each beside its baseline from the same run:
//!
//! - `I1` total cached-credential throughput with the connections spread over both
//!   instances, vs the same connections on one instance (rounds alternate); goal ≥ 0.9: no
//!   coordination tax (each instance has its own audit writer and chain; they share no lock
//!   on the credential path);
//! - `I2` revocation seen by the other instance: a session revoked on one instance, how long
//!   until the other refuses its credentials (`REVOKE_SAMPLES` sessions, default 40), p99 and
//!   max; goal p99 < 1 s;
//! - `I3` `lanyard-server audit verify` over everything both wrote: every chain intact, each
//!   instance's rows on its own chains, one row per credential answered.
//!
//! Run with `tests/bench I` (`BENCH_SECS`, `BENCH_ROUNDS` as for P1).

use std::time::{Duration, Instant};

use lanyard_tests::ServerProcess;
use reqwest::Method;
use serde_json::{Value, json};

use crate::credentials::{audit_batches, load, median, rounds_wanted};
use crate::table::{self, Row};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with tests/bench I"]
async fn two_instances_on_one_postgres() {
    let secs: u64 = table::env_or("BENCH_SECS", 5);
    let samples: usize = table::env_or("REVOKE_SAMPLES", 40);
    let data_dir = tempfile::tempdir().unwrap();
    let db_url = lanyard_tests::fresh_database_url();
    // The first migrates the database; the second finds it migrated.
    let metrics = [crate::fixture::free_addr(), crate::fixture::free_addr()];
    let a = crate::fixture::start_server(
        &db_url,
        data_dir.path(),
        &[("LANYARD_METRICS_ADDR", &metrics[0])],
    );
    let b = crate::fixture::start_server(
        &db_url,
        data_dir.path(),
        &[("LANYARD_METRICS_ADDR", &metrics[1])],
    );
    // The audit batches of both instances so far.
    let batches = || async {
        let (a, b) = (
            audit_batches(&metrics[0]).await,
            audit_batches(&metrics[1]).await,
        );
        (a.batches + b.batches, a.events + b.events)
    };
    let admin = a.issue_token("ops", "admin");
    let alice = a.issue_token("alice", "support");
    let http = reqwest::Client::new();
    let customer = crate::fixture::customer_with_role(&a, &admin).await;
    let open = |case: String| {
        let (http, url, alice, customer) = (
            http.clone(),
            a.url("/v1/sessions"),
            alice.clone(),
            customer.clone(),
        );
        async move {
            let session: Value = http
                .post(url)
                .bearer_auth(&alice)
                .json(
                    &json!({ "kind": "support", "customer": customer, "role": "readonly",
                               "case_id": case, "reason": "benchmark",
                               "duration_seconds": 3600 }),
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            session["id"].as_str().unwrap().to_owned()
        }
    };
    let credentials = |server: &ServerProcess, session: &str| {
        http.post(server.url(&format!("/v1/sessions/{session}/credentials")))
            .bearer_auth(&alice)
            .send()
    };
    let session = open("BENCH-I1".into()).await;
    // The first request (on either) assumes the role; each instance then serves from its
    // own cache.
    let mut answered = 0;
    for server in [&a, &b] {
        let first = credentials(server, &session).await.unwrap();
        assert_eq!(first.status(), 200);
        answered += 1;
    }

    // I1: alternating rounds, one instance then both.
    let path = format!("/v1/sessions/{session}/credentials");
    let mut ratios = Vec::new();
    let (mut one_rps, mut two_rps, mut two_p99) = (Vec::new(), Vec::new(), Vec::new());
    // (batches, events) written while one instance, then two, served.
    let (mut one_batches, mut two_batches) = ((0.0, 0.0), (0.0, 0.0));
    for _ in 0..rounds_wanted() {
        let before = batches().await;
        let one = load(
            Method::POST,
            vec![a.url(&path)],
            Some(alice.clone()),
            secs,
            &[],
        )
        .await;
        let between = batches().await;
        let two = load(
            Method::POST,
            vec![a.url(&path), b.url(&path)],
            Some(alice.clone()),
            secs,
            &[],
        )
        .await;
        let after = batches().await;
        one_batches.0 += between.0 - before.0;
        one_batches.1 += between.1 - before.1;
        two_batches.0 += after.0 - between.0;
        two_batches.1 += after.1 - between.1;
        assert_eq!(one.errors + two.errors, 0);
        answered += one.answered + two.answered;
        ratios.push(two.rps / one.rps);
        one_rps.push(one.rps);
        two_rps.push(two.rps);
        two_p99.push(two.p99_ms);
    }
    let ratio = median(ratios);
    table::report(Row {
        id: "I1",
        what: "two instances on one Postgres: total throughput",
        figure: format!(
            "two {:.0} req/s (p99 {:.2} ms), audit batches of {:.1}",
            median(two_rps),
            median(two_p99),
            two_batches.1 / two_batches.0.max(1.0)
        ),
        baseline: format!(
            "one {:.0} req/s, audit batches of {:.1}",
            median(one_rps),
            one_batches.1 / one_batches.0.max(1.0)
        ),
        ratio: Some(ratio),
        goal: "≥ 0.90",
        met: Some(ratio >= 0.9),
    });

    // I2: revoke on one instance, ask the other until it refuses.
    let mut seen = Vec::new();
    for n in 0..samples {
        let (revoke_on, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let session = open(format!("BENCH-I2-{n}")).await;
        let warm = credentials(other, &session).await.unwrap();
        assert_eq!(warm.status(), 200);
        answered += 1;
        let revoked = http
            .delete(revoke_on.url(&format!("/v1/sessions/{session}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
        let started = Instant::now();
        loop {
            let status = credentials(other, &session).await.unwrap().status();
            if status != 200 {
                break;
            }
            answered += 1;
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the other instance still hands out credentials of a session revoked 10 s ago"
            );
        }
        seen.push(started.elapsed().as_secs_f64());
    }
    seen.sort_by(f64::total_cmp);
    let p99 = seen[((seen.len() as f64 * 0.99) as usize).min(seen.len() - 1)];
    let max = seen[seen.len() - 1];
    table::report(Row {
        id: "I2",
        what: "revocation seen by the other instance",
        figure: format!(
            "p50 {}, p99 {}, max {} ({samples} sessions)",
            table::ms(seen[seen.len() / 2]),
            table::ms(p99),
            table::ms(max)
        ),
        baseline: "the revoking instance: at once".into(),
        ratio: None,
        goal: "p99 < 1 s",
        met: Some(p99 < 1.0),
    });

    // I3: every chain verifies, each instance wrote its own, nothing is missing.
    let (code, out, err) = a.command(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain intact"), "{out}");
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let per_instance: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.writer, count(e.id) FROM audit_chain c
         JOIN audit_event e ON e.chain_id = c.id AND e.action = 'credentials.issue'
         GROUP BY c.writer ORDER BY c.writer",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let pids = [a.child.id(), b.child.id()];
    let rows_of = |pid: u32| -> i64 {
        per_instance
            .iter()
            .filter(|(writer, _)| writer.split('/').nth(1) == Some(&pid.to_string()))
            .map(|(_, n)| n)
            .sum()
    };
    let (rows_a, rows_b) = (rows_of(pids[0]), rows_of(pids[1]));
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_event
         WHERE action = 'credentials.issue' AND outcome = 'success'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    table::report(Row {
        id: "I3",
        what: "audit verify after both instances wrote",
        figure: format!("intact; {rows_a} + {rows_b} credential rows on the two instances' chains",),
        baseline: format!("{answered} credentials answered"),
        ratio: None,
        goal: "intact, one row per answer",
        met: Some(audited as usize == answered && rows_a > 0 && rows_b > 0),
    });
    assert!(rows_a > 0 && rows_b > 0, "{per_instance:?}");
    assert_eq!(audited as usize, answered);
    assert!(!a.log().contains("\"level\":\"ERROR\""), "{}", a.log());
    assert!(!b.log().contains("\"level\":\"ERROR\""), "{}", b.log());
}
