//! `lanyard doctor --profile P`: one line per check, in the order a user would fix things —
//! config, broker, token, credentials, AWS CLI wiring, clock.

use std::process::ExitCode;

use chrono::Utc;
use serde_json::json;

use crate::commands::{self, Ctx};
use crate::credentials::{self, Mode, Obtain};
use crate::{Output, aws_config};

#[derive(Clone, Copy, PartialEq)]
enum Verdict {
    Pass,
    Warn,
    Fail,
}

struct Checks {
    lines: Vec<(Verdict, &'static str, String)>,
}

impl Checks {
    fn add(&mut self, verdict: Verdict, name: &'static str, detail: impl Into<String>) {
        self.lines.push((verdict, name, detail.into()));
    }
}

/// Tokens closer than this to their expiry are reported (credential requests start failing
/// with 401 when they expire).
const TOKEN_WARN: chrono::Duration = chrono::Duration::minutes(15);
/// Clock skew beyond this breaks expiry decisions (and AWS signatures at 5 min).
const SKEW_WARN: chrono::Duration = chrono::Duration::seconds(30);

pub fn run(ctx: &Ctx, name: &str) -> anyhow::Result<ExitCode> {
    let mut checks = Checks { lines: Vec::new() };
    diagnose(ctx, name, &mut checks);
    let failed = checks.lines.iter().any(|(v, ..)| *v == Verdict::Fail);
    if ctx.output == Output::Json {
        let list: Vec<_> = checks
            .lines
            .iter()
            .map(|(v, n, d)| {
                json!({"check": n, "status": match v { Verdict::Pass => "ok", Verdict::Warn => "warn", Verdict::Fail => "fail" }, "detail": d})
            })
            .collect();
        commands::print_json(&json!({"profile": name, "checks": list}))?;
    } else {
        let mut out = String::new();
        for (verdict, check, detail) in &checks.lines {
            let mark = match verdict {
                Verdict::Pass => "✔",
                Verdict::Warn => "!",
                Verdict::Fail => "✘",
            };
            out.push_str(&format!("{mark} {check}: {detail}\n"));
        }
        commands::print(&out)?;
    }
    if failed {
        eprintln!("lanyard: doctor found problems with profile {name} (lines marked ✘)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn diagnose(ctx: &Ctx, name: &str, checks: &mut Checks) {
    use Verdict::*;
    let config = match ctx.config() {
        Ok(c) => c,
        Err(e) => return checks.add(Fail, "config", format!("{e:#}")),
    };
    let profile = match ctx.store.profile(&config, name) {
        Ok(p) => p.clone(),
        Err(e) => return checks.add(Fail, "config", format!("{e:#}")),
    };
    checks.add(
        Pass,
        "config",
        format!(
            "{}: {}",
            ctx.store.config_path().display(),
            credentials::describe(&profile)
        ),
    );

    let server = match ctx.server(&config, Some(&profile)) {
        Ok(s) => s,
        Err(e) => return checks.add(Fail, "broker", format!("{e:#}")),
    };
    let probe = ctx
        .connect(&server, None)
        .and_then(|client| credentials::runtime()?.block_on(client.probe()));
    let (broker_up, broker_date) = match probe {
        Ok((status, date)) => {
            checks.add(
                Pass,
                "broker",
                format!("{} answers ({status})", crate::config::redact_url(&server)),
            );
            (true, date)
        }
        Err(e) => {
            checks.add(Fail, "broker", format!("{e:#}"));
            (false, None)
        }
    };

    match ctx.token_for(&config, &server) {
        Err(e) => checks.add(Fail, "token", format!("{e:#}")),
        // The broker answers: it judges the token (signature, record, revocation, expiry).
        Ok(token) if broker_up => {
            let client = ctx.connect(&server, Some(token));
            match client.and_then(|c| credentials::runtime()?.block_on(c.whoami())) {
                Ok(who) => {
                    let line = format!("{} ({})", who.subject, who.role);
                    if who.expires_at - Utc::now() < TOKEN_WARN {
                        checks.add(
                            Warn,
                            "token",
                            format!("{line}, expires soon: {}", who.expires_at.to_rfc3339()),
                        );
                    } else {
                        checks.add(
                            Pass,
                            "token",
                            format!("{line}, valid until {}", who.expires_at.to_rfc3339()),
                        );
                    }
                }
                Err(e) => checks.add(Fail, "token", format!("{e:#}")),
            }
        }
        // No broker to ask: what the token says about itself.
        Ok(token) => match commands::token_info(&token).and_then(|i| i.expires.map(|e| (i, e))) {
            Some((_, expires)) if expires <= Utc::now() => checks.add(
                Fail,
                "token",
                format!("expired at {}: run `lanyard login`", expires.to_rfc3339()),
            ),
            Some((info, expires)) => checks.add(
                Warn,
                "token",
                format!(
                    "{} ({}), valid until {} by its own claims; not checked (the broker did not answer)",
                    info.subject.unwrap_or_else(|| "?".into()),
                    info.role.unwrap_or_else(|| "?".into()),
                    expires.to_rfc3339()
                ),
            ),
            None => checks.add(
                Warn,
                "token",
                "present, but not a JWT whose expiry can be read",
            ),
        },
    }

    let cache = ctx.cache();
    match &cache {
        Ok(cache) => checks.add(
            Verdict::Pass,
            "cache",
            format!("encrypted (AES-256-GCM), key {}", cache.key_source()),
        ),
        Err(e) => checks.add(Verdict::Fail, "cache", format!("{e:#}")),
    }
    let obtained = cache.and_then(|cache| {
        let key = commands::cache_key(name, &profile, &server)?;
        credentials::obtain(
            &Obtain {
                name,
                key: &key,
                profile: &profile,
                cache: Some(&cache),
                mode: Mode::Normal,
                debug: ctx.debug,
                check_within: ctx.check_within,
            },
            || ctx.client_for(&config, name, &profile),
        )
    });
    match obtained {
        Ok((cached, source)) => checks.add(
            Pass,
            "credentials",
            format!(
                "access key {} from the {}, expires {}",
                cached.document.access_key_id,
                match source {
                    credentials::Source::Cache => "cache",
                    credentials::Source::Broker => "broker",
                },
                cached.expiration.to_rfc3339()
            ),
        ),
        Err(e) => checks.add(Fail, "credentials", format!("{e:#}")),
    }

    match aws_config::config_path().and_then(|path| {
        let text = aws_config::read(&path)?.map(|(t, _)| t).unwrap_or_default();
        Ok((path, text))
    }) {
        Ok((path, text)) => {
            match aws_config::profile_setting(&text, name, "credential_process") {
                Some(line) if runs_lanyard_for(&line, name) => checks.add(
                    Pass,
                    "aws profile",
                    format!("[profile {name}] in {} runs {line}", path.display()),
                ),
                Some(line) => checks.add(
                    Fail,
                    "aws profile",
                    format!(
                        "[profile {name}] in {} has credential_process = {line}, not lanyard's for this profile",
                        path.display()
                    ),
                ),
                None => checks.add(
                    Fail,
                    "aws profile",
                    format!(
                        "no [profile {name}] with credential_process in {}: run `lanyard support-access` or `lanyard setup-customer`",
                        path.display()
                    ),
                ),
            }
        }
        Err(e) => checks.add(Fail, "aws profile", format!("{e:#}")),
    }

    shadowing_variables(name, checks);

    if let Some(date) = broker_date {
        let skew = Utc::now() - date;
        let secs = skew.num_seconds();
        if skew.abs() > SKEW_WARN {
            checks.add(
                Warn,
                "clock",
                format!("this machine is {secs} s off the broker's clock"),
            );
        } else {
            checks.add(
                Pass,
                "clock",
                format!("within {} s of the broker", secs.abs().max(1)),
            );
        }
    }
}

/// Credential variables in the environment win over a profile the AWS CLI takes from
/// `AWS_PROFILE` (only an explicit `--profile` makes botocore skip them): `aws` would then
/// use other credentials than the ones checked above.
fn shadowing_variables(name: &str, checks: &mut Checks) {
    let set: Vec<&str> = SHADOWING
        .iter()
        .copied()
        .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        .collect();
    if set.is_empty() {
        checks.add(
            Verdict::Pass,
            "environment",
            "no AWS credential variables that would take the profile's place",
        );
    } else {
        checks.add(
            Verdict::Warn,
            "environment",
            format!(
                "{} set in this environment: `aws` uses {} instead of profile {name} unless \
                 given --profile {name}; unset {}",
                set.join(", "),
                if set.len() == 1 { "it" } else { "them" },
                set.join(" ")
            ),
        );
    }
}

/// The variables botocore's environment provider reads.
const SHADOWING: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Whether a credential_process command line, split as botocore splits it, is
/// `<lanyard> credential-process --profile NAME` for exactly this profile.
fn runs_lanyard_for(line: &str, name: &str) -> bool {
    let Some(words) = aws_config::shell_words(line) else {
        return false;
    };
    let profile_flag = words
        .windows(2)
        .any(|w| w[0] == "--profile" && w[1] == name)
        || words.iter().any(|w| *w == format!("--profile={name}"));
    words.get(1).is_some_and(|w| w == "credential-process") && profile_flag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wiring_check_matches_the_exact_profile_only() {
        let config = "[profile CS-12]\ncredential_process = /bin/lanyard credential-process --profile CS-12\n";
        let line = aws_config::profile_setting(config, "CS-12", "credential_process").unwrap();
        assert!(runs_lanyard_for(&line, "CS-12"));
        assert!(!runs_lanyard_for(&line, "CS-1"));
        assert_eq!(
            aws_config::profile_setting(config, "CS-1", "credential_process"),
            None
        );
        let quoted = "[profile \"x\"]\ncredential_process = '/opt/my tools/lanyard' credential-process --profile x\n";
        let line = aws_config::profile_setting(quoted, "x", "credential_process").unwrap();
        assert!(runs_lanyard_for(&line, "x"));
        assert!(runs_lanyard_for(
            "/bin/lanyard credential-process --profile x --no-cache",
            "x"
        ));
        assert!(!runs_lanyard_for("/bin/lanyard export --profile x", "x"));
    }
}
