//! Access tiers: the named grants a role offers besides its base one (`read`, `billing`,
//! `debug`, `write`), checked when the role is registered so that every tier a session can
//! name fits what STS accepts.

use std::collections::BTreeMap;

use lanyard_api::roles::{MAX_POLICY_ARNS, MAX_SESSION_POLICY_CHARS, MAX_TIERS, Tier};
use serde_json::Value;

use super::ParseError;
use super::policy::check_session_policy;

/// A tier name: 1-32 of `[a-z0-9_-]`, starting with a letter or digit (it becomes the
/// `lanyard:tier` session tag and a report key).
pub fn check_tier_name(name: &str) -> Result<(), ParseError> {
    let valid = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ParseError::new(format!(
            "tier name {:?} must be 1-32 of a-z, 0-9, _ and -, starting with a letter or digit",
            name.chars().take(40).collect::<String>()
        )))
    }
}

/// A managed policy ARN as AssumeRole's `PolicyArns` takes it
/// (`arn:<partition>:iam::<aws|12 digits>:policy/<path/>name`, at most 2,048 characters).
fn check_policy_arn(arn: &str) -> Result<(), ParseError> {
    let bad = || {
        ParseError::new(format!(
            "{:?} is not a managed policy ARN (arn:aws:iam::aws:policy/NAME or \
             arn:aws:iam::123456789012:policy/NAME)",
            arn.chars().take(80).collect::<String>()
        ))
    };
    if arn.len() > 2048 || arn.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let partition_ok = partition.starts_with("aws")
        && partition[3..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-');
    let account_ok =
        account == "aws" || (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()));
    let name = resource.strip_prefix("policy/").unwrap_or_default();
    let name_ok = !name.is_empty() && !name.ends_with('/');
    if partition_ok && account_ok && name_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Checks a role's tiers against the role's own maximum session length and base grant; the
/// first bad one is named with the rule it broke. Each tier must narrow the role (a tier
/// without a policy would be the whole role), its inline policy and managed ARNs together
/// must fit STS's packed limit with room for the broker's session-end statement, and a tier
/// that needs approval is only worth it when the base grant (`base_policy`) is narrower:
/// otherwise a session without a tier would get more, with no approval.
pub fn check_tiers(
    tiers: &BTreeMap<String, Tier>,
    role_max_session_seconds: i32,
    base_policy: Option<&Value>,
) -> Result<(), ParseError> {
    if tiers.len() > MAX_TIERS {
        return Err(ParseError::new(format!(
            "at most {MAX_TIERS} tiers per role (got {})",
            tiers.len()
        )));
    }
    for (name, tier) in tiers {
        check_tier_name(name)?;
        check_tier(tier, role_max_session_seconds, base_policy)
            .map_err(|e| ParseError::new(format!("tier '{name}': {e}")))?;
    }
    Ok(())
}

fn check_tier(
    tier: &Tier,
    role_max_session_seconds: i32,
    base_policy: Option<&Value>,
) -> Result<(), ParseError> {
    if let Some(policy) = &tier.session_policy {
        check_session_policy(policy).map_err(|e| ParseError::new(format!("session_policy {e}")))?;
    }
    if tier.policy_arns.len() > MAX_POLICY_ARNS {
        return Err(ParseError::new(format!(
            "policy_arns: at most {MAX_POLICY_ARNS} (STS's limit)"
        )));
    }
    for arn in &tier.policy_arns {
        check_policy_arn(arn).map_err(|e| ParseError::new(format!("policy_arns: {e}")))?;
    }
    let mut seen = std::collections::HashSet::new();
    if !tier.policy_arns.iter().all(|a| seen.insert(a)) {
        return Err(ParseError::new("policy_arns: an ARN is listed twice"));
    }
    if tier.session_policy.is_none() && tier.policy_arns.is_empty() {
        return Err(ParseError::new(
            "has neither session_policy nor policy_arns: it would grant the whole role",
        ));
    }
    // STS counts the inline policy and the ARNs together against its packed limit.
    let packed = tier
        .session_policy
        .as_ref()
        .map_or(0, |p| p.to_string().len())
        + tier.policy_arns.iter().map(String::len).sum::<usize>();
    if packed > MAX_SESSION_POLICY_CHARS {
        return Err(ParseError::new(format!(
            "session_policy and policy_arns together are {packed} characters; at most \
             {MAX_SESSION_POLICY_CHARS} leave room within STS's 2,048"
        )));
    }
    if let Some(max) = tier.max_duration_seconds
        && !(60..=role_max_session_seconds).contains(&max)
    {
        return Err(ParseError::new(format!(
            "max_duration_seconds must be between 60 and the role's max_session_seconds \
             ({role_max_session_seconds})"
        )));
    }
    if tier.requires_approval && base_policy.is_none() {
        return Err(ParseError::new(
            "requires approval, but the role has no session_policy: a session without a tier \
             would get the whole role with no approval; narrow the base grant with \
             session_policy",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tier(value: serde_json::Value) -> Tier {
        serde_json::from_value(value).unwrap()
    }

    const ARN: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";

    #[test]
    fn well_formed_tiers_pass() {
        let tiers = BTreeMap::from([
            ("read".to_owned(), tier(json!({ "policy_arns": [ARN] }))),
            (
                "write".to_owned(),
                tier(json!({
                    "session_policy": { "Statement": { "Effect": "Allow", "Action": "s3:*", "Resource": "*" } },
                    "policy_arns": ["arn:aws:iam::111122223333:policy/team/Write"],
                    "max_duration_seconds": 1800, "requires_approval": true })),
            ),
        ]);
        let base =
            json!({ "Statement": { "Effect": "Allow", "Action": "s3:Get*", "Resource": "*" } });
        assert!(check_tiers(&tiers, 3600, Some(&base)).is_ok());
        // Without a narrower base grant, approval could be skipped by asking for no tier.
        let err = check_tiers(&tiers, 3600, None).unwrap_err().to_string();
        assert!(err.contains("tier 'write': requires approval"), "{err}");
    }

    #[test]
    fn each_broken_rule_is_named() {
        let big = json!({ "Statement": { "Action": "s".repeat(1600) } });
        let near_full = json!({ "Statement": { "Action": "s".repeat(1480) } });
        for (name, value, why) in [
            ("Write", json!({ "policy_arns": [ARN] }), "must be 1-32"),
            ("w", json!({}), "neither session_policy nor policy_arns"),
            (
                "w",
                json!({ "session_policy": big }),
                "tier 'w': session_policy",
            ),
            (
                "w",
                json!({ "session_policy": near_full, "policy_arns": [ARN] }),
                "together are",
            ),
            (
                "w",
                json!({ "policy_arns": ["arn:aws:iam::aws:role/X"] }),
                "managed policy ARN",
            ),
            (
                "w",
                json!({ "policy_arns": ["arn:aws:s3:::bucket"] }),
                "managed policy ARN",
            ),
            ("w", json!({ "policy_arns": [ARN, ARN] }), "twice"),
            (
                "w",
                json!({ "policy_arns": [ARN], "max_duration_seconds": 7200 }),
                "max_session_seconds (3600)",
            ),
            (
                "w",
                json!({ "policy_arns": [ARN], "max_duration_seconds": 10 }),
                "between 60",
            ),
        ] {
            let tiers = BTreeMap::from([(name.to_owned(), tier(value))]);
            let err = check_tiers(&tiers, 3600, None).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
        let many: BTreeMap<String, Tier> = (0..11)
            .map(|i| (format!("t{i}"), tier(json!({ "policy_arns": [ARN] }))))
            .collect();
        let err = check_tiers(&many, 3600, None).unwrap_err().to_string();
        assert!(err.contains("at most 10"), "{err}");
        let arns: Vec<String> = (0..11)
            .map(|i| format!("arn:aws:iam::aws:policy/P{i}"))
            .collect();
        let tiers = BTreeMap::from([("w".to_owned(), tier(json!({ "policy_arns": arns })))]);
        let err = check_tiers(&tiers, 3600, None).unwrap_err().to_string();
        assert!(err.contains("at most 10"), "{err}");
    }
}
