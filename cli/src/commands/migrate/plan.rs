//! What `lanyard migrate` would do to the AWS config and credentials files, worked out
//! without any I/O: which profiles reach a customer role the broker knows (or hold static
//! keys the user named), and the files' texts after they are rewritten as Lanyard profiles,
//! with the settings taken out of them for the backup.

use std::collections::{BTreeMap, BTreeSet};

use crate::aws_config::{self, FileKind};

/// Settings a migrated profile loses (to the backup): every way the AWS CLI would otherwise
/// get credentials for it before it runs `credential_process` (an assumed role, static keys
/// in the credentials file; botocore's resolver tries those first), and what went with them.
pub const REMOVED: [&str; 18] = [
    // An SSO provider would be tried before credential_process.
    "sso_session",
    "sso_account_id",
    "sso_role_name",
    "sso_start_url",
    "sso_region",
    "sso_registration_scopes",
    "role_arn",
    "external_id",
    "source_profile",
    "credential_source",
    "role_session_name",
    "duration_seconds",
    "mfa_serial",
    "web_identity_token_file",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_security_token",
];

/// A customer role the broker knows, with what picks it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRole {
    pub customer: String,
    pub role: String,
    pub role_arn: String,
    /// The customer's external ID and a rotated one waiting for verification.
    pub external_ids: Vec<String>,
    /// The role allows customer sessions.
    pub customer_sessions: bool,
    /// `verified`, or why not (`failed`, `unverified`).
    pub status: String,
}

/// Where a migrated profile's credentials came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An assumed role (`role_arn`).
    RoleArn(String),
    /// Static keys (`aws_access_key_id`), in a profile named with `--static-profile`.
    StaticKeys,
}

/// A profile to rewrite as a Lanyard customer profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub profile: String,
    pub customer: String,
    /// The customer role; `None`: the customer's one role for customer sessions.
    pub role: Option<String>,
    pub from: Origin,
}

/// A profile left as it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub profile: String,
    pub reason: String,
}

/// What the user asked for besides the role profiles found.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// `--static-profile`: profiles whose static keys become customer `customer`'s.
    pub static_profiles: &'a [String],
    /// `--customer`: the customer of the static profiles; and only this customer's role
    /// profiles are migrated.
    pub customer: Option<&'a str>,
    /// `--role`: the role of the static profiles.
    pub role: Option<&'a str>,
}

/// The profiles as botocore reads them: the credentials file's settings over the config
/// file's.
pub fn merged(config: &str, credentials: &str) -> BTreeMap<String, aws_config::Settings> {
    let mut profiles = aws_config::profiles(config, FileKind::Config);
    for (name, settings) in aws_config::profiles(credentials, FileKind::Credentials) {
        profiles.entry(name).or_default().extend(settings);
    }
    profiles
}

/// Whether a `credential_process` command line runs `lanyard credential-process`.
pub fn runs_lanyard(line: &str) -> bool {
    super::super::profiles::lanyard_command(line).is_some()
}

/// Whether the profile still gets its credentials some other way first.
fn shadowed(settings: &aws_config::Settings) -> bool {
    REMOVED.iter().any(|k| settings.contains_key(*k))
}

/// Whether any profile names a role (and is not a finished Lanyard profile), so that the
/// broker's roles are worth asking for.
pub fn has_role_profiles(config: &str, credentials: &str) -> bool {
    merged(config, credentials)
        .values()
        .any(|s| s.contains_key("role_arn"))
}

/// The profiles to migrate, those left as they are (with why), and how many are Lanyard
/// profiles already. Errors: a `--static-profile` that names no profile with static keys.
pub fn find(
    config: &str,
    credentials: &str,
    roles: &[KnownRole],
    request: &Request<'_>,
) -> anyhow::Result<(Vec<Migration>, Vec<Skipped>, usize)> {
    let profiles = merged(config, credentials);
    let statics: BTreeSet<&str> = request.static_profiles.iter().map(String::as_str).collect();
    let mut migrations = Vec::new();
    let mut skipped = Vec::new();
    let mut done = 0;
    for name in &statics {
        let settings = profiles.get(*name);
        let keys = settings.is_some_and(|s| s.contains_key("aws_access_key_id"));
        let lanyard = settings
            .and_then(|s| s.get("credential_process"))
            .is_some_and(|l| runs_lanyard(l));
        if !keys && !lanyard {
            anyhow::bail!(
                "--static-profile {name}: no profile of that name holds static keys \
                 (aws_access_key_id) in the AWS config or credentials file"
            );
        }
    }
    for (name, settings) in &profiles {
        let lanyard = settings
            .get("credential_process")
            .is_some_and(|l| runs_lanyard(l));
        if let Some(arn) = settings.get("role_arn") {
            match match_role(arn, settings.get("external_id"), roles) {
                Ok(role) if request.customer.is_some_and(|c| c != role.customer) => {
                    skipped.push(Skipped {
                        profile: name.clone(),
                        reason: format!(
                            "role {arn} is customer {}'s, not --customer {}'s",
                            role.customer,
                            request.customer.unwrap_or_default()
                        ),
                    });
                }
                Ok(role) => migrations.push(Migration {
                    profile: name.clone(),
                    customer: role.customer.clone(),
                    role: Some(role.role.clone()),
                    from: Origin::RoleArn(arn.clone()),
                }),
                Err(reason) => skipped.push(Skipped {
                    profile: name.clone(),
                    reason,
                }),
            }
            continue;
        }
        if statics.contains(name.as_str())
            && shadowed(settings)
            && let Some(customer) = request.customer
        {
            migrations.push(Migration {
                profile: name.clone(),
                customer: customer.to_owned(),
                role: request.role.map(str::to_owned),
                from: Origin::StaticKeys,
            });
            continue;
        }
        if lanyard && !shadowed(settings) {
            done += 1;
        }
    }
    Ok((migrations, skipped, done))
}

/// The registered role `arn` is, told apart by the external ID when several customers
/// registered it; or why none is.
fn match_role<'a>(
    arn: &str,
    external_id: Option<&String>,
    roles: &'a [KnownRole],
) -> Result<&'a KnownRole, String> {
    let all: Vec<&KnownRole> = roles.iter().filter(|r| r.role_arn == arn).collect();
    let usable: Vec<&KnownRole> = all
        .iter()
        .copied()
        .filter(|r| r.customer_sessions && r.status == "verified")
        .collect();
    let Some(first) = all.first() else {
        return Err(format!(
            "role {arn} is not a customer role registered at the broker"
        ));
    };
    if usable.is_empty() {
        return Err(if !first.customer_sessions {
            format!(
                "role {} of customer {} does not allow customer sessions",
                first.role, first.customer
            )
        } else {
            format!(
                "role {} of customer {} is {}, not verified",
                first.role, first.customer, first.status
            )
        });
    }
    let mut picked = usable.clone();
    let customers: BTreeSet<&str> = picked.iter().map(|r| r.customer.as_str()).collect();
    if customers.len() > 1
        && let Some(id) = external_id
    {
        picked.retain(|r| r.external_ids.contains(id));
    }
    match picked.as_slice() {
        [one] => Ok(one),
        _ => Err(format!(
            "role {arn} is registered several times ({}); set it up with `lanyard \
             setup-customer --customer C --role R`",
            usable
                .iter()
                .map(|r| format!("{}/{}", r.customer, r.role))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The files' texts after the migration, and the backup of what was taken out.
#[derive(Debug, PartialEq, Eq)]
pub struct Edited {
    pub config: String,
    pub credentials: String,
    /// The removed lines, under their file's path and section header; empty when nothing
    /// was removed.
    pub backup: String,
}

/// Rewrites each profile of `migrations` (with its `credential_process` line, see
/// [`REMOVED`]): settings out of both files, `credential_process` into the config file's
/// section; every other byte of both files kept.
pub fn edit(
    config: &str,
    credentials: &str,
    migrations: &[(String, String)],
    paths: (&str, &str),
) -> Edited {
    let mut config = config.to_owned();
    let mut credentials = credentials.to_owned();
    let mut config_backup = String::new();
    let mut credentials_backup = String::new();
    for (profile, process) in migrations {
        // A credential_process of another program is replaced, and kept in the backup.
        let mut config_keys: Vec<&str> = REMOVED.to_vec();
        if aws_config::profile_setting(&config, profile, "credential_process")
            .is_some_and(|old| old != *process)
        {
            config_keys.push("credential_process");
        }
        let removed = aws_config::remove_settings(&config, FileKind::Config, profile, &config_keys);
        config = aws_config::upsert_profile(
            &removed.text,
            profile,
            &[("credential_process", process.as_str())],
        );
        config_backup.push_str(&backup_block(&removed));
        let mut credentials_keys: Vec<&str> = REMOVED.to_vec();
        credentials_keys.push("credential_process");
        let removed = aws_config::remove_settings(
            &credentials,
            FileKind::Credentials,
            profile,
            &credentials_keys,
        );
        credentials = removed.text.clone();
        credentials_backup.push_str(&backup_block(&removed));
    }
    let mut backup = String::new();
    for (path, block) in [(paths.0, config_backup), (paths.1, credentials_backup)] {
        if !block.is_empty() {
            backup.push_str(&format!("# {path}\n{block}\n"));
        }
    }
    Edited {
        config,
        credentials,
        backup,
    }
}

/// The section header and the lines taken out of it, each ending in a line break.
fn backup_block(removed: &aws_config::Removed) -> String {
    if removed.lines.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for line in removed.header.iter().chain(&removed.lines) {
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}
