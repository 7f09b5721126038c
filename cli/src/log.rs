//! Client diagnostics: `--debug` (or `LANYARD_DEBUG=1`) lines on stderr, and the log file
//! (`--log-file` / `LANYARD_LOG_FILE`) that gets them too, with one record per credential run
//! (`record`). The environment reaches the runs the AWS CLI starts through
//! `credential_process`, which pass no flags and whose stderr nobody sees unless they fail:
//! the file is how those runs are diagnosed.
//!
//! Secrets never reach either: lines are made without them (`[redacted]` where a token or
//! secret would be), and every secret this process has held ([`secret`]: the token, the
//! secret access key, the session token) is replaced by `[redacted]` once more before a line is
//! written, should one slip through.
//!
//! The file is appended to one line per write, created 0600, and rotated when a line would
//! take it past [`MAX_BYTES`]: it becomes `FILE.1` (replacing the one before). Writers take
//! the lock of `FILE.lock` for the size check, the rename and the write, so that parallel runs
//! neither interleave lines nor rotate twice. A file that cannot be written costs a warning
//! on stderr (once per run), never the command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::private::{self, Sensitivity};

/// The log file rotates when a line would take it past this size (1 MiB): at most about
/// twice this on disk, the file and `FILE.1`.
pub const MAX_BYTES: u64 = 1024 * 1024;

/// Values shorter than this are not looked for in lines (they could be any word); no token
/// or AWS secret is this short.
const MIN_SECRET_LEN: usize = 8;

struct State {
    debug: bool,
    file: Option<PathBuf>,
    started: Instant,
    secrets: Mutex<Vec<String>>,
    warned: AtomicBool,
}

static STATE: OnceLock<State> = OnceLock::new();

/// Sets up diagnostics for this run: `debug` from `--debug` / LANYARD_DEBUG, `file` from
/// `--log-file` / LANYARD_LOG_FILE. Called once, first thing.
pub fn init(debug: bool, file: Option<PathBuf>) {
    let _ = STATE.set(State {
        debug,
        file: file.filter(|f| !f.as_os_str().is_empty()),
        started: Instant::now(),
        secrets: Mutex::new(Vec::new()),
        warned: AtomicBool::new(false),
    });
}

/// Whether there is anywhere to write a record (debug on, or a log file).
pub fn enabled() -> bool {
    STATE.get().is_some_and(|s| s.debug || s.file.is_some())
}

/// How long this run has taken so far.
pub fn elapsed() -> Duration {
    STATE.get().map_or(Duration::ZERO, |s| s.started.elapsed())
}

/// Remembers a secret this process holds, so that no line written carries it.
pub fn secret(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    if let Some(state) = STATE.get()
        && let Ok(mut secrets) = state.secrets.lock()
        && !secrets.iter().any(|s| s == value)
    {
        secrets.push(value.to_owned());
    }
}

/// A diagnostic line: `debug: MSG` on stderr, and into the log file. The caller checks that
/// diagnostics are on (`--debug`).
pub fn debug(msg: &str) {
    let line = clean(msg);
    eprintln!("debug: {line}");
    to_file(&format!("debug: {line}"));
}

/// A record of what a run did (one per credential run): into the log file, and on stderr
/// under `--debug`.
pub fn record(msg: &str) {
    let line = clean(msg);
    if STATE.get().is_some_and(|s| s.debug) {
        eprintln!("debug: {line}");
    }
    to_file(&line);
}

/// One line without control characters or any secret this process holds.
fn clean(msg: &str) -> String {
    let mut line = crate::text::one_line(msg);
    if let Some(state) = STATE.get()
        && let Ok(secrets) = state.secrets.lock()
    {
        for secret in secrets.iter() {
            line = line.replace(secret.as_str(), "[redacted]");
        }
    }
    line
}

fn to_file(line: &str) {
    let Some(state) = STATE.get() else {
        return;
    };
    let Some(path) = &state.file else {
        return;
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let line = format!("{now} lanyard[{}] {line}\n", std::process::id());
    if let Err(e) = append(path, &line)
        && !state.warned.swap(true, Ordering::Relaxed)
    {
        eprintln!(
            "lanyard: warning: not writing the log file: {}",
            crate::text::one_line(&format!("{e:#}"))
        );
    }
}

/// Appends `line` to the file at `path`, rotating it first when the line would take it past
/// [`MAX_BYTES`].
fn append(path: &Path, line: &str) -> anyhow::Result<()> {
    let _lock = private::lock_exclusive(&sibling(path, ".lock"))?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > 0
        && meta.len() + line.len() as u64 > MAX_BYTES
    {
        let old = sibling(path, ".1");
        std::fs::rename(path, &old)
            .with_context(|| format!("rotating {} to {}", path.display(), old.display()))?;
    }
    let mut file = open_append(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    private::check_file(path, &meta, Sensitivity::Settings)?;
    // A file the user made beforehand (`touch`, umask 022) is made private too: the log
    // names profiles, customers, cases and access key ids.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private (0600)", path.display()))?;
        }
    }
    file.write_all(line.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// `path` with `suffix` added to its file name (`lanyard.log` → `lanyard.log.1`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens for appending, created 0600, without blocking on a FIFO (refused after `fstat`).
#[cfg(unix)]
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(std::fs::File::from(fd))
}

#[cfg(not(unix))]
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_file_is_created_0600_and_rotated_once_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.log");
        append(&path, "first\n").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let big = "x".repeat(MAX_BYTES as usize - 3) + "\n";
        append(&path, &big).unwrap();
        assert_eq!(
            std::fs::read_to_string(sibling(&path, ".1")).unwrap(),
            "first\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), big);
        append(&path, "third\n").unwrap();
        assert_eq!(std::fs::read_to_string(sibling(&path, ".1")).unwrap(), big);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
        assert!(!sibling(&path, ".2").exists());
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(append(&sub, "x\n").is_err());
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(append(&fifo, "x\n").is_err());
    }
}
