//! A real OpenID provider for the identity tests: panva/oidc-provider (tests/oidc, pinned by
//! its lockfile, installed by `tests/run`), one per test on a port the OS picks. Clients use
//! the client-credentials grant and stand in for a CI system's token service: each gets
//! JWT access tokens with its own claims, signed RS256 or ES256. The provider also hands
//! the test its keys, so that a test can sign what the provider never would (expired,
//! another audience, ...) with the provider's own key.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A client of the provider: a CI pipeline, say, whose tokens carry `claims`.
pub struct OidcClient {
    pub id: &'static str,
    /// `RS256` or `ES256`.
    pub alg: &'static str,
    pub claims: Value,
}

pub struct OidcProvider {
    child: std::process::Child,
    /// The issuer (`iss`), `http://127.0.0.1:<port>`.
    pub issuer: String,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// One of the provider's signing keys.
pub struct ProviderKey {
    pub kid: String,
    pub alg: Algorithm,
    pub private_pem: String,
    pub public_pem: String,
}

/// The audience of every token the provider issues.
pub const AUDIENCE: &str = "lanyard";
/// The bearer GitHub's token request wants (`ACTIONS_ID_TOKEN_REQUEST_TOKEN`).
pub const GITHUB_REQUEST_TOKEN: &str = "github-request-token-for-tests";

impl OidcProvider {
    pub async fn start(clients: &[OidcClient]) -> OidcProvider {
        let dir = tempfile::tempdir().unwrap();
        let clients = clients
            .iter()
            .map(|c| {
                json!({"client_id": c.id, "client_secret": secret_of(c.id), "alg": c.alg,
                       "claims": c.claims})
            })
            .collect::<Vec<_>>();
        // GitHub's token request answers for the first client.
        let github = json!({"client_id": clients.first().map(|c| c["client_id"].clone()),
                            "request_token": GITHUB_REQUEST_TOKEN});
        std::fs::write(
            dir.path().join("config.json"),
            json!({"port": 0, "keys_file": dir.path().join("keys.json"), "audience": AUDIENCE,
                   "clients": clients, "github": github})
            .to_string(),
        )
        .unwrap();
        let (child, port) = spawn(&dir.path().join("config.json"), dir.path()).await;
        OidcProvider {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// A token from the provider for `client` (client-credentials grant).
    pub async fn token(&self, client: &str) -> String {
        let response = self
            .http
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", &secret_of(client)),
                ("resource", "urn:lanyard:broker"),
                ("scope", "lanyard"),
            ])
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token from the provider: {body}"))
            .to_owned()
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL` as GitHub Actions sets it, answered by the provider
    /// for its first client.
    pub fn github_request_url(&self) -> String {
        format!("{}/__test/github?api-version=2.0", self.issuer)
    }

    /// Signs in at `url` as a person would in a browser: follows redirects, keeps cookies,
    /// submits each page's form (the provider's device confirmation, its login page as
    /// `login`, its consent page) until a page has no form, or the browser lands on a
    /// loopback callback (the CLI's listener, which answers it).
    pub async fn sign_in(&self, url: &str, login: &str) {
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut response = browser.get(url).send().await.unwrap();
        for _ in 0..12 {
            let at = response.url().clone();
            let html = response.text().await.unwrap();
            if at.path() == "/callback" {
                return;
            }
            let Some((action, mut fields)) = first_form(&html) else {
                return;
            };
            if html.contains("name=\"login\"") {
                fields.push(("login".into(), login.into()));
                fields.push(("password".into(), "any".into()));
            }
            response = browser
                .post(at.join(&action).unwrap())
                .form(&fields)
                .send()
                .await
                .unwrap();
        }
        panic!("the sign-in at {url} did not finish");
    }

    /// The keys the provider signs with now.
    pub fn keys(&self) -> Vec<ProviderKey> {
        let text = std::fs::read_to_string(self.dir.path().join("keys.json")).unwrap();
        let keys: Vec<Value> = serde_json::from_str(&text).unwrap();
        keys.iter()
            .map(|k| ProviderKey {
                kid: k["kid"].as_str().unwrap().to_owned(),
                alg: match k["alg"].as_str().unwrap() {
                    "RS256" => Algorithm::RS256,
                    "ES256" => Algorithm::ES256,
                    other => panic!("unexpected key algorithm {other}"),
                },
                private_pem: k["private_pem"].as_str().unwrap().to_owned(),
                public_pem: k["public_pem"].as_str().unwrap().to_owned(),
            })
            .collect()
    }

    /// The provider's key for `alg`.
    pub fn key(&self, alg: Algorithm) -> ProviderKey {
        self.keys().into_iter().find(|k| k.alg == alg).unwrap()
    }

    /// Claims as the provider puts them in its tokens (issuer, audience, times), over which
    /// `extra` is laid.
    pub fn claims(&self, extra: Value) -> Value {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({"iss": self.issuer, "aud": AUDIENCE, "sub": "forged",
                                "iat": now, "exp": now + 300});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }

    /// `claims` signed with the provider's own `alg` key, under its `kid`.
    pub fn sign(&self, alg: Algorithm, claims: &Value) -> String {
        let key = self.key(alg);
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(key.private_pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = Some(key.kid);
        jsonwebtoken::encode(&header, claims, &encoding).unwrap()
    }

    /// New signing keys (new kids); the old ones are no longer published.
    pub async fn rotate(&self) {
        let response = self
            .http
            .post(format!("{}/__test/rotate", self.issuer))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// How often discovery and the key set were fetched.
    pub async fn key_fetches(&self) -> u64 {
        let stats: Value = self
            .http
            .get(format!("{}/__test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["jwks"].as_u64().unwrap()
    }

    /// Stops the provider (connections to it are refused until [`restart`](Self::restart)).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on its port, with new keys.
    pub async fn restart(&mut self) {
        let config_path = self.dir.path().join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        config["port"] = json!(self.port);
        std::fs::write(&config_path, config.to_string()).unwrap();
        let (child, port) = spawn(&config_path, self.dir.path()).await;
        assert_eq!(port, self.port);
        self.child = child;
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn secret_of(client: &str) -> String {
    format!("{client}-secret-for-tests-only-0123456789")
}

fn provider_script() -> PathBuf {
    std::env::var("LANYARD_TEST_OIDC_PROVIDER")
        .expect(
            "LANYARD_TEST_OIDC_PROVIDER is not set: run the suite with tests/run, which \
             installs the OpenID provider",
        )
        .into()
}

/// Starts the provider and reads the port from its `listening <issuer>` line.
async fn spawn(config: &std::path::Path, dir: &std::path::Path) -> (std::process::Child, u16) {
    let log = std::fs::File::create(dir.join("provider.log")).unwrap();
    let mut child = std::process::Command::new("node")
        .arg(provider_script())
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("node on PATH");
    let stdout = child.stdout.take().unwrap();
    let (found, port) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(port) = line
                .strip_prefix("listening http://127.0.0.1:")
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                let _ = found.send(port);
            }
        }
    });
    let port = tokio::task::spawn_blocking(move || port.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    match port {
        Ok(port) => (child, port),
        Err(_) => {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("provider.log")).unwrap_or_default();
            panic!("the OpenID provider did not start:\n{log}");
        }
    }
}

/// The first form of a page: its action and its hidden fields (HTML entities in values
/// decoded the way the provider encodes them).
fn first_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let form = &html[start..end];
    let action = attribute(&form[..form.find('>')?], "action")?;
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|input| {
            let tag = &input[..input.find('>')?];
            (attribute(tag, "type").as_deref() == Some("hidden"))
                .then(|| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
                .flatten()
        })
        .collect();
    Some((action, fields))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let pattern = format!("{name}=\"");
    let start = tag.find(&pattern)? + pattern.len();
    let value = &tag[start..start + tag[start..].find('"')?];
    Some(
        value
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#x2F;", "/")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}
