//! What `lanyard migrate` prints: the plan, the profiles left alone and why, the backup's
//! path; a dry run's unified diff; or all of it as JSON.

use std::path::Path;

use serde_json::json;

use super::File;
use super::plan::{self, Migration, Origin, Skipped};
use crate::aws_config;
use crate::commands::{Ctx, print, print_json};

/// What the command prints.
pub(super) struct Report<'a> {
    pub dry_run: bool,
    pub files: (&'a Path, &'a Path),
    pub skipped: &'a [Skipped],
    pub done: usize,
}

impl Report<'_> {
    pub fn nothing(&self, ctx: &Ctx) -> anyhow::Result<()> {
        if ctx.json_output() {
            return print_json(&self.json(&[], &[], None, None));
        }
        let mut out = format!(
            "Nothing to migrate: no profile in {} or {} reaches a customer role registered at \
             the broker, or holds static keys named with --static-profile",
            self.files.0.display(),
            self.files.1.display()
        );
        out.push_str(&match self.done {
            0 => ".\n".to_owned(),
            1 => "; 1 profile uses Lanyard already.\n".to_owned(),
            n => format!("; {n} profiles use Lanyard already.\n"),
        });
        out.push_str(&self.left_alone(&[]));
        print(&out)
    }

    pub fn dry_run(
        &self,
        ctx: &Ctx,
        migrations: &[(Migration, String)],
        config: &File,
        credentials: &File,
        edited: &plan::Edited,
    ) -> anyhow::Result<()> {
        let mut diff = String::new();
        for (file, after) in [(config, &edited.config), (credentials, &edited.credentials)] {
            diff.push_str(&unified_diff(&file.path, &file.text, after));
        }
        if ctx.json_output() {
            return print_json(&self.json(migrations, &[], None, Some(&diff)));
        }
        let mut out = format!(
            "Would migrate {} (dry run: nothing is changed):\n",
            count(migrations.len())
        );
        out.push_str(&lines(migrations));
        out.push_str(&self.left_alone(&[]));
        out.push_str(
            "Each is first proven at the broker; the removed settings (static keys, external \
             IDs) go to a backup file (mode 0600) in Lanyard's config directory.\n\n",
        );
        out.push_str(&diff);
        print(&out)
    }

    pub fn migrated(
        &self,
        ctx: &Ctx,
        migrations: &[(Migration, String)],
        failed: &[Skipped],
        backup: Option<&Path>,
        rewrote: &[&Path],
    ) -> anyhow::Result<()> {
        if ctx.json_output() {
            return print_json(&self.json(migrations, failed, backup, None));
        }
        let mut out = String::new();
        if !migrations.is_empty() {
            out.push_str(&format!(
                "Migrated {} to Lanyard:\n{}",
                count(migrations.len()),
                lines(migrations)
            ));
        }
        out.push_str(&self.left_alone(failed));
        if let Some(backup) = backup {
            out.push_str(&format!(
                "The removed settings (static keys, external IDs) are in {} (mode 0600); \
                 delete it once the profiles work.\nRewrote {}.\n",
                backup.display(),
                rewrote
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        if let Some((first, _)) = migrations.first() {
            out.push_str(&format!(
                "\nNext:\n  aws sts get-caller-identity --profile {}\n  lanyard profiles\n",
                first.profile
            ));
        }
        print(&out)
    }

    /// The profiles left as they are, and why; `failed` first.
    fn left_alone(&self, failed: &[Skipped]) -> String {
        if failed.is_empty() && self.skipped.is_empty() {
            return String::new();
        }
        let mut out = "Left as they are:\n".to_owned();
        for s in failed.iter().chain(self.skipped) {
            out.push_str(&format!("  {}: {}\n", s.profile, s.reason));
        }
        out
    }

    fn json(
        &self,
        migrations: &[(Migration, String)],
        failed: &[Skipped],
        backup: Option<&Path>,
        diff: Option<&str>,
    ) -> serde_json::Value {
        let skipped = |list: &[Skipped]| -> Vec<serde_json::Value> {
            list.iter()
                .map(|s| json!({"profile": s.profile, "reason": s.reason}))
                .collect()
        };
        json!({
            "dry_run": self.dry_run,
            "migrated": migrations.iter().map(|(m, line)| json!({
                "profile": m.profile,
                "customer": m.customer,
                "role": m.role,
                "from": match &m.from { Origin::RoleArn(_) => "role_arn", Origin::StaticKeys => "static_keys" },
                "role_arn": match &m.from { Origin::RoleArn(arn) => Some(arn), Origin::StaticKeys => None },
                "credential_process": line,
            })).collect::<Vec<_>>(),
            "failed": skipped(failed),
            "skipped": skipped(self.skipped),
            "already_lanyard": self.done,
            "backup": backup,
            "aws_config": self.files.0,
            "aws_credentials": self.files.1,
            "diff": diff,
        })
    }
}

fn count(n: usize) -> String {
    match n {
        1 => "1 profile".into(),
        n => format!("{n} profiles"),
    }
}

fn lines(migrations: &[(Migration, String)]) -> String {
    let mut out = String::new();
    for (m, _) in migrations {
        let from = match &m.from {
            Origin::RoleArn(arn) => format!("role {arn}"),
            Origin::StaticKeys => "static keys".into(),
        };
        let role = m
            .role
            .as_deref()
            .map(|r| format!(", role {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}: {from} -> customer {}{role}\n",
            m.profile, m.customer
        ));
    }
    out
}

/// `before` → `after` as a unified diff of `path` (none when equal), secret values
/// `[redacted]` on both sides.
fn unified_diff(path: &Path, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    let before = aws_config::redact_secrets(before);
    let after = aws_config::redact_secrets(after);
    let name = path.display().to_string();
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(&name, &format!("{name} (after lanyard migrate)"))
        .missing_newline_hint(true)
        .to_string()
}
