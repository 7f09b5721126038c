//! The commands: what each asks the broker, what it writes, and what it prints. Stdout
//! carries only the command's result; diagnostics go to stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cache::{Cached, CredentialCache};
use crate::client::Client;
use crate::config::{self, Config, Identity, Kind, Profile, Store, TokenSource};
use crate::credentials::{self, Mode, Obtain, Source};
use crate::ids;
use crate::{
    Output, SessionsListArgs, SetupCustomerArgs, SupportAccessArgs, UsageArgs, aws_config,
};

/// Global options and where state lives.
pub struct Ctx {
    server: Option<String>,
    token: Option<String>,
    pub debug: bool,
    pub output: Output,
    pub store: Store,
}

impl Ctx {
    pub fn new(
        server: Option<String>,
        token: Option<String>,
        debug: bool,
        output: Output,
    ) -> anyhow::Result<Ctx> {
        let store = Store::open()?;
        let ctx = Ctx {
            server: server.filter(|s| !s.is_empty()),
            token: token.filter(|t| !t.trim().is_empty()),
            debug,
            output,
            store,
        };
        ctx.note(&format!("config directory {}", ctx.store.dir.display()));
        Ok(ctx)
    }

    pub fn note(&self, msg: &str) {
        if self.debug {
            eprintln!("debug: {msg}");
        }
    }

    pub fn config(&self) -> anyhow::Result<Config> {
        self.store.load()
    }

    /// The broker URL: --server / LANYARD_SERVER, else the profile's, else the login's.
    pub fn server(&self, config: &Config, profile: Option<&Profile>) -> anyhow::Result<String> {
        self.server
            .clone()
            .or_else(|| profile.and_then(|p| p.server.clone()))
            .or_else(|| config.server.clone())
            .context("not logged in: run `lanyard login --server URL` (or set LANYARD_SERVER and LANYARD_TOKEN)")
    }

    /// The token for `server`: --token / LANYARD_TOKEN (the user's explicit choice, for
    /// whatever server is in effect), else the stored login's token, which is only ever sent
    /// to the broker it was stored for (the same origin as the login's server).
    pub fn token_for(&self, config: &Config, server: &str) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_owned());
        }
        let origin = config::origin(server)?;
        let login = config.server.as_deref().map(config::origin).transpose()?;
        match (login, self.store.token()?) {
            (Some(login), Some(token)) if login == origin => Ok(token),
            (Some(login), Some(_)) => bail!(
                "the stored token is for {login}, not {origin}: run `lanyard login --server {origin}` (or set LANYARD_TOKEN)"
            ),
            _ => {
                bail!("no API token: run `lanyard login --server {origin}` (or set LANYARD_TOKEN)")
            }
        }
    }

    /// A client for an authenticated request.
    pub fn client(&self, config: &Config, profile: Option<&Profile>) -> anyhow::Result<Client> {
        let server = self.server(config, profile)?;
        let token = self.token_for(config, &server)?;
        self.note(&format!(
            "broker {}, token [redacted]",
            config::origin(&server)?
        ));
        Client::new(&server, Some(token), self.debug)
    }

    /// Where the token in effect comes from.
    pub fn token_source(&self) -> TokenSource {
        if self.token.is_some() {
            TokenSource::Environment
        } else {
            TokenSource::Login
        }
    }

    /// The identity of the token in effect for `server` (its subject as the token states it;
    /// the broker checks the token itself).
    pub fn identity(&self, config: &Config, server: &str) -> anyhow::Result<Identity> {
        let token = self.token_for(config, server)?;
        let subject = token_info(&token)
            .and_then(|i| i.subject)
            .context("the token in effect names no subject")?;
        Ok(Identity {
            subject,
            token: self.token_source(),
        })
    }

    /// A client for profile `name`, after checking that the token in effect is the identity
    /// the profile was written with.
    pub fn client_for(
        &self,
        config: &Config,
        name: &str,
        profile: &Profile,
    ) -> anyhow::Result<Client> {
        if let Some(expected) = &profile.identity {
            let server = self.server(config, Some(profile))?;
            let again = match profile.kind {
                Kind::Support => "`lanyard support-access`",
                Kind::Customer => "`lanyard setup-customer`",
            };
            if expected.token == TokenSource::Environment && self.token.is_none() {
                bail!(
                    "profile {name} was set up with LANYARD_TOKEN (as {}), which is not set here; \
                     the stored login may be someone else's: set LANYARD_TOKEN wherever this \
                     profile is used, or write the profile again with {again} after `lanyard login`",
                    expected.subject
                );
            }
            // A token that names no subject the CLI can read is left to the broker to judge.
            if let Ok(current) = self.identity(config, &server)
                && current.subject != expected.subject
            {
                bail!(
                    "profile {name} belongs to {}, but the token in effect ({}) is {}'s: use {}'s \
                     token, or write the profile again with {again}",
                    expected.subject,
                    current.token.describe(),
                    current.subject,
                    expected.subject
                );
            }
        }
        self.client(config, Some(profile))
    }

    pub fn cache(&self) -> anyhow::Result<CredentialCache> {
        let dir = config::cache_dir()?;
        self.note(&format!("cache directory {}", dir.display()));
        CredentialCache::open(&dir)
    }

    fn json_output(&self) -> bool {
        self.output == Output::Json
    }
}

/// Writes text meant for a person to stdout, without anything a terminal would act on (see
/// `text::for_terminal`): it holds what the broker sent.
pub fn print(text: &str) -> anyhow::Result<()> {
    print_raw(&crate::text::for_terminal(text))
}

/// Writes machine-readable output (JSON, whose strings carry control characters escaped;
/// credential documents and shell lines, checked before) to stdout as it is; a closed pipe
/// is an error, not a panic.
pub fn print_raw(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

pub fn print_json(value: &Value) -> anyhow::Result<()> {
    print_raw(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

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

/// The profile's credentials, by the cache rules of `credentials::obtain`.
fn obtain(ctx: &Ctx, name: &str, mode: Mode) -> anyhow::Result<(Cached, Source)> {
    let config = ctx.config()?;
    let profile = ctx.store.profile(&config, name)?;
    let key = cache_key(name, profile, &ctx.server(&config, Some(profile))?)?;
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
            name,
            key: &key,
            profile,
            cache: cache.as_ref(),
            mode,
            debug: ctx.debug,
        },
        || ctx.client_for(&config, name, profile),
    )
}

pub fn credential_process(ctx: &Ctx, profile: &str, no_cache: bool) -> anyhow::Result<()> {
    let mode = if no_cache {
        Mode::NoCache
    } else {
        Mode::Normal
    };
    let (cached, _) = obtain(ctx, profile, mode)?;
    print_raw(&credentials::process_line(&cached)?)
}

pub fn export(
    ctx: &Ctx,
    profile: &str,
    no_cache: bool,
    format: credentials::ExportFormat,
) -> anyhow::Result<()> {
    let mode = if no_cache {
        Mode::NoCache
    } else {
        Mode::Normal
    };
    let (cached, _) = obtain(ctx, profile, mode)?;
    print_raw(&credentials::export(&cached, format)?)
}

pub fn refresh(ctx: &Ctx, profile: &str) -> anyhow::Result<()> {
    let (cached, _) = obtain(ctx, profile, Mode::Refresh)?;
    let key = cached.document["AccessKeyId"].as_str().unwrap_or_default();
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

fn left(t: DateTime<Utc>) -> String {
    let secs = (t - Utc::now()).num_seconds();
    if secs <= 0 {
        return "expired".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s left"),
        (0, _) => format!("{m}m {s}s left"),
        _ => format!("{h}h {m}m left"),
    }
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
            "access_key_id": cached.as_ref().and_then(|c| c.document["AccessKeyId"].as_str()),
            "expiration": cached.as_ref().map(|c| rfc3339(c.expiration)),
            "fresh": fresh,
            "session_expires_at": profile.session_expires_at.map(rfc3339),
        }));
    }
    let mut out = format!("Profile {name}: {}\n", credentials::describe(profile));
    if let Some(end) = profile.session_expires_at {
        out.push_str(&format!("Session ends: {} ({})\n", rfc3339(end), left(end)));
    }
    match &cached {
        None => out.push_str("Cache: empty (the next credential-process asks the broker)\n"),
        Some(c) => out.push_str(&format!(
            "Cache: access key {}, expires {} ({}); {}\n",
            c.document["AccessKeyId"].as_str().unwrap_or("?"),
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

/// Reads the token for `login`: --token-file, else --token / LANYARD_TOKEN, else stdin.
fn login_token(ctx: &Ctx, file: Option<&Path>) -> anyhow::Result<String> {
    let raw = match file {
        Some(path) if path == Path::new("-") => read_stdin()?,
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token from {}", path.display()))?,
        None => match &ctx.token {
            Some(t) => t.clone(),
            None => {
                if std::io::stdin().is_terminal() {
                    eprint!("Paste the API token and press Enter: ");
                }
                read_stdin()?
            }
        },
    };
    let token = raw.trim().to_owned();
    if token.is_empty() {
        bail!("no token given: pipe it on stdin, use --token-file, or set LANYARD_TOKEN");
    }
    if token.chars().any(char::is_whitespace) {
        bail!("the token must be one line without spaces");
    }
    Ok(token)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    if std::io::stdin().is_terminal() {
        std::io::stdin().read_line(&mut line)?;
    } else {
        std::io::stdin().read_to_string(&mut line)?;
    }
    Ok(line)
}

/// The claims of a JWT the CLI shows (it cannot verify the signature; the broker does).
pub struct TokenInfo {
    pub subject: Option<String>,
    pub role: Option<String>,
    pub expires: Option<DateTime<Utc>>,
}

pub fn token_info(token: &str) -> Option<TokenInfo> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    Some(TokenInfo {
        subject: claims["sub"].as_str().map(str::to_owned),
        role: claims["role"].as_str().map(str::to_owned),
        expires: claims["exp"]
            .as_i64()
            .and_then(|s| DateTime::from_timestamp(s, 0)),
    })
}

pub fn login(ctx: &Ctx, token_file: Option<&Path>, no_verify: bool) -> anyhow::Result<()> {
    let server = ctx
        .server
        .clone()
        .context("login needs the broker URL: lanyard login --server URL")?;
    let token = login_token(ctx, token_file)?;
    let info = token_info(&token);
    if let Some(expires) = info.as_ref().and_then(|i| i.expires)
        && expires <= Utc::now()
    {
        bail!(
            "the token expired at {}; ask for a new one",
            rfc3339(expires)
        );
    }
    let client = Client::new(&server, Some(token.clone()), ctx.debug)?;
    // The broker checks the token (signature, record, revocation) before anything is stored:
    // a token it refuses is not a login.
    let checked = if no_verify {
        None
    } else {
        Some(
            credentials::runtime()?
                .block_on(client.whoami())
                .context("the broker does not accept this token; nothing was stored")?,
        )
    };
    ctx.store.update(|config| {
        config.server = Some(server.clone());
        ctx.store.save_token(&token)
    })?;
    let (who, role, expires) = match &checked {
        Some(w) => (w.subject.clone(), w.role.clone(), Some(w.expires_at)),
        None => (
            info.as_ref()
                .and_then(|i| i.subject.clone())
                .unwrap_or_else(|| "?".into()),
            info.as_ref()
                .and_then(|i| i.role.clone())
                .unwrap_or_else(|| "?".into()),
            info.as_ref().and_then(|i| i.expires),
        ),
    };
    let expires = expires.map(rfc3339);
    let server = config::redact_url(&server);
    if ctx.json_output() {
        return print_json(&json!({
            "server": server, "subject": who, "role": role, "token_expires": expires,
            "customers": checked.as_ref().and_then(|w| w.customers.clone()),
            "verified": checked.is_some(),
            "config": ctx.store.config_path(), "token_file": ctx.store.token_path(),
        }));
    }
    let limited = checked
        .as_ref()
        .and_then(|w| w.customers.as_ref())
        .map(|c| format!(" for customers {}", c.join(", ")))
        .unwrap_or_default();
    print(&format!(
        "{} {server} as {who} ({role}{limited}){}.\nToken stored in {} (mode 0600).\n",
        if checked.is_some() {
            "Logged in to"
        } else {
            "Stored a login (not checked with the broker: --no-verify) for"
        },
        expires
            .map(|e| format!(", token valid until {e}"))
            .unwrap_or_default(),
        ctx.store.token_path().display()
    ))
}

/// `30m`, `1h`, `1h30m`, `90s`, `2d`, or a bare number of seconds (`1800`, as the origin
/// guide writes it) → seconds: the grammar the broker's own durations use.
pub fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "bad duration '{text}': use seconds (1800) or a number with a unit, e.g. 30m, 1h, 1h30m, 90s"
        )
    };
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().ok().filter(|s| *s > 0).ok_or_else(bad);
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut any = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
        any = true;
    }
    if !number.is_empty() || !any || total <= 0 {
        return Err(bad());
    }
    Ok(total)
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
    Ok(process_command(&exe.to_string_lossy(), profile))
}

/// The command line botocore splits (with POSIX `shlex.split`, outside Windows) back into
/// `exe credential-process --profile PROFILE`.
fn process_command(exe: &str, profile: &str) -> String {
    format!(
        "{} credential-process --profile {}",
        shell_quote(exe),
        shell_quote(profile)
    )
}

/// One word for POSIX `shlex.split`: as it is when made only of `[A-Za-z0-9/._+-]`, else in
/// single quotes, each `'` written as `'"'"'` (close, a double-quoted quote, reopen).
#[cfg(not(windows))]
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._+-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\"'\"'"))
}

/// On Windows botocore splits the way the C runtime does: double quotes around a path with
/// spaces (a Windows path holds no `"`).
#[cfg(windows)]
fn shell_quote(word: &str) -> String {
    if word.chars().any(char::is_whitespace) {
        format!("\"{word}\"")
    } else {
        word.to_owned()
    }
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
async fn pick_role(client: &Client, customer: &str, kind: &str) -> anyhow::Result<String> {
    let roles = client
        .json(
            Method::GET,
            &format!("/v1/customers/{customer}/roles"),
            None,
        )
        .await?;
    let usable: Vec<&str> = roles["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["status"] == "verified"
                && r["session_kinds"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == kind))
        })
        .filter_map(|r| r["name"].as_str())
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
    ids::customer(&args.customer)?;
    ids::case(&args.case)?;
    if let Some(role) = &args.role {
        ids::role(role)?;
    }
    let duration = parse_duration(&args.duration)?;
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
    let session = credentials::runtime()?.block_on(async {
        let role = match &args.role {
            Some(r) => r.clone(),
            None => pick_role(&client, &args.customer, "support").await?,
        };
        client
            .json(
                Method::POST,
                "/v1/sessions",
                Some(&json!({
                    "kind": "support", "customer": args.customer, "role": role,
                    "case_id": args.case, "reason": reason, "duration_seconds": duration,
                })),
            )
            .await
    })?;
    let text = |k: &str| session[k].as_str().unwrap_or_default().to_owned();
    let name = text("profile_name");
    if name.is_empty() {
        bail!("the broker's session has no profile_name");
    }
    let expires = DateTime::parse_from_rfc3339(&text("expires_at"))
        .map(|t| t.with_timezone(&Utc))
        .ok();
    let server = ctx.server(&config, None)?;
    // The profile keeps its broker: a later login elsewhere must not move it.
    let profile = Profile {
        server: Some(server.clone()),
        kind: Kind::Support,
        customer: text("customer"),
        session: Some(text("id")),
        case: Some(text("case_id")),
        role: Some(text("role")),
        session_expires_at: expires,
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
    let until = expires.map(rfc3339).unwrap_or_else(|| text("expires_at"));
    print(&format!(
        "Opened support session {id} on {customer} (case {case}, role {role}) until {until}.\n\
         Wrote profile {name} to {path}.\n\n\
         Next:\n  aws sts get-caller-identity --profile {name}\n  \
         export AWS_PROFILE={name}    # every aws command in this shell\n\n\
         Revoke it when done: lanyard sessions revoke --profile {name}\n",
        id = text("id"),
        customer = text("customer"),
        case = text("case_id"),
        role = text("role"),
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
    ids::customer(&args.customer)?;
    if let Some(role) = &args.role {
        ids::role(role)?;
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

fn api_get(ctx: &Ctx, path: &str) -> anyhow::Result<Value> {
    let config = ctx.config()?;
    let client = ctx.client(&config, None)?;
    credentials::runtime()?.block_on(client.json(Method::GET, path, None))
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn customers_list(ctx: &Ctx) -> anyhow::Result<()> {
    let list = api_get(ctx, "/v1/customers")?;
    if ctx.json_output() {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list["customers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| vec![cell(&c["id"]), cell(&c["status"]), cell(&c["display_name"])])
        .collect();
    print(&table(&["ID", "STATUS", "NAME"], &rows))
}

pub fn sessions_list(ctx: &Ctx, args: &SessionsListArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(c) = &args.customer {
        query.push(format!("customer={}", ids::customer(c)?));
    }
    if let Some(c) = &args.case {
        query.push(format!("case_id={}", ids::case(c)?));
    }
    if args.active {
        query.push("active=true".into());
    }
    let path = if query.is_empty() {
        "/v1/sessions".to_owned()
    } else {
        format!("/v1/sessions?{}", query.join("&"))
    };
    let list = api_get(ctx, &path)?;
    if ctx.json_output() {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            [
                "id",
                "kind",
                "customer",
                "case_id",
                "status",
                "expires_at",
                "profile_name",
            ]
            .iter()
            .map(|k| cell(&s[*k]))
            .collect()
        })
        .collect();
    print(&table(
        &[
            "ID", "KIND", "CUSTOMER", "CASE", "STATUS", "EXPIRES", "PROFILE",
        ],
        &rows,
    ))
}

pub fn sessions_revoke(ctx: &Ctx, id: Option<&str>, profile: Option<&str>) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let (id, profile) = match (id, profile) {
        (Some(id), _) => (ids::session(id)?.to_owned(), None),
        (None, Some(name)) => {
            let p = ctx.store.profile(&config, name)?;
            let id = p
                .session
                .clone()
                .with_context(|| format!("profile {name} has no session to revoke (customer profiles open theirs on demand)"))?;
            ids::session(&id)?;
            (id, Some(p))
        }
        (None, None) => bail!("name the session: lanyard sessions revoke ID, or --profile P"),
    };
    let client = ctx.client(&config, profile)?;
    let revoked = credentials::runtime()?.block_on(client.json(
        Method::DELETE,
        &format!("/v1/sessions/{id}"),
        None,
    ))?;
    // Cached credentials of the revoked session are not served again by this machine.
    let cache = ctx.cache()?;
    for (name, p) in &config.profiles {
        if p.session.as_deref() == Some(id.as_str()) {
            cache.remove(&cache_key(name, p, &ctx.server(&config, Some(p))?)?)?;
        }
    }
    if ctx.json_output() {
        return print_json(&revoked);
    }
    let until = revoked["credentials_valid_until"]
        .as_str()
        .map(|t| {
            format!(" Credentials issued before keep working until {t} (AWS cannot recall them).")
        })
        .unwrap_or_default();
    print(&format!("Revoked session {id}.{until}\n"))
}

pub fn usage_report(ctx: &Ctx, args: &UsageArgs) -> anyhow::Result<()> {
    if !(1..=366).contains(&args.days) {
        bail!("--days must be between 1 and 366");
    }
    let mut path = format!("/v1/reports/usage?days={}", args.days);
    if let Some(c) = &args.customer {
        path.push_str(&format!("&customer={}", ids::customer(c)?));
    }
    let config = ctx.config()?;
    let client = ctx.client(&config, None)?;
    let runtime = credentials::runtime()?;
    if args.json || ctx.json_output() {
        let report = runtime.block_on(client.json(Method::GET, &path, None))?;
        return print_json(&report);
    }
    // The broker renders the tree itself, the same text its other clients show.
    print(&runtime.block_on(client.text(&path))?)
}

pub fn ping(ctx: &Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let server = ctx.server(&config, None)?;
    let client = Client::new(&server, None, ctx.debug)?;
    let status = credentials::runtime()?.block_on(client.readiness())?;
    let server = config::redact_url(&server);
    if ctx.json_output() {
        return print_json(&json!({ "server": server, "status": status }));
    }
    print(&format!("{server}: {status}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(windows))]
    #[test]
    fn the_credential_process_line_splits_back_into_the_same_words_with_shlex() {
        assert_eq!(
            process_command("/usr/local/bin/lanyard", "support-acme-CS-1.2_x"),
            "/usr/local/bin/lanyard credential-process --profile support-acme-CS-1.2_x"
        );
        let paths = [
            "/opt/my tools/lanyard",
            "/home/o'brien/bin/lanyard",
            "/tmp/$HOME/`id`/\"q\"/back\\slash/lanyard",
            "/tmp/tab\there;&|<>*?~#!/lanyard",
            "/tmp/ünïcode/lanyard",
        ];
        let lines: Vec<String> = paths
            .iter()
            .map(|p| process_command(p, "customer-acme"))
            .collect();
        let script = "import json, shlex, sys\nprint(json.dumps([shlex.split(l) for l in json.load(sys.stdin)]))";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for the shlex check");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(&lines).unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let split: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
        for (path, words) in paths.iter().zip(split) {
            assert_eq!(
                words,
                [*path, "credential-process", "--profile", "customer-acme"],
                "{path}"
            );
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("1800").unwrap(), 1800);
        assert_eq!(parse_duration("1d").unwrap(), 86_400);
        for bad in ["", "m", "0m", "0", "1h30", "-5m", "1.5h", "30x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
