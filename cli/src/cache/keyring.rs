//! The cache key in the OS keyring. Every failure means "no usable keyring": the caller
//! falls back to the key file, so a missing D-Bus, a locked keychain or a kernel without
//! keyutils never stops the CLI. Built without the `os-keyring` feature, there is none.

use std::path::Path;

use super::KEY_LEN;

#[cfg(feature = "os-keyring")]
pub(super) fn load_or_create(
    dir: &Path,
    key_file: &Path,
    service: &str,
    user: &str,
) -> Option<[u8; KEY_LEN]> {
    use ::keyring::credential::CredentialPersistence;

    use super::{KEY_LOCK_FILE, new_key};
    use crate::private::lock_exclusive;

    let builder = ::keyring::default::default_credential_builder();
    // A store that forgets at process exit (the crate's mock on platforms without a
    // backend) would give every run a new key: that is no keyring for us.
    if !matches!(
        builder.persistence(),
        CredentialPersistence::UntilReboot | CredentialPersistence::UntilDelete
    ) {
        return None;
    }
    if let Some(key) = get(service, user) {
        return Some(key);
    }
    // Create it once, even when many processes start on an empty keyring together.
    let _lock = lock_exclusive(&dir.join(KEY_LOCK_FILE)).ok()?;
    if key_file.exists() {
        return None;
    }
    if let Some(key) = get(service, user) {
        return Some(key);
    }
    let key = new_key().ok()?;
    let entry = ::keyring::Entry::new_with_credential(builder.build(None, service, user).ok()?);
    // Judged by reading it back, not by this result: the kernel keyring can report a
    // failure (linking to the persistent keyring) after it stored the key.
    let _ = entry.set_secret(&key);
    (get(service, user)? == key).then_some(key)
}

/// The key, asking twice: in a process without a session keyring of its own, the kernel
/// keyring refuses the first search and answers the next one.
#[cfg(feature = "os-keyring")]
fn get(service: &str, user: &str) -> Option<[u8; KEY_LEN]> {
    (0..2).find_map(|_| {
        let secret = ::keyring::Entry::new(service, user)
            .ok()?
            .get_secret()
            .ok()?;
        <[u8; KEY_LEN]>::try_from(secret.as_slice()).ok()
    })
}

#[cfg(all(test, feature = "os-keyring"))]
pub(super) fn delete(service: &str, user: &str) {
    if let Ok(entry) = ::keyring::Entry::new(service, user) {
        let _ = entry.delete_credential();
    }
}

#[cfg(not(feature = "os-keyring"))]
pub(super) fn load_or_create(
    _dir: &Path,
    _key_file: &Path,
    _service: &str,
    _user: &str,
) -> Option<[u8; KEY_LEN]> {
    None
}

#[cfg(all(test, not(feature = "os-keyring")))]
pub(super) fn delete(_service: &str, _user: &str) {}
