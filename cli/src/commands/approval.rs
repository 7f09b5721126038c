//! Sessions that wait for a second person's approval: `sessions pending`, `sessions approve`
//! and `sessions deny`, and waiting for the decision (`support-access --wait`, `sessions
//! wait`), which ends on the decision, on the request's expiry, or on Ctrl-C (the request
//! then stays pending).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use lanyard_api::SessionKind;
use lanyard_api::sessions::{Decision, Session, SessionList};
use lanyard_api::status::{ApprovalStatus, SessionStatus};

use super::access::open_profile;
use super::queries::{table, wire_time};
use super::{Ctx, left, print, print_json, rfc3339};
use crate::client::{self, Client};
use crate::credentials;
use crate::text::one_line;
use crate::{DecisionArgs, WaitArgs};

/// How often the broker is asked whether a request was decided.
const POLL: Duration = Duration::from_secs(2);
/// The exit status after Ctrl-C, as shells report a command SIGINT ended (128 + 2).
const INTERRUPTED: u8 = 130;
/// Longest case title a table shows (the JSON holds all of it).
const TITLE_CELL: usize = 60;

/// How waiting for a decision ended.
pub enum Waited {
    /// The request is no longer pending: approved, denied, expired or withdrawn.
    Decided(Session),
    /// Ctrl-C: the request still waits.
    Interrupted(Session),
}

/// Waits until the request is decided (or expires), asking the broker every [`POLL`]; Ctrl-C
/// ends the wait at once and leaves the request pending. Says on stderr what it waits for.
pub(super) async fn wait(client: &Client, session: Session) -> anyhow::Result<Waited> {
    let id = session.id;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Polled once before anything is said, so that Ctrl-C is caught from then on.
    tokio::select! {
        biased;
        signal = &mut ctrl_c => {
            signal.context("listening for Ctrl-C")?;
            return Ok(Waited::Interrupted(session));
        }
        () = std::future::ready(()) => {}
    }
    eprint!("{}", crate::text::for_terminal(&waiting_note(&session)));
    let path = format!("/v1/sessions/{id}");
    let mut current = session;
    let mut outage_said = false;
    while current.status == SessionStatus::PendingApproval {
        let polled = tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("listening for Ctrl-C")?;
                return Ok(Waited::Interrupted(current));
            }
            polled = async {
                tokio::time::sleep(POLL).await;
                client.get::<Session>(&path).await
            } => polled,
        };
        match polled {
            Ok(session) => current = session,
            // A broker that is restarting or briefly unreachable does not end the wait; the
            // request's expiry does.
            Err(e) if client::is_unavailable(&e) && Utc::now() < current.expires_at => {
                if !outage_said {
                    eprintln!(
                        "lanyard: warning: {}; still waiting",
                        one_line(&format!("{e:#}"))
                    );
                    outage_said = true;
                }
            }
            Err(e) => {
                return Err(e.context(format!("waiting for the decision on session {id}")));
            }
        }
    }
    Ok(Waited::Decided(current))
}

/// What the wait is for, until when, and how to stop it (stderr).
fn waiting_note(session: &Session) -> String {
    let id = session.id;
    format!(
        "Waiting for a second person to approve session {id} ({}), at most until {} ({}), \
         when the request expires.\n\
         An approver (admin or support, not you) runs: lanyard sessions approve {id}\n\
         Ctrl-C stops waiting; the request stays pending.\n",
        grant(session),
        rfc3339(session.expires_at),
        left(session.expires_at)
    )
}

/// Ctrl-C while waiting: says how to resume (stderr); exit 130.
pub(super) fn interrupted(session: &Session, region: Option<&str>) -> ExitCode {
    let region = region
        .and_then(|r| shlex::try_quote(r).ok())
        .map(|r| format!(" --region {r}"))
        .unwrap_or_default();
    eprintln!(
        "lanyard: stopped waiting; session {id} still waits for approval until {}. Resume \
         waiting: lanyard sessions wait {id}{region}",
        rfc3339(session.expires_at),
        id = session.id,
    );
    ExitCode::from(INTERRUPTED)
}

/// `Ok` when the request was approved and its session is live; else the error that says who
/// decided what, or why it ended.
pub(super) fn approved(session: &Session) -> anyhow::Result<()> {
    let id = session.id;
    let approval = session.approval.as_ref();
    let by = approval
        .and_then(|a| a.decided_by.as_deref())
        .unwrap_or("?");
    let at = approval
        .and_then(|a| a.decided_at)
        .map(|t| format!(" at {}", rfc3339(t)))
        .unwrap_or_default();
    let comment = approval
        .and_then(|a| a.comment.as_deref())
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    match session.status {
        SessionStatus::Active => Ok(()),
        SessionStatus::Denied => bail!("session {id} was denied by {by}{at}{comment}"),
        SessionStatus::PendingApproval => bail!("session {id} still waits for approval"),
        SessionStatus::Revoked => bail!(
            "session {id} was withdrawn or revoked by {}{}",
            session.revoked_by.as_deref().unwrap_or("?"),
            session
                .revoked_at
                .map(|t| format!(" at {}", rfc3339(t)))
                .unwrap_or_default()
        ),
        SessionStatus::Expired if approval.is_some_and(|a| a.status == ApprovalStatus::Pending) => {
            bail!(
                "the request for session {id} expired unapproved at {}; ask again with \
                 `lanyard support-access`",
                rfc3339(session.expires_at)
            )
        }
        SessionStatus::Expired => bail!("session {id} ended at {}", rfc3339(session.expires_at)),
    }
}

/// `alice's tier write on acme-corp, case CS-1`: whose request for what.
fn grant(session: &Session) -> String {
    let mut out = format!(
        "{}'s {} on {}",
        session.requested_by,
        session
            .tier
            .as_deref()
            .map_or_else(|| "session".to_owned(), |t| format!("tier {t}")),
        session.customer
    );
    if let Some(case) = &session.case_id {
        out.push_str(&format!(", case {case}"));
    }
    out
}

/// `sessions pending`: the requests an approver may decide (and the caller's own).
pub fn sessions_pending(ctx: &Ctx, limit: u32) -> anyhow::Result<()> {
    if !(1..=1000).contains(&limit) {
        bail!("--limit must be between 1 and 1000");
    }
    let config = ctx.config()?;
    let client = ctx.client(&config, None)?;
    let me = ctx
        .identity(&config, &ctx.server(&config, None)?)
        .ok()
        .map(|i| i.subject);
    let list: SessionList =
        credentials::runtime()?.block_on(client.get(&format!("/v1/approvals?limit={limit}")))?;
    if ctx.json_output() {
        return print_json(&list);
    }
    if list.sessions.is_empty() {
        return print("No session requests wait for approval.\n");
    }
    print(&pending_table(&list.sessions, me.as_deref()))
}

fn pending_table(sessions: &[Session], me: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let requester = if Some(s.requested_by.as_str()) == me {
                format!("{} (you)", s.requested_by)
            } else {
                s.requested_by.clone()
            };
            vec![
                s.id.to_string(),
                s.customer.to_string(),
                requester,
                s.tier.clone().unwrap_or_else(|| "-".into()),
                s.case_id
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                wire_time(s.created_at),
                wire_time(s.expires_at),
                title_cell(s.case_title.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "CUSTOMER",
            "REQUESTER",
            "TIER",
            "CASE",
            "REQUESTED",
            "EXPIRES",
            "TITLE",
        ],
        &rows,
    )
}

/// A case title for a table cell: one line, cut at [`TITLE_CELL`] characters.
pub(super) fn title_cell(title: Option<&str>) -> String {
    let Some(title) = title else {
        return "-".into();
    };
    let title = one_line(title);
    if title.chars().count() <= TITLE_CELL {
        return title;
    }
    let cut: String = title.chars().take(TITLE_CELL - 1).collect();
    format!("{}…", cut.trim_end())
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

/// `sessions approve` and `sessions deny`.
pub fn sessions_decide(ctx: &Ctx, args: &DecisionArgs, verdict: Verdict) -> anyhow::Result<()> {
    let id = client::session_id(&args.id)?;
    let config = ctx.config()?;
    let client = ctx.client(&config, None)?;
    let action = match verdict {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    };
    let decision = Decision {
        comment: args.comment.clone(),
    };
    let session: Session = credentials::runtime()?
        .block_on(client.post(&format!("/v1/sessions/{id}/{action}"), Some(&decision)))?;
    if ctx.json_output() {
        return print_json(&session);
    }
    let line = match verdict {
        Verdict::Approve => format!(
            "Approved session {id} ({}); its time runs until {}.\n",
            grant(&session),
            rfc3339(session.expires_at)
        ),
        Verdict::Deny => format!("Denied session {id} ({}).\n", grant(&session)),
    };
    print(&line)
}

/// `sessions wait`: waits for the decision on a request; approved, and the caller's own
/// support session, its profile is written as `support-access` writes it.
pub fn sessions_wait(ctx: &Ctx, args: &WaitArgs) -> anyhow::Result<ExitCode> {
    let id = client::session_id(&args.id)?;
    let config = ctx.config()?;
    let client = ctx.client(&config, None)?;
    let identity = ctx.identity(&config, &ctx.server(&config, None)?).ok();
    let runtime = credentials::runtime()?;
    let session: Session = runtime.block_on(client.get(&format!("/v1/sessions/{id}")))?;
    let session = match session.status {
        SessionStatus::PendingApproval => match runtime.block_on(wait(&client, session))? {
            Waited::Decided(session) => session,
            Waited::Interrupted(session) => {
                return Ok(interrupted(&session, args.region.as_deref()));
            }
        },
        _ => session,
    };
    approved(&session)?;
    // Someone else's request (an approver following it): nothing to write here, as its
    // credentials are the requester's only.
    let mine = identity
        .as_ref()
        .is_none_or(|i| i.subject == session.requested_by);
    if session.kind == SessionKind::Support && mine {
        open_profile(ctx, &session, identity, args.region.as_deref())?;
    } else if ctx.json_output() {
        print_json(&session)?;
    } else {
        print(&format!(
            "Session {id} ({}) is open until {}.\n",
            grant(&session),
            rfc3339(session.expires_at)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;
