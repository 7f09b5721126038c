//! The commands that set up access: `support-access` opens a support session, and
//! `setup-customer` proves a customer session works; each then records the profile and
//! writes it into the AWS config (`credential_process` running this binary, and a region).

use anyhow::{Context, bail};
use lanyard_api::SessionKind;
use lanyard_api::roles::RoleList;
use lanyard_api::sessions::{OpenSession, Session};
use lanyard_api::status::RoleStatus;
use serde_json::json;

use super::{Ctx, cache_key, print, print_json, rfc3339};
use crate::client::{self, Client};
use crate::config::{Kind, Profile};
use crate::credentials::{self, Mode, Obtain};
use crate::{SetupCustomerArgs, SupportAccessArgs, aws_config};

/// `--duration` in whole seconds, by the broker's own grammar (`lanyard_api::parse_duration`:
/// `30m`, `1h30m`, `90s`, or bare seconds such as `1800`).
fn duration_seconds(raw: &str) -> anyhow::Result<i32> {
    let duration = lanyard_api::parse_duration(raw)
        .map_err(|e| anyhow::anyhow!("bad duration '{raw}': {e}"))?;
    i32::try_from(duration.as_secs())
        .map_err(|_| anyhow::anyhow!("bad duration '{raw}': longer than any session may last"))
}

/// The region to write into a profile: `--region` when given; else the one the profile
/// already has (a setting the user made is kept); else AWS_REGION, AWS_DEFAULT_REGION,
/// us-east-1. `None`: keep the profile's own.
fn region_to_write(flag: Option<&str>, existing: Option<&str>) -> Option<String> {
    if let Some(flag) = flag.filter(|r| !r.is_empty()) {
        return Some(flag.to_owned());
    }
    if existing.is_some_and(|r| !r.is_empty()) {
        return None;
    }
    Some(
        std::env::var("AWS_REGION")
            .ok()
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".into()),
    )
}

/// `credential_process` value: this binary's absolute path, quoted as needed.
fn credential_process_line(profile: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the path of the lanyard binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    process_command(&exe.to_string_lossy(), profile)
}

/// The command line botocore splits (with POSIX `shlex.split`, outside Windows) back into
/// `exe credential-process --profile PROFILE`.
fn process_command(exe: &str, profile: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{} credential-process --profile {}",
        shell_quote(exe)?,
        shell_quote(profile)?
    ))
}

/// One word for POSIX `shlex.split`: as it is when it needs no quoting (`/usr/bin/lanyard`
/// stays so), else quoted by `shlex`, which also takes care of Python's quirks (`\$` inside
/// double quotes keeps its backslash there).
#[cfg(not(windows))]
fn shell_quote(word: &str) -> anyhow::Result<String> {
    shlex::try_quote(word)
        .map(String::from)
        .with_context(|| format!("{word:?} cannot be written as a shell word"))
}

/// On Windows botocore splits the way the C runtime does: double quotes around a path with
/// spaces (a Windows path holds no `"`).
#[cfg(windows)]
fn shell_quote(word: &str) -> anyhow::Result<String> {
    Ok(if word.chars().any(char::is_whitespace) {
        format!("\"{word}\"")
    } else {
        word.to_owned()
    })
}

/// Writes the profile's `credential_process` (and `region`, see [`region_to_write`]) into the
/// AWS config; every other setting of the section stays. Returns the file and the region the
/// profile has now.
fn write_aws_profile(
    profile: &str,
    region_flag: Option<&str>,
) -> anyhow::Result<(std::path::PathBuf, String)> {
    let path = aws_config::config_path()?;
    let process = credential_process_line(profile)?;
    let existing = aws_config::read(&path)?
        .and_then(|(text, _)| aws_config::profile_setting(&text, profile, "region"));
    let region = region_to_write(region_flag, existing.as_deref());
    let mut settings = vec![("credential_process", process.as_str())];
    if let Some(region) = &region {
        settings.push(("region", region));
    }
    aws_config::write_profile(&path, profile, &settings)?;
    Ok((path, region.or(existing).unwrap_or_default()))
}

/// The one verified role of the customer that allows `kind` sessions.
async fn pick_role(
    client: &Client,
    customer: &lanyard_api::CustomerId,
    kind: SessionKind,
) -> anyhow::Result<String> {
    let roles: RoleList = client
        .get(&format!("/v1/customers/{customer}/roles"))
        .await?;
    let usable: Vec<&str> = roles
        .roles
        .iter()
        .filter(|r| r.status == RoleStatus::Verified && r.session_kinds.contains(&kind))
        .map(|r| r.name.as_str())
        .collect();
    match usable.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("customer '{customer}' has no verified role that allows {kind} sessions"),
        many => bail!(
            "customer '{customer}' has several roles for {kind} sessions ({}); choose one with --role",
            many.join(", ")
        ),
    }
}

pub fn support_access(ctx: &Ctx, args: &SupportAccessArgs) -> anyhow::Result<()> {
    // Everything that can be checked here is, before the broker opens anything.
    let customer = client::customer_id(&args.customer)?;
    let case = client::case_id(&args.case)?;
    let role = args.role.as_deref().map(client::role_name).transpose()?;
    let duration = duration_seconds(&args.duration)?;
    // The AWS config must be writable before the broker opens anything.
    aws_config::read(&aws_config::config_path()?)?;
    let config = ctx.config()?;
    let client = ctx.client(&config, None)?;
    // A token whose subject the CLI cannot read is left to the broker to judge.
    let identity = ctx.identity(&config, &ctx.server(&config, None)?).ok();
    let reason = args
        .reason
        .clone()
        .unwrap_or_else(|| format!("support case {}", args.case));
    let session: Session = credentials::runtime()?.block_on(async {
        let role = match role {
            Some(r) => r.to_string(),
            None => pick_role(&client, &customer, SessionKind::Support).await?,
        };
        let open = OpenSession {
            kind: SessionKind::Support,
            customer: customer.to_string(),
            role,
            case_id: Some(case.to_string()),
            reason: Some(reason),
            duration_seconds: Some(duration),
        };
        client.post("/v1/sessions", Some(&open)).await
    })?;
    let name = session.profile_name.clone();
    if name.is_empty() {
        bail!("the broker's session has no profile_name");
    }
    let case = session
        .case_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let server = ctx.server(&config, None)?;
    // The profile keeps its broker: a later login elsewhere must not move it.
    let profile = Profile {
        server: Some(server.clone()),
        kind: Kind::Support,
        customer: session.customer.to_string(),
        session: Some(session.id.to_string()),
        case: Some(case.clone()),
        role: Some(session.role.to_string()),
        session_expires_at: Some(session.expires_at),
        identity,
    };
    let cache = ctx.cache()?;
    // Re-read under the config lock: other runs may have added profiles meanwhile.
    ctx.store.update(|config| {
        // A case reopened: what the cache holds belongs to the old session.
        if let Some(old) = config.profiles.get(&name) {
            let old_server = ctx.server(config, Some(old))?;
            cache.remove(&cache_key(&name, old, &old_server)?)?;
        }
        config.profiles.insert(name.clone(), profile);
        Ok(())
    })?;
    let (path, region) = write_aws_profile(&name, args.region.as_deref())?;
    if ctx.json_output() {
        return print_json(&json!({
            "session": session, "profile": name, "aws_config": path, "region": region,
        }));
    }
    print(&format!(
        "Opened support session {id} on {customer} (case {case}, role {role}) until {until}.\n\
         Wrote profile {name} to {path}.\n\n\
         Next:\n  aws sts get-caller-identity --profile {name}\n  \
         export AWS_PROFILE={name}    # every aws command in this shell\n\n\
         Revoke it when done: lanyard sessions revoke --profile {name}\n",
        id = session.id,
        customer = session.customer,
        role = session.role,
        until = rfc3339(session.expires_at),
        path = path.display(),
    ))
}

/// `customer-<customer>`, or `customer-<customer>-<role>` for a named role: each role of a
/// customer gets a profile of its own.
pub fn customer_profile_name(customer: &str, role: Option<&str>) -> String {
    match role {
        Some(role) => format!("customer-{customer}-{role}"),
        None => format!("customer-{customer}"),
    }
}

pub fn setup_customer(ctx: &Ctx, args: &SetupCustomerArgs) -> anyhow::Result<()> {
    client::customer_id(&args.customer)?;
    if let Some(role) = &args.role {
        client::role_name(role)?;
    }
    // The AWS config must be writable before the broker is asked for anything.
    aws_config::read(&aws_config::config_path()?)?;
    let name = customer_profile_name(&args.customer, args.role.as_deref());
    let config = ctx.config()?;
    let server = ctx.server(&config, None)?;
    let profile = Profile {
        server: Some(server.clone()),
        kind: Kind::Customer,
        customer: args.customer.clone(),
        session: None,
        case: None,
        role: args.role.clone(),
        session_expires_at: None,
        // The identity that proves the profile below is the one that will serve it.
        identity: ctx.identity(&config, &server).ok(),
    };
    // Prove the profile works (and warm the cache) before writing anything.
    let key = cache_key(&name, &profile, &server)?;
    let cache = ctx.cache()?;
    cache.remove(&key)?;
    let (cached, _) = credentials::obtain(
        &Obtain {
            name: &name,
            key: &key,
            profile: &profile,
            cache: Some(&cache),
            mode: Mode::Refresh,
            debug: ctx.debug,
        },
        || ctx.client_for(&config, &name, &profile),
    )?;
    // Re-read under the config lock: other runs may have added profiles meanwhile.
    ctx.store.update(|config| {
        config.profiles.insert(name.clone(), profile);
        Ok(())
    })?;
    let (path, region) = write_aws_profile(&name, args.region.as_deref())?;
    if ctx.json_output() {
        return print_json(&json!({
            "profile": name, "aws_config": path, "region": region,
            "expiration": rfc3339(cached.expiration),
        }));
    }
    print(&format!(
        "Wrote profile {name} to {}.\n\nNext:\n  aws sts get-caller-identity --profile {name}\n",
        path.display()
    ))
}

#[cfg(test)]
mod tests;
