//! Benchmark P8: start-to-ready time of the real `lanyard-server serve` on a database whose
//! migrations are already applied, beside the time of `psql -c 'select 1'` against the same
//! Postgres, in the same run.
//!
//! The server is started once on a fresh database (it creates and migrates it, and writes
//! its signing key), stopped, then started 10 more times on that database and data
//! directory: each start is timed from spawning the process until `GET /readyz` (database
//! answers, every migration applied) answers 200, then the server is stopped with SIGTERM.
//! After each start `psql <test server URL> -c 'select 1'` (the `postgres` user on
//! 127.0.0.1) is timed from spawn to exit, so both see the same machine load. Figures:
//! median and max of each, and their ratios.
//!
//! Run it with `tests/bench P8`. No goal.

use std::time::{Duration, Instant};

use lanyard_tests::ServerProcess;

use crate::table::{Row, ms, report};

const STARTS: usize = 10;

/// Polls `GET /readyz` until it answers 200; whether it did within `deadline`. Every
/// millisecond: `lanyard_tests::eventually` polls every 10 ms, coarse beside the figure.
async fn ready(http: &reqwest::Client, server: &ServerProcess, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    let url = server.url("/readyz");
    loop {
        let answer = http.get(&url).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts the server (spawn, then the "listening" line of its log) and waits until it is
/// ready; returns it and the time from spawn to ready.
async fn start_until_ready(
    http: &reqwest::Client,
    env: &[(&str, &str)],
) -> (ServerProcess, Duration) {
    let started = Instant::now();
    let server = tokio::task::block_in_place(|| ServerProcess::start(env));
    let is_ready = ready(http, &server, Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert!(is_ready, "/readyz never answered 200:\n{}", server.log());
    (server, took)
}

fn stop(server: &mut ServerProcess) {
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "{status:?}\n{}", server.log());
}

/// Median (the upper one of an even count) and max.
fn median_max(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    (
        samples[samples.len() / 2].as_secs_f64(),
        samples[samples.len() - 1].as_secs_f64(),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: tests/bench P8"]
async fn p8_start_to_ready_with_migrations_applied_beside_psql() {
    let data_dir = tempfile::tempdir().unwrap();
    let db_url = lanyard_tests::fresh_database_url();
    let env = crate::fixture::server_env(&db_url, data_dir.path(), &[]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let psql_url = lanyard_tests::database_server_url();
    let psql = || {
        let started = Instant::now();
        let out = std::process::Command::new("psql")
            .args([psql_url.as_str(), "-c", "select 1"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("psql on PATH");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    };

    // Every server started here runs on the same test database, which each one drops when
    // it goes: all are kept until the end.
    let mut servers = Vec::with_capacity(STARTS + 1);
    let (mut first, migrating) = start_until_ready(&http, &env).await;
    stop(&mut first);
    servers.push(first);
    let (mut starts, mut selects) = (Vec::new(), Vec::new());
    for _ in 0..STARTS {
        let (mut server, took) = start_until_ready(&http, &env).await;
        stop(&mut server);
        servers.push(server);
        starts.push(took);
        selects.push(tokio::task::block_in_place(psql));
    }

    println!();
    println!(
        "first start (creating and migrating the database): {}",
        ms(migrating.as_secs_f64())
    );
    println!("starts to ready: {starts:?}");
    println!("psql -c 'select 1': {selects:?}");
    let (start_median, start_max) = median_max(starts);
    let (psql_median, psql_max) = median_max(selects);
    report(Row {
        id: "P8",
        what: "start to ready, migrations applied (median of 10)",
        figure: ms(start_median),
        baseline: format!("{}: psql -c 'select 1', median", ms(psql_median)),
        ratio: Some(start_median / psql_median),
        goal: "",
        met: None,
    });
    report(Row {
        id: "P8",
        what: "start to ready, migrations applied (max of 10)",
        figure: ms(start_max),
        baseline: format!("{}: psql -c 'select 1', max", ms(psql_max)),
        ratio: Some(start_max / psql_max),
        goal: "",
        met: None,
    });
}
