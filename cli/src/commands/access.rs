//! The commands that set up access: `support-access` opens a support session (or files a
//! request that waits for approval, see `approval`), and `setup-customer` proves a customer
//! session works; each then records the profile and writes it into the AWS config
//! (`credential_process` running this binary, and a region).

use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use lanyard_api::SessionKind;
use lanyard_api::roles::RoleList;
use lanyard_api::sessions::{OpenSession, Session};
use lanyard_api::status::{RoleStatus, SessionStatus};
use serde_json::json;

use super::approval::{self, Waited};
use super::{Ctx, cache_key, print, print_json, rfc3339};
use crate::client::{self, Client};
use crate::config::{Identity, Kind, Profile};
use crate::credentials::{self, Mode, Obtain};
use crate::{SetupCustomerArgs, SupportAccessArgs, aws_config, text};

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
pub(super) fn credential_process_line(profile: &str) -> anyhow::Result<String> {
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
pub(super) async fn pick_role(
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

pub fn support_access(ctx: &Ctx, args: &SupportAccessArgs) -> anyhow::Result<ExitCode> {
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
    let runtime = credentials::runtime()?;
    let session: Session = runtime.block_on(async {
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
            tier: args.tier.clone(),
        };
        client.post("/v1/sessions", Some(&open)).await
    })?;
    if session.status != SessionStatus::PendingApproval {
        open_profile(ctx, &session, identity, args.region.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.wait {
        file_request(ctx, &session, identity, args.region.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    match runtime.block_on(approval::wait(&client, session))? {
        Waited::Decided(session) => {
            approval::approved(&session)?;
            open_profile(ctx, &session, identity, args.region.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Waited::Interrupted(session) => Ok(approval::interrupted(&session, args.region.as_deref())),
    }
}

/// What `support-access` does once a session is open (at once, or after its approval):
/// records the profile, writes it into the AWS config and prints the next steps.
pub(super) fn open_profile(
    ctx: &Ctx,
    session: &Session,
    identity: Option<Identity>,
    region: Option<&str>,
) -> anyhow::Result<()> {
    let name = record_profile(ctx, session, identity, |_| true)?;
    let (path, region) = write_aws_profile(&name, region)?;
    if ctx.json_output() {
        return print_json(&json!({
            "session": session, "profile": name, "aws_config": path, "region": region,
        }));
    }
    let mut grant = format!("case {}, role {}", case_of(session), session.role);
    if let Some(tier) = &session.tier {
        grant.push_str(&format!(", tier {tier}"));
    }
    if let Some(by) = session
        .approval
        .as_ref()
        .and_then(|a| a.decided_by.as_ref())
    {
        grant.push_str(&format!(", approved by {by}"));
    }
    print(&format!(
        "Opened support session {id} on {customer} ({grant}) until {until}.\n{title}\
         Wrote profile {name} to {path}.\n\n\
         Next:\n  aws sts get-caller-identity --profile {name}\n  \
         export AWS_PROFILE={name}    # every aws command in this shell\n\n\
         Revoke it when done: lanyard sessions revoke --profile {name}\n",
        id = session.id,
        customer = session.customer,
        until = rfc3339(session.expires_at),
        title = case_title_line(session),
        path = path.display(),
    ))
}

/// A request that waits for approval, without `--wait`: its profile is written now (its
/// credentials come once the request is approved), unless the profile of that name still
/// serves a live session, which a pending request must not cut off.
fn file_request(
    ctx: &Ctx,
    session: &Session,
    identity: Option<Identity>,
    region: Option<&str>,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut kept: Option<Profile> = None;
    let name = record_profile(ctx, session, identity, |old| {
        let live = old.kind == Kind::Support
            && old.session.as_deref() != Some(session.id.to_string().as_str())
            && old.session_expires_at.is_some_and(|end| end > now);
        if live {
            kept = Some(old.clone());
        }
        !live
    })?;
    let written = match kept {
        None => Some(write_aws_profile(&name, region)?),
        Some(_) => None,
    };
    if ctx.json_output() {
        return print_json(&json!({
            "session": session, "profile": name,
            "aws_config": written.as_ref().map(|(path, _)| path),
            "region": written.as_ref().map(|(_, region)| region),
        }));
    }
    let id = session.id;
    let profile_line = match (&written, &kept) {
        (Some((path, _)), _) => format!(
            "Wrote profile {name} to {}: its credentials come once the request is approved \
             (until then aws says it waits for approval).\n",
            path.display()
        ),
        (None, Some(old)) => format!(
            "Profile {name} still serves session {} (until {}) and stays so; `lanyard sessions \
             wait {id}` switches it to this session once approved.\n",
            old.session.as_deref().unwrap_or("?"),
            old.session_expires_at.map(rfc3339).unwrap_or_default()
        ),
        (None, None) => String::new(),
    };
    let length = session
        .duration_seconds
        .map(|secs| format!("; once approved, the session lasts {}", span(secs)))
        .unwrap_or_default();
    print(&format!(
        "Requested support session {id} on {customer} (case {case}, role {role}{tier}); it \
         waits for a second person's approval.\n{title}\
         The request expires at {expires} unless approved{length}.\n\
         {profile_line}\n\
         Next:\n  \
         lanyard sessions approve {id}    # for an approver: admin or support, not you\n  \
         lanyard sessions wait {id}       # wait here for the decision\n  \
         aws sts get-caller-identity --profile {name}    # once approved\n\n\
         Withdraw it: lanyard sessions revoke {id}\n",
        customer = session.customer,
        case = case_of(session),
        role = session.role,
        tier = session
            .tier
            .as_deref()
            .map(|t| format!(", tier {t}"))
            .unwrap_or_default(),
        title = case_title_line(session),
        expires = rfc3339(session.expires_at),
    ))
}

/// Records the support session's profile in the config, under the config lock, unless
/// `replace` says to keep the profile of that name that is there; returns the profile name.
fn record_profile(
    ctx: &Ctx,
    session: &Session,
    identity: Option<Identity>,
    replace: impl FnOnce(&Profile) -> bool,
) -> anyhow::Result<String> {
    let name = session.profile_name.clone();
    if name.is_empty() {
        bail!("the broker's session has no profile_name");
    }
    let pending = session.status == SessionStatus::PendingApproval;
    let config = ctx.config()?;
    let server = ctx.server(&config, None)?;
    let id = session.id.to_string();
    // The profile keeps its broker: a later login elsewhere must not move it.
    let profile = Profile {
        server: Some(server),
        kind: Kind::Support,
        customer: session.customer.to_string(),
        session: Some(id.clone()),
        case: Some(case_of(session)),
        role: Some(session.role.to_string()),
        // While the request waits, its end is not the session's: that is set at approval.
        session_expires_at: (!pending).then_some(session.expires_at),
        tier: session.tier.clone(),
        case_title: session.case_title.as_deref().map(text::one_line),
        approval_expires_at: pending.then_some(session.expires_at),
        identity,
    };
    let cache = ctx.cache()?;
    // Re-read under the config lock: other runs may have added profiles meanwhile.
    ctx.store.update(|config| {
        if let Some(old) = config.profiles.get(&name) {
            if !replace(old) {
                return Ok(());
            }
            // A case reopened: what the cache holds belongs to the old session.
            if old.session.as_deref() != Some(id.as_str()) {
                let old_server = ctx.server(config, Some(old))?;
                cache.remove(&cache_key(&name, old, &old_server)?)?;
            }
        }
        config.profiles.insert(name.clone(), profile);
        Ok(())
    })?;
    Ok(name)
}

fn case_of(session: &Session) -> String {
    session
        .case_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// `Case CS-12345: <title>` and a line break, when the case system gave a title.
fn case_title_line(session: &Session) -> String {
    match &session.case_title {
        Some(title) => format!("Case {}: {}\n", case_of(session), text::one_line(title)),
        None => String::new(),
    }
}

/// A length in seconds as `--duration` takes it: `30m`, `1h`, `1h30m`, `90s`.
pub(super) fn span(secs: i32) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
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
        tier: None,
        case_title: None,
        approval_expires_at: None,
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
            check_within: ctx.check_within,
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
