//! What the services (`sessions`, `registry`, `audit`) refuse or fail with, in their own
//! terms; `http::error` turns it into a problem document, other callers into whatever they
//! show. No axum here.

use crate::domain::verification::AwsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request breaks a rule.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The thing does not exist, or the caller may not know that it does.
    #[error("{0}")]
    NotFound(String),
    /// A credential presented to a service (the subject token of an exchange) is not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The state of things forbids it (disabled customer, unverified role, ...).
    #[error("{0}")]
    Conflict(String),
    /// The session is over: expired or revoked.
    #[error("{0}")]
    Gone(String),
    /// AWS refused or failed a call; `retry` when trying again later may help.
    #[error("AWS STS refused AssumeRole: {error}")]
    Aws { error: AwsError, retry: bool },
    /// A trusted OpenID issuer cannot be reached to check a token (its message is for the
    /// caller: it names the issuer and nothing internal).
    #[error("{0}")]
    IssuerUnavailable(String),
    /// The case system could not answer and `when_unavailable` is `refuse` (its message is
    /// for the caller: it names the case and what failed, nothing internal).
    #[error("{0}")]
    CaseSystemUnavailable(String),
    /// A dependency (the database, the audit log) cannot take the work now.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or a broken invariant; the cause goes to the log, not to the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Invalid {
            field: field.into(),
            message: err.to_string(),
        }
    }

    /// The problem's kind, e.g. `not-found`; also the `error_code` of audit rows that record
    /// a refusal.
    pub fn slug(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid-field",
            Error::NotFound(_) => "not-found",
            Error::Unauthenticated(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) => "conflict",
            Error::Gone(_) => "session-ended",
            Error::Aws { .. } => "aws-error",
            Error::Unavailable(_) => "unavailable",
            Error::IssuerUnavailable(_) => "issuer-unavailable",
            Error::CaseSystemUnavailable(_) => "case-system-unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// A refusal the audit log records (the caller may not, or the state forbids it), as
    /// opposed to malformed input or a failure.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::NotFound(_) | Error::Forbidden(_) | Error::Conflict(_) | Error::Gone(_)
        )
    }

    /// A unique-constraint violation as a conflict with `message`; other errors as usual.
    pub fn on_unique_violation(err: sqlx::Error, message: impl Into<String>) -> Self {
        if crate::db::is_unique_violation(&err) {
            Error::Conflict(message.into())
        } else {
            err.into()
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&err) {
            Error::Unavailable(format!("database: {err}"))
        } else {
            Error::Internal(anyhow::Error::new(err).context("database query"))
        }
    }
}

impl From<crate::auth::AuthError> for Error {
    fn from(err: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match err {
            AuthError::Forbidden(m) => Error::Forbidden(m),
            AuthError::NotFound(m) => Error::NotFound(m),
            // A service never authenticates; these come from the database behind it.
            AuthError::Unauthorized(m) => Error::Forbidden(m),
            AuthError::Unavailable(m) => Error::Unavailable(m),
            AuthError::IssuerUnavailable(m) => Error::IssuerUnavailable(m),
            AuthError::Internal(e) => Error::Internal(e),
        }
    }
}

impl From<crate::audit::AuditError> for Error {
    fn from(err: crate::audit::AuditError) -> Self {
        Error::Unavailable(format!("{err}; no credentials were issued"))
    }
}
