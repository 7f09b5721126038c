//! The one line each credential run (`credential-process`, `export`) leaves in the log file
//! (and on stderr under `--debug`): whose credentials, whether the local cache or the broker
//! served them, how long the run took and how it ended. Never a secret: the access key id
//! and the expiry, not the secret key or the session token (and the log redacts those
//! again, see `log`).

use super::{Ctx, Target, rfc3339};
use crate::cache::Cached;
use crate::config::Kind;
use crate::credentials::Source;

/// Records a credential run that ended with `result`; nothing when there is nowhere to
/// record it (no `--debug`, no log file), so that a warm cache pays for nothing.
pub(super) fn credential_run(
    ctx: &Ctx,
    command: &str,
    target: &Target,
    result: &anyhow::Result<(Cached, Source)>,
) {
    if !crate::log::enabled() {
        return;
    }
    if let Ok((cached, _)) = result {
        crate::log::secret(&cached.document.secret_access_key);
        crate::log::secret(&cached.document.session_token);
    }
    let mut fields: Vec<(&str, String)> = Vec::new();
    match target {
        Target::Profile(name) => {
            fields.push(("profile", name.clone()));
            let profile = ctx
                .config()
                .ok()
                .and_then(|c| c.profiles.get(name).cloned());
            if let Some(p) = profile {
                fields.push(("kind", kind(p.kind).into()));
                fields.push(("customer", p.customer));
                fields.push(("role", p.role.unwrap_or_else(|| "-".into())));
                if let Some(case) = p.case {
                    fields.push(("case", case));
                }
                fields.push(("session", p.session.unwrap_or_else(|| "-".into())));
            }
        }
        Target::Customer { customer, role } => {
            fields.push(("profile", "-".into()));
            fields.push(("kind", "customer".into()));
            fields.push(("customer", customer.clone()));
            fields.push(("role", role.clone().unwrap_or_else(|| "-".into())));
            fields.push(("session", "-".into()));
        }
    }
    match result {
        Ok((cached, source)) => {
            let source = match source {
                Source::Cache => "cache",
                Source::Broker => "broker",
            };
            fields.push(("source", source.into()));
            fields.push(("outcome", "ok".into()));
            fields.push(("access_key", cached.document.access_key_id.clone()));
            fields.push(("expires", rfc3339(cached.expiration)));
        }
        Err(e) => {
            fields.push(("outcome", "error".into()));
            fields.push(("error", crate::text::one_line(&format!("{e:#}"))));
        }
    }
    fields.push(("duration_ms", crate::log::elapsed().as_millis().to_string()));
    let line: Vec<String> = fields.iter().map(|(k, v)| field(k, v)).collect();
    crate::log::record(&format!("{command} {}", line.join(" ")));
}

fn kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Support => "support",
        Kind::Customer => "customer",
    }
}

/// `key=value`, the value quoted (JSON string rules) when it is empty or holds a space, a
/// quote or `=`, so that a line splits back into its fields.
fn field(key: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || "\"=\\".contains(c));
    if plain {
        format!("{key}={value}")
    } else {
        format!("{key}={}", serde_json::Value::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_spaces_or_quotes_are_quoted() {
        assert_eq!(field("profile", "acme-prod"), "profile=acme-prod");
        assert_eq!(
            field("error", "HTTP 410: \"gone\""),
            r#"error="HTTP 410: \"gone\"""#
        );
        assert_eq!(field("role", ""), r#"role="""#);
    }
}
