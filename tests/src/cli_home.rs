//! The `lanyard` CLI and the real AWS CLI in a private HOME, and a stand-in broker for what a
//! real one would never answer.

use std::path::PathBuf;
use std::time::Duration;

use crate::emulator::moto_url;
use crate::processes::binary;

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
    keyring: Keyring,
}

/// Where the CLI may keep its cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyring {
    /// `LANYARD_CACHE_KEYRING=off`: the key file only. The default of these tests, which
    /// then leave the user's keyring alone.
    Off,
    /// The OS keyring, as a real user's CLI uses it by default.
    Os,
    /// The OS keyring asked for, but the kernel refuses it (every command runs under
    /// `without-keyring`, as in a Docker container with the default seccomp profile).
    Refused,
}

impl Default for CliHome {
    fn default() -> Self {
        Self::new()
    }
}

impl CliHome {
    pub fn new() -> CliHome {
        Self::with_keyring(Keyring::Off)
    }

    pub fn with_keyring(keyring: Keyring) -> CliHome {
        CliHome {
            dir: tempfile::tempdir().unwrap(),
            keyring,
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
        let mut cmd = match self.keyring {
            Keyring::Refused => {
                let mut cmd = tokio::process::Command::new(binary("without-keyring"));
                cmd.arg(program);
                cmd
            }
            Keyring::Off | Keyring::Os => tokio::process::Command::new(program),
        };
        if self.keyring == Keyring::Off {
            cmd.env("LANYARD_CACHE_KEYRING", "off");
        } else {
            cmd.env_remove("LANYARD_CACHE_KEYRING");
        }
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_REGION",
            "LANYARD_SERVER",
            "LANYARD_TOKEN",
            "LANYARD_OIDC_TOKEN",
            "LANYARD_OIDC_TOKEN_FILE",
            "LANYARD_OIDC_AUDIENCE",
            "LANYARD_DEBUG",
            "LANYARD_LOG_FILE",
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            "XDG_CONFIG_HOME",
            "XDG_CACHE_HOME",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.home())
            .env("LANYARD_CONFIG_DIR", self.config_dir())
            .env("LANYARD_CACHE_DIR", self.cache_dir())
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
        Self::serve_requests(move |path, _| reply(path)).await
    }

    /// Answers each request with what `reply` makes of its path and its whole text (head
    /// and body): a stand-in that answers by what was asked, as STS does by its form fields.
    pub async fn serve_requests(
        reply: impl Fn(&str, &str) -> FakeReply + Send + Sync + 'static,
    ) -> FakeBroker {
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
                    let mut body = head[end.min(head.len())..].to_vec();
                    while body.len() < length {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&buf[..n]),
                        }
                    }
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    // The head, then the body as text (form or JSON bodies of the tests).
                    let text = format!("{text}{}", String::from_utf8_lossy(&body));
                    let answer = reply(&path, &text);
                    seen.lock().unwrap().push(text);
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

    /// The requests received so far: each one's head (request line and headers) and body.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A broker with a customer whose role `readonly` is verified, a support engineer's token,
/// and a home logged in with it. Returns (app, home, customer, token).
pub async fn logged_in_support() -> (crate::TestApp, CliHome, String, String) {
    let app = crate::TestApp::spawn().await;
    let customer = crate::unique("acme");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let token = app
        .token_for(
            "alice",
            lanyard_server::auth::Role::Support,
            None,
            Duration::from_secs(3600),
        )
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    (app, home, customer, token)
}
