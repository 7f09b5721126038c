//! The files the CLI keeps on disk (its config, token, credential cache and key, lock files,
//! and the AWS config it edits) are regular files and directories of the user's own, the
//! way ssh treats `~/.ssh`: anything else is refused with one clear line, before it is read
//! or written.
//!
//! - A directory or file owned by another user, or writable by group or others, could be
//!   swapped or edited by them (a different broker URL in `config.toml` would receive the
//!   token; a different `credential_process` would run as the user): refused.
//! - Secrets (the token, the cache key) must not be readable by group or others either.
//! - A device, FIFO or directory where a file belongs is refused before anything opens it
//!   for reading (reading a FIFO blocks for ever).
//! - Lock files are created and opened without following symlinks, so a planted symlink
//!   cannot make the CLI create or truncate a file elsewhere.
//!
//! Files are opened once and checked on the open descriptor (`fstat`), so what is checked
//! is what is read.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};

/// What a file holds, for the permission rule it is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Settings: not writable by group or others.
    Settings,
    /// A secret (token, key): neither readable nor writable by group or others.
    Secret,
}

/// Creates `dir` (and its parents) with mode 0700 if it is missing, then checks it: a
/// directory owned by the user, not writable by group or others.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    check_dir(dir)
}

/// Checks an existing directory (following a symlink to it, as dotfile setups use).
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = fs::metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory; refusing to use it", dir.display());
    }
    check_owner_and_mode(dir, &meta, Sensitivity::Settings, "directory")
}

/// Opens an existing file for reading after checking, on the open file, that it is a regular
/// file the user owns with safe permissions. `None` when it does not exist.
pub fn open_file(path: &Path, sensitivity: Sensitivity) -> anyhow::Result<Option<File>> {
    let file = match open_no_block(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    check_file(path, &meta, sensitivity)?;
    Ok(Some(file))
}

/// The whole content of a file checked as [`open_file`] does; `None` when it does not exist.
pub fn read_file(path: &Path, sensitivity: Sensitivity) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(mut file) = open_file(path, sensitivity)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(bytes))
}

/// Checks what `meta` (of `path`, from the open file) says: a regular file of the user's own
/// with safe permissions.
pub fn check_file(path: &Path, meta: &Metadata, sensitivity: Sensitivity) -> anyhow::Result<()> {
    if !meta.is_file() {
        bail!(
            "{} is not a regular file ({}); refusing to use it",
            path.display(),
            file_kind(meta)
        );
    }
    check_owner_and_mode(path, meta, sensitivity, "file")
}

/// Opens (creating, mode 0600) a lock file without following a symlink at its name, and
/// checks that it is a regular file of the user's own.
pub fn open_lock(path: &Path) -> anyhow::Result<File> {
    let file = open_lock_no_follow(path).with_context(|| {
        format!(
            "opening the lock file {} (a symlink there is refused)",
            path.display()
        )
    })?;
    let meta = file
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    check_file(path, &meta, Sensitivity::Settings)?;
    Ok(file)
}

/// Blocks until this process holds the exclusive lock of `path` (see [`open_lock`]); the
/// lock belongs to the returned open file and ends when it is dropped.
pub fn lock_exclusive(path: &Path) -> anyhow::Result<File> {
    let file = open_lock(path)?;
    fs4::FileExt::lock(&file).with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Writes `bytes` to `path` atomically: a temp file with an unpredictable name in the same
/// directory (created 0600 by `tempfile`, or given `permissions`), synced, then renamed over
/// `path`. The rename replaces a symlink at `path` rather than writing through it.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    permissions: Option<fs::Permissions>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let result = (|| -> io::Result<()> {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        if let Some(permissions) = permissions {
            tmp.as_file().set_permissions(permissions)?;
        }
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })();
    result.with_context(|| format!("writing {}", path.display()))?;
    // Make the rename itself durable (best effort: not every platform syncs directories).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn file_kind(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

#[cfg(unix)]
fn check_owner_and_mode(
    path: &Path,
    meta: &Metadata,
    sensitivity: Sensitivity,
    what: &str,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{} is owned by another user (uid {}, not {me}); refusing to use this {what}",
            path.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o777;
    let forbidden = match sensitivity {
        Sensitivity::Settings => 0o022,
        Sensitivity::Secret => 0o077,
    };
    if mode & forbidden != 0 {
        let fix = match sensitivity {
            Sensitivity::Settings => "go-w",
            Sensitivity::Secret => "600",
        };
        bail!(
            "{} is {} by group or others (mode {mode:04o}); refusing to use this {what}: \
             run `chmod {fix} {}`",
            path.display(),
            match sensitivity {
                Sensitivity::Settings => "writable",
                Sensitivity::Secret => "accessible",
            },
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_and_mode(_: &Path, _: &Metadata, _: Sensitivity, _: &str) -> anyhow::Result<()> {
    Ok(())
}

/// Opens for reading without blocking on a FIFO (the caller refuses it after `fstat`). A
/// symlink is followed: dotfile setups link `~/.aws/config` and the like.
#[cfg(unix)]
fn open_no_block(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

#[cfg(not(unix))]
fn open_no_block(path: &Path) -> io::Result<File> {
    File::open(path)
}

#[cfg(unix)]
fn open_lock_no_follow(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

#[cfg(not(unix))]
fn open_lock_no_follow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn fifos_directories_and_loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = format!("{:#}", read_file(&fifo, Sensitivity::Settings).unwrap_err());
        assert!(err.contains("a FIFO"), "{err}");
        let err = format!(
            "{:#}",
            read_file(dir.path(), Sensitivity::Settings).unwrap_err()
        );
        assert!(err.contains("a directory"), "{err}");

        let file = dir.path().join("token");
        fs::write(&file, "t").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_file(&file, Sensitivity::Settings).unwrap().is_some());
        let err = format!("{:#}", read_file(&file, Sensitivity::Secret).unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_file(&file, Sensitivity::Settings).is_err());
        assert!(
            read_file(&dir.path().join("missing"), Sensitivity::Secret)
                .unwrap()
                .is_none()
        );

        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", ensure_dir(&shared).unwrap_err());
        assert!(err.contains("writable by group or others"), "{err}");
    }

    #[test]
    fn lock_files_are_not_created_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("profile.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_lock(&link).is_err());
        assert!(!target.exists(), "the symlink's target was created");
        let lock = dir.path().join("real.lock");
        open_lock(&lock).unwrap();
        assert_eq!(
            fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
