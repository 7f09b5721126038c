//! Operations: what an operator relies on when things go wrong or change around the server —
//! readiness that follows the database (and recovers by itself), TLS on the API listener,
//! and a SIGTERM that lets in-flight requests finish. Faults are injected with
//! [`lanyard_tests::FaultProxy`] in front of the real Postgres and moto.

use std::future::Future;
use std::time::{Duration, Instant};

use lanyard_tests::fault::{socket_of, through};
use lanyard_tests::{FaultProxy, ServerProcess, TestApp, database_server_url, moto_url};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

/// Polls `check` until it returns `Some`, failing with `what` after `limit`. Only for
/// waiting on a condition the test cannot be told about; never as a fixed pause.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Request timeout of the apps behind a database proxy: "no hang" means an answer before it.
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// An app whose every database connection goes through a fault proxy in front of the test
/// Postgres; it is ready and has one customer.
async fn app_behind_database_proxy() -> (TestApp, FaultProxy) {
    let postgres = socket_of(&database_server_url(), 5432).await;
    let proxy = FaultProxy::start(postgres).await;
    let database_url = through(&lanyard_tests::fresh_database_url(), proxy.addr());
    let app = TestApp::spawn_with(|s| {
        s.database_url = Some(SecretString::from(database_url.as_str()));
        s.request_timeout_secs = Some(REQUEST_TIMEOUT_SECS);
    })
    .await;
    assert!(
        proxy.open_connections() > 0,
        "the app reaches Postgres through the proxy"
    );
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")), "{body}");
    app.create_customer("acme-corp").await;
    (app, proxy)
}

/// While the database is gone: /readyz says so with 503, and an API call answers 503
/// `unavailable` (not 500), both before the request timeout.
async fn assert_unavailable(app: &TestApp) {
    let started = Instant::now();
    let response = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "database unreachable", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(REQUEST_TIMEOUT_SECS),
        "readiness answered after {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let token = app.admin_token.clone();
    let response = app
        .send(Method::GET, "/v1/customers", Some(&token), None)
        .await;
    let elapsed = started.elapsed();
    let status = response.status();
    let content_type = response.headers()["content-type"].clone();
    let problem: Value = response.json().await.unwrap();
    assert_eq!(status, 503, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(
        problem["type"], "urn:lanyard:problem:unavailable",
        "{problem}"
    );
    assert!(problem["request_id"].is_string(), "{problem}");
    assert!(
        elapsed < Duration::from_secs(REQUEST_TIMEOUT_SECS),
        "answered after {elapsed:?}"
    );
}

/// After the database returns: the same process becomes ready and serves again.
async fn assert_recovers(app: &TestApp) {
    eventually(
        "/readyz answers 200 after the database returns",
        Duration::from_secs(15),
        || async {
            let (status, _) = app.call(Method::GET, "/readyz", None, None).await;
            (status == 200).then_some(())
        },
    )
    .await;
    let (status, body) = app.admin(Method::GET, "/v1/customers", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("acme-corp"), "{body}");
}

#[tokio::test]
async fn readiness_fails_while_the_database_is_unreachable_and_recovers_without_a_restart() {
    let (app, proxy) = app_behind_database_proxy().await;
    // Postgres goes away: every pooled connection dies, new ones are refused.
    proxy.cut().await;
    assert_unavailable(&app).await;
    proxy.restore();
    assert_recovers(&app).await;
}

/// Found with the fault proxy: sqlx reports EOF after SSLRequest as a protocol error,
/// which used to be a 500.
#[tokio::test]
async fn a_database_front_end_without_a_backend_gets_503_not_500() {
    let (app, proxy) = app_behind_database_proxy().await;
    // A pooler or load balancer whose Postgres is gone: it accepts, then closes at once.
    proxy.cut_accepting().await;
    assert_unavailable(&app).await;
    proxy.restore();
    assert_recovers(&app).await;
}

#[tokio::test]
async fn the_api_speaks_tls_when_given_a_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let app = TestApp::spawn_with(|s| {
        s.tls_cert = Some(cert_path.clone());
        s.tls_key = Some(key_path.clone());
    })
    .await;
    let port = app.addr.port();

    // A client that trusts exactly this certificate reaches the API by IP and by name.
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .resolve("localhost", app.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let response = https
            .get(format!("https://{host}:{port}/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https://{host}:{port}/healthz: {e:?}"));
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
    let response = https
        .get(format!("https://127.0.0.1:{port}/v1/customers"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The certificate is what the server presents: a client without it refuses the server.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let refused = untrusting
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "untrusted certificate accepted: {refused:?}"
    );

    // Plain HTTP to the TLS port gets no answer.
    match app.http.get(app.url("/healthz")).send().await {
        Err(_) => {}
        Ok(response) => panic!(
            "plain HTTP to the TLS listener answered {}",
            response.status()
        ),
    }
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    // The server reaches STS (moto) through a proxy that can hold its traffic, so a role
    // verification stays in flight for exactly as long as the test wants.
    let moto = socket_of(&moto_url(), 80).await;
    let sts = FaultProxy::start(moto).await;
    let sts_url = format!("http://{}", sts.addr());
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = lanyard_tests::fresh_database_url();
    let mut server = ServerProcess::start(&[
        ("LANYARD_DATABASE_URL", &database_url),
        ("LANYARD_DATA_DIR", data_dir.path().to_str().unwrap()),
        ("LANYARD_AWS_ENDPOINT_URL", &sts_url),
        ("LANYARD_AWS_REGION", "us-east-1"),
        ("LANYARD_TRUST_CHECK", "warn"),
        ("LANYARD_SHUTDOWN_GRACE_SECS", "30"),
    ]);
    let api = socket_of(&server.base, 80).await;
    let token = server.issue_token("ops", "admin");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let created = http
        .post(server.url("/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({ "id": "acme-corp", "display_name": "Acme Corp" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    sts.hold();
    let in_flight = tokio::spawn({
        let request = http
            .put(server.url("/v1/customers/acme-corp/roles/reader"))
            .bearer_auth(&token)
            .json(&json!({ "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess" }));
        async move { request.send().await }
    });
    // The handler is now waiting on STS.
    tokio::time::timeout(Duration::from_secs(30), sts.held())
        .await
        .expect("the role verification reached STS");

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Draining: the listener is closed, so new connections are refused...
    eventually(
        "the API listener closes after SIGTERM",
        Duration::from_secs(10),
        || async {
            match tokio::net::TcpStream::connect(api).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            }
        },
    )
    .await;
    // The server logs before it closes the listener; the thread reading its output may
    // still be behind.
    eventually(
        "the server logs the shutdown request",
        Duration::from_secs(10),
        || async { server.log().contains("shutdown requested").then_some(()) },
    )
    .await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited with a request in flight\n{}",
        server.log()
    );

    // ...while the request already in flight completes once STS answers.
    sts.restore();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    let role: Value = response.json().await.unwrap();
    assert_eq!(role["status"], "verified", "{role}");

    let status = eventually(
        "the server exits after draining",
        Duration::from_secs(30),
        || {
            let exited = server.child.try_wait().unwrap();
            async move { exited }
        },
    )
    .await;
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    assert!(
        server.log().contains("lanyard-server stopped"),
        "{}",
        server.log()
    );
}

/// The harness's fault proxy does what the tests above rely on, against a tiny echo server.
#[tokio::test]
async fn the_fault_proxy_refuses_closes_holds_delays_and_restores() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let proxy = FaultProxy::start(upstream).await;
    let round_trip = |mut socket: TcpStream| async move {
        socket.write_all(b"ping").await?;
        let mut buf = [0_u8; 4];
        socket.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok::<TcpStream, std::io::Error>(socket)
    };

    let open = round_trip(TcpStream::connect(proxy.addr()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(proxy.open_connections(), 1);

    // cut: the open connection is closed, new ones are refused.
    proxy.cut().await;
    assert_eq!(proxy.open_connections(), 0);
    assert!(round_trip(open).await.is_err());
    let refused = TcpStream::connect(proxy.addr()).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    // restore: same address, forwarding again.
    proxy.restore();
    let open = round_trip(TcpStream::connect(proxy.addr()).await.unwrap())
        .await
        .unwrap();

    // cut_accepting: connecting works, but the connection is closed at once.
    proxy.cut_accepting().await;
    assert!(round_trip(open).await.is_err());
    let accepted = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(round_trip(accepted).await.is_err());
    proxy.restore();

    // hold: bytes wait in the proxy until restore.
    let mut socket = round_trip(TcpStream::connect(proxy.addr()).await.unwrap())
        .await
        .unwrap();
    proxy.hold();
    socket.write_all(b"ping").await.unwrap();
    proxy.held().await;
    let mut buf = [0_u8; 4];
    // held() returned: the chunk is parked in the proxy, before the echo server.
    let nothing = socket.try_read(&mut buf).unwrap_err();
    assert_eq!(nothing.kind(), std::io::ErrorKind::WouldBlock);
    proxy.restore();
    socket.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // delay: each chunk waits at least that long, each way.
    proxy.delay(Duration::from_millis(100));
    let started = Instant::now();
    let socket = round_trip(socket).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    drop(socket);
    drop(proxy);
}
