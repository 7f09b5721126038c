//! The broker's config file for the event tests: a `[cases]` table and `[[webhooks]]` tables
//! (they exist in the file only, not as flags), written to a temporary file that a
//! [`crate::TestApp`] is pointed at.
//!
//! ```no_run
//! # async fn demo() {
//! use lanyard_tests::TestApp;
//! use lanyard_tests::receivers::{EventsConfig, WebhookReceiver};
//! let receiver = WebhookReceiver::start();
//! let file = EventsConfig::webhooks([receiver.config("ops")]).write();
//! let app = TestApp::spawn_with(|s| file.apply(s)).await;
//! # }
//! ```

use std::path::PathBuf;

use lanyard_server::config::Settings;
use serde::Serialize;

/// The `[cases]` table (see `server/src/config/events.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct CasesConfig {
    pub verifier_url: String,
    pub secret: String,
    /// e.g. `"1s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `"refuse"` or `"allow"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_unavailable: Option<String>,
}

/// One `[[webhooks]]` table (see `server/src/config/events.rs`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Event types; absent: all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// `"lanyard"` or `"slack"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// e.g. `"2s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// What goes into the file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cases: Option<CasesConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
}

impl EventsConfig {
    /// A file with these webhooks and no case system.
    pub fn webhooks(webhooks: impl IntoIterator<Item = WebhookConfig>) -> EventsConfig {
        EventsConfig {
            cases: None,
            webhooks: webhooks.into_iter().collect(),
        }
    }

    /// A file with this case system and no webhooks.
    pub fn cases(cases: CasesConfig) -> EventsConfig {
        EventsConfig {
            cases: Some(cases),
            webhooks: Vec::new(),
        }
    }

    /// Writes the file (it lives as long as the returned value).
    pub fn write(&self) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.toml");
        std::fs::write(&path, toml::to_string(self).unwrap()).unwrap();
        ConfigFile { _dir: dir, path }
    }
}

/// A written config file.
pub struct ConfigFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigFile {
    /// Points `settings` at the file (for [`crate::TestApp::spawn_with`]).
    pub fn apply(&self, settings: &mut Settings) {
        settings.config = Some(self.path.clone());
    }

    /// The file's text.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }
}
