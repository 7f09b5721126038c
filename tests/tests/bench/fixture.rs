//! What several benchmarks set up alike: the release server's environment on a database of
//! its own with moto as STS, and a customer with a registered role.

use lanyard_tests::{ServerProcess, moto_url};
use serde_json::json;

/// The release server's environment: `db_url`, `data_dir`, moto as STS, the trust check
/// warning only (moto enforces no trust policy), per-request log lines off (startup lines
/// on), then `extra`.
pub fn server_env(
    db_url: &str,
    data_dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let fixed = [
        ("LANYARD_DATABASE_URL", db_url.to_owned()),
        ("LANYARD_DATA_DIR", data_dir.to_string_lossy().into_owned()),
        ("LANYARD_AWS_ENDPOINT_URL", moto_url()),
        ("LANYARD_TRUST_CHECK", "warn".to_owned()),
        (
            "RUST_LOG",
            "warn,lanyard_server=info,lanyard_server::http=warn".to_owned(),
        ),
    ];
    fixed
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .collect()
}

/// Starts the release server with [`server_env`].
pub fn start_server(
    db_url: &str,
    data_dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> ServerProcess {
    let env = server_env(db_url, data_dir, extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ServerProcess::start(&env)
}

/// A new customer with its `readonly` role registered, created by `admin` on `server`.
pub async fn customer_with_role(server: &ServerProcess, admin: &str) -> String {
    let http = reqwest::Client::new();
    let customer = lanyard_tests::unique("bench");
    let created = http
        .post(server.url("/v1/customers"))
        .bearer_auth(admin)
        .json(&json!({ "id": customer }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let role = http
        .put(server.url(&format!("/v1/customers/{customer}/roles/readonly")))
        .bearer_auth(admin)
        .json(&json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" }))
        .send()
        .await
        .unwrap();
    assert_eq!(role.status(), 200);
    customer
}

/// A loopback address with a free port (for a server's metrics listener).
pub fn free_addr() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}
