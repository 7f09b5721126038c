//! The real binaries, run as child processes.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::database::TestDatabase;

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
