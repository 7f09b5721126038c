//! The commands that hand out or show a profile's credentials: `credential-process`,
//! `export`, `refresh` and `check`.

use chrono::Utc;
use lanyard_api::sessions::Session;
use lanyard_api::status::SessionStatus;
use serde_json::json;

use super::{Ctx, Target, cache_key, left, obtain, print, print_json, print_raw, rfc3339};
use crate::client;
use crate::config::{Config, Profile};
use crate::credentials::{self, Mode, revocation};

pub fn credential_process(ctx: &Ctx, target: &Target, no_cache: bool) -> anyhow::Result<()> {
    let mode = if no_cache {
        Mode::NoCache
    } else {
        Mode::Normal
    };
    let obtained = obtain(ctx, target, mode);
    super::runlog::credential_run(ctx, "credential-process", target, &obtained);
    let (cached, _) = obtained?;
    print_raw(&credentials::process_line(&cached)?)
}

pub fn export(
    ctx: &Ctx,
    target: &Target,
    no_cache: bool,
    format: credentials::ExportFormat,
) -> anyhow::Result<()> {
    let mode = if no_cache {
        Mode::NoCache
    } else {
        Mode::Normal
    };
    let obtained = obtain(ctx, target, mode);
    super::runlog::credential_run(ctx, "export", target, &obtained);
    let (cached, _) = obtained?;
    print_raw(&credentials::export(&cached, format)?)
}

pub fn refresh(ctx: &Ctx, profile: &str) -> anyhow::Result<()> {
    let (cached, _) = obtain(ctx, &Target::Profile(profile.to_owned()), Mode::Refresh)?;
    let key = &cached.document.access_key_id;
    if ctx.json_output() {
        return print_json(&json!({
            "profile": profile, "access_key_id": key, "expiration": rfc3339(cached.expiration),
        }));
    }
    print(&format!(
        "Refreshed {profile}: access key {key}, expires {} ({}).\n",
        rfc3339(cached.expiration),
        left(cached.expiration)
    ))
}

/// A support profile's session as the broker sees it now.
fn session_now(
    ctx: &Ctx,
    config: &Config,
    name: &str,
    profile: &Profile,
) -> anyhow::Result<Session> {
    let id = client::session_id(profile.session.as_deref().unwrap_or_default())?;
    let client = ctx.client_for(config, name, profile)?;
    credentials::runtime()?.block_on(client.get(&format!("/v1/sessions/{id}")))
}

/// `Session: …` for `check`: what the broker said of the profile's session just now.
fn session_line(session: Option<&Session>, error: Option<&str>) -> String {
    match (session, error) {
        (Some(s), _) if s.status == SessionStatus::Revoked => format!(
            "Session: revoked{}{}; Lanyard hands out no more credentials for it{}\n",
            s.revoked_at
                .map(|t| format!(" at {}", rfc3339(t)))
                .unwrap_or_default(),
            s.revoked_by
                .as_deref()
                .map(|by| format!(" by {by}"))
                .unwrap_or_default(),
            s.credentials_valid_until
                .filter(|t| *t > Utc::now())
                .map(|t| format!(
                    ", but AWS honours those issued before until {} (AWS cannot recall them)",
                    rfc3339(t)
                ))
                .unwrap_or_default(),
        ),
        (Some(s), _) => format!("Session: {} (the broker says)\n", s.status),
        (None, Some(e)) => format!("Session: unknown (the broker could not tell: {e})\n"),
        (None, None) => String::new(),
    }
}

pub fn check(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let profile = ctx.store.profile(&config, name)?;
    let key = cache_key(name, profile, &ctx.server(&config, Some(profile))?)?;
    let cache = ctx.cache()?;
    let mut cached = cache.read(&key);
    // A support profile's session, asked of the broker (customer profiles have none of their
    // own: the broker opens one as needed).
    let session = profile
        .session
        .as_ref()
        .map(|_| session_now(ctx, &config, name, profile));
    let revoked = match &session {
        Some(Ok(s)) if s.status == SessionStatus::Revoked => Some(s),
        _ => None,
    };
    // What the cache holds of a revoked session is not handed out again.
    let dropped = revoked.is_some() && cached.is_some();
    if dropped {
        cache.remove(&key)?;
        cached = None;
    }
    let now = Utc::now();
    let fresh = cached
        .as_ref()
        .is_some_and(|c| credentials::is_fresh(c, profile, now));
    let vouched = cached
        .as_ref()
        .is_some_and(|c| revocation::vouched(c, ctx.check_within, now));
    let (session, session_error) = match session {
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => (None, Some(crate::text::one_line(&format!("{e:#}")))),
        None => (None, None),
    };
    if ctx.json_output() {
        return print_json(&json!({
            "session_status": session.as_ref().map(|s| s.status),
            "session_error": session_error,
            "revoked_at": session.as_ref().and_then(|s| s.revoked_at).map(rfc3339),
            "credentials_valid_until": session
                .as_ref()
                .and_then(|s| s.credentials_valid_until)
                .map(rfc3339),
            "dropped": dropped,
            "revocation_checked_at": cached.as_ref().and_then(|c| c.checked_at).map(rfc3339),
            "revocation_check_secs": ctx.check_within.num_seconds(),
            "vouched": vouched,
            "profile": name,
            "source": credentials::describe(profile),
            "cached": cached.is_some(),
            "access_key_id": cached.as_ref().map(|c| &c.document.access_key_id),
            "expiration": cached.as_ref().map(|c| rfc3339(c.expiration)),
            "fresh": fresh,
            "session_expires_at": profile.session_expires_at.map(rfc3339),
            "tier": profile.tier,
            "case_title": profile.case_title,
            "approval_expires_at": profile.approval_expires_at.map(rfc3339),
        }));
    }
    let mut out = format!("Profile {name}: {}\n", credentials::describe(profile));
    if let Some(title) = &profile.case_title {
        out.push_str(&format!("Case title: {}\n", crate::text::one_line(title)));
    }
    if let Some(tier) = &profile.tier {
        out.push_str(&format!("Tier: {tier}\n"));
    }
    if let Some(until) = profile.approval_expires_at {
        // What the broker said when the profile was written; it may have been decided since.
        out.push_str(&format!(
            "Approval: pending when the profile was written; the request expires {} ({}); \
             `lanyard sessions wait {}` follows it\n",
            rfc3339(until),
            left(until),
            profile.session.as_deref().unwrap_or("?")
        ));
    }
    if let Some(end) = profile.session_expires_at {
        out.push_str(&format!("Session ends: {} ({})\n", rfc3339(end), left(end)));
    }
    out.push_str(&session_line(session.as_ref(), session_error.as_deref()));
    match &cached {
        None if dropped => {
            out.push_str("Cache: dropped now (its credentials belong to the revoked session)\n")
        }
        None => out.push_str("Cache: empty (the next credential-process asks the broker)\n"),
        Some(c) => out.push_str(&format!(
            "Cache: access key {}, expires {} ({}); {}\n",
            c.document.access_key_id,
            rfc3339(c.expiration),
            left(c.expiration),
            match (fresh, vouched) {
                (true, true) => format!(
                    "served from the cache (the broker said {} that they were not revoked)",
                    revocation::last_check(c, now)
                ),
                (true, false) => format!(
                    "served once the broker says they were not revoked (it last said so {}; \
                     the cache waits at most {} s between)",
                    revocation::last_check(c, now),
                    ctx.check_within.num_seconds()
                ),
                (false, _) => "the next credential-process asks the broker".to_owned(),
            }
        )),
    }
    print(&out)
}
