//! The real binaries as an operator runs them: help, start against a fresh database, the
//! token bootstrap, revocation, and graceful shutdown on SIGTERM.

use std::time::Duration;

use lanyard_tests::{ServerProcess, binary, moto_url};
use serde_json::json;

fn run(bin: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(binary(bin))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_command_has_help_and_version() {
    for (bin, cmd) in [
        ("lanyard-server", vec!["--help"]),
        ("lanyard-server", vec!["serve", "--help"]),
        ("lanyard-server", vec!["token", "--help"]),
        ("lanyard-server", vec!["token", "issue", "--help"]),
        ("lanyard-server", vec!["token", "revoke", "--help"]),
        ("lanyard-server", vec!["token", "list", "--help"]),
        ("lanyard-server", vec!["openapi", "--help"]),
        ("lanyard-server", vec!["migrate", "--help"]),
        ("lanyard-server", vec!["audit", "--help"]),
        ("lanyard-server", vec!["audit", "verify", "--help"]),
        ("lanyard", vec!["--help"]),
        ("lanyard", vec!["ping", "--help"]),
    ] {
        let (code, text) = run(bin, &cmd);
        assert_eq!(code, 0, "{bin} {cmd:?}: {text}");
        assert!(text.contains("Usage:"), "{bin} {cmd:?}: {text}");
    }
    let (code, text) = run("lanyard-server", &["--help"]);
    assert_eq!(code, 0);
    for var in [
        "LANYARD_DATABASE_URL",
        "LANYARD_LISTEN_ADDR",
        "LANYARD_METRICS_ADDR",
        "LANYARD_DATA_DIR",
        "LANYARD_AWS_ENDPOINT_URL",
        "LANYARD_CLOUDWATCH_NAMESPACE",
        "LANYARD_EXTERNAL_ID_PREFIX",
        "LANYARD_TRUST_CHECK",
        "LANYARD_TLS_CERT",
        "LANYARD_TLS_KEY",
    ] {
        assert!(text.contains(var), "--help does not document {var}");
    }
    let (code, text) = run("lanyard-server", &["--version"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("lanyard-server "));
    let (code, text) = run("lanyard", &["--version"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("lanyard "));
}

#[test]
fn openapi_command_prints_the_committed_document() {
    let out = std::process::Command::new(binary("lanyard-server"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        include_str!("../../../openapi/lanyard.json"),
        "openapi/lanyard.json is stale: run `cargo run -p lanyard-server -- openapi > openapi/lanyard.json`"
    );
}

#[tokio::test]
async fn an_operator_bootstraps_an_admin_token_and_revokes_it() {
    let scratch = tempfile::tempdir().unwrap();
    // A data dir that does not exist yet: the server creates it, owner-only.
    let data_dir = scratch.path().join("data");
    let db_url = lanyard_tests::fresh_database_url();
    let moto = moto_url();

    // Before the server ever ran there is no signing key: `token issue` says where it looked
    // and creates nothing (a key of its own would sign tokens the server refuses).
    let out = std::process::Command::new(binary("lanyard-server"))
        .args(["token", "issue", "--subject", "alice", "--role", "admin"])
        .current_dir(scratch.path())
        .env("LANYARD_DATABASE_URL", &db_url)
        .env_remove("LANYARD_DATA_DIR")
        .env_remove("LANYARD_SIGNING_KEY_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "no token is printed");
    let default_key = scratch.path().join("lanyard-data").join("signing-key.pem");
    assert!(
        stderr.contains(&format!("no signing key at {}", default_key.display())),
        "{stderr}"
    );
    assert!(
        !scratch.path().join("lanyard-data").exists(),
        "nothing was created"
    );

    let mut server = ServerProcess::start(&[
        ("LANYARD_DATABASE_URL", &db_url),
        ("LANYARD_DATA_DIR", data_dir.to_str().unwrap()),
        ("LANYARD_AWS_ENDPOINT_URL", &moto),
        ("LANYARD_TRUST_CHECK", "warn"),
    ]);
    // The signing key was generated once, private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let key = data_dir.join("signing-key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let http = reqwest::Client::new();
    let ready = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let (code, token, stderr) = server.command(&[
        "token",
        "issue",
        "--subject",
        "alice",
        "--role",
        "admin",
        "--ttl",
        "1d",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "stdout holds the token alone");
    let create = http
        .post(server.url("/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({ "id": "acme-corp", "display_name": "Acme Corp" }))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);

    let (code, list, _) = server.command(&["token", "list"]);
    assert_eq!(code, 0);
    let line = list
        .lines()
        .find(|l| l.contains("alice"))
        .expect("token listed");
    let jti = line.split_whitespace().next().unwrap().to_owned();
    assert!(!list.contains(&token), "token list never prints tokens");

    let (code, _, stderr) = server.command(&["token", "revoke", &jti]);
    assert_eq!(code, 0, "{stderr}");
    // The server heard of the revocation from the database (LISTEN/NOTIFY), within 1 s.
    let refused = lanyard_tests::eventually(Duration::from_secs(1), || async {
        http.get(server.url("/v1/customers"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
    assert!(refused, "the revoked token still worked after 1 s");

    let (code, _, stderr) =
        server.command(&["token", "issue", "--subject", "bob", "--role", "wizard"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("wizard"), "{stderr}");
    let (code, _, stderr) = server.command(&[
        "token",
        "issue",
        "--subject",
        "bob",
        "--role",
        "admin",
        "--ttl",
        "soon",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("invalid duration"), "{stderr}");

    assert!(!server.log().contains(&token), "tokens never reach the log");
    let status = server.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("lanyard-server stopped"));
    // A clean stop is not a lost connection, and no line runs on for a kilobyte.
    assert!(!log.contains("lost its connection"), "{log}");
    assert!(log.lines().all(|l| l.len() < 1024), "{log}");
}

#[test]
fn a_bad_configuration_is_reported_clearly() {
    let out = std::process::Command::new(binary("lanyard-server"))
        .args([
            "serve",
            "--external-id-prefix",
            "has space",
            "--listen-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("external_id_prefix"), "{stderr}");
    let out = std::process::Command::new(binary("lanyard-server"))
        .args([
            "serve",
            "--database-url",
            "postgres://postgres:hunter2@127.0.0.1:1/x",
            "--listen-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Postgres"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password must not be printed: {stderr}"
    );
}

/// A TOML file (`--config` / `LANYARD_CONFIG`) as an operator writes one: `migrate` and
/// `serve` read it, the environment overrides it key by key, and a key it does not know is
/// refused by name.
#[tokio::test]
async fn a_config_file_drives_migrate_serve_and_token_issue() {
    let scratch = tempfile::tempdir().unwrap();
    let database = lanyard_tests::TestDatabase::adopt(&lanyard_tests::fresh_database_url())
        .expect("a test database");
    let data_dir = scratch.path().join("data");
    let file = scratch.path().join("lanyard.toml");
    std::fs::write(
        &file,
        format!(
            "database_url = \"{}\"\ndata_dir = \"{}\"\naws_endpoint_url = \"{}\"\n\
             trust_check = \"warn\"\nexternal_id_prefix = \"FileCo\"\n\
             # overridden by LANYARD_LISTEN_ADDR below: nothing listens on port 1\n\
             listen_addr = \"127.0.0.1:1\"\n",
            database.url,
            data_dir.display(),
            moto_url()
        ),
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();

    // `migrate` with --config creates and migrates the file's database, and says so; again,
    // it changes nothing.
    for _ in 0..2 {
        let (code, text) = run("lanyard-server", &["migrate", "--config", file_arg]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("database is up to date"), "{text}");
    }
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(migrations > 0, "migrate ran the migrations");
    drop(conn);

    let mut server = ServerProcess::start(&[("LANYARD_CONFIG", file_arg)]);
    let admin = server.issue_token("ops", "admin");
    let http = reqwest::Client::new();
    for id in ["acme-corp", "globex"] {
        let created: serde_json::Value = http
            .post(server.url("/v1/customers"))
            .bearer_auth(&admin)
            .json(&json!({ "id": id, "display_name": id }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let external_id = created["external_id"].as_str().unwrap();
        assert!(external_id.starts_with("FileCo"), "{created}");
    }

    // A token limited to one customer: whoami says so, and the other customer does not exist
    // for it.
    let (code, token, stderr) = server.command(&[
        "token",
        "issue",
        "--subject",
        "carol",
        "--role",
        "support",
        "--customer",
        "acme-corp",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim();
    let me: serde_json::Value = http
        .get(server.url("/v1/auth/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "carol", "{me}");
    assert_eq!(me["customers"], json!(["acme-corp"]), "{me}");
    for (customer, status) in [("acme-corp", 200), ("globex", 404)] {
        let got = http
            .get(server.url(&format!("/v1/customers/{customer}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(got, status, "{customer}");
    }
    let (code, _, stderr) = server.command(&[
        "token",
        "issue",
        "--subject",
        "dave",
        "--role",
        "support",
        "--customer",
        "Not Valid",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--customer Not Valid"), "{stderr}");
    assert!(server.terminate().success());

    // A key the server does not know is named, and nothing starts.
    std::fs::write(&file, "listen_adress = \"127.0.0.1:0\"\n").unwrap();
    let (code, text) = run("lanyard-server", &["migrate", "--config", file_arg]);
    assert_ne!(code, 0);
    assert!(text.contains("listen_adress"), "{text}");
    assert!(text.contains(file_arg), "{text}");
}
