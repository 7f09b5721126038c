//! Two-person approval through the `lanyard` CLI: the requester's `support-access --tier
//! --wait` (the real binary, left running), the approver's `sessions pending` / `approve` /
//! `deny` from another home with another person's token, and the real AWS CLI using the
//! profile once the request is approved.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanyard_server::auth::Role;
use lanyard_tests::{CliHome, FakeBroker, Run, TestApp, eventually, logged_in_support, unique};
use reqwest::Method;
use serde_json::{Value, json};

/// A broker whose customer's role `readonly` has the tier `write`, which needs a second
/// person's approval; alice (support) logged in at one home, bob (support) at another.
/// Returns (app, alice, bob, customer).
async fn broker_with_approval_tier() -> (TestApp, CliHome, CliHome, String) {
    let (app, alice, customer, _) = logged_in_support().await;
    let (status, role) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{customer}/roles/readonly"),
            Some(json!({
                "role_arn": "arn:aws:iam::111122223333:role/LanyardAccess",
                "session_policy": { "Statement": { "Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*" } },
                "tiers": { "write": {
                    "policy_arns": ["arn:aws:iam::aws:policy/PowerUserAccess"],
                    "max_duration_seconds": 3600,
                    "requires_approval": true,
                } },
            })),
        )
        .await;
    assert_eq!(status, 200, "{role}");
    assert_eq!(role["status"], "verified", "{role}");
    let token = app
        .token_for("bob", Role::Support, None, Duration::from_secs(3600))
        .await;
    let bob = CliHome::new();
    bob.login(&app.base, &token).await.ok();
    (app, alice, bob, customer)
}

/// A `lanyard` command left running, its output read as it comes.
struct Running {
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn start(home: &CliHome, args: &[&str]) -> Running {
        let mut cmd = home.command(lanyard_tests::binary("lanyard"));
        cmd.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let readers = vec![
            Self::collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            Self::collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn collect(
        mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        into: Arc<Mutex<String>>,
    ) -> tokio::task::JoinHandle<()> {
        use tokio::io::AsyncReadExt;
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                into.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    }

    /// Whether stderr shows `text` within 30 s.
    async fn says(&self, text: &str) -> bool {
        eventually(Duration::from_secs(30), || {
            let stderr = Arc::clone(&self.stderr);
            async move { stderr.lock().unwrap().contains(text) }
        })
        .await
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn interrupt(&self) {
        let pid = self.child.id().expect("still running") as i32;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::INT,
        )
        .unwrap();
    }

    /// Its exit status and everything it printed, once it ends (within 60 s).
    async fn finish(mut self) -> Run {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the command ended within 60 s")
            .unwrap();
        for reader in self.readers {
            reader.await.unwrap();
        }
        let text = |s: &Arc<Mutex<String>>| s.lock().unwrap().clone();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        }
    }
}

/// The id of the case's request that waits for approval, once the broker has it.
async fn pending_request(app: &TestApp, case: &str) -> String {
    let (status, list) = app.admin(Method::GET, "/v1/approvals", None).await;
    assert_eq!(status, 200, "{list}");
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["case_id"] == case)
        .unwrap_or_else(|| panic!("no pending request of case {case}: {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn session_status(app: &TestApp, id: &str) -> Value {
    let (status, session) = app
        .admin(Method::GET, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, 200, "{session}");
    session["status"].clone()
}

fn has_profile(home: &CliHome, profile: &str) -> bool {
    std::fs::read_to_string(home.aws_config())
        .is_ok_and(|text| text.contains(&format!("[profile {profile}]")))
}

fn caller_arn(run: &Run) -> String {
    let v: Value = serde_json::from_str(run.ok()).unwrap();
    v["Arn"].as_str().unwrap().to_owned()
}

fn wait_args<'a>(customer: &'a str, case: &'a str) -> Vec<&'a str> {
    vec![
        "support-access",
        "--customer",
        customer,
        "--case",
        case,
        "--tier",
        "write",
        "--wait",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_tier_request_waits_until_a_second_person_approves_it_then_the_aws_cli_works() {
    let (app, alice, bob, customer) = broker_with_approval_tier().await;
    let case = unique("CS");
    let profile = format!("support-{customer}-{case}-write");
    let mut waiting = Running::start(&alice, &wait_args(&customer, &case));
    assert!(
        waiting
            .says("Waiting for a second person to approve session")
            .await,
        "{:?}",
        waiting.stderr
    );
    let id = pending_request(&app, &case).await;
    assert!(
        waiting.says("when the request expires").await,
        "{:?}",
        waiting.stderr
    );
    assert!(
        !has_profile(&alice, &profile),
        "nothing written while it waits"
    );

    // The approver sees the request, with who asked for which tier on which case.
    let pending = bob.lanyard(&["sessions", "pending"]).await;
    let lines: Vec<&str> = pending.ok().lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("REQUESTER") && lines[0].contains("TIER"),
        "{pending:?}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed: {pending:?}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[1..5],
        [customer.as_str(), "alice", "write", case.as_str()],
        "{pending:?}"
    );
    // The requester sees it too, marked as theirs, and may not approve it.
    let own_list = alice.lanyard(&["sessions", "pending"]).await;
    assert!(own_list.ok().contains("alice (you)"), "{own_list:?}");
    let own = alice.lanyard(&["sessions", "approve", &id]).await;
    assert_eq!(own.code, 1, "{own:?}");
    assert!(
        own.stderr.starts_with("lanyard: ")
            && own.stderr.contains("your own request")
            && own.stderr.contains("HTTP 403"),
        "{own:?}"
    );
    assert_eq!(session_status(&app, &id).await, "pending_approval");
    assert!(waiting.still_running(), "still waiting after the refusal");

    let approve = bob
        .lanyard(&[
            "sessions",
            "approve",
            &id,
            "--comment",
            "CAB approved CHG-42",
        ])
        .await;
    assert!(
        approve.ok().starts_with(&format!(
            "Approved session {id} (alice's tier write on {customer}, case {case}); its time runs until "
        )),
        "{approve:?}"
    );

    // The waiting command goes on as an immediate open does.
    let done = waiting.finish().await;
    assert!(
        done.ok()
            .contains(&format!("aws sts get-caller-identity --profile {profile}")),
        "{done:?}"
    );
    assert!(
        done.stdout.starts_with(&format!(
            "Opened support session {id} on {customer} (case {case}, role readonly, tier write, approved by bob) until "
        )),
        "{done:?}"
    );
    let arn = caller_arn(
        &alice
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    assert!(
        arn.ends_with(&format!("assumed-role/LanyardAccess/support.{case}.alice")),
        "{arn}"
    );

    // Decided: no longer pending; the tier shows in the list and in `check`.
    let pending = bob.lanyard(&["sessions", "pending"]).await;
    assert!(!pending.ok().contains(&id), "{pending:?}");
    let list = alice.lanyard(&["sessions", "list", "--case", &case]).await;
    let lines: Vec<&str> = list.ok().lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header[4], "TIER", "{list:?}");
    assert_eq!(
        (cells[0], cells[4], cells[5]),
        (id.as_str(), "write", "active"),
        "{list:?}"
    );
    let check = alice.lanyard(&["check", "--profile", &profile]).await;
    assert!(check.ok().contains("\nTier: write\n"), "{check:?}");
    assert!(check.stdout.contains("Session ends: "), "{check:?}");
    assert!(!check.stdout.contains("Approval: pending"), "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_ends_the_wait_with_the_deciders_comment_and_writes_no_profile() {
    let (app, alice, bob, customer) = broker_with_approval_tier().await;
    let case = unique("CS");
    let waiting = Running::start(&alice, &wait_args(&customer, &case));
    assert!(waiting.says("Waiting for").await, "{:?}", waiting.stderr);
    let id = pending_request(&app, &case).await;

    let deny = bob
        .lanyard(&["sessions", "deny", &id, "--comment", "no change ticket"])
        .await;
    assert!(
        deny.ok().starts_with(&format!(
            "Denied session {id} (alice's tier write on {customer}, case {case})."
        )),
        "{deny:?}"
    );
    let done = waiting.finish().await;
    assert_eq!(done.code, 1, "{done:?}");
    assert!(done.stdout.is_empty(), "{done:?}");
    let last = done.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("lanyard: session {id} was denied by bob at "))
            && last.ends_with(": no change ticket"),
        "{done:?}"
    );
    assert!(!has_profile(
        &alice,
        &format!("support-{customer}-{case}-write")
    ));
    // Deciding twice is refused, saying who decided first.
    let again = bob.lanyard(&["sessions", "approve", &id]).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stderr.contains("already denied by bob") && again.stderr.contains("HTTP 409"),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_the_request_is_filed_and_its_profile_works_once_approved() {
    let (app, alice, bob, customer) = broker_with_approval_tier().await;
    let case = unique("CS");
    let profile = format!("support-{customer}-{case}-write");
    let filed = alice
        .lanyard(&[
            "support-access",
            "--customer",
            &customer,
            "--case",
            &case,
            "--tier",
            "write",
            "--duration",
            "45m",
        ])
        .await;
    let id = pending_request(&app, &case).await;
    let out = filed.ok();
    for expected in [
        format!(
            "Requested support session {id} on {customer} (case {case}, role readonly, tier write); it waits for a second person's approval."
        ),
        "The request expires at ".to_owned(),
        "once approved, the session lasts 45m".to_owned(),
        format!("Wrote profile {profile} to "),
        format!("lanyard sessions approve {id}"),
        format!("lanyard sessions wait {id}"),
    ] {
        assert!(out.contains(&expected), "{expected:?} in {filed:?}");
    }
    assert!(has_profile(&alice, &profile));
    let check = alice.lanyard(&["check", "--profile", &profile]).await;
    assert!(
        check
            .ok()
            .contains("Approval: pending when the profile was written; the request expires "),
        "{check:?}"
    );
    assert!(!check.stdout.contains("Session ends"), "{check:?}");

    // Until approved, aws shows the broker's reason.
    let early = alice
        .aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await;
    assert_ne!(early.code, 0, "{early:?}");
    assert!(
        early.stderr.contains("waiting for approval") && early.stderr.contains("HTTP 409"),
        "{early:?}"
    );

    bob.lanyard(&["sessions", "approve", &id]).await.ok();
    let arn = caller_arn(
        &alice
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    assert!(arn.contains(&format!("support.{case}.alice")), "{arn}");

    // `sessions wait` on a decided request answers at once and records the session's end.
    let wait = alice.lanyard(&["sessions", "wait", &id]).await;
    assert!(
        wait.ok()
            .starts_with(&format!("Opened support session {id} on {customer}")),
        "{wait:?}"
    );
    let check = alice.lanyard(&["check", "--profile", &profile]).await;
    assert!(check.ok().contains("Session ends: "), "{check:?}");
    assert!(!check.stdout.contains("Approval: pending"), "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_the_request_pending_and_sessions_wait_resumes_the_wait() {
    let (app, alice, bob, customer) = broker_with_approval_tier().await;
    let case = unique("CS");
    let profile = format!("support-{customer}-{case}-write");
    let mut args = wait_args(&customer, &case);
    args.extend(["--region", "eu-west-1"]);
    let waiting = Running::start(&alice, &args);
    assert!(
        waiting.says("Ctrl-C stops waiting").await,
        "{:?}",
        waiting.stderr
    );
    let id = pending_request(&app, &case).await;
    waiting.interrupt();
    let stopped = waiting.finish().await;
    assert_eq!(stopped.code, 130, "{stopped:?}");
    assert!(
        stopped.stderr.contains(&format!(
            "Resume waiting: lanyard sessions wait {id} --region eu-west-1"
        )),
        "{stopped:?}"
    );
    assert_eq!(session_status(&app, &id).await, "pending_approval");
    assert!(!has_profile(&alice, &profile));

    let resumed = Running::start(&alice, &["sessions", "wait", &id, "--region", "eu-west-1"]);
    assert!(resumed.says("Waiting for").await, "{:?}", resumed.stderr);
    bob.lanyard(&["sessions", "approve", &id]).await.ok();
    let done = resumed.finish().await;
    assert!(
        done.ok().contains(&format!("Wrote profile {profile} to ")),
        "{done:?}"
    );
    let aws_config = std::fs::read_to_string(alice.aws_config()).unwrap();
    assert!(aws_config.contains("region = eu-west-1"), "{aws_config}");
    let arn = caller_arn(
        &alice
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    assert!(arn.contains(&format!("support.{case}.alice")), "{arn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_that_requires_approval_holds_a_session_without_a_tier_and_keeps_a_live_profile()
{
    let (app, alice, bob, customer) = broker_with_approval_tier().await;
    let case = unique("CS");
    let profile = format!("support-{customer}-{case}");
    // A session of the case that opened before the customer required approval.
    alice
        .lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await
        .ok();
    let before = caller_arn(
        &alice
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    let (status, body) = app
        .admin(
            Method::PUT,
            &format!("/v1/customers/{customer}/approval"),
            Some(json!({ "requires_approval": true })),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let filed = alice
        .lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await;
    let id = pending_request(&app, &case).await;
    assert!(
        filed.ok().starts_with(&format!(
            "Requested support session {id} on {customer} (case {case}, role readonly); it \
             waits for a second person's approval."
        )),
        "{filed:?}"
    );
    // The pending request does not cut off the access that works.
    assert!(
        filed
            .stdout
            .contains(&format!("Profile {profile} still serves session ")),
        "{filed:?}"
    );
    let config = std::fs::read_to_string(alice.config_dir().join("config.toml")).unwrap();
    assert!(!config.contains(&id), "{config}");
    let still = caller_arn(
        &alice
            .aws(&["sts", "get-caller-identity", "--profile", &profile])
            .await,
    );
    assert_eq!(still, before);

    // Approved, `sessions wait` switches the profile to the new session.
    bob.lanyard(&["sessions", "approve", &id]).await.ok();
    let wait = alice.lanyard(&["sessions", "wait", &id]).await;
    assert!(
        wait.ok().starts_with(&format!(
            "Opened support session {id} on {customer} (case {case}, role readonly, approved by bob) until "
        )),
        "{wait:?}"
    );
    let config = std::fs::read_to_string(alice.config_dir().join("config.toml")).unwrap();
    assert!(config.contains(&id), "{config}");
    alice
        .aws(&["sts", "get-caller-identity", "--profile", &profile])
        .await
        .ok();
    assert_eq!(
        lanyard_tests::credential_requests(&app.db, &case).await,
        2,
        "one credential request per session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_case_title_shows_in_support_access_sessions_list_and_check() {
    let cases = FakeBroker::start(
        200,
        r#"{"status": "open", "title": "Checkout fails with 502"}"#,
    )
    .await;
    let settings = json!({ "verifier_url": cases.url, "secret": "a-case-system-secret-0123" });
    let app =
        TestApp::spawn_with(|s| s.cases = Some(serde_json::from_value(settings).unwrap())).await;
    let customer = unique("acme");
    app.create_customer(&customer).await;
    app.register_role(&customer, "readonly").await;
    let token = app
        .token_for("alice", Role::Support, None, Duration::from_secs(3600))
        .await;
    let home = CliHome::new();
    home.login(&app.base, &token).await.ok();
    let case = unique("CS");
    let profile = format!("support-{customer}-{case}");

    let opened = home
        .lanyard(&["support-access", "--customer", &customer, "--case", &case])
        .await;
    assert!(
        opened
            .ok()
            .contains(&format!("\nCase {case}: Checkout fails with 502\n")),
        "{opened:?}"
    );
    let list = home.lanyard(&["sessions", "list", "--case", &case]).await;
    let lines: Vec<&str> = list.ok().lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header[header.len() - 2..], ["PROFILE", "TITLE"], "{list:?}");
    assert!(!lines[0].contains("TIER"), "no tier, no column: {list:?}");
    assert!(lines[1].ends_with("Checkout fails with 502"), "{list:?}");
    let check = home.lanyard(&["check", "--profile", &profile]).await;
    assert!(
        check
            .ok()
            .contains("\nCase title: Checkout fails with 502\n"),
        "{check:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_commands_and_flags_have_help() {
    let home = CliHome::new();
    for command in [
        vec!["sessions", "pending"],
        vec!["sessions", "approve"],
        vec!["sessions", "deny"],
        vec!["sessions", "wait"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        let run = home.lanyard(&args).await;
        let usage = format!("Usage: lanyard {}", command.join(" "));
        assert!(run.ok().contains(&usage), "{command:?}: {run:?}");
    }
    let help = home.lanyard(&["support-access", "--help"]).await;
    // Whatever width clap wraps the text at.
    let text = help.ok().split_whitespace().collect::<Vec<_>>().join(" ");
    for flag in [
        "--tier <TIER>",
        "--wait",
        "lanyard sessions approve ID",
        "lanyard sessions wait ID",
    ] {
        assert!(text.contains(flag), "{flag}: {help:?}");
    }
    let sessions = home.lanyard(&["sessions", "--help"]).await;
    for command in ["pending", "approve", "deny", "wait"] {
        assert!(sessions.ok().contains(command), "{command}: {sessions:?}");
    }
}
