//! A case system (a helpdesk) as the broker's `[cases]` table points at: answers the
//! broker's signed questions about cases from a table the test fills, records every
//! question (and whether its signature verified), can fail on purpose (503, or no answer
//! at all), and signs close requests to `POST /v1/cases/{id}/close` as the real one would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::config::CasesConfig;
use super::listener::Listener;
use super::signature::{self, Verdict};

/// What the case system knows about a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Case {
    Open {
        title: Option<String>,
        url: Option<String>,
    },
    Closed,
    /// Also what every case not set gets.
    Unknown,
}

/// How the case system fails, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It answers.
    None,
    /// It answers 503 (down for maintenance).
    Unavailable,
    /// It accepts the question and never answers (until told otherwise): the broker's
    /// timeout has to end the wait.
    Hanging,
}

/// One question the broker asked.
#[derive(Debug, Clone)]
pub struct CaseQuestion {
    /// The body as JSON: `case_id`, `customer`, `requester`, `reason`.
    pub body: Value,
    /// What the case system made of `Lanyard-Signature`.
    pub signature: Verdict,
}

struct Shared {
    secret: String,
    cases: Mutex<HashMap<String, Case>>,
    failure: watch::Sender<Failure>,
    questions: Mutex<Vec<CaseQuestion>>,
}

/// A case system on `127.0.0.1:<port>`; see the module docs.
pub struct CaseSystem {
    listener: Listener,
    shared: Arc<Shared>,
}

/// Longest time a hanging case system holds a question.
const HANG: Duration = Duration::from_secs(300);

impl CaseSystem {
    /// Starts a case system that knows no case yet, with a secret of its own.
    pub fn start() -> CaseSystem {
        let shared = Arc::new(Shared {
            secret: crate::unique("case-secret"),
            cases: Mutex::new(HashMap::new()),
            failure: watch::Sender::new(Failure::None),
            questions: Mutex::new(Vec::new()),
        });
        let router = Router::new().fallback(answer).with_state(shared.clone());
        CaseSystem {
            listener: Listener::start(router),
            shared,
        }
    }

    /// The URL the broker asks (`[cases] verifier_url`).
    pub fn verifier_url(&self) -> String {
        format!("http://{}/lanyard/verify", self.listener.addr())
    }

    /// The secret shared with the broker.
    pub fn secret(&self) -> &str {
        &self.shared.secret
    }

    /// A `[cases]` table for this case system (the broker's defaults for the rest).
    pub fn config(&self) -> CasesConfig {
        CasesConfig {
            verifier_url: self.verifier_url(),
            secret: self.secret().to_owned(),
            timeout: None,
            when_unavailable: None,
        }
    }

    /// What the case system says about `case_id` from now on.
    pub fn set(&self, case_id: &str, case: Case) {
        self.shared
            .cases
            .lock()
            .unwrap()
            .insert(case_id.to_owned(), case);
    }

    /// `case_id` is open, with a title and a link.
    pub fn open(&self, case_id: &str, title: &str, url: &str) {
        self.set(
            case_id,
            Case::Open {
                title: Some(title.to_owned()),
                url: Some(url.to_owned()),
            },
        );
    }

    /// Fails (or stops failing) from now on; a hanging question is released by any change.
    pub fn fail(&self, failure: Failure) {
        self.shared.failure.send_replace(failure);
    }

    /// Every question the broker asked, in order.
    pub fn questions(&self) -> Vec<CaseQuestion> {
        self.shared.questions.lock().unwrap().clone()
    }

    /// A close of `case_id` signed now: `(Lanyard-Signature value, body)`.
    pub fn signed_close(&self, case_id: &str) -> (String, String) {
        self.signed_close_at(case_id, signature::now())
    }

    /// A close of `case_id` signed as if sent at `t` (Unix seconds).
    pub fn signed_close_at(&self, case_id: &str, t: i64) -> (String, String) {
        let body = json!({ "case_id": case_id }).to_string();
        (signature::sign(self.secret(), t, body.as_bytes()), body)
    }
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let verdict = signature::verify(
        &shared.secret,
        headers.get(signature::HEADER).and_then(|v| v.to_str().ok()),
        &body,
        signature::now(),
    );
    let question: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.questions.lock().unwrap().push(CaseQuestion {
        body: question.clone(),
        signature: verdict,
    });
    // A case system tells nothing about its cases to whoever cannot prove to be the broker.
    if verdict != Verdict::Valid {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut failure = shared.failure.subscribe();
    let now = *failure.borrow_and_update();
    match now {
        Failure::None => {}
        Failure::Unavailable => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Failure::Hanging => {
            let _ = tokio::time::timeout(HANG, failure.wait_for(|f| *f != Failure::Hanging)).await;
        }
    }
    let case = question["case_id"]
        .as_str()
        .and_then(|id| shared.cases.lock().unwrap().get(id).cloned())
        .unwrap_or(Case::Unknown);
    let answer = match case {
        Case::Open { title, url } => json!({ "status": "open", "title": title, "url": url }),
        Case::Closed => json!({ "status": "closed" }),
        Case::Unknown => json!({ "status": "unknown" }),
    };
    Json(answer).into_response()
}
