//! The application under test, in process: built on port 0 against a database of its own,
//! and the HTTP helpers tests call it with.

use std::net::SocketAddr;
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

use crate::database::{TestDatabase, fresh_migrated_database_url};
use crate::emulator::moto_url;

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

/// `prefix-` and 12 random hex digits: ids (customers, cases) no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
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
        Self::spawn_built(adjust, Ok).await
    }

    /// Spawns the application with an audit writer that writes nothing: for the audit-off
    /// benchmark only (`tests/bench P3`).
    pub async fn spawn_unaudited() -> TestApp {
        Self::spawn_built(|_| {}, Application::without_audit_for_benchmark).await
    }

    /// Spawns the application after `adjust` changed the settings and `finish` the built
    /// application.
    async fn spawn_built(
        adjust: impl FnOnce(&mut Settings),
        finish: impl FnOnce(Application) -> anyhow::Result<Application>,
    ) -> TestApp {
        init_test_log();
        let data_dir = tempfile::tempdir().unwrap();
        let copy = fresh_migrated_database_url().await;
        let mut settings = test_settings(&copy, data_dir.path());
        adjust(&mut settings);
        // The database the application really runs on (a test may point it elsewhere, e.g.
        // through a fault proxy): dropped when the test is done. An unused copy goes now.
        let effective = settings
            .database_url
            .as_ref()
            .map(|url| secrecy::ExposeSecret::expose_secret(url).to_owned());
        if effective.as_deref() != Some(copy.as_str()) {
            drop(TestDatabase::adopt(&copy));
        }
        let database_url = effective.unwrap_or(copy);
        let database = TestDatabase::adopt(&database_url);
        let config = settings.resolve().unwrap();
        let app = Application::build(config.clone())
            .await
            .and_then(finish)
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

    /// Another instance on this one's database and signing key, after `adjust` changed its
    /// settings.
    pub async fn spawn_beside(&self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let key = self.data_dir.path().join("signing-key.pem");
        let db_url = self.database_url.clone();
        TestApp::spawn_with(|s| {
            s.database_url = Some(db_url.as_str().into());
            s.signing_key_file = Some(key);
            adjust(s);
        })
        .await
    }

    /// A token for `subject` with `role`, valid an hour.
    pub async fn person(&self, subject: &str, role: Role) -> String {
        self.token_for(subject, role, None, Duration::from_secs(3600))
            .await
    }

    /// Asks for a support session on `role` of `customer` for `case`, in `tier` when named,
    /// for `secs` seconds.
    pub async fn request_support(
        &self,
        token: &str,
        customer: &str,
        role: &str,
        case: &str,
        tier: Option<&str>,
        secs: i64,
    ) -> (u16, Value) {
        let mut body = serde_json::json!({
            "kind": "support", "customer": customer, "role": role, "case_id": case,
            "reason": "customer reports failing uploads", "duration_seconds": secs
        });
        if let Some(tier) = tier {
            body["tier"] = serde_json::json!(tier);
        }
        self.call(Method::POST, "/v1/sessions", Some(token), Some(body))
            .await
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

    /// Reads the series `name{labels}` from the metrics listener (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
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

fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        lanyard_server::telemetry::init(lanyard_server::config::LogFormat::Text);
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

/// The claims of a JWT as its payload states them (signature not checked).
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A session policy (one statement allowing `logs:Get*`) whose compact JSON is exactly
/// `chars` characters long, its `Sid` padded to get there.
pub fn session_policy_of(chars: usize) -> Value {
    let with_sid = |sid: String| {
        serde_json::json!({ "Version": "2012-10-17", "Statement": [
            { "Sid": sid, "Effect": "Allow", "Action": "logs:Get*", "Resource": "*" }
        ] })
    };
    let base = with_sid(String::new()).to_string().len();
    assert!(chars > base, "a policy needs at least {base} characters");
    let policy = with_sid("A".repeat(chars - base));
    assert_eq!(policy.to_string().len(), chars);
    policy
}
