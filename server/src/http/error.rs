//! `ApiError`: every failure a handler can answer with, rendered as an RFC 9457
//! `application/problem+json` document (<https://www.rfc-editor.org/rfc/rfc9457>). The
//! services' errors (`crate::error::Error`) and authentication's (`AuthError`) become one
//! here, and only here. 5xx bodies are fixed text; their cause goes to the log inside the
//! request span.

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lanyard_api::problem::{FieldError, Problem};

use crate::auth::AuthError;
use crate::domain::ParseError;
use crate::error::Error;

pub const PROBLEM_JSON: &str = "application/problem+json";

tokio::task_local! {
    /// The current request's id, set by the middleware so that problem documents carry it.
    pub static REQUEST_ID: String;
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request as a whole cannot be read (400, 413, 415, 422 from the extractors).
    #[error("{detail}")]
    Rejected { status: StatusCode, detail: String },
    /// No valid token (401, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request took too long")]
    Timeout,
    /// What a service refused or failed with.
    #[error(transparent)]
    Service(#[from] Error),
}

impl ApiError {
    /// A malformed field or parameter (400), naming it.
    pub fn invalid(field: impl Into<String>, err: impl std::fmt::Display) -> Self {
        ApiError::Service(Error::invalid(field, err))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::Service(Error::NotFound(message.into()))
    }

    /// Parses an optional parameter; a value `parse` refuses is an invalid `field`.
    pub fn parse_optional<T, E: std::fmt::Display>(
        field: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, Self> {
        value
            .map(parse)
            .transpose()
            .map_err(|e| ApiError::invalid(field, e))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Rejected { status, .. } => *status,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Service(e) => match e {
                Error::Invalid { .. } => StatusCode::BAD_REQUEST,
                Error::NotFound(_) => StatusCode::NOT_FOUND,
                Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                Error::Forbidden(_) => StatusCode::FORBIDDEN,
                Error::Conflict(_) => StatusCode::CONFLICT,
                Error::Gone(_) => StatusCode::GONE,
                Error::Aws { retry: true, .. }
                | Error::Unavailable(_)
                | Error::IssuerUnavailable(_)
                | Error::CaseSystemUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                Error::Aws { retry: false, .. } => StatusCode::BAD_GATEWAY,
                Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// For a 503: when asking again may help, in seconds (`Retry-After`). An STS throttle
    /// or failure has already been retried by the SDK with backoff; an issuer's keys are
    /// fetched again at most every `keys_min_refresh` (10 s by default).
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::Timeout | ApiError::Service(Error::Unavailable(_)) => Some(1),
            ApiError::Service(Error::Aws { retry: true, .. }) => Some(2),
            ApiError::Service(Error::IssuerUnavailable(_)) => Some(10),
            ApiError::Service(Error::CaseSystemUnavailable(_)) => Some(5),
            _ => None,
        }
    }

    /// The problem type's last part, e.g. `not-found`.
    pub fn slug(&self) -> &'static str {
        match self {
            ApiError::Rejected { status, .. } => match *status {
                StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
                StatusCode::UNPROCESSABLE_ENTITY => "invalid-body",
                _ => "bad-request",
            },
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Timeout => "timeout",
            ApiError::Service(e) => e.slug(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Unauthorized(m) => ApiError::Unauthorized(m),
            other => ApiError::Service(other.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::Service(err.into())
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(err: crate::audit::AuditError) -> Self {
        ApiError::Service(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
            match &self {
                ApiError::Timeout
                | ApiError::Service(
                    Error::Aws { .. }
                    | Error::IssuerUnavailable(_)
                    | Error::CaseSystemUnavailable(_),
                ) => self.to_string(),
                _ => "the server could not complete the request; see its log for this request id"
                    .to_owned(),
            }
        } else {
            self.to_string()
        };
        let (errors, aws_error_code) = match &self {
            ApiError::Service(Error::Invalid { field, message }) => (
                vec![FieldError {
                    field: field.clone(),
                    message: message.clone(),
                }],
                None,
            ),
            ApiError::Service(Error::Aws { error, .. }) => (Vec::new(), Some(error.code.clone())),
            _ => (Vec::new(), None),
        };
        let problem = Problem {
            r#type: format!("urn:lanyard:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            request_id: REQUEST_ID.try_with(Clone::clone).ok(),
            errors,
            aws_error_code,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lanyard\""),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::Rejected {
            status: rejection.status(),
            detail: rejection.body_text(),
        }
    }
}

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> Self {
        ApiError::Rejected {
            status: rejection.status(),
            detail: rejection.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Rejected {
            status: StatusCode::BAD_REQUEST,
            detail: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::Rejected {
            status: StatusCode::BAD_REQUEST,
            detail: rejection.body_text(),
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(err: ParseError) -> Self {
        ApiError::Rejected {
            status: StatusCode::BAD_REQUEST,
            detail: err.0,
        }
    }
}
