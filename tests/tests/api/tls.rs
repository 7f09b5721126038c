//! TLS in production shape: certificates from a private CA, renewed on disk and taken in on
//! SIGHUP (or when the files change) by the real `lanyard-server` without dropping a
//! connection; the real `lanyard` CLI trusting that CA through `--ca-file`, and refusing,
//! in words, a broker whose certificate it cannot trust.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lanyard_tests::{CliHome, ServerProcess, eventually, fresh_database_url, moto_url};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A private CA, and a server certificate it signed for 127.0.0.1 and localhost.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Writes a file the way a renewal does: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn install(dir: &Path, pki: &Pki) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    replace(&key, &pki.key_pem);
    replace(&cert, &pki.cert_pem);
    (cert, key)
}

/// The real `lanyard-server` on a fresh database, speaking TLS with `cert` and `key`; its
/// https base URL.
fn serve_tls(dir: &Path, cert: &Path, key: &Path) -> (ServerProcess, String) {
    let db = fresh_database_url();
    let data = dir.join("data");
    let server = ServerProcess::start(&[
        ("LANYARD_DATABASE_URL", &db),
        ("LANYARD_DATA_DIR", data.to_str().unwrap()),
        ("LANYARD_AWS_ENDPOINT_URL", &moto_url()),
        ("LANYARD_TLS_CERT", cert.to_str().unwrap()),
        ("LANYARD_TLS_KEY", key.to_str().unwrap()),
    ]);
    let base = server.base.replace("http://", "https://");
    (server, base)
}

/// A client that trusts only `ca_pem` and opens a new connection for every request.
fn trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn healthy(client: &reqwest::Client, base: &str) -> bool {
    client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_new_connections_while_a_request_in_flight_completes() {
    let (old, new) = (pki("old"), pki("new"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = install(dir.path(), &old);
    let (server, base) = serve_tls(dir.path(), &cert, &key);
    let admin = server.issue_token("ops", "admin");
    assert!(healthy(&trusting(&old.ca_pem), &base).await);
    assert!(!healthy(&trusting(&new.ca_pem), &base).await);

    // A request in flight: its connection is open (under the old certificate) and its body
    // only half sent when the certificate is renewed.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
    let in_flight = tokio::spawn(
        trusting(&old.ca_pem)
            .post(format!("{base}/v1/customers"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send(),
    );
    // The channel holds one piece: the second send returns once the first was taken, which
    // the client does only after the TLS handshake, over the connection it then writes to.
    tx.send(Ok(br#"{"id": "#.to_vec())).await.unwrap();
    tx.send(Ok(br#""acme-corp", "#.to_vec())).await.unwrap();

    install(dir.path(), &new);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let renewed = eventually(Duration::from_secs(10), || async {
        healthy(&trusting(&new.ca_pem), &base).await
    })
    .await;
    assert!(
        renewed,
        "new connections get the renewed certificate after SIGHUP"
    );
    assert!(!healthy(&trusting(&old.ca_pem), &base).await);

    // The request that began under the old certificate completes.
    tx.send(Ok(br#""display_name": "Acme"}"#.to_vec()))
        .await
        .unwrap();
    drop(tx);
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    // Without a signal: files changed on disk are taken in too.
    install(dir.path(), &old);
    let watched = eventually(Duration::from_secs(10), || async {
        healthy(&trusting(&old.ca_pem), &base).await
    })
    .await;
    assert!(
        watched,
        "a certificate changed on disk is served without SIGHUP"
    );
    assert!(server.log().contains("TLS certificate reloaded"));
}

/// A body stream fed through a channel.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_trusts_a_private_ca_given_with_ca_file_and_refuses_a_wrong_one_in_words() {
    let (ours, theirs) = (pki("ours"), pki("theirs"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = install(dir.path(), &ours);
    let ca = dir.path().join("ca.pem");
    let wrong_ca = dir.path().join("wrong-ca.pem");
    std::fs::write(&ca, &ours.ca_pem).unwrap();
    std::fs::write(&wrong_ca, &theirs.ca_pem).unwrap();
    let (server, base) = serve_tls(dir.path(), &cert, &key);
    let token = server.issue_token("alice", "admin");
    let home = CliHome::new();

    // The system roots alone do not know a private CA; neither does a wrong CA file.
    for extra in [vec![], vec!["--ca-file", wrong_ca.to_str().unwrap()]] {
        let mut args = vec!["login", "--server", &base];
        args.extend(extra);
        let run = home.lanyard_env(&args, &[], Some(&token)).await;
        assert_eq!(run.code, 1, "{}", run.stdout);
        assert!(run.stderr.contains("not trusted"), "{}", run.stderr);
        assert!(run.stderr.contains("--ca-file"), "{}", run.stderr);
        assert!(!home.config_dir().join("token").exists(), "nothing stored");
    }

    // With the CA: logged in, and the CA file is kept with the login for later commands.
    let run = home
        .lanyard_env(
            &[
                "login",
                "--server",
                &base,
                "--ca-file",
                ca.to_str().unwrap(),
            ],
            &[],
            Some(&token),
        )
        .await;
    assert!(run.ok().contains("Logged in"), "{}", run.stderr);
    let run = home.lanyard(&["customers", "list"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // LANYARD_CA_FILE works as the flag does.
    let other = CliHome::new();
    let run = other
        .lanyard_env(
            &["login", "--server", &base],
            &[("LANYARD_CA_FILE", ca.to_str().unwrap())],
            Some(&token),
        )
        .await;
    assert!(run.ok().contains("Logged in"), "{}", run.stderr);
}
