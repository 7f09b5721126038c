//! The commands that ask the broker what is: `customers list`, `sessions list`, `sessions
//! revoke`, `usage-report` and `ping`, printed as tables, the broker's text, or JSON (and the
//! lists as bare ids, `--quiet`, for shell loops).

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use lanyard_api::reports::UsageReport;
use lanyard_api::sessions::{Session, SessionList};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::approval::title_cell;
use super::{Ctx, cache_key, print, print_json};
use crate::client;
use crate::config;
use crate::credentials;
use crate::{SessionsListArgs, UsageArgs};

fn api_get<T: DeserializeOwned>(ctx: &Ctx, path: &str) -> anyhow::Result<T> {
    let config = ctx.config()?;
    let client = ctx.client(&config, None)?;
    credentials::runtime()?.block_on(client.get(path))
}

/// A timestamp as the broker writes it (chrono's serde form), so that tables show what the
/// JSON holds.
pub(super) fn wire_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Columns padded to their widest cell.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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

/// `--quiet` and `--output json` are two answers to one question: the caller picks one.
fn one_shape(ctx: &Ctx, quiet: bool) -> anyhow::Result<()> {
    if quiet && ctx.json_output() {
        bail!("--quiet prints ids only and --output json the whole list: choose one");
    }
    Ok(())
}

/// Ids, one a line and nothing else: what `for x in $(...)` reads. An id holding anything
/// but the characters ids are made of (a broker that is not Lanyard's) is refused rather than
/// split into words or run by a shell.
fn print_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
    let mut out = String::new();
    for id in ids {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!(
                "the broker listed an id that is not one word of letters, digits, '-', '_' or '.'"
            );
        }
        out.push_str(id);
        out.push('\n');
    }
    super::print_raw(&out)
}

pub fn customers_list(ctx: &Ctx, quiet: bool) -> anyhow::Result<()> {
    one_shape(ctx, quiet)?;
    // Read as JSON, not as `lanyard_api::customers::CustomerList`: the table shows three
    // fields, and a list whose entries lack others the type requires (external ids,
    // timestamps) is still shown, as it was before the wire types were shared.
    let list: Value = api_get(ctx, "/v1/customers")?;
    if ctx.json_output() {
        return print_json(&list);
    }
    if quiet {
        let customers = list["customers"].as_array().into_iter().flatten();
        return print_ids(customers.map(|c| c["id"].as_str().unwrap_or_default()));
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
    one_shape(ctx, args.quiet)?;
    let mut query = Vec::new();
    if let Some(c) = &args.customer {
        query.push(format!("customer={}", client::customer_id(c)?));
    }
    if let Some(c) = &args.case {
        query.push(format!("case_id={}", client::case_id(c)?));
    }
    if args.active {
        query.push("active=true".into());
    }
    query.push(format!("limit={}", args.limit));
    let path = format!("/v1/sessions?{}", query.join("&"));
    let list: SessionList = api_get(ctx, &path)?;
    if list.sessions.len() >= usize::from(args.limit) {
        // A script looping over the ids must not miss the rest without a word.
        eprintln!(
            "lanyard: showing the newest {} sessions; there may be more (--limit, up to 1000, \
             or narrow with --customer, --case, --active)",
            args.limit
        );
    }
    if ctx.json_output() {
        return print_json(&list);
    }
    if args.quiet {
        let ids: Vec<String> = list.sessions.iter().map(|s| s.id.to_string()).collect();
        return print_ids(ids.iter().map(String::as_str));
    }
    print(&sessions_table(&list.sessions))
}

/// The sessions as a table; the TIER and TITLE columns only when a session has a tier or a
/// case title (a broker without tiers and case system shows the columns it always did).
fn sessions_table(sessions: &[Session]) -> String {
    let tiers = sessions.iter().any(|s| s.tier.is_some());
    let titles = sessions.iter().any(|s| s.case_title.is_some());
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let mut row = vec![
                s.id.to_string(),
                s.kind.to_string(),
                s.customer.to_string(),
                s.case_id
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
            ];
            if tiers {
                row.push(s.tier.clone().unwrap_or_else(|| "-".into()));
            }
            row.extend([
                s.status.to_string(),
                wire_time(s.expires_at),
                s.profile_name.clone(),
            ]);
            if titles {
                row.push(title_cell(s.case_title.as_deref()));
            }
            row
        })
        .collect();
    let mut header = vec!["ID", "KIND", "CUSTOMER", "CASE"];
    if tiers {
        header.push("TIER");
    }
    header.extend(["STATUS", "EXPIRES", "PROFILE"]);
    if titles {
        header.push("TITLE");
    }
    table(&header, &rows)
}

pub fn sessions_revoke(ctx: &Ctx, id: Option<&str>, profile: Option<&str>) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let (id, profile) = match (id, profile) {
        (Some(id), _) => (client::session_id(id)?, None),
        (None, Some(name)) => {
            let p = ctx.store.profile(&config, name)?;
            let id = p
                .session
                .as_deref()
                .with_context(|| format!("profile {name} has no session to revoke (customer profiles open theirs on demand)"))?;
            (client::session_id(id)?, Some(p))
        }
        (None, None) => bail!("name the session: lanyard sessions revoke ID, or --profile P"),
    };
    let client = ctx.client(&config, profile)?;
    let revoked: Session =
        credentials::runtime()?.block_on(client.delete(&format!("/v1/sessions/{id}")))?;
    // Cached credentials of the revoked session are not served again by this machine.
    let cache = ctx.cache()?;
    for (name, p) in &config.profiles {
        if p.session.as_deref().and_then(|s| Uuid::parse_str(s).ok()) == Some(id) {
            cache.remove(&cache_key(name, p, &ctx.server(&config, Some(p))?)?)?;
        }
    }
    if ctx.json_output() {
        return print_json(&revoked);
    }
    let until = revoked
        .credentials_valid_until
        .map(|t| {
            format!(
                " Credentials issued before keep working until {} (AWS cannot recall them).",
                wire_time(t)
            )
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
        path.push_str(&format!("&customer={}", client::customer_id(c)?));
    }
    let config = ctx.config()?;
    let client = ctx.client(&config, None)?;
    let runtime = credentials::runtime()?;
    if args.json || ctx.json_output() {
        let report: UsageReport = runtime.block_on(client.get(&path))?;
        return print_json(&report);
    }
    // The broker renders the tree itself, the same text its other clients show.
    print(&runtime.block_on(client.text(&path))?)
}

pub fn ping(ctx: &Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let server = ctx.server(&config, None)?;
    let client = ctx.connect(&server, None)?;
    let status = credentials::runtime()?.block_on(client.readiness())?;
    let server = config::redact_url(&server);
    if ctx.json_output() {
        return print_json(&json!({ "server": server, "status": status }));
    }
    print(&format!("{server}: {status}\n"))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use lanyard_api::status::SessionStatus;
    use lanyard_api::{CaseId, CustomerId, RoleName, SessionKind};

    use super::*;

    fn session(tier: Option<&str>, title: Option<&str>) -> Session {
        let created = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        Session {
            id: Uuid::nil(),
            kind: SessionKind::Support,
            customer: CustomerId::parse("acme-corp").unwrap(),
            role: RoleName::parse("support").unwrap(),
            case_id: Some(CaseId::parse("CS-1").unwrap()),
            reason: None,
            profile_name: "support-acme-corp-CS-1".into(),
            requested_by: "alice".into(),
            status: SessionStatus::Active,
            tier: tier.map(Into::into),
            case_title: title.map(Into::into),
            case_url: None,
            case_check: None,
            approval: None,
            duration_seconds: Some(1800),
            created_at: created,
            expires_at: created + chrono::Duration::minutes(30),
            revoked_at: None,
            revoked_by: None,
            credentials_valid_until: None,
        }
    }

    #[test]
    fn sessions_without_tier_or_title_keep_the_columns_they_always_had() {
        assert_eq!(
            sessions_table(&[session(None, None)]),
            "ID                                    KIND     CUSTOMER   CASE  STATUS  \
             EXPIRES               PROFILE\n\
             00000000-0000-0000-0000-000000000000  support  acme-corp  CS-1  active  \
             2026-11-26T10:30:00Z  support-acme-corp-CS-1\n"
        );
    }

    #[test]
    fn a_tier_and_a_case_title_get_columns_of_their_own() {
        let out = sessions_table(&[
            session(Some("write"), Some("Checkout fails")),
            session(None, None),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "ID", "KIND", "CUSTOMER", "CASE", "TIER", "STATUS", "EXPIRES", "PROFILE", "TITLE"
            ]
        );
        let first: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(first[4], "write", "{out}");
        assert!(lines[1].ends_with("Checkout fails"), "{out}");
        let second: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!((second[4], second[8]), ("-", "-"), "{out}");
    }
}
