//! Test harness: spawns the real application on port 0 against a fresh Postgres database and
//! the local AWS endpoint (moto) that `tests/run` starts, and talks HTTP to it.
//!
//! Environment (set by `tests/run`): `LANYARD_TEST_DATABASE_URL` (a server URL; each test
//! gets its own database on it), `LANYARD_TEST_MOTO_URL` (moto server mode).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fault;

pub use fault::FaultProxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lanyard_server::app::Application;
use lanyard_server::auth::Role;
use lanyard_server::auth::token::TokenKeys;
use lanyard_server::config::{Config, Settings, TrustCheckMode};
use lanyard_server::domain::CustomerId;
use reqwest::{Method, Response};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The Postgres server URL tests create their databases on.
pub fn database_server_url() -> String {
    std::env::var("LANYARD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// The moto endpoint; tests that need AWS fail clearly without it.
pub fn moto_url() -> String {
    std::env::var("LANYARD_TEST_MOTO_URL")
        .expect("LANYARD_TEST_MOTO_URL is not set: run the suite with tests/run, which starts moto")
}

/// A brand-new database name on the test server (created by the app on start), dropped when
/// the guard goes, whoever still holds connections to it: a test run leaves nothing behind.
pub struct TestDatabase {
    /// The database's URL.
    pub url: String,
    name: String,
}

/// A URL for a brand-new database name on the test server (created by the app on start).
/// [`TestApp`] and [`ServerProcess`] drop the test database they ran on when they go.
pub fn fresh_database_url() -> String {
    let server = database_server_url();
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
    format!("{base}/lanyard_test_{}", uuid::Uuid::new_v4().simple())
}

impl TestDatabase {
    /// The guard of the test database `url` names (through a proxy or not); `None` for a
    /// database that is not a test's own.
    pub fn adopt(url: &str) -> Option<TestDatabase> {
        let path = url.rsplit_once('/')?.1;
        let name = path.split('?').next()?;
        name.starts_with("lanyard_test_").then(|| TestDatabase {
            url: url.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // A runtime of its own on a thread of its own: drops run inside the tests' runtime.
        let (server, name) = (database_server_url(), self.name.clone());
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Settings for a test instance: port 0, fresh database, temp data dir, moto, trust check warn
/// (moto enforces no trust policy).
pub fn test_settings(database_url: &str, data_dir: &std::path::Path) -> Settings {
    Settings {
        database_url: Some(SecretString::from(database_url)),
        listen_addr: Some("127.0.0.1:0".parse().unwrap()),
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data_dir.to_path_buf()),
        aws_endpoint_url: Some(moto_url()),
        aws_region: Some("us-east-1".into()),
        trust_check: Some(TrustCheckMode::Warn),
        db_max_connections: Some(8),
        ..Settings::default()
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub base: String,
    pub db: PgPool,
    pub database_url: String,
    /// The database the application runs on, dropped after it stops.
    _database: Option<TestDatabase>,
    pub config: Config,
    pub http: reqwest::Client,
    pub admin_token: String,
    pub data_dir: tempfile::TempDir,
    handle: lanyard_server::app::ServerHandle,
}

impl TestApp {
    /// Spawns the application with the default test settings.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns the application after `adjust` changed the settings.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        init_test_log();
        let data_dir = tempfile::tempdir().unwrap();
        let database_url = fresh_database_url();
        let mut settings = test_settings(&database_url, data_dir.path());
        adjust(&mut settings);
        let database = settings
            .database_url
            .as_ref()
            .and_then(|url| TestDatabase::adopt(secrecy::ExposeSecret::expose_secret(url)));
        let config = settings.resolve().unwrap();
        let app = Application::build(config.clone())
            .await
            .expect("application builds");
        let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], app.metrics_port()));
        let db = app.state().db.clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut test_app = TestApp {
            addr,
            metrics_addr,
            base: format!("http://{addr}"),
            db,
            database_url,
            _database: database,
            config,
            http,
            admin_token: String::new(),
            data_dir,
            handle,
        };
        test_app.admin_token = test_app.token(Role::Admin, None).await;
        test_app
    }

    /// Issues a token the way `lanyard-server token issue` does.
    pub async fn token(&self, role: Role, customers: Option<Vec<&str>>) -> String {
        self.token_for("tester", role, customers, Duration::from_secs(3600))
            .await
    }

    pub async fn token_for(
        &self,
        subject: &str,
        role: Role,
        customers: Option<Vec<&str>>,
        ttl: Duration,
    ) -> String {
        let keys = TokenKeys::load_or_generate(&self.config).unwrap();
        let customers =
            customers.map(|c| c.iter().map(|s| CustomerId::parse(s).unwrap()).collect());
        lanyard_server::registry::tokens::issue(
            &self.db, &keys, "test", subject, role, customers, ttl,
        )
        .await
        .unwrap()
        .token
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let response = self.send(method, path, token, body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// As admin.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.admin_token.clone()), body)
            .await
    }

    /// Creates a customer and returns its JSON.
    pub async fn create_customer(&self, id: &str) -> Value {
        let (status, body) = self
            .admin(
                Method::POST,
                "/v1/customers",
                Some(serde_json::json!({ "id": id, "display_name": id })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Registers a role (moto accepts any ARN) and returns its JSON.
    pub async fn register_role(&self, customer: &str, name: &str) -> Value {
        let (status, body) = self
            .admin(
                Method::PUT,
                &format!("/v1/customers/{customer}/roles/{name}"),
                Some(serde_json::json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Counts rows of a table (for "changes nothing" assertions).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// A fingerprint of every row the API can change, to show a request changed nothing.
    pub async fn snapshot(&self) -> String {
        self.snapshot_except(&[]).await
    }

    /// [`TestApp::snapshot`] without some tables (e.g. `audit_event`, where refusals are
    /// recorded).
    pub async fn snapshot_except(&self, skip: &[&str]) -> String {
        let mut out = String::new();
        for table in [
            "customer",
            "external_id",
            "role",
            "issued_token",
            "audit_event",
            "session",
            "credential_issue",
        ]
        .into_iter()
        .filter(|t| !skip.contains(t))
        {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM {table} t ORDER BY t::text"
            )))
            .fetch_all(&self.db)
            .await
            .unwrap();
            out.push_str(&format!("{table}: {rows:?}\n"));
        }
        out
    }

    pub fn stop(&self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Path of a binary built by this workspace (the real `lanyard-server` / `lanyard`).
pub fn binary(name: &str) -> PathBuf {
    // tests run from target/debug/deps; the binaries sit in target/debug.
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let path = path.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (tests/run does)",
        path.display()
    );
    path
}

fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        lanyard_server::telemetry::init(lanyard_server::config::LogFormat::Text);
    }
}

/// The real `lanyard-server` binary running as a child process.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub base: String,
    pub env: Vec<(String, String)>,
    stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The test database it runs on (`LANYARD_DATABASE_URL`), dropped after it stops.
    _database: Option<TestDatabase>,
}

impl ServerProcess {
    /// Starts `lanyard-server serve` with `env` (JSON logs) and waits until it listens.
    pub fn start(env: &[(&str, &str)]) -> ServerProcess {
        use std::io::BufRead;
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("LANYARD_LOG_FORMAT".into(), "json".into()));
        for (k, v) in [
            ("LANYARD_LISTEN_ADDR", "127.0.0.1:0"),
            ("LANYARD_METRICS_ADDR", "127.0.0.1:0"),
        ] {
            if !env.iter().any(|(key, _)| key == k) {
                env.push((k.into(), v.into()));
            }
        }
        let mut child = std::process::Command::new(binary("lanyard-server"))
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "lanyard-server listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "lanyard-server did not start:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        let database = env
            .iter()
            .find(|(k, _)| k == "LANYARD_DATABASE_URL")
            .and_then(|(_, url)| TestDatabase::adopt(url));
        ServerProcess {
            child,
            base: format!("http://{addr}"),
            env,
            stderr_lines: lines,
            _database: database,
        }
    }

    /// Issues a token with `lanyard-server token issue`, as an operator would; returns it.
    pub fn issue_token(&self, subject: &str, role: &str) -> String {
        let (code, token, stderr) =
            self.command(&["token", "issue", "--subject", subject, "--role", role]);
        assert_eq!(code, 0, "{stderr}");
        token.trim().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs another `lanyard-server` command with the same environment; returns (status, stdout, stderr).
    pub fn command(&self, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new(binary("lanyard-server"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A moto server of the test's own, for tests that change server-wide moto state (auth mode).
pub struct PrivateMoto {
    child: std::process::Child,
    pub url: String,
}

impl PrivateMoto {
    pub async fn start() -> PrivateMoto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server on PATH (tests/run puts tests/.venv/bin there)");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client
                .get(format!("{url}/moto-api/data.json"))
                .send()
                .await
                .is_ok()
            {
                return PrivateMoto { child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("private moto server did not start");
    }

    /// Runs the real AWS CLI against this moto with the given credentials; returns its JSON.
    pub fn aws(&self, creds: (&str, &str), args: &[&str]) -> Result<Value, String> {
        let out = std::process::Command::new("aws")
            .args(args)
            .args([
                "--endpoint-url",
                &self.url,
                "--output",
                "json",
                "--region",
                "us-east-1",
            ])
            .env("AWS_ACCESS_KEY_ID", creds.0)
            .env("AWS_SECRET_ACCESS_KEY", creds.1)
            .env_remove("AWS_PROFILE")
            .output()
            .expect("aws CLI on PATH (tests/run puts tests/.venv/bin there)");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        })
    }

    /// Creates an IAM user with an inline policy allowing `actions` (e.g. `sts:*`) on
    /// everything, and returns its access key pair. Call before [`PrivateMoto::enable_auth`].
    pub fn user_allowed(&self, name: &str, actions: &str) -> (String, String) {
        let root = ("testing", "testing");
        self.aws(root, &["iam", "create-user", "--user-name", name])
            .unwrap();
        let key = self
            .aws(root, &["iam", "create-access-key", "--user-name", name])
            .unwrap();
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }]
        })
        .to_string();
        self.aws(
            root,
            &[
                "iam",
                "put-user-policy",
                "--user-name",
                name,
                "--policy-name",
                "allow",
                "--policy-document",
                &policy,
            ],
        )
        .unwrap();
        (
            key["AccessKey"]["AccessKeyId"].as_str().unwrap().to_owned(),
            key["AccessKey"]["SecretAccessKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    /// Turns on moto's signature and IAM policy checks (server-wide).
    pub async fn enable_auth(&self) {
        let status = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.url))
            .header("content-type", "text/plain")
            .body("0")
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every form-encoded (Query protocol) request moto recorded: its body, decoded from the
/// recording's base64 and from gzip, and its form fields.
pub async fn recorded_form_requests() -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    use base64::Engine;
    use std::io::Read;
    let text = reqwest::get(format!(
        "{}/moto-api/recorder/download-recording",
        moto_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let raw = entry["body"].as_str().unwrap_or_default();
        let mut body = if entry["body_encoded"] == true {
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default()
        } else {
            raw.as_bytes().to_vec()
        };
        let gzip = entry["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v == "gzip");
        if gzip {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice())
                .read_to_end(&mut plain)
                .unwrap();
            body = plain;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let fields = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    urlencoding::decode(&v.replace('+', " "))
                        .unwrap()
                        .into_owned(),
                )
            })
            .collect();
        out.push((body, fields));
    }
    out
}

/// The AssumeRole requests moto recorded whose form body contains `needle`, each decoded into
/// its form fields.
pub async fn recorded_assume_roles(
    needle: &str,
) -> Vec<std::collections::BTreeMap<String, String>> {
    recorded_form_requests()
        .await
        .into_iter()
        .filter(|(body, fields)| {
            fields.get("Action").map(String::as_str) == Some("AssumeRole") && body.contains(needle)
        })
        .map(|(_, fields)| fields)
        .collect()
}

/// Polls `check` until it returns true or `deadline` passes; returns whether it did. For
/// guarantees stated as "within N seconds" (revocation across instances).
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// CLI helpers: the real `lanyard` binary and the real `aws` CLI (tests/.venv/bin, put on
// PATH by tests/run) in a private HOME, talking to a broker and to moto.
// ---------------------------------------------------------------------------------------

/// What a finished command printed and how it exited.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        &self.stdout
    }
}

/// A user's machine in a temp dir: HOME, the lanyard config and cache dirs, and the AWS
/// config file, with the AWS CLI pointed at moto.
pub struct CliHome {
    pub dir: tempfile::TempDir,
}

impl Default for CliHome {
    fn default() -> Self {
        Self::new()
    }
}

impl CliHome {
    pub fn new() -> CliHome {
        CliHome {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("lanyard-config")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("lanyard-cache")
    }

    pub fn aws_config(&self) -> PathBuf {
        self.home().join(".aws").join("config")
    }

    /// A command with this home's environment; credentials and servers of the outer
    /// environment are removed so that only what the test sets counts.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        std::fs::create_dir_all(self.home()).unwrap();
        let mut cmd = tokio::process::Command::new(program);
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_REGION",
            "LANYARD_SERVER",
            "LANYARD_TOKEN",
            "XDG_CONFIG_HOME",
            "XDG_CACHE_HOME",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.home())
            .env("LANYARD_CONFIG_DIR", self.config_dir())
            .env("LANYARD_CACHE_DIR", self.cache_dir())
            .env("LANYARD_CACHE_KEYRING", "off")
            .env("AWS_CONFIG_FILE", self.aws_config())
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home().join(".aws").join("credentials"),
            )
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", moto_url())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs a prepared command, feeding `stdin`.
    pub async fn run(mut cmd: tokio::process::Command, stdin: Option<&str>) -> Run {
        use tokio::io::AsyncWriteExt;
        if stdin.is_some() {
            cmd.stdin(std::process::Stdio::piped());
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("command finished within 120 s")
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `lanyard ARGS` with extra environment.
    pub async fn lanyard_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Run {
        let mut cmd = self.command(binary("lanyard"));
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::run(cmd, stdin).await
    }

    pub async fn lanyard(&self, args: &[&str]) -> Run {
        self.lanyard_env(args, &[], None).await
    }

    /// `lanyard login --server URL` with the token on stdin.
    pub async fn login(&self, server: &str, token: &str) -> Run {
        self.lanyard_env(&["login", "--server", server], &[], Some(token))
            .await
    }

    /// The real `aws` CLI.
    pub async fn aws(&self, args: &[&str]) -> Run {
        let mut cmd = self.command("aws");
        cmd.args(args);
        Self::run(cmd, None).await
    }

    /// Every file under this home and its dirs, with its bytes (for "changed nothing").
    pub fn files(&self) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &std::path::Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
                }
            }
        }
        let mut out = std::collections::BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

/// Credential requests the broker audited for a case (support) or profile (customer).
pub async fn credential_requests(db: &PgPool, case_or_profile: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action = 'credentials.issue'
         AND (case_id = $1 OR profile = $1)",
    )
    .bind(case_or_profile)
    .fetch_one(db)
    .await
    .unwrap()
}

/// A stand-in broker for CLI tests: answers every request with one fixed status and body,
/// and keeps each request's head (request line and headers) so a test can see what the CLI
/// sent it (a token it must not have, for instance).
pub struct FakeBroker {
    pub url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`FakeBroker`] answers one request with.
#[derive(Debug, Clone)]
pub struct FakeReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl FakeReply {
    /// A JSON answer.
    pub fn json(status: u16, body: &str) -> FakeReply {
        FakeReply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_owned(),
        }
    }

    /// A redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> FakeReply {
        FakeReply {
            status,
            headers: vec![("location".into(), location.to_owned())],
            body: String::new(),
        }
    }
}

impl FakeBroker {
    /// Answers every request with one fixed status and JSON body.
    pub async fn start(status: u16, body: &str) -> FakeBroker {
        let reply = FakeReply::json(status, body);
        Self::serve(move |_| reply.clone()).await
    }

    /// Answers each request with what `reply` makes of its path.
    pub async fn serve(reply: impl Fn(&str) -> FakeReply + Send + Sync + 'static) -> FakeBroker {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let reply = std::sync::Arc::new(reply);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (seen, reply) = (seen.clone(), reply.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    // Read the body too: closing on unread bytes resets the connection.
                    let length: usize = text
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let end = text.find("\r\n\r\n").map_or(0, |i| i + 4);
                    let mut have = head.len().saturating_sub(end);
                    while have < length {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => have += n,
                        }
                    }
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    seen.lock().unwrap().push(text);
                    let answer = reply(&path);
                    let mut response = format!("HTTP/1.1 {} Fake\r\n", answer.status);
                    for (k, v) in &answer.headers {
                        response.push_str(&format!("{k}: {v}\r\n"));
                    }
                    response.push_str(&format!(
                        "content-length: {}\r\nconnection: close\r\n\r\n{}",
                        answer.body.len(),
                        answer.body
                    ));
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakeBroker {
            url,
            requests,
            task,
        }
    }

    /// The heads of the requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
