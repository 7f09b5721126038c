//! Moving a HOME that reaches customer accounts the old way (static keys, `role_arn` with an
//! `external_id`) onto Lanyard: `lanyard migrate` with the real AWS CLI using the profiles it
//! leaves; `lanyard profiles`; and the diagnostics (LANYARD_DEBUG, LANYARD_LOG_FILE) of the
//! `credential-process` runs that `aws` starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lanyard_server::auth::Role;
use lanyard_tests::{CliHome, Run, TestApp, binary, unique};
use serde_json::Value;

/// A broker with a customer whose role `readonly` (arn:…:role/LanyardAccess) is verified,
/// and a home logged in with a service token. Returns (app, home, customer, token).
async fn service_home() -> (TestApp, CliHome, String, String) {
    let app = TestApp::spawn().await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let token = app
        .token_for("batch-job", Role::Service, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    (app, home, customer, token)
}

/// Credentials the broker handed out (and audited), all customers and profiles.
async fn credential_issues(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_event WHERE action = 'credentials.issue'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

fn credentials_file(home: &CliHome) -> PathBuf {
    home.home().join(".aws").join("credentials")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn caller_arn(run: &Run) -> String {
    let v: Value = serde_json::from_str(run.ok()).unwrap();
    v["Arn"].as_str().unwrap().to_owned()
}

/// The lanyard binary as the profiles name it.
fn exe() -> String {
    binary("lanyard")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

const STATIC_SECRET: &str = "static/Secret+11111111111111111111111111";
const OPERATOR_SECRET: &str = "operator/Secret+0000000000000000000000000";

/// `[default]` and the unrelated `work` profile (a role no customer registered), with their
/// comments and odd spacing: what must stay byte for byte.
const DEFAULT_SECTION: &str =
    "# Alice's AWS settings: keep this comment\n[default]\nregion = eu-west-1\noutput=json\n\n";
const WORK_SECTION: &str = "[profile work]\nrole_arn = arn:aws:iam::123456789012:role/Dev\n\
    source_profile = operator\ns3 =\n    max_concurrent_requests = 20\n\n";
const OPERATOR_SECTION: &str = "[operator]\naws_access_key_id = AKIAOPERATOR00000001\n\
    aws_secret_access_key = operator/Secret+0000000000000000000000000\n\n\
    # static keys of the acme account\n";

fn old_config(external_id: &str) -> String {
    format!(
        "{DEFAULT_SECTION}[profile acme-prod]\n\
         role_arn = arn:aws:iam::111122223333:role/LanyardAccess\n\
         external_id   =   {external_id}\n\
         source_profile = operator\n\
         region = us-east-1\n\
         ; the prod account\n\n\
         {WORK_SECTION}[profile acme-static]\nregion = us-east-1\n"
    )
}

fn old_credentials() -> String {
    format!(
        "{OPERATOR_SECTION}[acme-static]\naws_access_key_id=AKIASTATIC0000000001\n\
         aws_secret_access_key  =  {STATIC_SECRET}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_turns_static_keys_and_external_id_roles_into_working_lanyard_profiles() {
    let (app, home, customer, _) = service_home().await;
    // Another customer registered the same role ARN: the profile's external ID tells them
    // apart.
    let other = unique("other");
    app.create_customer(&other).await;
    app.register_role(&other, "readonly").await;
    let (_, shown) = app
        .admin(
            reqwest::Method::GET,
            &format!("/v1/customers/{customer}"),
            None,
        )
        .await;
    let external_id = shown["external_id"].as_str().unwrap().to_owned();
    std::fs::create_dir_all(home.home().join(".aws")).unwrap();
    std::fs::write(home.aws_config(), old_config(&external_id)).unwrap();
    std::fs::write(credentials_file(&home), old_credentials()).unwrap();
    std::fs::set_permissions(
        credentials_file(&home),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let args = [
        "migrate",
        "--static-profile",
        "acme-static",
        "--customer",
        customer.as_str(),
    ];

    // A static profile that holds no keys: one line, nothing changed.
    let before = home.files();
    let bad = home
        .lanyard(&[
            "migrate",
            "--static-profile",
            "work",
            "--customer",
            &customer,
        ])
        .await;
    assert_ne!(bad.code, 0, "{bad:?}");
    assert!(
        bad.stderr.starts_with("lanyard: --static-profile work"),
        "{bad:?}"
    );
    assert_eq!(home.files(), before);

    // --dry-run prints the plan as a unified diff, secrets redacted, and changes nothing.
    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let dry = home.lanyard(&dry_args).await;
    let out = dry.ok();
    assert_eq!(home.files(), before, "the dry run changed a file");
    let config_path = home.aws_config().display().to_string();
    assert!(out.contains("Would migrate 2 profiles"), "{out}");
    assert!(out.contains(&format!("--- {config_path}\n")), "{out}");
    assert!(
        out.contains("\n-role_arn = arn:aws:iam::111122223333:role/LanyardAccess\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("\n-external_id   =   {external_id}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "\n+credential_process = {} credential-process --profile acme-prod\n",
            exe()
        )),
        "{out}"
    );
    assert!(
        out.contains("\n-aws_secret_access_key  =  [redacted]\n"),
        "{out}"
    );
    assert!(
        out.contains("work: role arn:aws:iam::123456789012:role/Dev is not"),
        "{out}"
    );
    assert!(
        !out.contains(STATIC_SECRET) && !out.contains(OPERATOR_SECRET),
        "{out}"
    );

    // The real run.
    let run = home.lanyard(&args).await;
    let out = run.ok().to_owned();
    assert!(out.contains("Migrated 2 profiles to Lanyard"), "{run:?}");
    let exe = exe();
    assert_eq!(
        std::fs::read_to_string(home.aws_config()).unwrap(),
        format!(
            "{DEFAULT_SECTION}[profile acme-prod]\nregion = us-east-1\n\
             credential_process = {exe} credential-process --profile acme-prod\n\
             ; the prod account\n\n\
             {WORK_SECTION}[profile acme-static]\nregion = us-east-1\n\
             credential_process = {exe} credential-process --profile acme-static\n"
        )
    );
    let credentials = std::fs::read_to_string(credentials_file(&home)).unwrap();
    assert_eq!(credentials, format!("{OPERATOR_SECTION}[acme-static]\n"));
    assert_eq!(
        mode(&credentials_file(&home)),
        0o600,
        "the file keeps its mode"
    );
    // The untouched sections, byte for byte.
    let config = std::fs::read_to_string(home.aws_config()).unwrap();
    assert!(config.starts_with(DEFAULT_SECTION));
    assert!(config.contains(WORK_SECTION));
    assert!(credentials.starts_with(OPERATOR_SECTION));

    // The old secrets and external ID are in a 0600 backup whose path was printed.
    let backup = out
        .split("The removed settings (static keys, external IDs) are in ")
        .nth(1)
        .and_then(|rest| rest.split(" (mode 0600)").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no backup path in {out}"));
    assert_eq!(mode(&backup), 0o600);
    let saved = std::fs::read_to_string(&backup).unwrap();
    for line in [
        format!("aws_secret_access_key  =  {STATIC_SECRET}\n"),
        "aws_access_key_id=AKIASTATIC0000000001\n".to_owned(),
        format!("external_id   =   {external_id}\n"),
        "role_arn = arn:aws:iam::111122223333:role/LanyardAccess\n".to_owned(),
        "[profile acme-prod]\n".to_owned(),
        "[acme-static]\n".to_owned(),
    ] {
        assert!(saved.contains(&line), "{line} not in {saved}");
    }
    assert!(
        !saved.contains(OPERATOR_SECRET),
        "keys that stay are not copied"
    );

    // Each profile was proven at the broker before it was written.
    assert_eq!(credential_issues(&app).await, 2);
    // The AWS CLI uses both through lanyard: the broker's assumed role, not the old keys;
    // one broker request each, then the local cache.
    for _ in 0..2 {
        for profile in ["acme-prod", "acme-static"] {
            let arn = caller_arn(
                &home
                    .aws(&["sts", "get-caller-identity", "--profile", profile])
                    .await,
            );
            assert!(
                arn.contains("assumed-role/LanyardAccess/"),
                "{profile}: {arn}"
            );
            assert!(
                arn.contains(&customer) || arn.contains("batch-job"),
                "{arn}"
            );
        }
        assert_eq!(credential_issues(&app).await, 4);
    }

    // Run again: nothing to migrate, and not a byte changes anywhere.
    let before = home.files();
    let again = home.lanyard(&args).await;
    assert!(again.ok().starts_with("Nothing to migrate"), "{again:?}");
    assert!(
        again.stdout.contains("2 profiles use Lanyard already"),
        "{again:?}"
    );
    assert_eq!(home.files(), before);

    // `lanyard profiles` lists both, with what the cache holds (filled by the aws calls).
    let list = home.lanyard(&["profiles"]).await;
    let table = list.ok();
    assert!(table.starts_with("PROFILE "), "{table}");
    for profile in ["acme-prod", "acme-static"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{profile} ")))
            .unwrap_or_else(|| panic!("{profile} not in {table}"));
        assert!(row.contains(" customer "), "{row}");
        assert!(row.contains(&customer), "{row}");
        assert!(row.contains("cached until 20"), "{row}");
    }
    assert!(
        !table.contains("work") && !table.contains("operator"),
        "{table}"
    );
    let json = home.lanyard(&["profiles", "--output", "json"]).await;
    let v: Value = serde_json::from_str(json.ok()).unwrap();
    let rows = v["profiles"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(rows[0]["name"], "acme-prod");
    assert_eq!(rows[0]["role"], "readonly");
    assert_eq!(rows[0]["cache"]["state"], "cached");
    assert_eq!(rows[1]["name"], "acme-static");
    assert_eq!(rows[1]["customer"], customer.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanyard_debug_and_log_file_reach_the_runs_aws_starts_and_hold_no_secret() {
    let (_app, home, customer, token) = service_home().await;
    home.lanyard(&["setup-customer", "--customer", &customer])
        .await
        .ok();
    let profile = format!("customer-{customer}");
    // A cold cache: the first aws call goes to the broker, the second is served locally.
    std::fs::remove_dir_all(home.cache_dir()).unwrap();
    let log = home.dir.path().join("logs").join("lanyard.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let aws = |debug: &'static str| {
        let mut cmd = home.command("aws");
        cmd.args(["sts", "get-caller-identity", "--profile", &profile])
            .env("LANYARD_LOG_FILE", &log)
            .env("LANYARD_DEBUG", debug);
        CliHome::run(cmd, None)
    };
    aws("1").await.ok();
    aws("0").await.ok();

    assert_eq!(mode(&log), 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" credential-process profile="))
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    for (record, source) in records.iter().zip(["broker", "cache"]) {
        for field in [
            format!("profile={profile} "),
            "kind=customer ".to_owned(),
            format!("customer={customer} "),
            "session=- ".to_owned(),
            format!("source={source} "),
            "outcome=ok ".to_owned(),
            "duration_ms=".to_owned(),
        ] {
            assert!(record.contains(&field), "{field} not in {record}");
        }
    }
    // LANYARD_DEBUG=1 reached the first run (its diagnostics are in the file); =0 turned
    // them off for the second.
    let debug: Vec<&str> = text.lines().filter(|l| l.contains(" debug: ")).collect();
    assert!(
        debug
            .iter()
            .any(|l| l.contains("asking the broker for customer session")),
        "{text}"
    );
    assert!(
        debug.iter().any(|l| l.contains("token [redacted]")),
        "{text}"
    );
    let pids: std::collections::BTreeSet<&str> = debug
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(pids.len(), 1, "debug lines from one run only: {text}");

    // No secret in the file: the token, and the secret key and session token those runs
    // handed out (the ones the cache still serves).
    let served: Value = serde_json::from_str(
        home.lanyard(&["credential-process", "--profile", &profile])
            .await
            .ok(),
    )
    .unwrap();
    let key_id = served["AccessKeyId"].as_str().unwrap();
    assert!(
        records[1].contains(&format!("access_key={key_id} ")),
        "{text}"
    );
    for secret in [
        token.as_str(),
        served["SecretAccessKey"].as_str().unwrap(),
        served["SessionToken"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "a secret reached the log:\n{text}");
    }

    // A run that fails says so in its line, and the file keeps growing (appended).
    let mut cmd = home.command(binary("lanyard"));
    cmd.args(["credential-process", "--profile", &profile, "--no-cache"])
        .env("LANYARD_LOG_FILE", &log)
        .env("LANYARD_TOKEN", "not-a-valid-token-at-all");
    let failed = CliHome::run(cmd, None).await;
    assert_ne!(failed.code, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.contains("outcome=error error="), "{last}");
    assert!(last.contains("HTTP 401"), "{last}");
    assert!(!text.contains("not-a-valid-token-at-all"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_profiles_have_help() {
    let home = CliHome::new();
    for (command, flag) in [
        ("migrate", "--dry-run"),
        ("migrate", "--static-profile"),
        ("profiles", "--output"),
        ("credential-process", "LANYARD_LOG_FILE"),
        ("credential-process", "LANYARD_DEBUG"),
    ] {
        let run = home.lanyard(&[command, "--help"]).await;
        let help = run.ok();
        assert!(
            help.contains(&format!("Usage: lanyard {command}")),
            "{help}"
        );
        assert!(help.contains(flag), "{command}: {flag} not in {help}");
    }
    // Nothing to migrate in an empty HOME, and no broker needed to say so.
    let run = home.lanyard(&["migrate"]).await;
    assert!(run.ok().starts_with("Nothing to migrate"), "{run:?}");
    let run = home.lanyard(&["profiles"]).await;
    assert!(run.ok().starts_with("No Lanyard profiles"), "{run:?}");
}
