//! `lanyard migrate`: rewrites the AWS profiles that reach a customer role registered at the
//! broker (`role_arn`, with its `external_id` and `source_profile`), and the static-key
//! profiles the user names (`--static-profile`), as Lanyard customer profiles — the shape
//! `setup-customer` writes, under the profile's own name — so that `aws --profile X` goes on
//! working, with short-lived and audited credentials. Every other byte of both files stays.
//!
//! Nothing is lost if it stops half-way. Under the files' locks: each profile is proven first
//! (the broker hands out its credentials, or the profile is left as it is); then the removed
//! settings go to a new 0600 backup file (synced), the profiles into Lanyard's config, the
//! AWS config file is replaced atomically (the profile now runs lanyard), and last the
//! credentials file (static keys there would otherwise still win over credential_process, so
//! until then the profile keeps working with them). A run stopped anywhere leaves working
//! profiles, and the next run finishes what is left; after a complete run there is nothing
//! to migrate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use lanyard_api::SessionKind;
use lanyard_api::customers::{Customer, CustomerList};
use lanyard_api::roles::RoleList;

use super::{Ctx, Target, cache_key, obtain, rfc3339};
use crate::MigrateArgs;
use crate::aws_config::{self, LockedFile};
use crate::client;
use crate::config::{Config, Kind, Profile};
use crate::credentials::{self, Mode};
use crate::private;

mod plan;
mod report;

pub use plan::merged;
use plan::{KnownRole, Migration, Skipped};
use report::Report;

/// One of the two files, as read.
struct File {
    path: PathBuf,
    text: String,
    permissions: Option<std::fs::Permissions>,
    /// Held for a real run (a dry run takes no lock: it changes nothing, not even a lock
    /// file).
    lock: Option<LockedFile>,
}

impl File {
    fn open(path: PathBuf, lock: bool) -> anyhow::Result<File> {
        let lock = if lock {
            Some(LockedFile::lock(&path)?)
        } else {
            None
        };
        let read = match &lock {
            Some(lock) => lock.read()?,
            None => aws_config::read(&path)?,
        };
        let (text, permissions) = match read {
            Some((text, permissions)) => (text, Some(permissions)),
            None => (String::new(), None),
        };
        Ok(File {
            path,
            text,
            permissions,
            lock,
        })
    }

    /// Replaces the file with `text` when that differs from what it holds.
    fn replace(&self, text: &str) -> anyhow::Result<bool> {
        if text == self.text {
            return Ok(false);
        }
        let lock = self
            .lock
            .as_ref()
            .with_context(|| format!("{} is not locked", self.path.display()))?;
        lock.replace(text, self.permissions.clone())?;
        Ok(true)
    }
}

pub fn migrate(ctx: &Ctx, args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    if let Some(customer) = &args.customer {
        client::customer_id(customer)?;
    }
    if let Some(role) = &args.role {
        client::role_name(role)?;
    }
    let config = ctx.config()?;
    let request = plan::Request {
        static_profiles: &args.static_profile,
        customer: args.customer.as_deref(),
        role: args.role.as_deref(),
    };
    // First without a lock: a run that finds nothing to do (or is refused) creates nothing,
    // not even a lock file. A real run with work to do then takes the files' locks and reads
    // them again (another run may have changed them meanwhile).
    let mut roles: Option<Vec<KnownRole>> = None;
    let mut look = |lock: bool| -> anyhow::Result<_> {
        let (config_file, credentials_file) = read_files(lock)?;
        if roles.is_none() && plan::has_role_profiles(&config_file.text, &credentials_file.text) {
            roles = Some(known_roles(ctx, &config)?);
        }
        let found = plan::find(
            &config_file.text,
            &credentials_file.text,
            roles.as_deref().unwrap_or_default(),
            &request,
        )?;
        anyhow::Ok((config_file, credentials_file, found))
    };
    let (mut config_file, mut credentials_file, mut found) = look(false)?;
    if !args.dry_run && !found.0.is_empty() {
        (config_file, credentials_file, found) = look(true)?;
    }
    let (found, mut skipped, done) = found;
    // Each profile's credential_process line, for a name the file can hold.
    let mut migrations: Vec<(Migration, String)> = Vec::new();
    for migration in found {
        let line = super::access::credential_process_line(&migration.profile).and_then(|line| {
            aws_config::validate(&migration.profile, &[("credential_process", &line)])?;
            Ok(line)
        });
        match line {
            Ok(line) => migrations.push((migration, line)),
            Err(e) => skipped.push(Skipped {
                profile: migration.profile.clone(),
                reason: crate::text::one_line(&format!("{e:#}")),
            }),
        }
    }
    let paths = (
        config_file.path.display().to_string(),
        credentials_file.path.display().to_string(),
    );
    let report = Report {
        dry_run: args.dry_run,
        files: (&config_file.path, &credentials_file.path),
        skipped: &skipped,
        done,
    };
    if migrations.is_empty() {
        report.nothing(ctx)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        let edited = edit(&config_file, &credentials_file, &migrations, &paths);
        report.dry_run(ctx, &migrations, &config_file, &credentials_file, &edited)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Prove each profile before anything is written: the broker hands out its credentials.
    let mut failed: Vec<Skipped> = Vec::new();
    migrations.retain(|(m, _)| match prove(ctx, m) {
        Ok(()) => true,
        Err(e) => {
            failed.push(Skipped {
                profile: m.profile.clone(),
                reason: crate::text::one_line(&format!("{e:#}")),
            });
            false
        }
    });
    let mut backup = None;
    let mut rewrote: Vec<&Path> = Vec::new();
    if !migrations.is_empty() {
        let edited = edit(&config_file, &credentials_file, &migrations, &paths);
        let names: Vec<&str> = migrations.iter().map(|(m, _)| m.profile.as_str()).collect();
        backup = Some(write_backup(&ctx.store.dir, &names, &edited.backup)?);
        record_profiles(ctx, &config, &migrations)?;
        for (file, text) in [
            (&config_file, &edited.config),
            (&credentials_file, &edited.credentials),
        ] {
            if file.replace(text)? {
                rewrote.push(&file.path);
            }
        }
    }
    report.migrated(ctx, &migrations, &failed, backup.as_deref(), &rewrote)?;
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let failed: Vec<String> = failed
        .iter()
        .map(|f| format!("{} ({})", f.profile, f.reason))
        .collect();
    anyhow::bail!(
        "left {} profile(s) as they were, the broker did not hand out their credentials: {}",
        failed.len(),
        failed.join("; ")
    )
}

/// The AWS config and credentials files; with `lock`, under their locks (the config file's
/// first, always in this order; the credentials file's only when it exists: one that does
/// not is never written).
fn read_files(lock: bool) -> anyhow::Result<(File, File)> {
    let config_path = aws_config::config_path()?;
    let credentials_path = aws_config::credentials_path()?;
    let credentials_exist = credentials_path.exists();
    Ok((
        File::open(config_path, lock)?,
        File::open(credentials_path, lock && credentials_exist)?,
    ))
}

fn edit(
    config: &File,
    credentials: &File,
    migrations: &[(Migration, String)],
    paths: &(String, String),
) -> plan::Edited {
    let lines: Vec<(String, String)> = migrations
        .iter()
        .map(|(m, line)| (m.profile.clone(), line.clone()))
        .collect();
    plan::edit(
        &config.text,
        &credentials.text,
        &lines,
        (&paths.0, &paths.1),
    )
}

/// Every role of the customers the token may see (a service token: those it may reach),
/// with what picks it out.
fn known_roles(ctx: &Ctx, config: &Config) -> anyhow::Result<Vec<KnownRole>> {
    let client = ctx.client(config, None)?;
    credentials::runtime()?.block_on(async {
        let customers: Vec<Customer> = client.get::<CustomerList>("/v1/customers").await?.customers;
        let mut known = Vec::new();
        for customer in customers {
            let roles: RoleList = client
                .get(&format!("/v1/customers/{}/roles", customer.id))
                .await?;
            let mut external_ids = vec![customer.external_id.clone()];
            external_ids.extend(customer.pending_external_id.clone());
            for role in roles.roles {
                known.push(KnownRole {
                    customer: customer.id.to_string(),
                    role: role.name.to_string(),
                    role_arn: role.role_arn,
                    external_ids: external_ids.clone(),
                    customer_sessions: role.session_kinds.contains(&SessionKind::Customer),
                    status: role.status.as_str().to_owned(),
                });
            }
        }
        anyhow::Ok(known)
    })
}

/// The broker hands out the customer credentials the profile will ask for (neither read
/// from nor written to the cache).
fn prove(ctx: &Ctx, migration: &Migration) -> anyhow::Result<()> {
    let target = Target::Customer {
        customer: migration.customer.clone(),
        role: migration.role.clone(),
    };
    obtain(ctx, &target, Mode::NoCache)?;
    Ok(())
}

/// Writes the backup of the removed settings to a new file (0600, synced) in `dir`, Lanyard's
/// config directory; returns its path.
fn write_backup(dir: &Path, profiles: &[&str], removed: &str) -> anyhow::Result<PathBuf> {
    private::ensure_dir(dir)?;
    let now = chrono::Utc::now();
    let text = format!(
        "# Written by `lanyard migrate` at {}: the settings it took out of these AWS\n\
         # profiles when it rewrote them as Lanyard profiles: {}.\n\
         # To undo a profile's migration, put its lines back into its section and remove its\n\
         # credential_process line. This file holds secrets (static keys): keep it private,\n\
         # and delete it once the profiles work.\n\n{removed}",
        rfc3339(now),
        profiles.join(", ")
    );
    let stem = format!("migrate-backup-{}", now.format("%Y%m%dT%H%M%SZ"));
    for n in 0..100 {
        let name = match n {
            0 => format!("{stem}.ini"),
            n => format!("{stem}-{n}.ini"),
        };
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = match options.open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        };
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        // The new name must be durable before the files lose what it holds.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        return Ok(path);
    }
    anyhow::bail!("no free backup file name {stem}*.ini in {}", dir.display())
}

/// Records the migrated profiles in Lanyard's config (as `setup-customer` does), and drops
/// what the cache may hold under their names from before.
fn record_profiles(
    ctx: &Ctx,
    config: &Config,
    migrations: &[(Migration, String)],
) -> anyhow::Result<()> {
    let server = ctx.server(config, None)?;
    let identity = ctx.identity(config, &server).ok();
    let cache = ctx.cache().ok();
    let mut records = Vec::new();
    for (migration, _) in migrations {
        let profile = Profile {
            server: Some(server.clone()),
            kind: Kind::Customer,
            customer: migration.customer.clone(),
            session: None,
            case: None,
            role: migration.role.clone(),
            session_expires_at: None,
            tier: None,
            case_title: None,
            approval_expires_at: None,
            identity: identity.clone(),
        };
        if let Some(cache) = &cache {
            cache.remove(&cache_key(&migration.profile, &profile, &server)?)?;
        }
        records.push((migration.profile.clone(), profile));
    }
    // Re-read under the config lock: other runs may have added profiles meanwhile.
    ctx.store.update(|config| {
        for (name, profile) in records {
            if let Some(old) = config.profiles.get(&name)
                && let Some(cache) = &cache
            {
                let old_server = ctx.server(config, Some(old))?;
                cache.remove(&cache_key(&name, old, &old_server)?)?;
            }
            config.profiles.insert(name, profile);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;
