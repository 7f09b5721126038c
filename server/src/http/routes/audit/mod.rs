//! The audit log: `GET /v1/audit`, filtered, newest first, in cursor pages (JSON) or as a
//! streamed export (NDJSON, CSV).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use lanyard_api::audit::{AuditEvent, AuditFormat, AuditPage};
use lanyard_api::problem::Problem;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::audit::export::Render;
use crate::auth::{Action, Principal};
use crate::db::audit_query::{self, EventRow, Filter};
use crate::domain::{CaseId, CustomerId, Outcome};
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::state::AppState;
use csv::{CSV_HEADER, csv_record, csv_row};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_events))
}

/// Page size when `limit` is not given, and its bounds.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
/// How long a first page waits for audit rows that are being committed (usually
/// milliseconds; see `audit_query::settled_horizon`).
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events at or after this time (RFC 3339; send a `+` offset as `%2B`).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// Only events before this time (RFC 3339, exclusive: the range is `[from, to)`).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// Only events by this actor (a token's subject), matched exactly.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,128}$"
    )]
    pub actor: Option<String>,
    /// Only events of this customer.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$", min_length = 2, max_length = 63)]
    pub customer: Option<String>,
    /// Only events of this support case.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")]
    pub case_id: Option<String>,
    /// Only events of this session.
    #[param(value_type = Option<String>, format = Uuid)]
    pub session: Option<String>,
    /// Only events of this action, e.g. `credentials.issue`, `session.open`.
    #[param(pattern = "^[a-z][a-z0-9_.-]{0,63}$", min_length = 1, max_length = 64)]
    pub action: Option<String>,
    /// Only events with this outcome.
    #[param(inline)]
    pub outcome: Option<Outcome>,
    /// At most this many events per page (1-1000, default 100). Exports return every
    /// matching event unless `limit` is given.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page: continue after its last event.
    #[param(pattern = "^[A-Za-z0-9_-]{11}$", min_length = 11, max_length = 11)]
    pub cursor: Option<String>,
    /// `json` (default), `ndjson` or `csv`.
    #[param(inline)]
    pub format: Option<AuditFormat>,
}

/// Read the audit log, newest first (admin, auditor).
///
/// `format=json` returns a page and `next_cursor`; `format=ndjson` and `format=csv` stream
/// every matching event. A token limited to some customers sees only events of those
/// customers (events without a customer are left out); asking for another customer gives an
/// empty result, as `GET /v1/sessions` does.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "Events, newest first: a page (`json`), one JSON object \
            per line (`ndjson`) or RFC 4180 CSV with a header row (`csv`; cells starting with \
            `=`, `+`, `-`, `@`, tab or carriage return are prefixed with `'`)",
            content(
                (AuditPage = "application/json"),
                (String = "application/x-ndjson"),
                (String = "text/csv"),
            )),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem),
        (status = 503, description = "Database unavailable, or no export turn within the request timeout", body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_audit_events(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    principal.authorize(Action::ReadAudit, None)?;
    let format = query.format.unwrap_or_default();
    let mut filter = filter(&query)?;
    // A `customer` outside the token's limit is a customer that does not exist (404).
    let customer = filter
        .customer
        .as_deref()
        .map(CustomerId::parse)
        .transpose()?;
    principal.authorize(Action::ReadAudit, customer.as_ref())?;
    // Customer-limited tokens: only their customers' rows, whatever else is asked.
    filter.customers = principal.customer_scope();
    // A walk starts below every id still being committed, so that its cursor never passes
    // over one (see `settled_horizon`); later pages are below that already.
    if filter.before_id.is_none() {
        filter.max_id = Some(audit_query::settled_horizon(&state.db, SETTLE_WAIT).await?);
    }
    match format {
        AuditFormat::Json => {
            let limit = filter.limit.unwrap_or(DEFAULT_LIMIT);
            // One more than asked: whether another page exists.
            filter.limit = Some(limit + 1);
            let mut rows = audit_query::page(&state.db, &filter).await?;
            let more = rows.len() as i64 > limit;
            rows.truncate(usize::try_from(limit).unwrap_or(0));
            let next_cursor = rows
                .last()
                .filter(|_| more)
                .map(|row| encode_cursor(row.id));
            Ok(Json(AuditPage {
                events: rows.into_iter().map(AuditEvent::from).collect(),
                next_cursor,
            })
            .into_response())
        }
        AuditFormat::Ndjson | AuditFormat::Csv => export(&state, filter, format).await,
    }
}

/// Checks every parameter; the first bad one is named in the 400 problem.
fn filter(query: &AuditQuery) -> Result<Filter, ApiError> {
    let from = query
        .from
        .as_deref()
        .map(|raw| timestamp("from", raw))
        .transpose()?;
    let to = query
        .to
        .as_deref()
        .map(|raw| timestamp("to", raw))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(ApiError::invalid("to", "must not be before 'from'"));
    }
    if let Some(actor) = &query.actor {
        let len = actor.chars().count();
        if !(1..=128).contains(&len) || actor.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "actor",
                "must be 1-128 characters without control characters",
            ));
        }
    }
    let customer =
        ApiError::parse_optional("customer", query.customer.as_deref(), CustomerId::parse)?;
    let case = ApiError::parse_optional("case_id", query.case_id.as_deref(), CaseId::parse)?;
    let session = query
        .session
        .as_deref()
        .map(Uuid::try_parse)
        .transpose()
        .map_err(|_| ApiError::invalid("session", "must be a UUID"))?;
    if let Some(action) = &query.action
        && !is_action_name(action)
    {
        return Err(ApiError::invalid(
            "action",
            "must be 1-64 characters of lowercase letters, digits, '.', '_' and '-', \
             starting with a letter",
        ));
    }
    if let Some(limit) = query.limit
        && !(1..=MAX_LIMIT).contains(&limit)
    {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let before_id = query.cursor.as_deref().map(decode_cursor).transpose()?;
    Ok(Filter {
        from,
        to,
        actor: query.actor.clone(),
        customer: customer.map(|c| c.to_string()),
        case_id: case.map(|c| c.to_string()),
        session,
        action: query.action.clone(),
        outcome: query.outcome,
        customers: None,
        before_id,
        max_id: None,
        limit: query.limit,
    })
}

/// An RFC 3339 timestamp (<https://www.rfc-editor.org/rfc/rfc3339#section-5.6>): date, `T`,
/// time, and `Z` or an offset.
fn timestamp(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let bad = || {
        ApiError::invalid(
            field,
            "must be an RFC 3339 timestamp such as 2026-11-25T10:00:00Z \
             (a '+' in an offset must be sent as %2B)",
        )
    };
    // chrono also takes a space for the `T`; RFC 3339's date-time does not.
    if !matches!(raw.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(bad());
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad())
}

fn is_action_name(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// The cursor is the last listed event's id, 8 bytes big-endian in unpadded base64url.
/// Opaque to clients: only its position in the order matters, not which filters made it.
fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_be_bytes())
}

fn decode_cursor(raw: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::invalid("cursor", "is not a cursor this API returned");
    let bytes: [u8; 8] = URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    let id = i64::from_be_bytes(bytes);
    if id <= 0 {
        return Err(bad());
    }
    Ok(id)
}

/// Streams every matching event as NDJSON or CSV (see `audit::export` for the slots and
/// the limits a slow or stalled client runs into).
async fn export(
    state: &AppState,
    filter: Filter,
    format: AuditFormat,
) -> Result<Response, ApiError> {
    let (header, render): (_, Render) = match format {
        AuditFormat::Csv => (
            Some(Bytes::from(csv_record(CSV_HEADER.iter().copied()))),
            Box::new(|row: EventRow, out: &mut Vec<u8>| {
                out.extend_from_slice(csv_row(&row).as_bytes());
                Ok(())
            }),
        ),
        _ => (
            None,
            Box::new(|row: EventRow, out: &mut Vec<u8>| {
                serde_json::to_writer(&mut *out, &AuditEvent::from(row))
                    .map_err(std::io::Error::other)?;
                out.push(b'\n');
                Ok(())
            }),
        ),
    };
    let body = state
        .exports
        .start(state.db.clone(), filter, header, render)
        .await?;
    let (content_type, disposition) = match format {
        AuditFormat::Csv => (
            "text/csv; charset=utf-8; header=present",
            "attachment; filename=\"audit.csv\"",
        ),
        _ => (
            "application/x-ndjson",
            "attachment; filename=\"audit.ndjson\"",
        ),
    };
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(disposition),
    );
    Ok(response)
}

mod csv;
#[cfg(test)]
mod tests;
