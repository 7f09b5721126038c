//! A role's scoped-down session policy, checked when the role is registered: an IAM policy
//! document that fits STS's limit with room for the broker's own statements.

use lanyard_api::roles::{MAX_REQUIRED_ACTIONS, MAX_SESSION_POLICY_CHARS};
use serde_json::Value;

use super::ParseError;

/// Checks a session policy: a JSON object with `Statement` (one statement object or a
/// non-empty list of them), optional string `Version` and `Id`, nothing else at the top,
/// no NUL (Postgres' jsonb cannot store it, no IAM policy holds it), and at most
/// [`MAX_SESSION_POLICY_CHARS`] characters compact.
pub fn check_session_policy(policy: &Value) -> Result<(), ParseError> {
    let obj = policy
        .as_object()
        .ok_or_else(|| ParseError::new("must be an IAM policy document (a JSON object)"))?;
    if !obj.contains_key("Statement") {
        return Err(ParseError::new("must have a Statement"));
    }
    if obj
        .keys()
        .any(|k| !["Version", "Id", "Statement"].contains(&k.as_str()))
    {
        return Err(ParseError::new(
            "only Version, Id and Statement are allowed at the top level",
        ));
    }
    if ["Version", "Id"]
        .iter()
        .any(|k| obj.get(*k).is_some_and(|v| !v.is_string()))
    {
        return Err(ParseError::new("Version and Id must be strings"));
    }
    let statements_ok = match &obj["Statement"] {
        Value::Object(_) => true,
        Value::Array(list) => !list.is_empty() && list.iter().all(Value::is_object),
        _ => false,
    };
    if !statements_ok {
        return Err(ParseError::new(
            "Statement must be a statement object or a non-empty list of them",
        ));
    }
    if has_nul(policy) {
        return Err(ParseError::new("must not contain NUL characters"));
    }
    let compact = policy.to_string();
    if compact.len() > MAX_SESSION_POLICY_CHARS {
        return Err(ParseError::new(format!(
            "is {} characters; at most {MAX_SESSION_POLICY_CHARS} leave room within STS's 2,048",
            compact.len()
        )));
    }
    Ok(())
}

/// Checks a list of IAM actions (`service:Action`, `*` and `?` allowed in the action part):
/// at most [`MAX_REQUIRED_ACTIONS`], each at most 128 characters, none twice.
pub fn check_actions(actions: &[String]) -> Result<(), ParseError> {
    if actions.len() > MAX_REQUIRED_ACTIONS {
        return Err(ParseError::new(format!(
            "at most {MAX_REQUIRED_ACTIONS} actions (got {})",
            actions.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for action in actions {
        let valid = action.len() <= 128
            && action.split_once(':').is_some_and(|(service, name)| {
                !service.is_empty()
                    && service
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?')
            });
        if !valid {
            return Err(ParseError::new(format!(
                "{:?} is not an IAM action (service:Action, e.g. s3:GetObject)",
                action.chars().take(60).collect::<String>()
            )));
        }
        if !seen.insert(action.to_ascii_lowercase()) {
            return Err(ParseError::new(format!("{action} is listed twice")));
        }
    }
    Ok(())
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn policies_of_the_right_shape_and_size_pass() {
        let one = json!({ "Version": "2012-10-17",
            "Statement": { "Effect": "Allow", "Action": "s3:Get*", "Resource": "*" } });
        assert!(check_session_policy(&one).is_ok());
        let list = json!({ "Statement": [{ "Effect": "Allow", "Action": "*", "Resource": "*" }] });
        assert!(check_session_policy(&list).is_ok());
    }

    #[test]
    fn actions_are_service_colon_name() {
        let ok: Vec<String> = ["s3:GetObject", "ec2:Describe*", "kms:Decrypt"]
            .map(String::from)
            .to_vec();
        assert!(check_actions(&ok).is_ok());
        for (bad, why) in [
            (vec!["s3"], "not an IAM action"),
            (vec!["s3:Get Object"], "not an IAM action"),
            (vec![":GetObject"], "not an IAM action"),
            (vec!["s3:GetObject", "S3:getobject"], "twice"),
        ] {
            let bad: Vec<String> = bad.into_iter().map(String::from).collect();
            let err = check_actions(&bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let many: Vec<String> = (0..101).map(|i| format!("s3:A{i}")).collect();
        assert!(check_actions(&many).is_err());
    }

    #[test]
    fn anything_else_is_refused_with_the_rule_it_broke() {
        for (bad, why) in [
            (json!([]), "JSON object"),
            (json!({ "Version": "2012-10-17" }), "must have a Statement"),
            (json!({ "Statement": {}, "Extra": 1 }), "only Version"),
            (
                json!({ "Statement": {}, "Version": 2012 }),
                "must be strings",
            ),
            (json!({ "Statement": [] }), "non-empty list"),
            (json!({ "Statement": "Allow" }), "non-empty list"),
            (json!({ "Statement": { "Sid": "a\u{0}b" } }), "NUL"),
            (
                json!({ "Statement": { "Action": "s".repeat(MAX_SESSION_POLICY_CHARS) } }),
                "leave room",
            ),
        ] {
            let err = check_session_policy(&bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
