//! Session rules: AWS profile names, the AssumeRole context (session name, source identity,
//! tags), the credential lifetime and the deny-after-end policy.
//!
//! AWS limits applied here:
//! <https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html>
//! (RoleSessionName and SourceIdentity `[\w+=,.@-]{2,64}`, DurationSeconds 900..role max,
//! packed policy ≤ 2,048 characters) and
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html> (≤ 50 tags, keys
//! ≤ 128 and values ≤ 256 characters).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{CaseId, CustomerId, SessionKind};

/// The AWS CLI profile a session is used through; a tier's sessions get their own
/// (`support-acme-corp-CS-12345-write`), so that a case's read and write access stay apart.
pub fn profile_name(
    kind: SessionKind,
    customer: &CustomerId,
    case: Option<&CaseId>,
    tier: Option<&str>,
) -> String {
    let base = match (kind, case) {
        (SessionKind::Support, Some(case)) => format!("support-{customer}-{case}"),
        _ => format!("customer-{customer}"),
    };
    match tier {
        Some(tier) => format!("{base}-{tier}"),
        None => base,
    }
}

/// Whether `c` may appear in a RoleSessionName or SourceIdentity (`[\w+=,.@-]`, ASCII).
fn aws_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

/// `raw` with every character outside `[\w+=,.@-]` replaced by `-` (not shortened).
fn aws_chars(raw: &str) -> String {
    raw.chars()
        .map(|c| if aws_name_char(c) { c } else { '-' })
        .collect()
}

/// Hex digits of SHA-256 that end a name that had to be shortened or changed.
const HASH_HEX: usize = 12;
/// AWS's limit on RoleSessionName and SourceIdentity.
const AWS_NAME_MAX: usize = 64;

/// Twelve hex digits (48 bits) of the SHA-256 of `raw`.
fn short_hash(raw: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw.as_bytes());
    hex::encode(digest.as_ref())[..HASH_HEX].to_owned()
}

/// `readable` (already within the character set) fitted into 2-64 characters with a hash of
/// `exact` after it: `<readable prefix>-<12 hex digits>`. Two different `exact` values get
/// different names, however long they are and whatever they had to lose to the character
/// set (a 48-bit hash: a collision needs about 16 million distinct subjects for even odds).
fn hashed_name(readable: &str, exact: &str) -> String {
    let prefix: String = readable.chars().take(AWS_NAME_MAX - HASH_HEX - 1).collect();
    format!("{prefix}-{}", short_hash(exact))
}

/// `raw` as a RoleSessionName or SourceIdentity (`[\w+=,.@-]{2,64}`,
/// <https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html>): as it is when
/// it already fits; otherwise a readable prefix plus a short hash of the exact value, so
/// that the name stays unique for values of any length and any characters. The audit row
/// holds the exact value and the name sent, so a CloudTrail name always leads back.
pub fn aws_name(raw: &str) -> String {
    let fits = (2..=AWS_NAME_MAX).contains(&raw.len()) && raw.chars().all(aws_name_char);
    if fits {
        raw.to_owned()
    } else {
        hashed_name(&aws_chars(raw), raw)
    }
}

/// RoleSessionName: what shows in the customer's CloudTrail as the session, e.g.
/// `support.CS-12345.alice` or `customer.acme-corp.billing-job`. When that does not fit
/// (long case ids or subjects, characters outside the set), a readable part in which the
/// actor keeps at least 24 characters, and a hash of the exact kind, context and actor.
pub fn role_session_name(
    kind: SessionKind,
    customer: &CustomerId,
    case: Option<&CaseId>,
    actor: &str,
) -> String {
    let context = case.map_or(customer.as_str(), CaseId::as_str);
    let kind = kind.as_str();
    let full = format!("{kind}.{context}.{actor}");
    if full.len() <= AWS_NAME_MAX && full.chars().all(aws_name_char) {
        return full;
    }
    let readable_max = AWS_NAME_MAX - HASH_HEX - 1;
    let short_actor: String = aws_chars(actor).chars().take(readable_max).collect();
    let room_for_context = readable_max
        .saturating_sub(kind.len() + 2 + short_actor.len().min(24))
        .max(1);
    let short_context: String = context.chars().take(room_for_context).collect();
    // Kind and context hold no NUL, so the exact triple is unambiguous.
    hashed_name(
        &format!("{kind}.{short_context}.{short_actor}"),
        &format!("{kind}\0{context}\0{actor}"),
    )
}

/// SourceIdentity: the person or service behind the credentials. It persists through role
/// chaining, so the customer can always tell who acted. AWS forbids the `aws:` prefix; the
/// `:` is not in the character set, so it cannot occur.
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

/// The inline session policy for one AssumeRole: the scoped-down statements (`policy`: the
/// role's, or its tier's) plus, when `cut_at` is set, a Deny of every action after the
/// session's end (`aws:CurrentTime`). `None` when neither applies.
///
/// Without statements of its own the policy must still allow what the session may do: AWS
/// grants only what the session policies allow. With `managed` policy ARNs beside it, those
/// allow it, and the inline policy holds the Deny alone: an `Allow *` there would undo the
/// managed policies' narrowing (session policies are evaluated together, any Allow counts).
/// Without managed ones it allows everything the role allows (`LanyardAllowRole`).
pub fn session_policy(
    policy: Option<&Value>,
    managed: bool,
    cut_at: Option<DateTime<Utc>>,
) -> Option<String> {
    if policy.is_none() && cut_at.is_none() {
        return None;
    }
    let mut statements: Vec<Value> = match policy.and_then(|p| p.get("Statement")) {
        Some(Value::Array(list)) => list.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ if managed => Vec::new(),
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

    fn valid(name: &str) -> bool {
        (2..=64).contains(&name.len()) && name.chars().all(aws_name_char)
    }

    #[test]
    fn aws_names_are_kept_when_they_fit_and_hashed_when_they_do_not() {
        assert_eq!(aws_name("alice@example.com"), "alice@example.com");
        for raw in [
            "Jörg Müller/ops",
            "x",
            &"a".repeat(100),
            "aws:root",
            "J?rg Müller/ops",
        ] {
            let name = aws_name(raw);
            assert!(valid(&name), "{raw:?} → {name:?}");
            assert_eq!(name, aws_name(raw), "stable");
        }
        assert!(aws_name("Jörg Müller/ops").starts_with("J-rg-M-ller-ops-"));
        assert!(!source_identity("aws:root").starts_with("aws:"));
        // What sanitising or shortening would have merged stays apart.
        assert_ne!(aws_name("Jörg"), aws_name("J?rg"));
        assert_ne!(aws_name("Jörg"), aws_name("J-rg"));
        let long = "ci-pipeline@example.com/".repeat(3);
        let (a, b) = (format!("{long}job-1"), format!("{long}job-2"));
        assert_eq!(a.len(), 77);
        assert_ne!(source_identity(&a), source_identity(&b));
        assert!(valid(&source_identity(&a)) && valid(&source_identity(&b)));
    }

    #[test]
    fn role_session_names_name_kind_context_and_actor_and_stay_unique() {
        let customer = CustomerId::parse("acme-corp").unwrap();
        let case = CaseId::parse("CS-12345").unwrap();
        assert_eq!(
            role_session_name(SessionKind::Support, &customer, Some(&case), "alice"),
            "support.CS-12345.alice"
        );
        assert_eq!(
            role_session_name(SessionKind::Customer, &customer, None, "billing-job"),
            "customer.acme-corp.billing-job"
        );
        let spaced = role_session_name(SessionKind::Customer, &customer, None, "billing job");
        assert!(
            valid(&spaced) && spaced.starts_with("customer.acme-corp.billing-job-"),
            "{spaced}"
        );
        // A long case id does not crowd out who acted.
        let long_case = CaseId::parse(&format!("CS{}", "9".repeat(62))).unwrap();
        let name = role_session_name(SessionKind::Support, &customer, Some(&long_case), "alice");
        assert!(valid(&name), "{name}");
        assert!(
            name.starts_with("support.CS999") && name.contains(".alice-"),
            "{name}"
        );
        // Long subjects differing only at the end get different names.
        let long = "x".repeat(78);
        let (a, b) = (format!("{long}-a"), format!("{long}-b"));
        let (na, nb) = (
            role_session_name(SessionKind::Support, &customer, Some(&case), &a),
            role_session_name(SessionKind::Support, &customer, Some(&case), &b),
        );
        assert!(valid(&na) && valid(&nb));
        assert_ne!(na, nb);
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
        assert_eq!(session_policy(None, false, None), None);
        let doc: Value =
            serde_json::from_str(&session_policy(None, false, Some(at(0))).unwrap()).unwrap();
        assert_eq!(doc["Statement"][0]["Effect"], "Allow");
        assert_eq!(doc["Statement"][1]["Effect"], "Deny");
        assert_eq!(
            doc["Statement"][1]["Condition"]["DateGreaterThan"]["aws:CurrentTime"],
            at(0).to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let scoped =
            json!({ "Statement": { "Effect": "Allow", "Action": "s3:Get*", "Resource": "*" } });
        let doc: Value =
            serde_json::from_str(&session_policy(Some(&scoped), false, Some(at(0))).unwrap())
                .unwrap();
        assert_eq!(doc["Statement"][0]["Action"], "s3:Get*");
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 2);
        let only_scoped: Value =
            serde_json::from_str(&session_policy(Some(&scoped), false, None).unwrap()).unwrap();
        assert_eq!(only_scoped["Statement"].as_array().unwrap().len(), 1);
        // Beside managed policies, never an Allow of everything: only the cut-off Deny.
        let beside_managed: Value =
            serde_json::from_str(&session_policy(None, true, Some(at(0))).unwrap()).unwrap();
        assert_eq!(
            beside_managed["Statement"],
            json!([{ "Sid": "LanyardSessionEnd", "Effect": "Deny", "Action": "*", "Resource": "*",
                     "Condition": { "DateGreaterThan": { "aws:CurrentTime":
                         at(0).to_rfc3339_opts(SecondsFormat::Secs, true) } } }])
        );
        assert_eq!(session_policy(None, true, None), None);
    }
}
