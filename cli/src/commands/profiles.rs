//! `lanyard profiles`: the AWS profiles Lanyard serves — each whose `credential_process` runs
//! `lanyard credential-process`, and each recorded in Lanyard's config — with what it asks
//! the broker for and what the local credential cache holds for it. Asks the broker nothing.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use super::queries::table;
use super::{Ctx, cache_key, print, print_json, rfc3339};
use crate::aws_config;
use crate::cache::CredentialCache;
use crate::config::{self, Config, Kind, Profile};
use crate::credentials;

/// A `credential_process` command line that runs `lanyard credential-process`, and whose
/// credentials it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanyardCommand {
    /// `--profile NAME`.
    pub profile: Option<String>,
    /// `--customer ID` (and `--role NAME`): the caller's customer credentials, no profile.
    pub customer: Option<String>,
    pub role: Option<String>,
}

/// The command line split as botocore splits it, when its program is `lanyard…` and its
/// command `credential-process`.
pub fn lanyard_command(line: &str) -> Option<LanyardCommand> {
    let words = aws_config::shell_words(line)?;
    let program = std::path::Path::new(words.first()?).file_name()?.to_str()?;
    if !program.starts_with("lanyard") || words.get(1)? != "credential-process" {
        return None;
    }
    let flag = |name: &str| {
        let long = format!("--{name}");
        let with_eq = format!("--{name}=");
        words
            .windows(2)
            .find(|w| w[0] == long)
            .map(|w| w[1].clone())
            .or_else(|| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(with_eq.as_str()).map(str::to_owned))
            })
    };
    Some(LanyardCommand {
        profile: flag("profile"),
        customer: flag("customer"),
        role: flag("role"),
    })
}

/// What the local cache holds for a profile.
#[derive(Debug, Serialize)]
struct CacheState {
    /// `cached` (served as it is), `refresh_due` (the next use asks the broker), `expired`,
    /// `none`, or `unknown` (no cache or no broker to key it by).
    state: &'static str,
    expiration: Option<String>,
    access_key_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct Row {
    /// The AWS profile (`--profile` of `aws`).
    name: String,
    /// The Lanyard profile its credential_process names (usually the same name), or
    /// `--customer ID` for a profile without one.
    lanyard_profile: String,
    kind: Option<&'static str>,
    customer: Option<String>,
    role: Option<String>,
    case: Option<String>,
    session: Option<String>,
    session_expires_at: Option<String>,
    tier: Option<String>,
    cache: CacheState,
    /// Its credential_process in the AWS config runs lanyard.
    aws_config: bool,
    /// Lanyard's config records it.
    lanyard_config: bool,
    note: Option<String>,
}

pub fn profiles(ctx: &Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let aws_path = aws_config::config_path()?;
    let credentials_path = aws_config::credentials_path()?;
    let text = |path: &std::path::Path| -> anyhow::Result<String> {
        Ok(aws_config::read(path)?.map(|(t, _)| t).unwrap_or_default())
    };
    let aws = super::migrate::merged(&text(&aws_path)?, &text(&credentials_path)?);
    let any = !config.profiles.is_empty()
        || aws.values().any(|s| {
            s.get("credential_process")
                .is_some_and(|l| lanyard_command(l).is_some())
        });
    // An unusable cache shows as `?`, and none is created where no profile needs one.
    let cache = if any { ctx.cache().ok() } else { None };
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (name, settings) in &aws {
        let Some(command) = settings
            .get("credential_process")
            .and_then(|l| lanyard_command(l))
        else {
            continue;
        };
        let row = match (&command.profile, &command.customer) {
            (Some(lanyard), _) => match config.profiles.get(lanyard) {
                Some(profile) => row_of(ctx, &config, cache.as_ref(), name, lanyard, profile),
                None => Row {
                    note: Some(format!(
                        "lanyard has no profile {lanyard} (run `lanyard setup-customer` or \
                         `lanyard support-access`)"
                    )),
                    ..empty(name, lanyard)
                },
            },
            (None, Some(customer)) => {
                adhoc_row(ctx, &config, cache.as_ref(), name, &command, customer)
            }
            (None, None) => Row {
                note: Some("its credential_process names no --profile or --customer".into()),
                ..empty(name, "-")
            },
        };
        rows.insert(name.clone(), row);
    }
    for (name, profile) in &config.profiles {
        let wired = rows.values().any(|r| r.lanyard_profile == *name);
        if !wired {
            let mut row = row_of(ctx, &config, cache.as_ref(), name, name, profile);
            row.aws_config = false;
            row.note = Some(format!(
                "not in {} (`aws --profile {name}` cannot use it)",
                aws_path.display()
            ));
            rows.insert(name.clone(), row);
        }
    }
    let rows: Vec<Row> = rows.into_values().collect();
    if ctx.json_output() {
        return print_json(&serde_json::json!({
            "profiles": rows, "aws_config": aws_path, "aws_credentials": credentials_path,
        }));
    }
    if rows.is_empty() {
        return print(&format!(
            "No Lanyard profiles: none in {} runs `lanyard credential-process`, and Lanyard's \
             config records none (`lanyard setup-customer`, `lanyard support-access` and \
             `lanyard migrate` write them).\n",
            aws_path.display(),
        ));
    }
    print(&profiles_table(&rows))
}

fn empty(name: &str, lanyard: &str) -> Row {
    Row {
        name: name.to_owned(),
        lanyard_profile: lanyard.to_owned(),
        kind: None,
        customer: None,
        role: None,
        case: None,
        session: None,
        session_expires_at: None,
        tier: None,
        cache: CacheState {
            state: "unknown",
            expiration: None,
            access_key_id: None,
        },
        aws_config: true,
        lanyard_config: false,
        note: None,
    }
}

fn kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Support => "support",
        Kind::Customer => "customer",
    }
}

/// The row of AWS profile `name`, served by Lanyard profile `lanyard`.
fn row_of(
    ctx: &Ctx,
    config: &Config,
    cache: Option<&CredentialCache>,
    name: &str,
    lanyard: &str,
    profile: &Profile,
) -> Row {
    let key = ctx
        .server(config, Some(profile))
        .ok()
        .and_then(|server| cache_key(lanyard, profile, &server).ok());
    let note = profile.approval_expires_at.map(|until| {
        format!(
            "waiting for approval when written (request expires {})",
            rfc3339(until)
        )
    });
    Row {
        kind: Some(kind(profile.kind)),
        customer: Some(profile.customer.clone()),
        role: profile.role.clone(),
        case: profile.case.clone(),
        session: profile.session.clone(),
        session_expires_at: profile.session_expires_at.map(rfc3339),
        tier: profile.tier.clone(),
        cache: cache_state(cache, key.as_deref(), profile),
        lanyard_config: true,
        note,
        ..empty(name, lanyard)
    }
}

/// The row of AWS profile `name` whose credential_process asks for `--customer` credentials.
fn adhoc_row(
    ctx: &Ctx,
    config: &Config,
    cache: Option<&CredentialCache>,
    name: &str,
    command: &LanyardCommand,
    customer: &str,
) -> Row {
    let key = ctx
        .server(config, None)
        .ok()
        .and_then(|server| config::origin(&server).ok())
        .and_then(|origin| {
            super::obtain::customer_cache_key(ctx, &origin, customer, command.role.as_deref())
        });
    let profile = Profile {
        server: None,
        kind: Kind::Customer,
        customer: customer.to_owned(),
        session: None,
        case: None,
        role: command.role.clone(),
        session_expires_at: None,
        tier: None,
        case_title: None,
        approval_expires_at: None,
        identity: None,
    };
    Row {
        kind: Some("customer"),
        customer: Some(customer.to_owned()),
        role: command.role.clone(),
        cache: cache_state(cache, key.as_deref(), &profile),
        ..empty(name, &format!("--customer {customer}"))
    }
}

fn cache_state(
    cache: Option<&CredentialCache>,
    key: Option<&str>,
    profile: &Profile,
) -> CacheState {
    let (Some(cache), Some(key)) = (cache, key) else {
        return CacheState {
            state: "unknown",
            expiration: None,
            access_key_id: None,
        };
    };
    let Some(cached) = cache.read(key) else {
        return CacheState {
            state: "none",
            expiration: None,
            access_key_id: None,
        };
    };
    let now = Utc::now();
    let state = if cached.expiration <= now {
        "expired"
    } else if credentials::is_fresh(&cached, profile, now) {
        "cached"
    } else {
        "refresh_due"
    };
    CacheState {
        state,
        expiration: Some(rfc3339(cached.expiration)),
        access_key_id: Some(cached.document.access_key_id.clone()),
    }
}

fn cache_cell(cache: &CacheState) -> String {
    let until = cache.expiration.as_deref().unwrap_or("?");
    match cache.state {
        "cached" => format!("cached until {until}"),
        "refresh_due" => format!("refresh due (expires {until})"),
        "expired" => "expired".into(),
        "none" => "none".into(),
        _ => "?".into(),
    }
}

fn profiles_table(rows: &[Row]) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let notes = rows.iter().any(|r| r.note.is_some());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.name.clone(),
                r.kind.unwrap_or("?").to_owned(),
                dash(&r.customer),
                dash(&r.role),
                dash(&r.case),
                dash(&r.session),
                dash(&r.session_expires_at),
                cache_cell(&r.cache),
            ];
            if notes {
                row.push(dash(&r.note));
            }
            row
        })
        .collect();
    let mut header = vec![
        "PROFILE",
        "KIND",
        "CUSTOMER",
        "ROLE",
        "CASE",
        "SESSION",
        "SESSION ENDS",
        "CACHE",
    ];
    if notes {
        header.push("NOTE");
    }
    table(&header, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanyard_command_lines_are_told_from_others() {
        let line = "'/opt/my tools/lanyard' credential-process --profile acme-prod";
        assert_eq!(
            lanyard_command(line),
            Some(LanyardCommand {
                profile: Some("acme-prod".into()),
                customer: None,
                role: None
            })
        );
        let adhoc =
            lanyard_command("lanyard credential-process --customer=acme --role ro").unwrap();
        assert_eq!(adhoc.customer.as_deref(), Some("acme"));
        assert_eq!(adhoc.role.as_deref(), Some("ro"));
        assert_eq!(lanyard_command("lanyard export --profile x"), None);
        assert_eq!(lanyard_command("/usr/bin/aws-vault exec x --json"), None);
        assert_eq!(lanyard_command("'unterminated"), None);
    }
}
