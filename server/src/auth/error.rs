//! Why a request was not authenticated or not allowed.

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No valid token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token's role may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Out of the token's sight: answered as if it did not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The token's record could not be read (503).
    #[error("{0}")]
    Unavailable(String),
    /// A trusted OpenID issuer's keys cannot be fetched, and the cached ones are too old
    /// (503; the message names the issuer and is shown to the caller).
    #[error("{0}")]
    IssuerUnavailable(String),
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for AuthError {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&err) {
            AuthError::Unavailable(format!("database: {err}"))
        } else {
            AuthError::Internal(anyhow::Error::new(err).context("database query"))
        }
    }
}
