//! Identity: tokens of a real OpenID provider (oidc-provider, standing in for a CI system's
//! token service) exchanged for Lanyard tokens at `POST /v1/auth/token` (RFC 8693), and
//! every way such a token must be refused.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lanyard_tests::oidc::{OidcClient, OidcProvider};
use lanyard_tests::{CliHome, TestApp, binary, eventually, jwt_claims};
use reqwest::Method;
use serde_json::{Value, json};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const WORKFLOW: &str = "acme/billing-api/.github/workflows/deploy.yml@refs/heads/main";

fn billing_pipeline() -> OidcClient {
    OidcClient {
        id: "ci-billing",
        alg: "ES256",
        claims: json!({"repository": "acme/billing-api", "ref": "refs/heads/main",
                       "job_workflow_ref": WORKFLOW}),
    }
}

/// The Lanyard subject of the billing pipeline: its workflow after the issuer (the default
/// subject prefix).
fn subject_of(provider: &OidcProvider) -> String {
    format!(
        "{}:{WORKFLOW}",
        provider.issuer.trim_start_matches("http://")
    )
}

fn other_pipeline() -> OidcClient {
    OidcClient {
        id: "ci-other",
        alg: "RS256",
        claims: json!({"repository": "acme/other", "ref": "refs/heads/main",
                       "job_workflow_ref": "acme/other/.github/workflows/x.yml@refs/heads/main"}),
    }
}

/// The binding of the issue's example: billing repositories on main get service tokens for
/// `customer`, named by their workflow.
fn billing_binding(customer: &str) -> String {
    format!(
        r#"
        [[oidc.issuers.bindings]]
        name = "billing-deploys"
        claims = {{ repository = "acme/billing-*", ref = "refs/heads/main" }}
        role = "service"
        customers = ["{customer}"]
        subject_claim = "job_workflow_ref"
        ttl = "15m"
        "#
    )
}

/// An application trusting the given issuers (`[[oidc.issuers]]` tables, as TOML).
async fn app_trusting(issuers_toml: &str) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lanyard.toml");
    std::fs::write(&path, issuers_toml).unwrap();
    let app = TestApp::spawn_with(|s| s.config = Some(path)).await;
    (app, dir)
}

fn issuer_toml(issuer: &str, extra: &str, bindings: &str) -> String {
    format!(
        "[[oidc.issuers]]\nissuer = \"{issuer}\"\naudiences = [\"lanyard\"]\n{extra}\n{bindings}\n"
    )
}

async fn exchange(app: &TestApp, subject_token: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = app
        .http
        .post(app.url("/v1/auth/token"))
        .form(&[
            ("grant_type", GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", JWT),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// A provider with the billing and the other pipeline, and an app whose one issuer binds
/// the billing repositories to `acme-corp`.
async fn billing_setup(extra: &str) -> (OidcProvider, TestApp, tempfile::TempDir) {
    let provider = OidcProvider::start(&[billing_pipeline(), other_pipeline()]).await;
    let (app, dir) = app_trusting(&issuer_toml(
        &provider.issuer,
        extra,
        &billing_binding("acme-corp"),
    ))
    .await;
    (provider, app, dir)
}

#[tokio::test]
async fn a_ci_token_matching_a_binding_becomes_a_recorded_audited_revocable_lanyard_token() {
    let (provider, app, _dir) = billing_setup("").await;
    let (status, body, headers) = exchange(&app, &provider.token("ci-billing").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    // The binding says 15 minutes, but the Lanyard token does not outlive the provider's
    // token (300 s).
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((280..=300).contains(&expires_in), "{expires_in}");
    assert_eq!(headers["cache-control"], "no-store");
    let token = body["access_token"].as_str().unwrap();

    // The Lanyard token carries the binding's role, customers and subject, and where it
    // came from.
    let claims = jwt_claims(token);
    assert_eq!(claims["iss"], "lanyard");
    assert_eq!(claims["src"]["iss"], provider.issuer.as_str());
    assert_eq!(claims["src"]["sub"], "ci-billing");
    let (status, me) = app
        .call(Method::GET, "/v1/auth/whoami", Some(token), None)
        .await;
    assert_eq!(status, 200, "{me}");
    // The subject is the workflow, after the issuer: it cannot pass for another issuer's.
    let subject = subject_of(&provider);
    assert_eq!(me["subject"], subject.as_str());
    assert_eq!(me["role"], "service");
    assert_eq!(me["customers"], json!(["acme-corp"]));

    // Recorded like any issued token, with its provenance.
    let jti = uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).unwrap();
    let (recorded, source_issuer, source_subject): (String, String, String) = sqlx::query_as(
        "SELECT subject, source_issuer, source_subject FROM issued_token WHERE jti = $1",
    )
    .bind(jti)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (
            recorded.as_str(),
            source_issuer.as_str(),
            source_subject.as_str()
        ),
        (subject.as_str(), provider.issuer.as_str(), "ci-billing")
    );
    // `lanyard-server token list` shows where it came from.
    let out = std::process::Command::new(binary("lanyard-server"))
        .args(["token", "list"])
        .env("LANYARD_DATABASE_URL", &app.database_url)
        .env("LANYARD_DATA_DIR", app.data_dir.path())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let line = list
        .lines()
        .find(|l| l.starts_with(&jti.to_string()))
        .unwrap_or_else(|| panic!("exchanged token listed: {list}"));
    assert!(
        line.ends_with(&format!("ci-billing @ {}", provider.issuer)),
        "{line}"
    );
    // Audited: issuer, external subject, binding, outcome.
    let (actor, outcome, detail): (String, String, Value) = sqlx::query_as(
        "SELECT actor, outcome, detail FROM audit_event WHERE action = 'token.exchange'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), outcome.as_str()),
        (subject.as_str(), "success")
    );
    assert_eq!(detail["source_issuer"], provider.issuer.as_str());
    assert_eq!(detail["source_subject"], "ci-billing");
    assert_eq!(detail["binding"], "billing-deploys");
    assert_eq!(detail["jti"], jti.to_string());
    assert!(
        !detail.to_string().contains(token),
        "no token in the audit row"
    );

    // Revocable like any token.
    lanyard_server::registry::tokens::revoke(&app.db, "test", jti)
        .await
        .unwrap();
    let refused = eventually(Duration::from_secs(5), || async {
        app.call(Method::GET, "/v1/auth/whoami", Some(token), None)
            .await
            .0
            == 401
    })
    .await;
    assert!(refused, "a revoked exchanged token is refused");
}

#[tokio::test]
async fn a_ci_token_of_another_repository_gets_403_that_names_the_issuer_and_no_claim() {
    let (provider, app, _dir) = billing_setup("").await;
    let before = app.count("issued_token").await;
    let (status, body, _) = exchange(&app, &provider.token("ci-other").await).await;
    assert_eq!(status, 403, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(&provider.issuer), "{detail}");
    assert!(detail.contains("no binding"), "{detail}");
    for leak in ["repository", "acme/other", "ref", "billing"] {
        assert!(
            !detail.contains(leak),
            "the refusal names a claim: {detail}"
        );
    }
    assert_eq!(app.count("issued_token").await, before, "no token issued");
    let (outcome, detail): (String, Value) =
        sqlx::query_as("SELECT outcome, detail FROM audit_event WHERE action = 'token.exchange'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(outcome, "denied");
    assert_eq!(detail["source_subject"], "ci-other");
}

#[tokio::test]
async fn a_matched_binding_that_cannot_use_the_token_answers_exactly_as_no_binding() {
    // Matches the billing binding's claims, but lacks the claim that names the holder.
    let nameless = OidcClient {
        id: "ci-billing-nameless",
        alg: "ES256",
        claims: json!({"repository": "acme/billing-web", "ref": "refs/heads/main"}),
    };
    let provider = OidcProvider::start(&[nameless, other_pipeline()]).await;
    let (app, _dir) = app_trusting(&issuer_toml(
        &provider.issuer,
        "",
        &billing_binding("acme-corp"),
    ))
    .await;
    let (status, matched, _) = exchange(&app, &provider.token("ci-billing-nameless").await).await;
    let (_, unmatched, _) = exchange(&app, &provider.token("ci-other").await).await;
    assert_eq!(status, 403, "{matched}");
    assert_eq!(
        matched["detail"], unmatched["detail"],
        "the caller cannot tell them apart"
    );
    // The audit row says why.
    let details: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM audit_event WHERE action = 'token.exchange' ORDER BY occurred_at",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let why = details[0]["detail"].as_str().unwrap();
    assert!(why.contains("billing-deploys matched"), "{why}");
    assert!(why.contains("job_workflow_ref"), "{why}");
}

/// Sends `token` for exchange and expects 401; returns the problem's detail.
async fn refused(app: &TestApp, token: &str) -> String {
    let before = app.count("issued_token").await;
    let (status, body, headers) = exchange(app, token).await;
    assert_eq!(status, 401, "{body}");
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(app.count("issued_token").await, before, "no token issued");
    body["detail"].as_str().unwrap().to_owned()
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Claims the billing binding would accept.
fn billing_claims(provider: &OidcProvider) -> Value {
    provider.claims(
        json!({"sub": "ci-billing", "repository": "acme/billing-api",
                           "ref": "refs/heads/main", "job_workflow_ref": WORKFLOW}),
    )
}

#[tokio::test]
async fn a_token_with_alg_none_is_refused() {
    let (provider, app, _dir) = billing_setup("").await;
    let kid = provider.key(Algorithm::RS256).kid;
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": kid, "typ": "JWT"})),
        b64(&billing_claims(&provider))
    );
    let detail = refused(&app, &token).await;
    assert!(detail.contains("not a signed JWT"), "{detail}");
}

#[tokio::test]
async fn a_token_signed_hs256_with_the_issuers_public_key_is_refused() {
    let (provider, app, _dir) = billing_setup("").await;
    let key = provider.key(Algorithm::RS256);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid);
    let token = jsonwebtoken::encode(
        &header,
        &billing_claims(&provider),
        &EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .unwrap();
    let detail = refused(&app, &token).await;
    assert!(detail.contains("only RS256, ES256 and EdDSA"), "{detail}");
}

/// Claims the billing binding would accept, changed by `alter`, signed with the provider's
/// own `alg` key: refused with 401; returns the answer's detail.
async fn refused_claims(alg: Algorithm, alter: impl FnOnce(&mut Value, i64)) -> String {
    let (provider, app, _dir) = billing_setup("").await;
    let mut claims = billing_claims(&provider);
    alter(&mut claims, chrono::Utc::now().timestamp());
    refused(&app, &provider.sign(alg, &claims)).await
}

#[tokio::test]
async fn a_token_of_an_issuer_that_is_not_configured_is_refused() {
    let detail = refused_claims(Algorithm::ES256, |c, _| {
        c["iss"] = json!("https://token.actions.githubusercontent.com")
    })
    .await;
    assert!(detail.contains("is not trusted"), "{detail}");
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let detail = refused_claims(Algorithm::ES256, |c, _| {
        c["aud"] = json!("sts.amazonaws.com")
    })
    .await;
    assert!(detail.contains("(aud)"), "{detail}");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let detail = refused_claims(Algorithm::RS256, |c, now| {
        c["iat"] = json!(now - 600);
        c["exp"] = json!(now - 120);
    })
    .await;
    assert!(detail.contains("expired"), "{detail}");
}

#[tokio::test]
async fn a_token_not_valid_before_a_future_time_is_refused() {
    let detail = refused_claims(Algorithm::ES256, |c, now| c["nbf"] = json!(now + 600)).await;
    assert!(detail.contains("not valid yet"), "{detail}");
}

#[tokio::test]
async fn unknown_kids_are_refused_and_a_flood_of_them_fetches_the_keys_at_most_once_per_interval() {
    // One fetch for unknown kids per 60 s: the whole flood fits in one interval.
    let (provider, app, _dir) = billing_setup("keys_min_refresh = \"60s\"").await;
    let (status, body, _) = exchange(&app, &provider.token("ci-billing").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        provider.key_fetches().await,
        1,
        "the first exchange fetched the keys"
    );

    let key = provider.key(Algorithm::ES256);
    let encoding = EncodingKey::from_ec_pem(key.private_pem.as_bytes()).unwrap();
    for i in 0..50 {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(format!("made-up-{i}"));
        let token = jsonwebtoken::encode(&header, &billing_claims(&provider), &encoding).unwrap();
        let detail = refused(&app, &token).await;
        assert!(detail.contains("does not publish"), "{detail}");
    }
    assert_eq!(
        provider.key_fetches().await,
        1,
        "50 unknown kids within the refresh interval caused no fetch"
    );
}

#[tokio::test]
async fn a_second_issuer_cannot_sign_for_the_first_by_reusing_its_kid() {
    let first = OidcProvider::start(&[billing_pipeline()]).await;
    let second = OidcProvider::start(&[billing_pipeline()]).await;
    let toml = format!(
        "{}{}",
        issuer_toml(&first.issuer, "", &billing_binding("acme-corp")),
        issuer_toml(&second.issuer, "", &billing_binding("acme-corp"))
    );
    let (app, _dir) = app_trusting(&toml).await;
    let first_kid = first.key(Algorithm::ES256).kid;
    let second_key = second.key(Algorithm::ES256);
    let encoding = EncodingKey::from_ec_pem(second_key.private_pem.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(first_kid);

    // Claiming to be the first issuer, under its kid, signed with the second's key.
    let as_first = jsonwebtoken::encode(&header, &billing_claims(&first), &encoding).unwrap();
    let detail = refused(&app, &as_first).await;
    assert!(detail.contains("signature is invalid"), "{detail}");
    // As the second issuer, naming the first's kid: the second publishes no such key.
    let as_second = jsonwebtoken::encode(&header, &billing_claims(&second), &encoding).unwrap();
    let detail = refused(&app, &as_second).await;
    assert!(detail.contains("does not publish"), "{detail}");
    // Each issuer's own tokens pass.
    assert_eq!(
        exchange(&app, &first.token("ci-billing").await).await.0,
        200
    );
    assert_eq!(
        exchange(&app, &second.token("ci-billing").await).await.0,
        200
    );
}

#[tokio::test]
async fn tokens_of_an_issuer_without_bindings_are_refused() {
    let provider = OidcProvider::start(&[billing_pipeline()]).await;
    let (app, _dir) = app_trusting(&issuer_toml(&provider.issuer, "", "")).await;
    let detail = refused(&app, &provider.token("ci-billing").await).await;
    assert!(detail.contains("has no bindings"), "{detail}");
    assert_eq!(
        provider.key_fetches().await,
        0,
        "nothing was fetched for it"
    );
}

#[tokio::test]
async fn after_the_provider_rotates_its_keys_new_tokens_pass_after_one_key_fetch() {
    let (provider, app, _dir) = billing_setup("keys_min_refresh = \"1s\"").await;
    assert_eq!(
        exchange(&app, &provider.token("ci-billing").await).await.0,
        200
    );
    assert_eq!(provider.key_fetches().await, 1);
    provider.rotate().await;
    let token = provider.token("ci-billing").await;
    // Within the refresh interval the new kid is unknown; once it has passed, one fetch
    // brings the new keys. No restart.
    let passed = eventually(Duration::from_secs(10), || async {
        exchange(&app, &token).await.0 == 200
    })
    .await;
    assert!(passed, "a token under the new key was exchanged");
    assert_eq!(
        provider.key_fetches().await,
        2,
        "exactly one more key fetch"
    );
}

#[tokio::test]
async fn while_the_provider_is_down_cached_keys_serve_until_their_bound_then_503_then_recovery() {
    let (mut provider, app, _dir) =
        billing_setup("keys_ttl = \"1s\"\nkeys_stale = \"3s\"\nkeys_min_refresh = \"1s\"").await;
    assert_eq!(
        exchange(&app, &provider.token("ci-billing").await).await.0,
        200
    );
    // A token under the key the broker holds, made while the provider is still up.
    let signed = provider.sign(Algorithm::ES256, &billing_claims(&provider));
    provider.stop();

    let series = format!(
        "lanyard_oidc_key_fetches_total{{issuer=\"{}\",result=\"failed\"}}",
        provider.issuer
    );
    // Past the keys' TTL a fetch fails, and the stale keys still serve.
    let served_stale = eventually(Duration::from_secs(10), || async {
        // Each exchange past the TTL tries a fetch (at most one per second).
        let status = exchange(&app, &signed).await.0;
        status == 200 && app.metric(&series).await >= 1.0
    })
    .await;
    assert!(served_stale, "stale keys served while the provider is down");
    // Past the stale bound: 503, saying why.
    let last = std::sync::Mutex::new(Value::Null);
    let unavailable = eventually(Duration::from_secs(15), || async {
        let (status, body, _) = exchange(&app, &signed).await;
        *last.lock().unwrap() = body;
        status == 503
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(unavailable, "503 after the stale bound: {last}");
    let detail = last["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("cannot be fetched"), "{detail}");

    // The provider comes back (with new keys): tokens pass again, no broker restart.
    provider.restart().await;
    let token = provider.token("ci-billing").await;
    let recovered = eventually(Duration::from_secs(10), || async {
        exchange(&app, &token).await.0 == 200
    })
    .await;
    assert!(recovered, "exchanges work again once the provider answers");
}

#[tokio::test]
async fn malformed_exchange_requests_get_400_naming_the_field() {
    let (provider, app, _dir) = billing_setup("").await;
    let token = provider.token("ci-billing").await;
    for (field, form) in [
        (
            "grant_type",
            vec![
                ("grant_type", "client_credentials"),
                ("subject_token", token.as_str()),
                ("subject_token_type", JWT),
            ],
        ),
        (
            "subject_token_type",
            vec![
                ("grant_type", GRANT),
                ("subject_token", token.as_str()),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:saml2",
                ),
            ],
        ),
        (
            "actor_token",
            vec![
                ("grant_type", GRANT),
                ("subject_token", token.as_str()),
                ("subject_token_type", JWT),
                ("actor_token", token.as_str()),
            ],
        ),
    ] {
        let response = app
            .http
            .post(app.url("/v1/auth/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    assert_eq!(app.count("issued_token").await, 1, "only the admin's token");
}

// ---------------------------------------------------------------------------
// CI without secrets: the real `lanyard` and `aws` CLIs on a HOME with no Lanyard files.
// ---------------------------------------------------------------------------

/// An app whose billing binding grants `acme-corp`, which has one role.
async fn ci_setup() -> (OidcProvider, TestApp, tempfile::TempDir) {
    let (provider, app, dir) = billing_setup("").await;
    app.create_customer("acme-corp").await;
    app.register_role("acme-corp", "readonly").await;
    (provider, app, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_fresh_runner_an_oidc_token_and_one_eval_of_export_are_the_whole_setup() {
    let (provider, app, _dir) = ci_setup().await;
    let home = CliHome::new();
    let token = provider.token("ci-billing").await;
    let mut cmd = home.command("bash");
    cmd.arg("-c")
        .arg(format!(
            "eval \"$('{}' export --customer acme-corp --format env)\" && aws sts get-caller-identity",
            binary("lanyard").display()
        ))
        .env("LANYARD_SERVER", &app.base)
        .env("LANYARD_OIDC_TOKEN", &token);
    let run = CliHome::run(cmd, None).await;
    let caller: Value = serde_json::from_str(run.ok()).unwrap();
    let arn = caller["Arn"].as_str().unwrap();
    assert!(arn.contains("customer.acme-corp."), "{arn}");
    assert!(
        !home.config_dir().join("config.toml").exists(),
        "no login was stored"
    );
    assert!(
        !home.config_dir().join("token").exists(),
        "no token was stored"
    );
    // The session is the workflow's, through the exchanged token.
    let owner: String =
        sqlx::query_scalar("SELECT requested_by FROM session WHERE customer_id = 'acme-corp'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(owner, subject_of(&provider));
    assert!(
        !run.stderr.contains(&token),
        "the OIDC token is never printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_takes_the_oidc_token_from_a_file_or_from_github_actions() {
    let (provider, app, _dir) = ci_setup().await;
    let home = CliHome::new();
    // A Kubernetes projected token: a file, read on every use.
    let file = home.home().join("token");
    std::fs::create_dir_all(home.home()).unwrap();
    std::fs::write(&file, format!("{}\n", provider.token("ci-billing").await)).unwrap();
    let run = home
        .lanyard_env(
            &[
                "credential-process",
                "--customer",
                "acme-corp",
                "--no-cache",
            ],
            &[
                ("LANYARD_SERVER", &app.base),
                ("LANYARD_OIDC_TOKEN_FILE", file.to_str().unwrap()),
            ],
            None,
        )
        .await;
    let document: Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(document["Version"], 1);

    // GitHub Actions: the request URL and token GitHub sets for `id-token: write`.
    let url = provider.github_request_url();
    let run = home
        .lanyard_env(
            &[
                "credential-process",
                "--customer",
                "acme-corp",
                "--no-cache",
            ],
            &[
                ("LANYARD_SERVER", &app.base),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", &url),
                (
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                    lanyard_tests::oidc::GITHUB_REQUEST_TOKEN,
                ),
            ],
            None,
        )
        .await;
    let document: Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(document["Version"], 1);
    let exchanges: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action = 'token.exchange' AND outcome = 'success'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(exchanges, 2);

    // A wrong request token: GitHub refuses, and so does lanyard, in one line.
    let run = home
        .lanyard_env(
            &[
                "credential-process",
                "--customer",
                "acme-corp",
                "--no-cache",
            ],
            &[
                ("LANYARD_SERVER", &app.base),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", &url),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "wrong"),
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("id-token: write"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_token_the_broker_refuses_fails_the_command_with_the_brokers_reason() {
    let (provider, app, _dir) = ci_setup().await;
    let home = CliHome::new();
    let run = home
        .lanyard_env(
            &["export", "--customer", "acme-corp"],
            &[
                ("LANYARD_SERVER", &app.base),
                ("LANYARD_OIDC_TOKEN", &provider.token("ci-other").await),
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.is_empty(), "nothing to eval: {}", run.stdout);
    assert!(run.stderr.contains("no binding"), "{}", run.stderr);
    assert!(run.stderr.contains("HTTP 403"), "{}", run.stderr);
    // Not a JWT at all: refused before anything is sent.
    let run = home
        .lanyard_env(
            &["export", "--customer", "acme-corp"],
            &[
                ("LANYARD_SERVER", &app.base),
                ("LANYARD_OIDC_TOKEN", "not a token"),
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("does not hold a JWT"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// People: `lanyard login --sso` at the provider the broker names, then the AWS CLI.
// ---------------------------------------------------------------------------

/// An app whose SSO issuer is `provider` (client `lanyard-cli`), binding e-mail addresses
/// of acme.example to support tokens that last two minutes (so every later command renews
/// them: renewal starts five minutes before the end), with customer acme-corp.
async fn sso_setup() -> (OidcProvider, TestApp, tempfile::TempDir) {
    let provider = OidcProvider::start(&[billing_pipeline()]).await;
    let toml = format!(
        r#"
        [[oidc.issuers]]
        issuer = "{}"
        audiences = ["lanyard-cli"]
        cli_client_id = "lanyard-cli"
        [[oidc.issuers.bindings]]
        name = "staff"
        claims = {{ email = "*@acme.example" }}
        role = "support"
        customers = ["*"]
        subject_claim = "email"
        subject_prefix = ""
        ttl = "2m"
        "#,
        provider.issuer
    );
    let (app, dir) = app_trusting(&toml).await;
    app.create_customer("acme-corp").await;
    app.register_role("acme-corp", "readonly").await;
    (provider, app, dir)
}

/// Runs `lanyard login --sso ARGS` in `home`, signs in as `login` at the URL it shows, and
/// returns what the command printed.
async fn sso_login(
    home: &CliHome,
    provider: &OidcProvider,
    app: &TestApp,
    args: &[&str],
    login: &str,
) -> lanyard_tests::Run {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = home.command(binary("lanyard"));
    cmd.args(["login", "--sso", "--server", &app.base])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut shown = Vec::new();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the CLI shows where to sign in")
            .unwrap()
            .unwrap_or_else(|| panic!("the CLI ended without a sign-in URL: {shown:?}"));
        shown.push(line.clone());
        if let Some(at) = line
            .starts_with("To sign in")
            .then(|| line.find("http://"))
            .flatten()
        {
            break line[at..].split_whitespace().next().unwrap().to_owned();
        }
    };
    provider.sign_in(&url, login).await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("login --sso finished")
        .unwrap();
    let mut stderr = shown.join("\n");
    while let Ok(Some(line)) = lines.next_line().await {
        stderr.push('\n');
        stderr.push_str(&line);
    }
    lanyard_tests::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    }
}

/// After the login: support access through the AWS CLI against moto, then a renewal
/// without a prompt (the token is within five minutes of its end from the start).
async fn use_and_renew(home: &CliHome, app: &TestApp, case: &str) {
    let run = home
        .lanyard(&["support-access", "--customer", "acme-corp", "--case", case])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let profile = format!("support-acme-corp-{case}");
    let run = home
        .aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await;
    let caller: Value = serde_json::from_str(run.ok()).unwrap();
    assert!(
        caller["Arn"]
            .as_str()
            .unwrap()
            .contains("alice@acme.example"),
        "{caller}"
    );
    let exchanges = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM audit_event WHERE action = 'token.exchange' AND outcome = 'success'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap()
    };
    let before = exchanges().await;
    let token = std::fs::read_to_string(home.config_dir().join("token")).unwrap();
    // stdin is closed: there is nobody to prompt.
    let run = home.lanyard(&["sessions", "list"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(case), "{}", run.stdout);
    assert!(exchanges().await > before, "the login was renewed");
    assert_ne!(
        std::fs::read_to_string(home.config_dir().join("token")).unwrap(),
        token,
        "a renewed token was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sign_in_with_pkce_logs_in_reaches_aws_and_renews_without_a_prompt() {
    let (provider, app, _dir) = sso_setup().await;
    let home = CliHome::new();
    let run = sso_login(&home, &provider, &app, &["--no-browser"], "alice").await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("code_challenge_method=S256"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("as alice@acme.example (support) through single sign-on"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("renews itself"), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "Signing in to {} at {}",
            app.base, provider.issuer
        )),
        "{}",
        run.stderr
    );
    // The refresh token is sealed: not in any file in clear.
    for (path, bytes) in home.files() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("refresh_token"),
            "{} holds it in clear",
            path.display()
        );
    }
    use_and_renew(&home, &app, "CS-PKCE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_flow_sign_in_logs_in_reaches_aws_and_renews_without_a_prompt() {
    let (provider, app, _dir) = sso_setup().await;
    let home = CliHome::new();
    let run = sso_login(&home, &provider, &app, &["--device"], "alice").await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("enter the code"), "{}", run.stderr);
    assert!(
        run.stdout.contains("through single sign-on"),
        "{}",
        run.stdout
    );
    use_and_renew(&home, &app, "CS-DEVICE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_fails_says_in_one_line_to_sign_in_again() {
    let (mut provider, app, _dir) = sso_setup().await;
    let home = CliHome::new();
    let run = sso_login(&home, &provider, &app, &["--no-browser"], "alice").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    provider.stop();
    // The token has time left: it still serves, with the warning.
    let run = home.lanyard(&["sessions", "list"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(warning.len(), 1, "{}", run.stderr);
    assert!(
        warning[0].contains("run `lanyard login --sso"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn the_broker_names_its_sso_issuer_and_client_without_a_token() {
    let (provider, app, _dir) = sso_setup().await;
    let (status, body) = app.call(Method::GET, "/v1/auth/sso", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issuer"], provider.issuer.as_str());
    assert_eq!(body["client_id"], "lanyard-cli");
    assert!(body["scopes"].as_str().unwrap().contains("offline_access"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stored_by_a_plain_login_after_an_sso_login_is_never_renewed_into_the_sso_identity()
{
    let (provider, app, _dir) = sso_setup().await;
    let home = CliHome::new();
    let run = sso_login(&home, &provider, &app, &["--no-browser"], "alice").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A break-glass token, close to its end (it would be due for renewal).
    let admin = app
        .token_for(
            "ops-breakglass",
            lanyard_server::auth::Role::Admin,
            None,
            Duration::from_secs(120),
        )
        .await;
    assert!(
        home.login(&app.base, &admin)
            .await
            .ok()
            .contains("ops-breakglass")
    );
    let run = home.lanyard(&["sessions", "list"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(home.config_dir().join("token"))
            .unwrap()
            .trim(),
        admin,
        "the plain login's token stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_the_loopback_listener_without_the_sign_ins_state_changes_nothing() {
    let (provider, app, _dir) = sso_setup().await;
    let home = CliHome::new();
    use tokio::io::AsyncBufReadExt;
    let mut cmd = home.command(binary("lanyard"));
    cmd.args(["login", "--sso", "--no-browser", "--server", &app.base])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next_line().await.unwrap().expect("a sign-in URL");
        if let Some(at) = line
            .starts_with("To sign in")
            .then(|| line.find("http://"))
            .flatten()
        {
            break line[at..].to_owned();
        }
    };
    let parsed = reqwest::Url::parse(&url).unwrap();
    let redirect = parsed
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // Another local process knocks first, with a made-up code and state.
    let knock = reqwest::get(format!("{redirect}?code=stolen&state=guess"))
        .await
        .unwrap();
    assert_eq!(knock.status(), 400);
    // The real sign-in still completes.
    provider.sign_in(&url, "alice").await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("through single sign-on"));
}
