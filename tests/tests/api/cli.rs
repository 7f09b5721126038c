//! The `lanyard` CLI as a new user meets it: the real binary, a real broker on Postgres and
//! moto, and the real AWS CLI (awscli v1 from PyPI) reading the profiles it writes. Each test
//! has its own HOME, config and cache directories and AWS config file.

use std::time::Duration;

use lanyard_server::auth::Role;
use lanyard_tests::{
    CliHome, FakeBroker, FakeReply, Keyring, Run, TestApp, credential_requests, logged_in_support,
    unique,
};
use reqwest::Method;
use serde_json::Value;

/// A broker with a customer whose roles `roles` are verified, and a home logged in with a
/// service token (subject `batch-job`). Returns (app, home, customer).
async fn logged_in_service(roles: &[&str]) -> (TestApp, CliHome, String) {
    let app = TestApp::spawn().await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    for role in roles {
        app.register_role(&customer, role).await;
    }
    let token = app
        .token_for("batch-job", Role::Service, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    (app, home, customer)
}

async fn support_access(home: &CliHome, customer: &str, case: &str) -> String {
    let run = home
        .lanyard(&["support-access", "--customer", customer, "--case", case])
        .await;
    run.ok();
    format!("support-{customer}-{case}")
}

fn assert_one_clear_line(run: &Run) {
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stdout.is_empty(), "stdout must stay empty: {run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {run:?}");
    assert!(lines[0].starts_with("lanyard: "), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

fn caller_arn(run: &Run) -> String {
    let v: Value = serde_json::from_str(run.ok()).unwrap();
    v["Arn"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_access_wires_a_profile_the_aws_cli_uses_for_the_assumed_role() {
    let (app, home, customer, token) = logged_in_support().await;
    // The login is stored readable by the owner only, and the token never printed.
    let token_file = home.config_dir().join("token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);

    let case = unique("CS");
    let run = home
        .lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await;
    let profile = format!("support-{customer}-{case}");
    assert!(
        run.ok()
            .contains(&format!("aws sts get-caller-identity --profile {profile}")),
        "{run:?}"
    );
    let aws_config = std::fs::read_to_string(home.aws_config()).unwrap();
    let exe = lanyard_tests::binary("lanyard").canonicalize().unwrap();
    assert_eq!(
        aws_config,
        format!(
            "[profile {profile}]\ncredential_process = {} credential-process --profile {profile}\nregion = us-east-1\n",
            exe.display()
        )
    );

    let arn = caller_arn(
        &home
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    assert!(
        arn.ends_with(&format!("assumed-role/LanyardAccess/support.{case}.alice")),
        "{arn}"
    );
    // Later calls are served by the CLI cache: still one credential request at the broker.
    for _ in 0..3 {
        home.aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await
            .ok();
    }
    assert_eq!(credential_requests(&app.db, &case).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_aws_calls_on_a_cold_cache_make_one_credential_request() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    let args = ["sts", "get-caller-identity", "--profile", profile.as_str()];
    let calls = (0..50).map(|_| home.aws(&args));
    let runs = futures::future::join_all(calls).await;
    for run in &runs {
        assert!(caller_arn(run).contains(&format!("support.{case}.alice")));
    }
    assert_eq!(credential_requests(&app.db, &case).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_check_window_cached_credentials_still_work_after_revocation_then_aws_fails_clearly()
 {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    home.aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await
        .ok();
    let (_, sessions) = app
        .admin(Method::GET, &format!("/v1/sessions?case_id={case}"), None)
        .await;
    let id = sessions["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, 200);

    // Within the revocation check window (60 s by default; cli_revocation.rs shows what
    // happens past it) the cached credentials are still served: STS cannot recall them.
    home.aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await
        .ok();
    // Asking the broker shows the revocation as one clear line...
    let no_cache = home
        .lanyard(&["credential-process", "--profile", &profile, "--no-cache"])
        .await;
    assert_one_clear_line(&no_cache);
    assert!(no_cache.stderr.contains("was revoked"), "{no_cache:?}");
    let refresh = home.lanyard(&["refresh", "--profile", &profile]).await;
    assert_one_clear_line(&refresh);
    assert!(refresh.stderr.contains("HTTP 410"), "{refresh:?}");
    // ...and the cache no longer holds the ended session's credentials: aws fails, showing
    // the CLI's message.
    let aws = home
        .aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await;
    assert_ne!(aws.code, 0, "{aws:?}");
    assert!(
        aws.stderr.contains(&format!(
            "lanyard: profile {profile}: session {id} was revoked"
        )),
        "{aws:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_through_the_cli_drops_the_cached_credentials_at_once() {
    let (_app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    home.aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await
        .ok();
    let revoked = home
        .lanyard(&["sessions", "revoke", "--profile", &profile])
        .await;
    assert!(revoked.ok().contains("keep working until"), "{revoked:?}");
    let aws = home
        .aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await;
    assert_ne!(aws.code, 0);
    assert!(aws.stderr.contains("was revoked"), "{aws:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_config_with_comments_and_other_profiles_is_unchanged_outside_the_written_profile() {
    let (_app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = format!("support-{customer}-{case}");
    let before = "# my AWS config\n[default]\nregion = eu-west-1\noutput = json\n\n\
                  ; another comment style\n[profile work]\nrole_arn = arn:aws:iam::123456789012:role/Dev\n\
                  source_profile = default   # trailing comment\n\n[sso-session corp]\nsso_region = us-east-1";
    std::fs::create_dir_all(home.aws_config().parent().unwrap()).unwrap();
    std::fs::write(home.aws_config(), before).unwrap();

    support_access(&home, &customer, &case).await;
    let after = std::fs::read_to_string(home.aws_config()).unwrap();
    assert!(after.starts_with(before), "{after}");
    let added = &after[before.len()..];
    let exe = lanyard_tests::binary("lanyard").canonicalize().unwrap();
    assert_eq!(
        added,
        format!(
            "\n\n[profile {profile}]\ncredential_process = {} credential-process --profile {profile}\nregion = us-east-1\n",
            exe.display()
        )
    );

    // A profile in the middle of the file, with a comment and a setting of its own: only
    // the two lines lanyard owns change.
    let middle = format!(
        "# top\n[profile {profile}]\n# keep me\ncredential_process = /old/lanyard credential-process --profile {profile}\n\
         cli_pager =\nregion = eu-central-1\n\n[profile after]\nregion = ap-south-1\n"
    );
    std::fs::write(home.aws_config(), &middle).unwrap();
    home.lanyard(&[
        "support-access",
        "--customer",
        &customer,
        "--case",
        &case,
        "--region",
        "us-west-2",
    ])
    .await
    .ok();
    let rewritten = std::fs::read_to_string(home.aws_config()).unwrap();
    assert_eq!(
        rewritten,
        middle
            .replace("/old/lanyard", &exe.display().to_string())
            .replace("eu-central-1", "us-west-2")
    );
    home.aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_give_one_clear_line_and_change_nothing() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let files = home.files();
    let sessions = app.count("session").await;

    let unknown = home
        .lanyard(&["credential-process", "--profile", "support-nobody-CS-1"])
        .await;
    assert_one_clear_line(&unknown);
    assert!(
        unknown
            .stderr
            .contains("unknown profile 'support-nobody-CS-1'")
    );

    let duration = home
        .lanyard(&[
            "support-access",
            "--customer",
            &customer,
            "--case",
            &case,
            "--duration",
            "30x",
        ])
        .await;
    assert_one_clear_line(&duration);
    assert!(
        duration.stderr.contains("bad duration '30x'"),
        "{duration:?}"
    );

    let no_customer = home
        .lanyard(&[
            "support-access",
            "--customer",
            "no-such-customer",
            "--case",
            &case,
            "--role",
            "readonly",
        ])
        .await;
    assert_one_clear_line(&no_customer);
    assert!(no_customer.stderr.contains("HTTP 404"), "{no_customer:?}");

    let bad_case = home
        .lanyard(&[
            "support-access",
            "--customer",
            &customer,
            "--case",
            "no spaces!",
            "--role",
            "readonly",
        ])
        .await;
    assert_one_clear_line(&bad_case);
    assert!(bad_case.stderr.contains("case_id"), "{bad_case:?}");

    // Command lines clap rejects: one line too (exit 2).
    for args in [
        vec!["credential-process"],
        vec!["export", "--profile", "p", "--format", "yaml"],
        vec!["no-such-command"],
    ] {
        let run = home.lanyard(&args).await;
        assert_one_clear_line(&run);
        assert_eq!(run.code, 2, "{run:?}");
    }

    // Nobody logged in on this machine.
    let fresh = CliHome::new();
    let missing = fresh
        .lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await;
    assert_one_clear_line(&missing);
    assert!(missing.stderr.contains("lanyard login"), "{missing:?}");
    let unreachable = fresh
        .lanyard_env(
            &["customers", "list"],
            &[
                ("LANYARD_SERVER", "http://127.0.0.1:9"),
                ("LANYARD_TOKEN", "x"),
            ],
            None,
        )
        .await;
    assert_one_clear_line(&unreachable);
    assert!(
        unreachable.stderr.contains("cannot reach the broker"),
        "{unreachable:?}"
    );

    assert_eq!(home.files(), files);
    assert!(fresh.files().is_empty(), "{:?}", fresh.files().keys());
    assert_eq!(app.count("session").await, sessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_prints_the_shapes_of_aws_configure_export_credentials_quoted() {
    let (_app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    let process = home
        .lanyard(&["credential-process", "--profile", &profile])
        .await;
    let doc: Value = serde_json::from_str(process.ok()).unwrap();
    assert_eq!(process.stdout.lines().count(), 1);
    assert_eq!(
        doc.as_object().unwrap().keys().collect::<Vec<_>>().len(),
        5,
        "{doc}"
    );
    let (key, secret, token, exp) = (
        doc["AccessKeyId"].as_str().unwrap(),
        doc["SecretAccessKey"].as_str().unwrap(),
        doc["SessionToken"].as_str().unwrap(),
        doc["Expiration"].as_str().unwrap(),
    );
    let vars = [
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", token),
        ("AWS_CREDENTIAL_EXPIRATION", exp),
    ];
    let shape = |line: fn(&str, &str) -> String| -> String {
        vars.iter().map(|(k, v)| line(k, v)).collect()
    };
    for (format, expected) in [
        // Every value quoted for its shell, so that nothing in it is ever run or expanded.
        ("env", shape(|k, v| format!("export {k}='{v}'\n"))),
        ("env-no-export", shape(|k, v| format!("{k}='{v}'\n"))),
        ("powershell", shape(|k, v| format!("$Env:{k}='{v}'\n"))),
        ("windows-cmd", shape(|k, v| format!("set \"{k}={v}\"\n"))),
        ("fish", shape(|k, v| format!("set -gx {k} '{v}'\n"))),
    ] {
        let run = home
            .lanyard(&["export", "--profile", &profile, "--format", format])
            .await;
        assert_eq!(run.ok(), expected, "{format}");
    }
    let run = home
        .lanyard(&["export", "--profile", &profile, "--format", "process"])
        .await;
    assert_eq!(
        run.ok(),
        format!(
            "{{\n  \"Version\": 1,\n  \"AccessKeyId\": \"{key}\",\n  \"SecretAccessKey\": \"{secret}\",\n  \"SessionToken\": \"{token}\",\n  \"Expiration\": \"{exp}\"\n}}\n"
        )
    );
    // The env shape works as users use it: eval'd into a shell that then runs aws.
    let mut cmd = home.command("bash");
    cmd.arg("-c").arg(format!(
        "eval \"$('{}' export --profile {profile})\" && aws sts get-caller-identity",
        lanyard_tests::binary("lanyard").display()
    ));
    let run = CliHome::run(cmd, None).await;
    assert!(caller_arn(&run).contains(&format!("support.{case}.alice")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_truncated_cache_is_ignored_and_refetched() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    home.lanyard(&["credential-process", "--profile", &profile])
        .await
        .ok();
    assert_eq!(credential_requests(&app.db, &case).await, 1);
    // Flipped first and last bytes (a header or nonce, and the authentication tag of an
    // encrypted file), a truncated file and an empty one.
    let damage: [fn(&mut Vec<u8>); 4] = [
        |b| b[0] ^= 0x55,
        |b| {
            let last = b.len() - 1;
            b[last] ^= 0x55;
        },
        |b| b.truncate(b.len() / 3),
        |b| b.clear(),
    ];
    for (n, damage) in damage.iter().enumerate() {
        for entry in std::fs::read_dir(home.cache_dir()).unwrap().flatten() {
            let path = entry.path();
            // The cache entries, not the lock files or the cache's key file.
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_file() && !name.ends_with(".lock") && !name.contains("key") {
                let mut bytes = std::fs::read(&path).unwrap();
                damage(&mut bytes);
                std::fs::write(&path, bytes).unwrap();
            }
        }
        let run = home
            .lanyard(&["credential-process", "--profile", &profile])
            .await;
        let doc: Value = serde_json::from_str(run.ok()).unwrap();
        assert_eq!(doc["Version"], 1);
        assert_eq!(credential_requests(&app.db, &case).await, 2 + n as i64);
    }
    // The refetched entry serves the next call again.
    home.aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await
        .ok();
    assert_eq!(credential_requests(&app.db, &case).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_never_reads_or_writes_the_cache() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    let cache_files = |home: &CliHome| -> Vec<_> {
        home.files()
            .into_iter()
            .filter(|(p, _)| p.starts_with(home.cache_dir()))
            .collect()
    };
    let before = cache_files(&home);
    for n in 1..=2 {
        home.lanyard(&["credential-process", "--profile", &profile, "--no-cache"])
            .await
            .ok();
        assert_eq!(credential_requests(&app.db, &case).await, n);
    }
    assert_eq!(cache_files(&home), before, "nothing written");
    // With a warm cache, --no-cache still asks the broker and leaves the cache as it was.
    home.lanyard(&["credential-process", "--profile", &profile])
        .await
        .ok();
    let warm = cache_files(&home);
    home.lanyard(&["export", "--profile", &profile, "--no-cache"])
        .await
        .ok();
    assert_eq!(credential_requests(&app.db, &case).await, 4);
    assert_eq!(cache_files(&home), warm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_redacts_the_token_and_the_secret() {
    let (_app, home, customer, token) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    let run = home
        .lanyard(&["--debug", "credential-process", "--profile", &profile])
        .await;
    let doc: Value = serde_json::from_str(run.ok()).unwrap();
    assert!(run.stderr.contains("[redacted]"), "{run:?}");
    assert!(!run.stderr.contains(&token));
    assert!(
        !run.stderr
            .contains(doc["SecretAccessKey"].as_str().unwrap())
    );
    assert!(!run.stderr.contains(doc["SessionToken"].as_str().unwrap()));
    let refused = home
        .lanyard_env(
            &[
                "--debug",
                "credential-process",
                "--profile",
                &profile,
                "--no-cache",
            ],
            &[("LANYARD_TOKEN", "not-a-valid-token")],
            None,
        )
        .await;
    assert_ne!(refused.code, 0);
    assert!(!refused.stderr.contains("not-a-valid-token"), "{refused:?}");
    assert!(refused.stderr.contains("HTTP 401"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_customer_writes_a_customer_profile_for_a_service() {
    let (app, home, customer) = logged_in_service(&["readonly"]).await;
    let run = home
        .lanyard(&["setup-customer", "--customer", &customer])
        .await;
    let profile = format!("customer-{customer}");
    assert!(
        run.ok().contains(&format!("--profile {profile}")),
        "{run:?}"
    );
    let arn = caller_arn(
        &home
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    assert!(arn.contains("assumed-role/LanyardAccess/"), "{arn}");
    // setup-customer fetched once (and warmed the cache); aws was served from it.
    assert_eq!(credential_requests(&app.db, &profile).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refresh_queries_and_the_usage_report_tree() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    let check = home.lanyard(&["check", "--profile", &profile]).await;
    assert!(check.ok().contains("Cache: empty"), "{check:?}");
    home.aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await
        .ok();
    let check = home.lanyard(&["check", "--profile", &profile]).await;
    assert!(check.ok().contains("served from the cache"), "{check:?}");
    let cached: Value = serde_json::from_str(
        home.lanyard(&["credential-process", "--profile", &profile])
            .await
            .ok(),
    )
    .unwrap();
    // refresh bypasses the local cache (one more request at the broker) and replaces it
    // with the broker's answer, which is the broker's own still-valid copy: the same key.
    let refresh = home.lanyard(&["refresh", "--profile", &profile]).await;
    let key = cached["AccessKeyId"].as_str().unwrap();
    assert!(
        refresh
            .ok()
            .starts_with(&format!("Refreshed {profile}: access key {key}, expires ")),
        "{refresh:?}"
    );
    assert_eq!(credential_requests(&app.db, &case).await, 2);

    let customers = home.lanyard(&["customers", "list"]).await;
    assert!(
        customers.ok().lines().any(|l| l.starts_with(&customer)),
        "{customers:?}"
    );
    let sessions = home
        .lanyard(&["--output", "json", "sessions", "list", "--case", &case])
        .await;
    let list: Value = serde_json::from_str(sessions.ok()).unwrap();
    assert_eq!(list["sessions"][0]["profile_name"], profile.as_str());

    let auditor = app
        .token_for("carol", Role::Auditor, None, Duration::from_secs(600))
        .await;
    let tree = home
        .lanyard_env(
            &["usage-report", "--days", "1"],
            &[("LANYARD_TOKEN", &auditor)],
            None,
        )
        .await;
    let expected = format!("Profile: {profile}\n├─ Total requests: 2\n├─ Success rate: 100%\n");
    assert!(tree.ok().contains(&expected), "{tree:?}");
    assert!(
        tree.stdout.contains("└─ Users: alice (1 total)"),
        "{tree:?}"
    );
    let json = home
        .lanyard_env(
            &["usage-report", "--days", "1", "--json"],
            &[("LANYARD_TOKEN", &auditor)],
            None,
        )
        .await;
    let report: Value = serde_json::from_str(json.ok()).unwrap();
    assert!(
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["profile"] == profile.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_every_link_of_the_chain() {
    let (_app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    let run = home.lanyard(&["doctor", "--profile", &profile]).await;
    let out = run.ok();
    for check in [
        "config",
        "broker",
        "token",
        "credentials",
        "aws profile",
        "clock",
    ] {
        assert!(out.contains(&format!("✔ {check}: ")), "{check}: {out}");
    }
    // Wired to another profile whose name merely starts with this one's.
    let wired = std::fs::read_to_string(home.aws_config()).unwrap();
    std::fs::write(
        home.aws_config(),
        wired.replace(
            &format!("--profile {profile}"),
            &format!("--profile {profile}9"),
        ),
    )
    .unwrap();
    let run = home.lanyard(&["doctor", "--profile", &profile]).await;
    assert_ne!(run.code, 0);
    assert!(run.stdout.contains("✘ aws profile"), "{run:?}");
    // Unwired: the AWS profile is gone.
    std::fs::write(home.aws_config(), "").unwrap();
    let run = home.lanyard(&["doctor", "--profile", &profile]).await;
    assert_ne!(run.code, 0);
    assert!(run.stdout.contains("✘ aws profile"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_has_help_and_completions_are_generated() {
    let home = CliHome::new();
    for command in [
        vec![],
        vec!["login"],
        vec!["credential-process"],
        vec!["export"],
        vec!["support-access"],
        vec!["setup-customer"],
        vec!["check"],
        vec!["refresh"],
        vec!["customers"],
        vec!["customers", "list"],
        vec!["sessions"],
        vec!["sessions", "list"],
        vec!["sessions", "revoke"],
        vec!["usage-report"],
        vec!["doctor"],
        vec!["completions"],
        vec!["ping"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        let run = home.lanyard(&args).await;
        let usage = format!("Usage: lanyard {}", command.join(" "));
        assert!(run.ok().contains(usage.trim_end()), "{command:?}: {run:?}");
    }
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let run = home.lanyard(&["completions", shell]).await;
        assert!(run.ok().contains("credential-process"), "{shell}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ending_within_the_sdk_refresh_window_is_served_from_the_cache_until_its_end() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    home.lanyard(&[
        "support-access",
        "--customer",
        &customer,
        "--case",
        &case,
        "--duration",
        "10m",
    ])
    .await
    .ok();
    let profile = format!("support-{customer}-{case}");
    // The credentials end with the session, inside botocore's 15-minute window: no longer
    // ones exist, so the cache keeps serving them instead of asking on every call.
    let doc: Value = serde_json::from_str(
        home.lanyard(&["credential-process", "--profile", &profile])
            .await
            .ok(),
    )
    .unwrap();
    let expiration =
        chrono::DateTime::parse_from_rfc3339(doc["Expiration"].as_str().unwrap()).unwrap();
    let left = expiration.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(left <= chrono::Duration::minutes(10), "{left}");
    for _ in 0..3 {
        home.aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await
            .ok();
    }
    assert_eq!(credential_requests(&app.db, &case).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_takes_the_token_from_a_file_or_the_environment_and_refuses_bad_ones() {
    let app = TestApp::spawn().await;
    let token = app.token(Role::Support, None).await;
    let home = CliHome::new();
    let file = home.dir.path().join("token.txt");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let run = home
        .lanyard(&[
            "login",
            "--server",
            &app.base,
            "--token-file",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(
        run.ok()
            .starts_with(&format!("Logged in to {} as tester (support)", app.base))
    );
    assert!(!run.stdout.contains(&token) && !run.stderr.contains(&token));
    assert_eq!(
        std::fs::read_to_string(home.config_dir().join("token")).unwrap(),
        format!("{token}\n")
    );

    let other = CliHome::new();
    other
        .lanyard_env(
            &["login", "--server", &app.base],
            &[("LANYARD_TOKEN", &token)],
            None,
        )
        .await
        .ok();
    assert!(other.config_dir().join("token").exists());

    // Refused: an expired token, an empty one, an unreachable broker. Nothing is stored.
    let expired = app
        .token_for("old", Role::Support, None, Duration::from_secs(1))
        .await;
    // Wait until its `exp` (whole seconds) is past on this machine's clock, the one the CLI
    // judges it by.
    let exp = lanyard_tests::jwt_claims(&expired)["exp"].as_i64().unwrap();
    let past = lanyard_tests::eventually(Duration::from_secs(5), || async move {
        chrono::Utc::now().timestamp() > exp
    })
    .await;
    assert!(past, "the one-second token never expired");
    let fresh = CliHome::new();
    for (stdin, server) in [
        (expired.as_str(), app.base.as_str()),
        ("", app.base.as_str()),
        (token.as_str(), "http://127.0.0.1:9"),
    ] {
        let run = fresh
            .lanyard_env(&["login", "--server", server], &[], Some(stdin))
            .await;
        assert_one_clear_line(&run);
    }
    assert!(fresh.files().is_empty(), "{:?}", fresh.files().keys());
}

/// Adds a profile to the CLI's config.toml by hand, as a user (or a login elsewhere) could.
fn add_profile(home: &CliHome, name: &str, body: &str) {
    let path = home.config_dir().join("config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\n[profiles.{name}]\n{body}\n"));
    std::fs::write(&path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_token_is_never_sent_to_another_broker_nor_its_cache_served_for_one() {
    let (app, home, customer, token) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    home.lanyard(&["credential-process", "--profile", &profile])
        .await
        .ok();
    let other = FakeBroker::start(500, "{}").await;

    // A profile of another broker: refused before anything is sent, naming the fix.
    add_profile(
        &home,
        "customer-elsewhere",
        &format!(
            "server = \"{}\"\nkind = \"customer\"\ncustomer = \"elsewhere\"",
            other.url
        ),
    );
    let run = home
        .lanyard(&["credential-process", "--profile", "customer-elsewhere"])
        .await;
    assert_one_clear_line(&run);
    assert!(
        run.stderr
            .contains(&format!("run `lanyard login --server {}`", other.url)),
        "{run:?}"
    );
    // LANYARD_SERVER pointing elsewhere: the same, and the login broker's cached
    // credentials are not served for it.
    let run = home
        .lanyard_env(
            &["credential-process", "--profile", &profile],
            &[("LANYARD_SERVER", &other.url)],
            None,
        )
        .await;
    assert_one_clear_line(&run);
    assert!(other.requests().is_empty(), "{:?}", other.requests());

    // LANYARD_TOKEN is the user's explicit choice for the server in effect: that one is sent.
    let run = home
        .lanyard_env(
            &["credential-process", "--profile", &profile],
            &[
                ("LANYARD_SERVER", &other.url),
                ("LANYARD_TOKEN", "explicit-token"),
            ],
            None,
        )
        .await;
    assert_one_clear_line(&run);
    let seen = other.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("Bearer explicit-token"), "{seen:?}");
    assert!(!seen[0].contains(&token), "{seen:?}");
    // The login's broker still serves its profile, from the cache.
    home.lanyard(&["credential-process", "--profile", &profile])
        .await
        .ok();
    assert_eq!(credential_requests(&app.db, &case).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_calls_for_fifteen_minute_credentials_make_one_credential_request() {
    let (app, home, profile) = short_lived_customer().await;
    assert_eq!(credential_requests(&app.db, &profile).await, 1);
    // A cold cache, then 20 parallel invocations: one asks, the others take its answer.
    for entry in std::fs::read_dir(home.cache_dir()).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "cred") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let args = ["credential-process", "--profile", profile.as_str()];
    let calls = (0..20).map(|_| home.lanyard(&args));
    let runs = futures::future::join_all(calls).await;
    let mut keys = std::collections::BTreeSet::new();
    for run in &runs {
        let doc: Value = serde_json::from_str(run.ok()).unwrap();
        let expiration =
            chrono::DateTime::parse_from_rfc3339(doc["Expiration"].as_str().unwrap()).unwrap();
        assert!(
            expiration.with_timezone(&chrono::Utc) - chrono::Utc::now()
                <= chrono::Duration::minutes(15),
            "{doc}"
        );
        keys.insert(doc["AccessKeyId"].as_str().unwrap().to_owned());
    }
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(credential_requests(&app.db, &profile).await, 2);
    // A call right after is served from the cache too, not sent to the broker again.
    home.lanyard(&["credential-process", "--profile", &profile])
        .await
        .ok();
    assert_eq!(credential_requests(&app.db, &profile).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_answer_that_would_run_shell_code_under_eval_is_refused() {
    let payload = "x; touch pwned #";
    let document = serde_json::json!({
        "Version": 1, "AccessKeyId": "ASIAEXAMPLE12345", "SecretAccessKey": payload,
        "SessionToken": "dG9r", "Expiration": "2099-01-01T00:00:00Z",
    });
    let broker = FakeBroker::start(200, &document.to_string()).await;
    let home = CliHome::new();
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(home.config_dir().join("config.toml"), "").unwrap();
    add_profile(
        &home,
        "customer-evil",
        &format!(
            "server = \"{}\"\nkind = \"customer\"\ncustomer = \"evil\"",
            broker.url
        ),
    );
    for format in ["env", "fish", "process"] {
        let run = home
            .lanyard_env(
                &["export", "--profile", "customer-evil", "--format", format],
                &[("LANYARD_TOKEN", "explicit-token")],
                None,
            )
            .await;
        assert_one_clear_line(&run);
        assert!(run.stderr.contains("SecretAccessKey"), "{run:?}");
        assert!(!run.stderr.contains(payload), "{run:?}");
    }
    assert_eq!(broker.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_setup_customer_runs_keep_every_profile() {
    let app = TestApp::spawn().await;
    let customers: Vec<String> = (0..3).map(|_| unique("acme")).collect();
    for customer in &customers {
        app.create_customer(customer).await;
        app.register_role(customer, "readonly").await;
    }
    let token = app
        .token_for("batch-job", Role::Service, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    let args: Vec<[&str; 3]> = customers
        .iter()
        .map(|c| ["setup-customer", "--customer", c.as_str()])
        .collect();
    let runs = futures::future::join_all(args.iter().map(|a| home.lanyard(a))).await;
    for run in &runs {
        run.ok();
    }
    let config = std::fs::read_to_string(home.config_dir().join("config.toml")).unwrap();
    let aws = std::fs::read_to_string(home.aws_config()).unwrap();
    for customer in &customers {
        assert!(
            config.contains(&format!("[profiles.customer-{customer}]")),
            "{customer}: {config}"
        );
        assert!(
            aws.contains(&format!("[profile customer-{customer}]")),
            "{aws}"
        );
        home.lanyard(&[
            "credential-process",
            "--profile",
            &format!("customer-{customer}"),
        ])
        .await
        .ok();
    }
    // No temp files left behind beside the config.
    let names: Vec<String> = std::fs::read_dir(home.config_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
}

/// A customer whose only role has a 15-minute maximum: every credential the broker issues is
/// already inside botocore's refresh window. Returns (app, home, profile).
async fn short_lived_customer() -> (TestApp, CliHome, String) {
    let app = TestApp::spawn().await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    let (status, body) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{customer}/roles/short"),
            Some(serde_json::json!({
                "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                "max_session_seconds": 900,
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = app
        .token_for("batch-job", Role::Service, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    home.lanyard(&["setup-customer", "--customer", &customer])
        .await
        .ok();
    (app, home, format!("customer-{customer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_does_not_stop_credentials_the_cache_still_holds() {
    let (app, home, profile) = short_lived_customer().await;
    let first: Value = serde_json::from_str(
        home.lanyard(&["credential-process", "--profile", &profile])
            .await
            .ok(),
    )
    .unwrap();
    // Written a minute ago: past the hold-down, so the next call asks the broker.
    for entry in std::fs::read_dir(home.cache_dir()).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "cred") {
            let status = std::process::Command::new("touch")
                .args(["-d", "1 minute ago"])
                .arg(entry.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    app.stop();
    let base = app.base.clone();
    assert!(
        lanyard_tests::eventually(Duration::from_secs(10), || {
            let base = base.clone();
            async move { reqwest::get(format!("{base}/healthz")).await.is_err() }
        })
        .await,
        "the broker still answers"
    );
    let run = home
        .lanyard(&["--debug", "credential-process", "--profile", &profile])
        .await;
    let served: Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(served, first);
    assert!(run.stderr.contains("cannot reach the broker"), "{run:?}");
    // Asking for new credentials explicitly still says the broker is down.
    let refresh = home.lanyard(&["refresh", "--profile", &profile]).await;
    assert_one_clear_line(&refresh);
    assert!(
        refresh.stderr.contains("cannot reach the broker"),
        "{refresh:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_server_url_never_shows_in_messages_or_debug_output() {
    let home = CliHome::new();
    let server = "http://alice:hunter2@127.0.0.1:9";
    for args in [
        vec!["--debug", "customers", "list"],
        vec!["--debug", "ping"],
        vec!["--debug", "login", "--server", server],
    ] {
        let run = home
            .lanyard_env(
                &args,
                &[("LANYARD_SERVER", server), ("LANYARD_TOKEN", "x")],
                None,
            )
            .await;
        assert_ne!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains("127.0.0.1:9"), "{run:?}");
        assert!(!run.stderr.contains("hunter2"), "{args:?}: {run:?}");
        assert!(!run.stdout.contains("hunter2"), "{args:?}: {run:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_would_change_the_request_path_are_refused_before_any_request() {
    let broker = FakeBroker::start(200, "{}").await;
    let home = CliHome::new();
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(home.config_dir().join("config.toml"), "").unwrap();
    add_profile(
        &home,
        "support-x",
        "kind = \"support\"\ncustomer = \"acme\"\nsession = \"../../customers/acme\"",
    );
    add_profile(
        &home,
        "customer-x",
        "kind = \"customer\"\ncustomer = \"acme/../../v1/sessions\"",
    );
    let env = [
        ("LANYARD_SERVER", broker.url.as_str()),
        ("LANYARD_TOKEN", "t"),
    ];
    for (args, what) in [
        (
            vec!["credential-process", "--profile", "support-x"],
            "session id",
        ),
        (
            vec!["credential-process", "--profile", "customer-x"],
            "customer id",
        ),
        (vec!["sessions", "revoke", "../customers"], "session id"),
        (
            vec!["sessions", "revoke", "--profile", "support-x"],
            "session id",
        ),
        (
            vec!["sessions", "list", "--customer", "a&active=false"],
            "customer id",
        ),
        (vec!["sessions", "list", "--case", "CS-1#x"], "case id"),
        (
            vec!["usage-report", "--customer", "acme/../x"],
            "customer id",
        ),
        (
            vec!["setup-customer", "--customer", "acme?x"],
            "customer id",
        ),
        (
            vec![
                "support-access",
                "--customer",
                "acme/../x",
                "--case",
                "CS-1",
                "--role",
                "r",
            ],
            "customer id",
        ),
    ] {
        let run = home.lanyard_env(&args, &env, None).await;
        assert_one_clear_line(&run);
        assert!(
            run.stderr.contains(&format!("bad {what}")),
            "{args:?}: {run:?}"
        );
    }
    assert!(broker.requests().is_empty(), "{:?}", broker.requests());
}

// ---------------------------------------------------------------------------------------
// Hardening: what an attacker-controlled broker, a hostile file system or a first-time user
// meets.
// ---------------------------------------------------------------------------------------

/// A home whose stored login is for `server`, set up without a broker request.
fn home_logged_in_to(server: &str, token: &str) -> CliHome {
    use std::os::unix::fs::PermissionsExt;
    let home = CliHome::new();
    let dir = home.config_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("config.toml"), format!("server = \"{server}\"\n")).unwrap();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    home
}

/// A home logged in to a stand-in `broker`, with profile `customer-acme` served by it.
fn home_with_profile_at(broker: &FakeBroker) -> CliHome {
    let home = home_logged_in_to(&broker.url, "t");
    add_profile(
        &home,
        "customer-acme",
        &format!(
            "server = \"{}\"\nkind = \"customer\"\ncustomer = \"acme\"",
            broker.url
        ),
    );
    home
}

fn credential_document(expiration: &str) -> String {
    serde_json::json!({
        "Version": 1, "AccessKeyId": "ASIAEXAMPLE12345", "SecretAccessKey": "abc+/=",
        "SessionToken": "dG9rZW4=", "Expiration": expiration,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_never_followed_so_the_token_and_credentials_stay_with_the_broker() {
    // The foreign origin redirects once more to itself and then hands out credentials: the
    // two-hop chain that used to get the Authorization header back on its second hop.
    let document = credential_document("2099-01-01T00:00:00Z");
    let foreign = FakeBroker::serve(move |path| match path {
        "/hop1" => lanyard_tests::FakeReply::redirect(302, "/hop2"),
        _ => lanyard_tests::FakeReply::json(200, &document),
    })
    .await;
    let hop1 = format!("{}/hop1", foreign.url);
    let broker = FakeBroker::serve(move |_| lanyard_tests::FakeReply::redirect(307, &hop1)).await;
    let home = home_with_profile_at(&broker);
    for args in [
        vec![
            "credential-process",
            "--profile",
            "customer-acme",
            "--no-cache",
        ],
        vec!["export", "--profile", "customer-acme"],
        vec!["customers", "list"],
        vec!["ping"],
    ] {
        let run = home.lanyard(&args).await;
        assert_one_clear_line(&run);
        assert!(
            run.stderr.contains(&format!("redirect to {}", foreign.url)),
            "the error names where the redirect led: {run:?}"
        );
    }
    assert!(
        foreign.requests().is_empty(),
        "the foreign origin was contacted: {:?}",
        foreign.requests()
    );
    assert_eq!(broker.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refuses_an_expiration_a_shell_would_split_and_quotes_every_value() {
    let bad = FakeBroker::start(200, &credential_document("2099-01-01 00:00:00Z")).await;
    let home = home_with_profile_at(&bad);
    for format in ["env", "env-no-export", "powershell", "windows-cmd", "fish"] {
        let run = home
            .lanyard(&["export", "--profile", "customer-acme", "--format", format])
            .await;
        assert_one_clear_line(&run);
        assert!(run.stderr.contains("Expiration"), "{run:?}");
    }
    // A good answer, eval'd by bash, sets exactly the values, and runs nothing else.
    let good = FakeBroker::start(200, &credential_document("2099-01-01T00:00:00+00:00")).await;
    let home = home_with_profile_at(&good);
    let mut cmd = home.command("bash");
    cmd.arg("-c").arg(format!(
        "eval \"$('{}' export --profile customer-acme)\" && printf '%s|%s|%s' \
         \"$AWS_SECRET_ACCESS_KEY\" \"$AWS_SESSION_TOKEN\" \"$AWS_CREDENTIAL_EXPIRATION\"",
        lanyard_tests::binary("lanyard").display()
    ));
    let run = CliHome::run(cmd, None).await;
    assert_eq!(run.ok(), "abc+/=|dG9rZW4=|2099-01-01T00:00:00+00:00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_config_that_is_a_fifo_a_directory_or_a_device_is_refused_before_anything_else() {
    let broker = FakeBroker::start(500, "{}").await;
    let home = home_logged_in_to(&broker.url, "t");
    let fifo = home.dir.path().join("config-fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let dir = home.dir.path().join("config-dir");
    std::fs::create_dir(&dir).unwrap();
    for (path, kind) in [
        (fifo.to_str().unwrap(), "FIFO"),
        (dir.to_str().unwrap(), "directory"),
        ("/dev/null", "device"),
    ] {
        for args in [
            vec!["support-access", "--customer", "acme", "--case", "CS-1"],
            vec!["setup-customer", "--customer", "acme"],
        ] {
            let run = home
                .lanyard_env(&args, &[("AWS_CONFIG_FILE", path)], None)
                .await;
            assert_one_clear_line(&run);
            assert!(run.stderr.contains(kind), "{path}: {run:?}");
        }
    }
    assert!(broker.requests().is_empty(), "{:?}", broker.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_cache_that_others_could_change_are_refused_like_ssh_does() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let broker = FakeBroker::start(200, &credential_document("2099-01-01T00:00:00Z")).await;
    let home = home_with_profile_at(&broker);
    let args = ["credential-process", "--profile", "customer-acme"];
    let config_dir = home.config_dir();
    for (path, bad, good, says) in [
        (
            config_dir.clone(),
            0o770,
            0o700,
            "writable by group or others",
        ),
        (
            config_dir.join("config.toml"),
            0o666,
            0o600,
            "writable by group or others",
        ),
        (config_dir.join("token"), 0o640, 0o600, "chmod 600"),
    ] {
        mode(&path, bad);
        let run = home.lanyard(&args).await;
        assert_one_clear_line(&run);
        assert!(run.stderr.contains(says), "{}: {run:?}", path.display());
        assert!(run.stderr.contains(&path.display().to_string()), "{run:?}");
        mode(&path, good);
    }
    assert!(broker.requests().is_empty(), "{:?}", broker.requests());

    // A cache directory others can write is not used: the credentials still come, from
    // the broker, with a warning, and nothing is written there.
    let cache = home.cache_dir();
    std::fs::create_dir_all(&cache).unwrap();
    mode(&cache, 0o777);
    let entries = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let before = entries();
    let run = home
        .lanyard(&["export", "--profile", "customer-acme"])
        .await;
    assert!(run.ok().contains("AWS_ACCESS_KEY_ID"), "{run:?}");
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("writable by group or others"),
        "{run:?}"
    );
    assert_eq!(entries(), before, "the cache directory was written");
    mode(&cache, 0o700);

    // Owned by someone else (root can make it so; other users cannot, and skip this part).
    if rustix::process::geteuid().is_root() {
        let nobody = Some(rustix::process::Uid::from_raw(65534));
        rustix::fs::chown(&config_dir, nobody, None).unwrap();
        let run = home.lanyard(&args).await;
        assert_one_clear_line(&run);
        assert!(run.stderr.contains("owned by another user"), "{run:?}");
        rustix::fs::chown(&config_dir, Some(rustix::process::geteuid()), None).unwrap();
    }

    // A lock file planted as a symlink: nothing is created or truncated through it.
    let target = home.dir.path().join("victim");
    std::fs::write(&target, "precious").unwrap();
    std::os::unix::fs::symlink(&target, config_dir.join("config.toml.lock")).unwrap();
    let run = home
        .lanyard_env(
            &["setup-customer", "--customer", "acme"],
            &[("LANYARD_TOKEN", "t")],
            None,
        )
        .await;
    assert_one_clear_line(&run);
    assert!(run.stderr.contains("config.toml.lock"), "{run:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_broker_says_reaches_the_terminal_without_escape_sequences() {
    let evil = "nope\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[31m red \u{202e}gnp.exe\u{200b}";
    let refusal = serde_json::json!({ "status": 403, "title": "Forbidden", "detail": evil });
    let broker = FakeBroker::start(403, &refusal.to_string()).await;
    let home = home_logged_in_to(&broker.url, "t");
    let run = home.lanyard(&["customers", "list"]).await;
    assert_one_clear_line(&run);
    assert!(run.stderr.contains("nope"), "{run:?}");
    for c in ['\u{1b}', '\u{7}', '\u{202e}', '\u{200b}'] {
        assert!(
            !run.stderr.contains(c),
            "{c:?} reached the terminal: {run:?}"
        );
    }
    let list = serde_json::json!({ "customers": [
        { "id": "acme", "status": "active", "display_name": evil }
    ]});
    let broker = FakeBroker::start(200, &list.to_string()).await;
    let home = home_logged_in_to(&broker.url, "t");
    let run = home.lanyard(&["customers", "list"]).await;
    let out = run.ok();
    assert!(out.contains("acme") && out.contains("nope"), "{run:?}");
    for c in ['\u{1b}', '\u{7}', '\u{202e}', '\u{200b}'] {
        assert!(!out.contains(c), "{c:?} reached the terminal: {run:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_only_a_token_the_broker_accepts() {
    let app = TestApp::spawn().await;
    let token = app
        .token_for("alice", Role::Support, None, Duration::from_secs(3600))
        .await;
    // Revoked: signed by the broker, readable claims, but no longer valid.
    let keys = lanyard_server::auth::token::TokenKeys::load(&app.config).unwrap();
    let jti = keys.verify(&token).unwrap().jti;
    let mut conn = app.db.acquire().await.unwrap();
    lanyard_server::db::tokens::revoke(&mut conn, jti)
        .await
        .unwrap();
    drop(conn);
    // Signed with a key of its own: what `token issue` run from another directory printed.
    let stray = tempfile::tempdir().unwrap();
    let mut stray_config = app.config.clone();
    stray_config.data_dir = stray.path().to_path_buf();
    let foreign = lanyard_server::auth::token::TokenKeys::load_or_generate(&stray_config)
        .unwrap()
        .sign(&keys.verify(&app.token(Role::Admin, None).await).unwrap())
        .unwrap();
    for bad in [&token, &foreign] {
        let home = CliHome::new();
        let run = home.login(&app.base, bad).await;
        assert_one_clear_line(&run);
        assert!(run.stderr.contains("does not accept this token"), "{run:?}");
        assert!(run.stderr.contains("HTTP 401"), "{run:?}");
        assert!(home.files().is_empty(), "{:?}", home.files().keys());
    }
    let good = app
        .token_for(
            "bob",
            Role::Support,
            Some(vec!["acme-corp"]),
            Duration::from_secs(3600),
        )
        .await;
    let home = CliHome::new();
    let run = home.login(&app.base, &good).await;
    assert!(
        run.ok().starts_with(&format!(
            "Logged in to {} as bob (support for customers acme-corp)",
            app.base
        )),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_warns_about_credential_variables_that_shadow_the_profile() {
    let (_app, home, customer, _) = logged_in_support().await;
    let profile = support_access(&home, &customer, &unique("CS")).await;
    let clean = home.lanyard(&["doctor", "--profile", &profile]).await;
    assert!(clean.ok().contains("✔ environment:"), "{clean:?}");
    let run = home
        .lanyard_env(
            &["doctor", "--profile", &profile],
            &[("AWS_ACCESS_KEY_ID", "AKIAOTHERCREDENTIALS")],
            None,
        )
        .await;
    let line = run
        .ok()
        .lines()
        .find(|l| l.starts_with("! environment:"))
        .unwrap_or_else(|| panic!("no warning: {run:?}"))
        .to_owned();
    assert!(line.contains("AWS_ACCESS_KEY_ID"), "{line}");
    assert!(line.contains(&format!("--profile {profile}")), "{line}");
    assert!(!run.stdout.contains("AKIAOTHERCREDENTIALS"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_set_up_with_lanyard_token_keeps_that_identity_or_says_why_not() {
    let (app, home, customer, _) = logged_in_support().await;
    let billing = app
        .token_for(
            "billing-job",
            Role::Service,
            None,
            Duration::from_secs(3600),
        )
        .await;
    let etl = app
        .token_for("etl", Role::Service, None, Duration::from_secs(3600))
        .await;
    let setup = home
        .lanyard_env(
            &["setup-customer", "--customer", &customer],
            &[("LANYARD_TOKEN", &billing)],
            None,
        )
        .await;
    setup.ok();
    let profile = format!("customer-{customer}");
    // Without LANYARD_TOKEN the stored login (alice, support) would be used: refused, saying so.
    let run = home
        .lanyard(&["credential-process", "--profile", &profile, "--no-cache"])
        .await;
    assert_one_clear_line(&run);
    assert!(
        run.stderr
            .contains("was set up with LANYARD_TOKEN (as billing-job)"),
        "{run:?}"
    );
    // Someone else's token: refused, naming both.
    let run = home
        .lanyard_env(
            &["credential-process", "--profile", &profile, "--no-cache"],
            &[("LANYARD_TOKEN", &etl)],
            None,
        )
        .await;
    assert_one_clear_line(&run);
    assert!(
        run.stderr.contains("belongs to billing-job") && run.stderr.contains("etl's"),
        "{run:?}"
    );
    // The identity it was set up with works.
    let run = home
        .lanyard_env(
            &["credential-process", "--profile", &profile, "--no-cache"],
            &[("LANYARD_TOKEN", &billing)],
            None,
        )
        .await;
    let doc: Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(doc["Version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_of_a_customer_gets_its_own_profile_and_user_settings_are_kept() {
    let (_app, home, customer) = logged_in_service(&["readonly", "deploy"]).await;
    for role in ["readonly", "deploy"] {
        home.lanyard(&["setup-customer", "--customer", &customer, "--role", role])
            .await
            .ok();
    }
    let (readonly, deploy) = (
        format!("customer-{customer}-readonly"),
        format!("customer-{customer}-deploy"),
    );
    // The user sets a region and an output format of their own on one profile.
    let path = home.aws_config();
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen(
        &format!("[profile {readonly}]\n"),
        &format!("[profile {readonly}]\noutput = table\n"),
        1,
    );
    std::fs::write(
        &path,
        edited.replacen("region = us-east-1", "region = eu-west-1", 1),
    )
    .unwrap();
    home.lanyard(&[
        "setup-customer",
        "--customer",
        &customer,
        "--role",
        "readonly",
    ])
    .await
    .ok();
    let get = |profile: String, key: &'static str| {
        let home = &home;
        async move {
            home.aws(&["configure", "get", key, "--profile", &profile])
                .await
                .ok()
                .trim()
                .to_owned()
        }
    };
    assert_eq!(get(readonly.clone(), "region").await, "eu-west-1");
    assert_eq!(get(readonly.clone(), "output").await, "table");
    assert_eq!(get(deploy.clone(), "region").await, "us-east-1");
    // --region is an explicit choice: it wins.
    home.lanyard(&[
        "setup-customer",
        "--customer",
        &customer,
        "--role",
        "readonly",
        "--region",
        "ap-south-1",
    ])
    .await
    .ok();
    assert_eq!(get(readonly.clone(), "region").await, "ap-south-1");
    for profile in [&readonly, &deploy] {
        let arn = caller_arn(
            &home
                .aws(&[
                    "sts",
                    "get-caller-identity",
                    "--profile",
                    profile,
                    "--output",
                    "json",
                ])
                .await,
        );
        assert!(arn.contains("assumed-role/LanyardAccess/"), "{arn}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_access_takes_a_duration_in_bare_seconds_as_the_origin_guide_writes_it() {
    let (_app, home, customer, _) = logged_in_support().await;
    let run = home
        .lanyard(&[
            "--output",
            "json",
            "support-access",
            "--customer",
            &customer,
            "--case",
            &unique("CS"),
            "--duration",
            "1800",
        ])
        .await;
    let out: Value = serde_json::from_str(run.ok()).unwrap();
    let at = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(out["session"][k].as_str().unwrap()).unwrap()
    };
    assert_eq!((at("expires_at") - at("created_at")).num_seconds(), 1800);
}

// ---------------------------------------------------------------------------------------
// The flags and failure modes a script or a first-time user meets.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reporting_command_answers_in_json_when_asked() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    let json = |run: &Run| -> Value {
        serde_json::from_str(run.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
    };

    let check = json(
        &home
            .lanyard(&["--output", "json", "check", "--profile", &profile])
            .await,
    );
    assert_eq!(check["profile"], profile.as_str(), "{check}");
    assert_eq!(check["cached"], false, "{check}");
    assert!(check["session_expires_at"].is_string(), "{check}");

    let refresh = json(
        &home
            .lanyard(&["--output", "json", "refresh", "--profile", &profile])
            .await,
    );
    let key = refresh["access_key_id"].as_str().expect("an access key");
    assert!(key.starts_with("ASIA"), "{refresh}");
    let check = json(
        &home
            .lanyard(&["--output", "json", "check", "--profile", &profile])
            .await,
    );
    assert_eq!(check["cached"], true, "{check}");
    assert_eq!(check["fresh"], true, "{check}");
    assert_eq!(check["access_key_id"], key, "{check}");
    assert_eq!(check["expiration"], refresh["expiration"], "{check}");

    let customers = json(
        &home
            .lanyard(&["--output", "json", "customers", "list"])
            .await,
    );
    assert!(
        customers["customers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == customer.as_str() && c["status"] == "active"),
        "{customers}"
    );

    let auditor = app
        .token_for("carol", Role::Auditor, None, Duration::from_secs(600))
        .await;
    let report = json(
        &home
            .lanyard_env(
                &["--output", "json", "usage-report", "--days", "1"],
                &[("LANYARD_TOKEN", &auditor)],
                None,
            )
            .await,
    );
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["profile"] == profile.as_str())
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(row["total_requests"], 1, "{row}");
    assert_eq!(row["users"], serde_json::json!(["alice"]), "{row}");

    let doctor = json(
        &home
            .lanyard(&["--output", "json", "doctor", "--profile", &profile])
            .await,
    );
    let checks: Vec<(&str, &str)> = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    for name in [
        "config",
        "broker",
        "token",
        "credentials",
        "aws profile",
        "clock",
    ] {
        assert!(checks.contains(&(name, "ok")), "{name}: {doctor}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_the_broker_down_says_so_and_still_reads_the_token_and_the_cache() {
    let (app, home, customer, _) = logged_in_support().await;
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    home.lanyard(&["refresh", "--profile", &profile]).await.ok();
    app.stop();
    let base = app.base.clone();
    assert!(
        lanyard_tests::eventually(Duration::from_secs(10), || {
            let base = base.clone();
            async move { reqwest::get(format!("{base}/healthz")).await.is_err() }
        })
        .await,
        "the broker still answers"
    );
    let run = home.lanyard(&["doctor", "--profile", &profile]).await;
    assert_ne!(run.code, 0, "{run:?}");
    let line = |check: &str| {
        run.stdout
            .lines()
            .find(|l| l[l.find(' ').unwrap() + 1..].starts_with(&format!("{check}: ")))
            .unwrap_or_else(|| panic!("no {check} line: {run:?}"))
            .to_owned()
    };
    assert!(
        line("broker").starts_with("✘ broker: cannot reach the broker"),
        "{run:?}"
    );
    // The token is judged by its own claims, and said to be unchecked.
    let token = line("token");
    assert!(
        token.starts_with("! token: alice (support), valid until"),
        "{token}"
    );
    assert!(token.contains("not checked"), "{token}");
    // The cache still serves the credentials refresh put there.
    assert!(
        line("credentials").starts_with("✔ credentials: access key ASIA"),
        "{run:?}"
    );
    assert!(line("credentials").contains("from the cache"), "{run:?}");
    // No clock line: there was no broker clock to compare with.
    assert!(!run.stdout.contains("clock"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_clock_that_is_off_the_brokers() {
    // A broker whose Date header is ten minutes behind this machine.
    let date = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc2822();
    let date = date.replace("+0000", "GMT");
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let broker = FakeBroker::serve(move |path| {
        let mut reply = match path {
            "/readyz" => FakeReply::json(200, r#"{"status":"ready"}"#),
            "/v1/auth/whoami" => FakeReply::json(
                200,
                &serde_json::json!({
                    "subject": "svc", "role": "service", "customers": null,
                    "token_id": "00000000-0000-4000-8000-000000000000", "expires_at": expires,
                })
                .to_string(),
            ),
            _ => FakeReply::json(200, &credential_document(&expires)),
        };
        reply.headers.push(("date".into(), date.clone()));
        reply
    })
    .await;
    let home = home_with_profile_at(&broker);
    let run = home
        .lanyard(&["doctor", "--profile", "customer-acme"])
        .await;
    let clock = run
        .stdout
        .lines()
        .find(|l| l.contains("clock: "))
        .unwrap_or_else(|| panic!("{run:?}"));
    assert!(clock.starts_with("! clock: this machine is "), "{clock}");
    let secs: i64 = clock
        .trim_start_matches("! clock: this machine is ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((595..=605).contains(&secs), "{clock}");
    assert!(run.stdout.contains("✔ token: svc (service)"), "{run:?}");
}

// ---------------------------------------------------------------------------------------
// The cache key where real users keep it: the OS keyring, or the key file when the system
// refuses the keyring.
// ---------------------------------------------------------------------------------------

/// A support profile used twice by the AWS CLI from a home whose keyring is `keyring`;
/// returns (app, home, profile, the secret access key the broker issued).
async fn two_aws_calls_with(keyring: Keyring) -> (TestApp, CliHome, String, String) {
    let app = TestApp::spawn().await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let token = app
        .token_for("alice", Role::Support, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::with_keyring(keyring);
    home.login(&app.base, &token).await.ok();
    let case = unique("CS");
    let profile = support_access(&home, &customer, &case).await;
    let first = caller_arn(
        &home
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    let second = caller_arn(
        &home
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    assert_eq!(first, second);
    // The second call was served from the encrypted cache.
    assert_eq!(credential_requests(&app.db, &case).await, 1);
    let document: Value = serde_json::from_str(
        home.lanyard(&["credential-process", "--profile", &profile])
            .await
            .ok(),
    )
    .unwrap();
    let secret = document["SecretAccessKey"].as_str().unwrap().to_owned();
    (app, home, profile, secret)
}

/// The cache entries of `home`, none of which holds the secret in the clear.
fn assert_cache_encrypted(home: &CliHome, secret: &str) {
    let entries: Vec<_> = std::fs::read_dir(home.cache_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cred"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let bytes = std::fs::read(&entries[0]).unwrap();
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is in the cache file in the clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_cache_key_lives_in_the_os_keyring() {
    let (_app, home, profile, secret) = two_aws_calls_with(Keyring::Os).await;
    assert_cache_encrypted(&home, &secret);
    assert!(
        !home.cache_dir().join("cache.key").exists(),
        "a key file was written although the keyring works"
    );
    let doctor = home.lanyard(&["doctor", "--profile", &profile]).await;
    assert!(
        doctor
            .ok()
            .contains("✔ cache: encrypted (AES-256-GCM), key in the OS keyring"),
        "{doctor:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_the_kernel_refuses_falls_back_to_a_private_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let (_app, home, profile, secret) = two_aws_calls_with(Keyring::Refused).await;
    assert_cache_encrypted(&home, &secret);
    let key = home.cache_dir().join("cache.key");
    let mode = std::fs::metadata(&key)
        .expect("the key went to the key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let doctor = home
        .lanyard(&["--debug", "doctor", "--profile", &profile])
        .await;
    assert!(
        doctor.ok().contains(&format!(
            "✔ cache: encrypted (AES-256-GCM), key in {}",
            key.display()
        )),
        "{doctor:?}"
    );
    assert!(doctor.stderr.contains("cache key in "), "{doctor:?}");
}
