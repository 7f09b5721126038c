//! Stand-in for the credential cache (the real module, AES-256-GCM with the key in the OS
//! keyring or a 0600 key file, replaces this file wholesale): one plain JSON file per
//! profile, written atomically, and a per-profile `flock`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fs4::fs_std::FileExt;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Cached {
    pub document: serde_json::Value,
    pub expiration: chrono::DateTime<chrono::Utc>,
}

pub struct CredentialCache {
    dir: PathBuf,
}

/// Held while one process fetches a profile's credentials; released on drop.
pub struct ProfileLock {
    _file: File,
}

impl CredentialCache {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating the cache directory {}", dir.display()))?;
        Ok(CredentialCache {
            dir: dir.to_path_buf(),
        })
    }

    fn file(&self, profile: &str, ext: &str) -> PathBuf {
        let safe: String = profile
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.{ext}"))
    }

    pub fn read(&self, profile: &str) -> Option<Cached> {
        let bytes = fs::read(self.file(profile, "json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn write(&self, profile: &str, value: &Cached) -> anyhow::Result<()> {
        let path = self.file(profile, "json");
        let tmp = self.file(profile, &format!("json.tmp.{}", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec(value)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn remove(&self, profile: &str) -> anyhow::Result<()> {
        match fs::remove_file(self.file(profile, "json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn lock(&self, profile: &str) -> anyhow::Result<ProfileLock> {
        let path = self.file(profile, "lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock_exclusive()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(ProfileLock { _file: file })
    }
}
