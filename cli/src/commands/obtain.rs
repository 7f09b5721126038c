//! Whose credentials a command hands out (a profile, or `--customer`), the cache entry they
//! live under, and getting them by the cache rules of `credentials::obtain`.

use super::Ctx;
use crate::cache::Cached;
use crate::client;
use crate::config::{self, Kind, Profile};
use crate::credentials::{self, Mode, Obtain, Source};

/// The cache entry of a profile: bound to the broker it is fetched from and to the session,
/// so that credentials are never served for another broker (`--server`, LANYARD_SERVER) or
/// for an older session under the same profile name.
pub fn cache_key(name: &str, profile: &Profile, server: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{name}@{}#{}",
        config::origin(server)?,
        profile.session.as_deref().unwrap_or("-")
    ))
}

/// The cache entry of `--customer` credentials: bound to the broker and to the token in
/// effect (a digest of it), so that credentials fetched with one identity are never served to
/// another in the same HOME (a runner shared by several pipelines, say). `None` when there is
/// no token to bind it to without asking for one (GitHub Actions).
pub fn customer_cache_key(
    ctx: &Ctx,
    origin: &str,
    customer: &str,
    role: Option<&str>,
) -> Option<String> {
    ctx.token_digest().map(|digest| {
        format!(
            "--customer {customer}/{}@{origin}#{digest}",
            role.unwrap_or("-"),
        )
    })
}

/// Whose credentials a command hands out.
pub enum Target {
    /// A profile written by `support-access` or `setup-customer`.
    Profile(String),
    /// The caller's customer credentials, without a profile (`--customer`).
    Customer {
        customer: String,
        role: Option<String>,
    },
}

/// The target's credentials, by the cache rules of `credentials::obtain`.
pub(super) fn obtain(ctx: &Ctx, target: &Target, mode: Mode) -> anyhow::Result<(Cached, Source)> {
    let config = ctx.config()?;
    let adhoc;
    let (name, profile, key) = match target {
        Target::Profile(name) => {
            let profile = ctx.store.profile(&config, name)?;
            let key = cache_key(name, profile, &ctx.server(&config, Some(profile))?)?;
            (name.clone(), profile, Some(key))
        }
        Target::Customer { customer, role } => {
            client::customer_id(customer)?;
            if let Some(role) = role {
                client::role_name(role)?;
            }
            adhoc = Profile {
                server: None,
                kind: Kind::Customer,
                customer: customer.clone(),
                session: None,
                case: None,
                role: role.clone(),
                session_expires_at: None,
                tier: None,
                case_title: None,
                approval_expires_at: None,
                identity: None,
            };
            let origin = config::origin(&ctx.server(&config, None)?)?;
            let key = customer_cache_key(ctx, &origin, customer, role.as_deref());
            (format!("--customer {customer}"), &adhoc, key)
        }
    };
    let Some(key) = key else {
        // No token to bind a cache entry to without asking for one (GitHub Actions): no
        // cache.
        return credentials::obtain(
            &Obtain {
                name: &name,
                key: "",
                profile,
                cache: None,
                mode: Mode::NoCache,
                debug: ctx.debug,
                check_within: ctx.check_within,
            },
            || ctx.client(&config, None),
        );
    };
    let cache = match mode {
        Mode::NoCache => None,
        // An unusable cache (a key or directory others could read or change, a directory
        // that cannot be written) costs requests, not the credentials. Said on stderr, which
        // the AWS CLI shows only when credential_process fails.
        _ => ctx
            .cache()
            .inspect_err(|e| {
                eprintln!(
                    "lanyard: warning: not using the credential cache: {}",
                    crate::text::one_line(&format!("{e:#}"))
                )
            })
            .ok(),
    };
    credentials::obtain(
        &Obtain {
            name: &name,
            key: &key,
            profile,
            cache: cache.as_ref(),
            mode,
            debug: ctx.debug,
            check_within: ctx.check_within,
        },
        || match target {
            Target::Profile(name) => ctx.client_for(&config, name, profile),
            Target::Customer { .. } => ctx.client(&config, None),
        },
    )
}
