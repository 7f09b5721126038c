//! The local AWS emulator (moto): the shared one `tests/run` starts, private ones for tests
//! that change server-wide moto state, and what moto recorded of the broker's requests.

use std::time::Duration;

use serde_json::Value;

/// The moto endpoint; tests that need AWS fail clearly without it.
pub fn moto_url() -> String {
    std::env::var("LANYARD_TEST_MOTO_URL")
        .expect("LANYARD_TEST_MOTO_URL is not set: run the suite with tests/run, which starts moto")
}

/// A moto server of the test's own, for tests that change server-wide moto state (auth mode).
pub struct PrivateMoto {
    child: std::process::Child,
    pub url: String,
}

impl PrivateMoto {
    /// Starts `moto_server` on a port the OS picks (port 0) and reads the port back from its
    /// first log line: no port is released and bound again, so no other process can take it
    /// in between.
    pub async fn start() -> PrivateMoto {
        use std::io::BufRead;
        let mut child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("moto_server on PATH (tests/run puts tests/.venv/bin there)");
        let stderr = child.stderr.take().unwrap();
        let (found, port) = std::sync::mpsc::channel();
        // Reads the log to its end (moto logs every request; an unread pipe would stall it).
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .split("Running on http://127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.trim().parse::<u16>().ok())
                    && let Some(found) = found.take()
                {
                    let _ = found.send(port);
                }
            }
        });
        let port = tokio::task::spawn_blocking(move || port.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("private moto server did not say where it listens")
            });
        let url = format!("http://127.0.0.1:{port}");
        let ready = crate::eventually(Duration::from_secs(30), || async {
            reqwest::get(format!("{url}/moto-api/data.json"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(ready, "private moto server did not answer");
        PrivateMoto { child, url }
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
