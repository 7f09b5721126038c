//! TLS for the API listener: the certificate and key files are loaded at start and loaded
//! again on SIGHUP and whenever either file changes (checked every 2 s), for new
//! connections only; a connection already open keeps the certificate it began with, so a
//! renewal (cert-manager, certbot, an operator) drops nothing. A reload that fails (a
//! half-written file, a key that does not match the certificate) is logged and counted, and
//! the certificate in service stays.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::TlsFiles;

/// How often the files are looked at for changes.
const WATCH_EVERY: Duration = Duration::from_secs(2);

pub async fn load(files: &TlsFiles) -> anyhow::Result<RustlsConfig> {
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .with_context(|| {
            format!(
                "loading TLS certificate {} and key {}",
                files.cert.display(),
                files.key.display()
            )
        })
}

/// Reloads `config` from `files` on SIGHUP and when the files change, until the process ends.
pub fn spawn_reloader(config: RustlsConfig, files: TlsFiles) {
    tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; TLS files are still watched");
                None
            }
        };
        let mut seen = stamp(&files);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                _ = tick.tick() => {
                    if stamp(&files) == seen {
                        continue;
                    }
                    "the files changed"
                }
            };
            match config.reload_from_pem_file(&files.cert, &files.key).await {
                Ok(()) => tracing::info!(
                    cert = %files.cert.display(), reason = why,
                    "TLS certificate reloaded; new connections use it"
                ),
                Err(e) => tracing::error!(
                    cert = %files.cert.display(), reason = why, error = %e,
                    "TLS certificate reload failed; the one in service stays"
                ),
            }
            // What was loaded (a SIGHUP also takes in what the watcher would see next).
            seen = stamp(&files);
        }
    });
}

/// What tells a changed file: its modification time and length, for both files.
fn stamp(files: &TlsFiles) -> [Option<(SystemTime, u64)>; 2] {
    let of = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [of(&files.cert), of(&files.key)]
}
