//! The commands that hand out or show a profile's credentials: `credential-process`,
//! `export`, `refresh` and `check`.

use chrono::Utc;
use serde_json::json;

use super::{Ctx, Target, cache_key, left, obtain, print, print_json, print_raw, rfc3339};
use crate::credentials::{self, Mode};

pub fn credential_process(ctx: &Ctx, target: &Target, no_cache: bool) -> anyhow::Result<()> {
    let mode = if no_cache {
        Mode::NoCache
    } else {
        Mode::Normal
    };
    let (cached, _) = obtain(ctx, target, mode)?;
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
    let (cached, _) = obtain(ctx, target, mode)?;
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

pub fn check(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let profile = ctx.store.profile(&config, name)?;
    let key = cache_key(name, profile, &ctx.server(&config, Some(profile))?)?;
    let cached = ctx.cache()?.read(&key);
    let fresh = cached
        .as_ref()
        .is_some_and(|c| credentials::is_fresh(c, profile, Utc::now()));
    if ctx.json_output() {
        return print_json(&json!({
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
    match &cached {
        None => out.push_str("Cache: empty (the next credential-process asks the broker)\n"),
        Some(c) => out.push_str(&format!(
            "Cache: access key {}, expires {} ({}); {}\n",
            c.document.access_key_id,
            rfc3339(c.expiration),
            left(c.expiration),
            if fresh {
                "served from the cache"
            } else {
                "the next credential-process asks the broker"
            }
        )),
    }
    print(&out)
}
