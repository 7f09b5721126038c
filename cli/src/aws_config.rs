//! Writing a profile into the AWS shared config file (`~/.aws/config`) without disturbing
//! anything else in it: comments, other sections, spacing and line endings stay byte for byte.
//! Where the file is (and the credentials file beside it), what may be written into it, and
//! reading and replacing it safely under a lock; the text itself is edited by `parse`, which
//! reads it the way the AWS CLI does, and `sections` (profiles and settings taken out).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::private::{self, Sensitivity};

mod parse;
mod sections;

#[cfg(test)]
use parse::{Kind, parse, section_profile};
pub use parse::{profile_setting, shell_words, upsert_profile};
pub use sections::{FileKind, Removed, Settings, profiles, redact_secrets, remove_settings};

/// AWS_CONFIG_FILE when set (expand a leading ~), else ~/.aws/config.
pub fn config_path() -> anyhow::Result<PathBuf> {
    config_path_from(std::env::var_os("AWS_CONFIG_FILE"), std::env::home_dir())
}

/// AWS_SHARED_CREDENTIALS_FILE when set (expand a leading ~), else ~/.aws/credentials.
pub fn credentials_path() -> anyhow::Result<PathBuf> {
    let home = std::env::home_dir();
    match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) if !path.is_empty() => config_path_from(Some(path), home),
        _ => Ok(config_path_from(None, home)?.with_file_name("credentials")),
    }
}

fn config_path_from(
    config_file: Option<std::ffi::OsString>,
    home: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    let home = || {
        home.clone()
            .filter(|h| !h.as_os_str().is_empty())
            .context("cannot find the home directory (set HOME, or AWS_CONFIG_FILE)")
    };
    match config_file {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            // `~` and `~/…` only: `~user/…` is left to the shell, as the AWS CLI does.
            match path.strip_prefix("~") {
                Ok(rest) => Ok(home()?.join(rest)),
                Err(_) => Ok(path),
            }
        }
        _ => Ok(home()?.join(".aws").join("config")),
    }
}

/// Checks that `profile` and `settings` can be written without breaking the file or
/// meaning something else when read back.
pub fn validate(profile: &str, settings: &[(&str, &str)]) -> anyhow::Result<()> {
    if profile.is_empty() {
        bail!("the profile name is empty");
    }
    if let Some(c) = profile
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "[]\"'\\#;".contains(*c))
    {
        bail!("profile name {profile:?} contains {c:?}, which the AWS config file cannot hold");
    }
    for (key, value) in settings {
        let bad_key = key.is_empty()
            || key.starts_with(['#', ';'])
            || key
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "=:[]".contains(c));
        if bad_key {
            bail!("{key:?} cannot be a key in the AWS config file");
        }
        if value.chars().any(char::is_control) {
            bail!("the value of {key} contains a line break or control character");
        }
        if value.trim() != *value {
            bail!("the value of {key} starts or ends with whitespace, which would be lost");
        }
    }
    Ok(())
}

/// Reads the file (missing → empty; create the parent dir 0700), applies upsert_profile,
/// and writes atomically, keeping the file's permissions (new file: 0600); takes an
/// exclusive lock on a sibling lock file while doing so. Returns whether anything changed.
///
/// A symlinked config file (dotfile managers) is written through: its target is replaced,
/// not the link.
pub fn write_profile(
    path: &Path,
    profile: &str,
    settings: &[(&str, &str)],
) -> anyhow::Result<bool> {
    validate(profile, settings)?;
    let file = LockedFile::lock(path)?;
    let (content, permissions) = match file.read()? {
        Some((text, permissions)) => (text, Some(permissions)),
        None => (String::new(), None),
    };
    let updated = upsert_profile(&content, profile, settings);
    if updated == content {
        return Ok(false);
    }
    file.replace(&updated, permissions)?;
    Ok(true)
}

/// An AWS config or credentials file held under the exclusive lock of a sibling lock file
/// (`config.lock`), so that runs editing it in parallel each keep their change; released
/// when dropped. A symlinked file (dotfile managers) is locked and written through: its
/// target is replaced, not the link.
pub struct LockedFile {
    /// The file itself (a symlink resolved).
    pub path: PathBuf,
    _lock: fs::File,
}

impl LockedFile {
    /// Blocks until this process holds the file's lock; creates its directory (0700) when
    /// missing.
    pub fn lock(path: &Path) -> anyhow::Result<LockedFile> {
        let path = match fs::canonicalize(path) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
            Err(e) => return Err(e).with_context(|| format!("resolving {}", path.display())),
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        private::ensure_dir(&dir)?;
        let file_name = path
            .file_name()
            .with_context(|| format!("{} is not a file path", path.display()))?;
        let mut lock_name = file_name.to_owned();
        lock_name.push(".lock");
        let lock = private::lock_exclusive(&dir.join(lock_name))?;
        Ok(LockedFile { path, _lock: lock })
    }

    /// The file's text and permissions (see [`read`]); `None` when it does not exist.
    pub fn read(&self) -> anyhow::Result<Option<(String, fs::Permissions)>> {
        read(&self.path)
    }

    /// Replaces the file atomically (temp file, fsync, rename) with `text`, with
    /// `permissions` (those the file had; a new file gets 0600).
    pub fn replace(&self, text: &str, permissions: Option<fs::Permissions>) -> anyhow::Result<()> {
        private::write_atomically(&self.path, text.as_bytes(), permissions)
            .with_context(|| format!("replacing {}", self.path.display()))
    }
}

/// The AWS config file's text and permissions; `None` when it does not exist. Only a regular
/// UTF-8 file of the user's own that group and others cannot write is read (see `private`):
/// a device or FIFO is refused before it is read, and a file others can edit could make
/// `aws` run their `credential_process` as this user.
pub fn read(path: &Path) -> anyhow::Result<Option<(String, fs::Permissions)>> {
    let Some(mut file) = private::open_file(path, Sensitivity::Settings)? else {
        return Ok(None);
    };
    let permissions = file.metadata()?.permissions();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text; not touching it", path.display()))?;
    Ok(Some((text, permissions)))
}

#[cfg(test)]
mod tests;
