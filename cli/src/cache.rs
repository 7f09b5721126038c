//! The local credential cache: one AES-256-GCM encrypted file per profile, replaced
//! atomically, with a cross-process lock per profile so that many parallel
//! `credential-process` invocations cause one request to the broker.
//!
//! File format (version 1): `"LNYC"`, one version byte, a random 96-bit nonce, then the
//! AES-256-GCM ciphertext and tag of the JSON of [`Cached`]. The magic, the version and the
//! profile name are the associated data, so a file copied over another profile's, edited,
//! cut short or written by another format version does not decrypt, and the reader treats
//! it as a miss. A random 96-bit nonce per write is safe far beyond the number of writes a
//! cache sees (NIST SP 800-38D §8.3 bounds random nonces at 2^32 uses of one key).
//!
//! The key is 256 random bits, kept in the OS keyring when one is usable (Linux kernel
//! keyring, macOS Keychain, Windows Credential Manager) and `LANYARD_CACHE_KEYRING` is not
//! `off`, else in `cache.key` (0600) beside the cache files. Losing the key only costs a
//! refetch: the kernel keyring forgets it at reboot, and the next `open` makes a new one.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use anyhow::{Context, bail};
use lanyard_api::sessions::CredentialProcess;
use sha2::{Digest, Sha256};

use crate::private::{self, Sensitivity};

mod keyring;

/// Environment variable that turns the OS keyring off (`off`): the key then lives in
/// `cache.key` in the cache directory.
pub const KEYRING_ENV: &str = "LANYARD_CACHE_KEYRING";
/// Keyring service and user under which the cache key is stored.
pub const KEYRING_SERVICE: &str = "lanyard";
pub const KEYRING_USER: &str = "credential-cache";
/// Name of the key file used when no keyring is usable.
pub const KEY_FILE: &str = "cache.key";

const MAGIC: &[u8; 4] = b"LNYC";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Serialises key creation between processes (never deleted: deleting a lock file races).
const KEY_LOCK_FILE: &str = "cache.key.lock";

/// One cached credential_process answer.
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Cached {
    /// The credential_process document as the broker sent it (the JSON of this field is the
    /// one earlier versions wrote, so their cache files still read).
    pub document: CredentialProcess,
    /// Parsed from the document's Expiration.
    pub expiration: chrono::DateTime<chrono::Utc>,
    /// When the broker last vouched that these credentials' session was not revoked, on this
    /// machine's clock: when it handed them out, then at each revocation check (see
    /// `credentials::revocation`). None in entries written before the check existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the broker handed them out, on the broker's clock (its `Date` header) less a
    /// margin: a revocation epoch later than this may have revoked them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Cached {
    /// Wraps a credential_process document, parsing its RFC 3339 `Expiration`.
    pub fn from_document(document: CredentialProcess) -> anyhow::Result<Self> {
        let expiration = crate::credentials::parse_expiration(&document.expiration)?;
        Ok(Cached {
            document,
            expiration,
            checked_at: None,
            issued_at: None,
        })
    }
}

/// Secrets never reach Debug output: only the key id and the expiry are shown.
impl fmt::Debug for Cached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("access_key_id", &self.document.access_key_id)
            .field("secrets", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Where the cache key came from (for `lanyard doctor` and `--debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Keyring,
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Keyring => f.write_str("in the OS keyring"),
            KeySource::File(path) => write!(f, "in {}", path.display()),
        }
    }
}

pub struct CredentialCache {
    dir: PathBuf,
    cipher: Aes256Gcm,
    key_source: KeySource,
}

/// The exclusive lock of one profile; released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct ProfileLock {
    _file: File,
}

impl CredentialCache {
    /// Creates `dir` (0700) if needed; loads or creates the 256-bit key: from the OS keyring
    /// (service "lanyard", user "credential-cache") when one is usable and
    /// LANYARD_CACHE_KEYRING is not "off", else from `dir/cache.key` (0600, created
    /// atomically; refuse a key file that is group/world-readable or not 32 bytes with a clear error).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let keyring = keyring_enabled(std::env::var(KEYRING_ENV).ok().as_deref())
            .then_some((KEYRING_SERVICE, KEYRING_USER));
        Self::open_with(dir, keyring)
    }

    /// `open` with the keyring entry to use (None: the key file only).
    fn open_with(dir: &Path, keyring: Option<(&str, &str)>) -> anyhow::Result<Self> {
        private::ensure_dir(dir)?;
        let path = dir.join(KEY_FILE);
        // An existing key file wins: once a process fell back to it, every later one uses it
        // too, instead of flapping between two keys (and missing the cache) on a keyring
        // that works only some of the time, as the kernel keyring does in some containers.
        let (key, key_source) = match read_key_file(&path)? {
            Some(key) => (key, KeySource::File(path)),
            None => {
                match keyring.and_then(|(s, u)| self::keyring::load_or_create(dir, &path, s, u)) {
                    Some(key) => (key, KeySource::Keyring),
                    None => (load_or_create_key_file(dir, &path)?, KeySource::File(path)),
                }
            }
        };
        let cipher = Aes256Gcm::new_from_slice(&key)
            .map_err(|_| anyhow::anyhow!("cache key is not {KEY_LEN} bytes"))?;
        Ok(CredentialCache {
            dir: dir.to_path_buf(),
            cipher,
            key_source,
        })
    }

    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// The cache file of `profile` (whether or not it exists).
    pub fn path(&self, profile: &str) -> PathBuf {
        self.dir.join(format!("{}.cred", file_stem(profile)))
    }

    fn lock_path(&self, profile: &str) -> PathBuf {
        self.dir.join(format!("{}.lock", file_stem(profile)))
    }

    /// None when missing, truncated, tampered, undecryptable, for another profile, or of an
    /// unknown format version — never an error, never a panic (the caller refetches).
    pub fn read(&self, profile: &str) -> Option<Cached> {
        self.read_value(profile)
    }

    /// Any value sealed under `profile` (the credentials of a profile, the renewal of an SSO
    /// login), by the rules of [`read`](Self::read).
    pub fn read_value<T: serde::de::DeserializeOwned>(&self, profile: &str) -> Option<T> {
        // An entry that is not a regular file of the user's own is a miss like any other
        // (entries are encrypted: being readable by others gives nothing away).
        let bytes = private::read_file(&self.path(profile), Sensitivity::Settings)
            .ok()
            .flatten()?;
        if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN
            || &bytes[..MAGIC.len()] != MAGIC
            || bytes[MAGIC.len()] != FORMAT_VERSION
        {
            return None;
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = aes_gcm::Nonce::try_from(nonce).ok()?;
        let plaintext = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &associated_data(header, profile),
                },
            )
            .ok()?;
        serde_json::from_slice(&plaintext).ok()
    }

    /// Encrypts (AES-256-GCM, random 96-bit nonce, the profile name and a format version as
    /// associated data) and writes atomically (temp file in the same dir, fsync, rename), 0600.
    pub fn write(&self, profile: &str, value: &Cached) -> anyhow::Result<()> {
        self.write_value(profile, value)
    }

    /// Seals and writes any value under `profile`, as [`write`](Self::write) does.
    pub fn write_value<T: serde::Serialize>(&self, profile: &str, value: &T) -> anyhow::Result<()> {
        let plaintext = serde_json::to_vec(value).context("serialising the cache entry")?;
        let bytes = self.seal(FORMAT_VERSION, profile, &plaintext)?;
        let path = self.path(profile);
        private::write_atomically(&path, &bytes, None)
            .with_context(|| format!("writing the credential cache {}", path.display()))
    }

    fn seal(&self, version: u8, profile: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut header = MAGIC.to_vec();
        header.push(version);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| anyhow::anyhow!("no randomness for the cache nonce: {e}"))?;
        let ciphertext = self
            .cipher
            .encrypt(
                &aes_gcm::Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &associated_data(&header, profile),
                },
            )
            .map_err(|_| anyhow::anyhow!("encrypting the credential cache failed"))?;
        let mut bytes = header;
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(bytes)
    }

    /// Deletes the cached credentials of `profile` (nothing to delete is fine).
    pub fn remove(&self, profile: &str) -> anyhow::Result<()> {
        let path = self.path(profile);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Blocks until this process holds the exclusive cross-process lock of `profile`
    /// (a lock file beside the cache file); released when the guard drops.
    pub fn lock(&self, profile: &str) -> anyhow::Result<ProfileLock> {
        let file = private::lock_exclusive(&self.lock_path(profile))?;
        Ok(ProfileLock { _file: file })
    }

    /// The lock of `profile` if no one holds it, else None (never blocks).
    pub fn try_lock(&self, profile: &str) -> anyhow::Result<Option<ProfileLock>> {
        let path = self.lock_path(profile);
        let file = private::open_lock(&path)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(Some(ProfileLock { _file: file })),
            Err(fs4::TryLockError::WouldBlock) => Ok(None),
            Err(fs4::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

fn keyring_enabled(setting: Option<&str>) -> bool {
    !matches!(
        setting.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("off" | "0" | "false" | "no")
    )
}

/// The header (magic and version) then the profile name: the header has a fixed length,
/// so no two (version, profile) pairs give the same bytes.
fn associated_data(header: &[u8], profile: &str) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(profile.as_bytes());
    aad
}

/// A file name for any profile name: up to 40 characters from a strict allow-list (others
/// become `_`) so a person can tell the files apart, then 64 bits of the SHA-256 of the
/// exact name so different names never share a file by accident. A collision would only
/// cost a cache miss: the profile name is bound into the ciphertext.
fn file_stem(profile: &str) -> String {
    let readable: String = profile
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = Sha256::digest(profile.as_bytes());
    format!("{readable}-{}", hex::encode(&digest[..8]))
}

/// Reads `cache.key`, or creates it (under a lock, by renaming a complete temp file into
/// place) when it does not exist.
fn load_or_create_key_file(dir: &Path, path: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    let _lock = private::lock_exclusive(&dir.join(KEY_LOCK_FILE))?;
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    let key = new_key()?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-key-")
        .tempfile_in(dir)
        .context("creating the cache key")?;
    tmp.write_all(&key)?;
    tmp.as_file().sync_all()?;
    // No-clobber: should another writer ignore the lock, the first key wins and we use it.
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            read_key_file(path)?.with_context(|| format!("cache key {} vanished", path.display()))
        }
        Err(e) => Err(e.error).with_context(|| format!("writing the cache key {}", path.display())),
    }
}

/// None when the file does not exist; an error when it is unsafe (see `private`: a regular
/// file of the user's own that nobody else may read) or malformed.
fn read_key_file(path: &Path) -> anyhow::Result<Option<[u8; KEY_LEN]>> {
    let Some(mut file) = private::open_file(path, Sensitivity::Secret)
        .with_context(|| format!("cache key {}", path.display()))?
    else {
        return Ok(None);
    };
    let meta = file
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    if meta.len() != KEY_LEN as u64 {
        bail!(
            "cache key {} is {} bytes, not {KEY_LEN}; refusing to use it: delete it to start \
             a new cache (cached credentials are then fetched again)",
            path.display(),
            meta.len()
        );
    }
    let mut key = [0u8; KEY_LEN];
    file.read_exact(&mut key)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(key))
}

fn new_key() -> anyhow::Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("no randomness for the cache key: {e}"))?;
    Ok(key)
}

#[cfg(test)]
mod tests;
