use chrono::{Duration, TimeZone, Utc};
use lanyard_api::sessions::Approval;
use lanyard_api::{CaseId, CustomerId, RoleName};

use super::*;

fn request() -> Session {
    let created = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
    Session {
        id: uuid::Uuid::nil(),
        kind: SessionKind::Support,
        customer: CustomerId::parse("acme-corp").unwrap(),
        role: RoleName::parse("support").unwrap(),
        case_id: Some(CaseId::parse("CS-1").unwrap()),
        reason: Some("support case CS-1".into()),
        profile_name: "support-acme-corp-CS-1".into(),
        requested_by: "alice".into(),
        status: SessionStatus::PendingApproval,
        tier: Some("write".into()),
        case_title: None,
        case_url: None,
        case_check: None,
        approval: Some(Approval {
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
            comment: None,
        }),
        duration_seconds: Some(1800),
        created_at: created,
        expires_at: created + Duration::hours(1),
        revoked_at: None,
        revoked_by: None,
        credentials_valid_until: None,
    }
}

fn decided(status: SessionStatus, approval: ApprovalStatus, comment: Option<&str>) -> Session {
    let mut session = request();
    session.status = status;
    session.approval = Some(Approval {
        status: approval,
        decided_by: Some("bob".into()),
        decided_at: Some(session.created_at + Duration::minutes(5)),
        comment: comment.map(Into::into),
    });
    session
}

fn refusal(session: &Session) -> String {
    format!("{:#}", approved(session).unwrap_err())
}

#[test]
fn an_approved_live_session_is_what_the_wait_continues_with() {
    approved(&decided(
        SessionStatus::Active,
        ApprovalStatus::Approved,
        None,
    ))
    .unwrap();
}

#[test]
fn a_denial_names_the_decider_the_time_and_the_comment() {
    let denied = decided(
        SessionStatus::Denied,
        ApprovalStatus::Denied,
        Some("no change ticket"),
    );
    assert_eq!(
        refusal(&denied),
        "session 00000000-0000-0000-0000-000000000000 was denied by bob at \
         2026-11-26T10:05:00Z: no change ticket"
    );
}

#[test]
fn an_expired_request_and_a_withdrawn_one_each_say_what_happened() {
    let mut expired = request();
    expired.status = SessionStatus::Expired;
    assert!(
        refusal(&expired).contains("expired unapproved at 2026-11-26T11:00:00Z"),
        "{}",
        refusal(&expired)
    );
    let mut withdrawn = request();
    withdrawn.status = SessionStatus::Revoked;
    withdrawn.revoked_by = Some("alice".into());
    assert!(
        refusal(&withdrawn).contains("withdrawn or revoked by alice"),
        "{}",
        refusal(&withdrawn)
    );
}

#[test]
fn the_waiting_note_says_until_when_and_how_to_approve_and_stop() {
    let note = waiting_note(&request());
    assert!(
        note.contains("alice's tier write on acme-corp, case CS-1"),
        "{note}"
    );
    assert!(
        note.contains("at most until 2026-11-26T11:00:00Z"),
        "{note}"
    );
    assert!(
        note.contains("lanyard sessions approve 00000000-0000-0000-0000-000000000000"),
        "{note}"
    );
    assert!(note.contains("Ctrl-C stops waiting"), "{note}");
}

#[test]
fn the_pending_table_marks_the_callers_own_requests_and_shows_the_title() {
    let mut other = request();
    other.requested_by = "carol".into();
    other.case_title = Some("Checkout\nfails with 502".into());
    let out = pending_table(&[request(), other], Some("alice"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "CUSTOMER",
            "REQUESTER",
            "TIER",
            "CASE",
            "REQUESTED",
            "EXPIRES",
            "TITLE"
        ]
    );
    assert!(lines[1].contains("alice (you)"), "{out}");
    assert!(lines[1].trim_end().ends_with('-'), "no title: {out}");
    assert!(lines[2].contains("carol "), "{out}");
    assert!(
        lines[2].ends_with("Checkout fails with 502"),
        "one line: {out}"
    );
}

#[test]
fn long_titles_are_cut_in_tables() {
    let long = "x".repeat(200);
    let cell = title_cell(Some(&long));
    assert_eq!(cell.chars().count(), TITLE_CELL);
    assert!(cell.ends_with('…'));
    assert_eq!(title_cell(None), "-");
    assert_eq!(title_cell(Some("short")), "short");
}
