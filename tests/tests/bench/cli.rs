//! Warm-cache `lanyard credential-process` wall time beside `cat` of the same JSON, in the
//! same run, interleaved so that both see the same machine load. Not part of the normal
//! suite; run it with
//!
//! ```text
//! tests/bench P4
//! ```
//!
//! The goal: the median warm `credential-process` takes at most 3 times the median `cat`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lanyard_tests::{CliHome, credential_requests, logged_in_support};

use crate::table::{self, Row};

const RUNS: usize = 300;

fn time_once(cmd: &mut Command) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (elapsed, out.stdout)
}

fn summary(name: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{name:<34} n={}  mean {:>7.3} ms  median {:>7.3} ms  p95 {:>7.3} ms  min {:>7.3} ms",
        times.len(),
        mean.as_secs_f64() * 1e3,
        at(0.5).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
    );
    at(0.5)
}

fn std_command(home: &CliHome, program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.home())
        .env("LANYARD_CONFIG_DIR", home.config_dir())
        .env("LANYARD_CACHE_DIR", home.cache_dir())
        .env("LANYARD_CACHE_KEYRING", "off")
        .stdin(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with tests/bench P4"]
async fn p4_warm_credential_process_beside_cat() {
    let (app, home, customer, _) = logged_in_support().await;
    home.lanyard(&[
        "support-access",
        "--customer",
        &customer,
        "--case",
        "CS-BENCH",
    ])
    .await
    .ok();
    let profile = &format!("support-{customer}-CS-BENCH");
    let warm = home
        .lanyard(&["credential-process", "--profile", profile])
        .await;
    let json = home.dir.path().join("credentials.json");
    std::fs::write(&json, warm.ok()).unwrap();

    let lanyard = lanyard_tests::binary("lanyard");
    let cat = which("cat");
    let (mut ours, mut theirs) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    tokio::task::block_in_place(|| {
        for _ in 0..RUNS {
            let mut cmd = std_command(&home, &lanyard);
            cmd.args(["credential-process", "--profile", profile]);
            let (t, out) = time_once(&mut cmd);
            assert_eq!(out, std::fs::read(&json).unwrap());
            ours.push(t);
            let mut cmd = std_command(&home, &cat);
            cmd.arg(&json);
            theirs.push(time_once(&mut cmd).0);
        }
    });
    println!();
    let ours = summary("lanyard credential-process (warm)", ours);
    let theirs = summary("cat (same JSON)", theirs);
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    table::report(Row {
        id: "P4",
        what: "warm credential-process vs cat of the same JSON (median)",
        figure: table::ms(ours.as_secs_f64()),
        baseline: format!("cat {}", table::ms(theirs.as_secs_f64())),
        ratio: Some(ratio),
        goal: "≤ 3.00",
        met: Some(ratio <= 3.0),
    });
    println!(
        "median ratio: {ratio:.2}x cat (goal: at most 3x) -> {}",
        if ratio <= 3.0 { "met" } else { "NOT met" }
    );
    // Warm means warm: the broker saw only the one request that filled the cache.
    assert_eq!(credential_requests(&app.db, "CS-BENCH").await, 1);
    assert!(
        ratio <= 3.0,
        "warm credential-process median is {ratio:.2}x cat's; the goal is at most 3x"
    );
}

fn which(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}
