//! The CLI in shell scripts, as the origin guide's recipes use it: `--quiet` lists read by
//! `for … in $(…)`, `--output json`, and `eval "$(lanyard export …)"`, each run by a real
//! `sh` with `lanyard` and the real `aws` on PATH.

use std::time::Duration;

use lanyard_server::auth::Role;
use lanyard_tests::{CliHome, Run, TestApp, binary, unique};
use serde_json::Value;

/// A `sh -c SCRIPT` in `home`, with the built `lanyard` on PATH before the rest (which holds
/// the venv's `aws`).
fn shell(home: &CliHome, script: &str) -> tokio::process::Command {
    let lanyard = binary("lanyard");
    let dir = lanyard.parent().unwrap();
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = home.command("sh");
    cmd.arg("-c").arg(script).env("PATH", path);
    cmd
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn ids(run: &Run) -> Vec<String> {
    run.ok().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_guides_batch_loop_runs_as_written_with_a_service_token() {
    let app = TestApp::spawn().await;
    let customers = sorted(vec![unique("acme"), unique("globex")]);
    for customer in &customers {
        app.create_customer(customer).await;
        app.register_role(customer, "readonly").await;
    }
    let token = app
        .token_for("batch-job", Role::Service, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    for customer in &customers {
        home.lanyard(&["setup-customer", "--customer", customer])
            .await
            .ok();
    }

    // Ids, one a line, nothing else: no header for the loop to read as a customer.
    let quiet = home.lanyard(&["customers", "list", "--quiet"]).await;
    assert_eq!(sorted(ids(&quiet)), customers, "{quiet:?}");
    assert!(quiet.stderr.is_empty(), "{quiet:?}");
    assert_eq!(
        sorted(ids(&home.lanyard(&["customers", "list", "-q"]).await)),
        customers
    );

    // The guide's loop, with `--quiet`, run by sh as written.
    let run = CliHome::run(
        shell(
            &home,
            r#"for c in $(lanyard customers list --quiet); do
                 echo "Processing $c..."
                 aws sts get-caller-identity --profile customer-$c --query Arn --output text
               done"#,
        ),
        None,
    )
    .await;
    let lines: Vec<&str> = run.ok().lines().collect();
    assert_eq!(lines.len(), 2 * customers.len(), "{run:?}");
    let mut processed = Vec::new();
    for pair in lines.chunks(2) {
        let customer = pair[0]
            .strip_prefix("Processing ")
            .and_then(|l| l.strip_suffix("..."))
            .unwrap_or_else(|| panic!("{run:?}"));
        assert!(
            pair[1].contains("assumed-role/LanyardAccess/")
                && pair[1].contains(&format!("customer.{customer}.")),
            "{run:?}"
        );
        processed.push(customer.to_owned());
    }
    assert_eq!(sorted(processed), customers);

    // Sessions the same way: the ids the JSON lists, alone.
    let quiet = home.lanyard(&["sessions", "list", "--quiet"]).await;
    let json: Value = serde_json::from_str(
        home.lanyard(&["--output", "json", "sessions", "list"])
            .await
            .ok(),
    )
    .unwrap();
    let listed: Vec<String> = json["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids(&quiet), listed, "{quiet:?}");
    assert_eq!(listed.len(), customers.len(), "one customer session each");
    let json: Value = serde_json::from_str(
        home.lanyard(&["--output", "json", "customers", "list"])
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(json["customers"].as_array().unwrap().len(), customers.len());

    // One answer at a time.
    let both = home
        .lanyard(&["--output", "json", "customers", "list", "--quiet"])
        .await;
    assert_ne!(both.code, 0, "{both:?}");
    assert!(both.stdout.is_empty(), "{both:?}");
    assert!(both.stderr.starts_with("lanyard: --quiet "), "{both:?}");

    // A service token limited to one customer lists that one only.
    let limited = app
        .token_for(
            "batch-acme",
            Role::Service,
            Some(vec![customers[0].as_str()]),
            Duration::from_secs(3600),
        )
        .await;
    let run = home
        .lanyard_env(
            &["customers", "list", "--quiet"],
            &[("LANYARD_TOKEN", &limited)],
            None,
        )
        .await;
    assert_eq!(ids(&run), [customers[0].clone()], "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_recipe_evals_export_on_a_runner_holding_a_service_token() {
    let app = TestApp::spawn().await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let token = app
        .token_for("ci-deploy", Role::Service, None, Duration::from_secs(3600))
        .await;
    // A fresh runner: no login, nothing stored; the token in the runner's secrets.
    let home = CliHome::new();
    let mut cmd = shell(
        &home,
        &format!(
            r#"export LANYARD_SERVER={}
               export AWS_REGION=eu-west-1
               eval "$(lanyard export --customer {customer})"
               aws sts get-caller-identity --query Arn --output text"#,
            app.base
        ),
    );
    cmd.env("LANYARD_TOKEN", &token);
    let run = CliHome::run(cmd, None).await;
    let arn = run.ok().trim();
    assert!(
        arn.contains("assumed-role/LanyardAccess/")
            && arn.contains(&format!("customer.{customer}.")),
        "{run:?}"
    );
    assert!(!run.stderr.contains(&token), "{run:?}");
    assert!(!home.config_dir().join("token").exists(), "no login stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_flags_have_help() {
    let home = CliHome::new();
    for args in [
        ["customers", "list", "--help"],
        ["sessions", "list", "--help"],
    ] {
        let help = home.lanyard(&args).await;
        let text = help.ok().split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains("-q, --quiet"), "{help:?}");
        assert!(
            text.contains("one a line, nothing else on stdout"),
            "{help:?}"
        );
    }
    let help = home.lanyard(&["--help"]).await;
    assert!(help.ok().contains("--revocation-check-secs"), "{help:?}");
    assert!(
        help.stdout.contains("LANYARD_REVOCATION_CHECK_SECS"),
        "{help:?}"
    );
}
