//! Session rules: case ids, reasons, AWS profile names, the AssumeRole context (session
//! name, source identity, tags), the credential lifetime and the deny-after-end policy.
//!
//! AWS limits applied here:
//! <https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html>
//! (RoleSessionName and SourceIdentity `[\w+=,.@-]{2,64}`, DurationSeconds 900..role max,
//! packed policy ≤ 2,048 characters) and
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html> (≤ 50 tags, keys
//! ≤ 128 and values ≤ 256 characters).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{CustomerId, ParseError, SessionKind, string_newtype};

/// A support case reference such as `CS-12345`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseId(String);

impl CaseId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bytes = raw.as_bytes();
        let ok = (2..=64).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new(
                "case id must be 2-64 characters of letters, digits, '.', '_' and '-', \
                 starting with a letter or digit",
            ))
        }
    }
}
string_newtype!(CaseId);

/// Why a session was opened: 1-500 characters of plain text (see
/// [`check_plain_text`](super::check_plain_text)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 500 {
            return Err(ParseError::new("reason must be 1-500 characters"));
        }
        super::check_plain_text("reason", trimmed)?;
        Ok(Self(trimmed.to_owned()))
    }
}
string_newtype!(Reason);

/// The AWS CLI profile a session is used through.
pub fn profile_name(kind: SessionKind, customer: &CustomerId, case: Option<&CaseId>) -> String {
    match (kind, case) {
        (SessionKind::Support, Some(case)) => format!("support-{customer}-{case}"),
        _ => format!("customer-{customer}"),
    }
}

/// Keeps `[\w+=,.@-]` (ASCII word characters), replaces anything else with `-`, and fits
/// the result into 2-64 characters: the rule for RoleSessionName and SourceIdentity.
pub fn aws_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while name.len() < 2 {
        name.push('_');
    }
    name
}

/// RoleSessionName: what shows in the customer's CloudTrail as the session, e.g.
/// `support.CS-12345.alice` or `customer.acme-corp.billing-job`.
pub fn role_session_name(
    kind: SessionKind,
    customer: &CustomerId,
    case: Option<&CaseId>,
    actor: &str,
) -> String {
    let context = case.map_or(customer.as_str(), CaseId::as_str);
    // 64 characters in all: the actor keeps at least 24 of them when the context is long.
    let kind = kind.as_str();
    let actor: String = actor.chars().take(64).collect();
    let room_for_context = 64 - kind.len() - 2 - actor.len().min(24);
    let context: String = context.chars().take(room_for_context).collect();
    aws_name(&format!("{kind}.{context}.{actor}"))
}

/// SourceIdentity: the person or service behind the session. It persists through role
/// chaining, so the customer can always tell who acted. AWS forbids the `aws:` prefix; the
/// `:` never survives [`aws_name`], so it cannot occur.
pub fn source_identity(actor: &str) -> String {
    aws_name(actor)
}

/// Session tag values may hold letters, digits, spaces and `_.:/=+-@`, at most 256.
pub fn tag_value(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_alphanumeric()
                || c == ' '
                || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
            {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

/// AWS's shortest credential lifetime.
pub const MIN_CREDENTIAL_SECS: i64 = 900;
/// Credentials ending less than this before the session's end still get the cut-off policy.
pub const CUT_MARGIN_SECS: i64 = 60;
/// AWS caps role-chained sessions (the broker itself on a role) at one hour.
pub const ROLE_CHAINING_MAX_SECS: i64 = 3600;

/// How long to ask STS for, and when the credentials really stop working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// DurationSeconds for AssumeRole.
    pub duration_seconds: i32,
    /// The credentials outlive the session: attach the deny-after-end policy.
    pub cut_at_session_end: bool,
}

/// The lifetime rule: the session's remaining time, capped by the role maximum, the
/// configured ceiling and (when the broker runs on a role) the one-hour chaining limit, never
/// under 900 seconds. When STS must issue more than the session has left, the credentials
/// get a policy that denies everything after the session's end.
pub fn credential_lifetime(
    now: DateTime<Utc>,
    session_end: DateTime<Utc>,
    role_max_secs: i64,
    ceiling_secs: i64,
    broker_on_role: bool,
) -> Lifetime {
    let remaining = (session_end - now).num_seconds().max(0);
    let mut cap = role_max_secs.min(ceiling_secs);
    if broker_on_role {
        cap = cap.min(ROLE_CHAINING_MAX_SECS);
    }
    let cap = cap.max(MIN_CREDENTIAL_SECS);
    let duration = remaining.clamp(MIN_CREDENTIAL_SECS, cap);
    Lifetime {
        duration_seconds: i32::try_from(duration).unwrap_or(i32::MAX),
        // Cut whenever the credentials could reach the session's end: STS starts counting a
        // little after `now`, and clocks differ by a little.
        cut_at_session_end: duration + CUT_MARGIN_SECS > remaining,
    }
}

/// The session policy for one AssumeRole: the role's scoped-down statements (or allow
/// everything the role allows: a session policy only intersects, so a policy holding only a
/// Deny would grant nothing) plus, when `cut_at` is set, a Deny of every action after the
/// session's end (`aws:CurrentTime`). `None` when neither applies.
pub fn session_policy(
    role_policy: Option<&Value>,
    cut_at: Option<DateTime<Utc>>,
) -> Option<String> {
    if role_policy.is_none() && cut_at.is_none() {
        return None;
    }
    let mut statements: Vec<Value> = match role_policy.and_then(|p| p.get("Statement")) {
        Some(Value::Array(list)) => list.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => vec![
            json!({ "Sid": "LanyardAllowRole", "Effect": "Allow", "Action": "*", "Resource": "*" }),
        ],
    };
    if let Some(end) = cut_at {
        statements.push(json!({
            "Sid": "LanyardSessionEnd",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": { "DateGreaterThan": {
                "aws:CurrentTime": end.to_rfc3339_opts(SecondsFormat::Secs, true)
            } }
        }));
    }
    Some(json!({ "Version": "2012-10-17", "Statement": statements }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn case_ids_follow_the_rule() {
        assert!(CaseId::parse("CS-12345").is_ok());
        assert!(CaseId::parse("a.b_c-1").is_ok());
        for bad in ["", "C", "-CS1", "CS 1", "CS/1", &"x".repeat(65)] {
            assert!(CaseId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aws_names_are_sanitised_and_sized() {
        assert_eq!(aws_name("alice@example.com"), "alice@example.com");
        assert_eq!(aws_name("Jörg Müller/ops"), "J-rg-M-ller-ops");
        assert_eq!(aws_name("x"), "x_");
        assert_eq!(aws_name(&"a".repeat(100)).len(), 64);
        assert_eq!(source_identity("aws:root"), "aws-root");
        let customer = CustomerId::parse("acme-corp").unwrap();
        let case = CaseId::parse("CS-12345").unwrap();
        assert_eq!(
            role_session_name(SessionKind::Support, &customer, Some(&case), "alice"),
            "support.CS-12345.alice"
        );
        assert_eq!(
            role_session_name(SessionKind::Customer, &customer, None, "billing job"),
            "customer.acme-corp.billing-job"
        );
        // A long case id does not crowd out who acted.
        let long_case = CaseId::parse(&format!("CS{}", "9".repeat(62))).unwrap();
        let name = role_session_name(SessionKind::Support, &customer, Some(&long_case), "alice");
        assert_eq!(name.len(), 64);
        assert!(
            name.starts_with("support.CS999") && name.ends_with(".alice"),
            "{name}"
        );
    }

    #[test]
    fn lifetime_covers_the_session_within_every_cap() {
        // 30 minutes left, role allows an hour: the remaining time, and cut at the end
        // (STS's clock and ours differ by a little).
        let l = credential_lifetime(at(0), at(1800), 3600, 43_200, false);
        assert_eq!(
            l,
            Lifetime {
                duration_seconds: 1800,
                cut_at_session_end: true
            }
        );
        // Two hours left, role allows one: an hour, ending well before the session does.
        let l = credential_lifetime(at(0), at(7200), 3600, 43_200, false);
        assert_eq!(
            l,
            Lifetime {
                duration_seconds: 3600,
                cut_at_session_end: false
            }
        );
        // 5 minutes left: STS's 900 s minimum, cut at the session end.
        let l = credential_lifetime(at(0), at(300), 3600, 43_200, false);
        assert_eq!(
            l,
            Lifetime {
                duration_seconds: 900,
                cut_at_session_end: true
            }
        );
        // 12 hours left: the role maximum, then the ceiling, then role chaining.
        assert_eq!(
            credential_lifetime(at(0), at(43_200), 7200, 43_200, false).duration_seconds,
            7200
        );
        assert_eq!(
            credential_lifetime(at(0), at(43_200), 43_200, 5400, false).duration_seconds,
            5400
        );
        assert_eq!(
            credential_lifetime(at(0), at(43_200), 43_200, 43_200, true).duration_seconds,
            3600
        );
        // Already over: still a valid request, and cut.
        assert!(credential_lifetime(at(10), at(0), 3600, 43_200, false).cut_at_session_end);
    }

    #[test]
    fn session_policy_allows_the_role_and_denies_after_the_end() {
        assert_eq!(session_policy(None, None), None);
        let doc: Value = serde_json::from_str(&session_policy(None, Some(at(0))).unwrap()).unwrap();
        assert_eq!(doc["Statement"][0]["Effect"], "Allow");
        assert_eq!(doc["Statement"][1]["Effect"], "Deny");
        assert_eq!(
            doc["Statement"][1]["Condition"]["DateGreaterThan"]["aws:CurrentTime"],
            at(0).to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let scoped =
            json!({ "Statement": { "Effect": "Allow", "Action": "s3:Get*", "Resource": "*" } });
        let doc: Value =
            serde_json::from_str(&session_policy(Some(&scoped), Some(at(0))).unwrap()).unwrap();
        assert_eq!(doc["Statement"][0]["Action"], "s3:Get*");
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 2);
        let only_scoped: Value =
            serde_json::from_str(&session_policy(Some(&scoped), None).unwrap()).unwrap();
        assert_eq!(only_scoped["Statement"].as_array().unwrap().len(), 1);
    }
}
