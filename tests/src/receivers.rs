//! The other end of the broker's events and case checks, as the event tests start them on
//! `127.0.0.1` (port 0): a webhook receiver ([`WebhookReceiver`]), a case system
//! ([`CaseSystem`]), the config file that points the broker at them ([`EventsConfig`]),
//! and the `Lanyard-Signature` scheme implemented independently of the broker
//! ([`signature`]).

mod case_system;
mod config;
mod listener;
pub mod signature;
mod webhook;

pub use case_system::{Case, CaseQuestion, CaseSystem, Failure};
pub use config::{CasesConfig, ConfigFile, EventsConfig, WebhookConfig};
pub use signature::Verdict;
pub use webhook::{Delivery, WebhookReceiver};
