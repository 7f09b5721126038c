//! The usage report, read from the usage rollups (`db::usage`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{Days, Utc};
use lanyard_api::problem::Problem;
use lanyard_api::reports::{GroupBy, UsageReport};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Action, Principal};
use crate::db::usage;
use crate::domain::CustomerId;
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage_report))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Calendar days (UTC) to cover, today included: 1-366, default 30.
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<i64>,
    /// Only this customer.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    pub customer: Option<String>,
    /// How rows are grouped (default `profile`).
    pub group_by: Option<GroupBy>,
}

/// Usage per profile (or customer, case, actor) over the last `days` UTC days: requests,
/// success rate, average and p95 duration, cache-hit rate and users. JSON, or the terminal
/// tree with `Accept: text/plain`.
#[utoipa::path(get, path = "/v1/reports/usage", tag = "reports", security(("bearer" = [])),
    params(UsageQuery),
    responses((status = 200, description = "The report",
               content((UsageReport = "application/json"), (String = "text/plain"))),
               (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn usage_report(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Response, ApiError> {
    let customer =
        ApiError::parse_optional("customer", query.customer.as_deref(), CustomerId::parse)?;
    principal.authorize(Action::ReadAudit, customer.as_ref())?;
    let days = query.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid("days", "must be between 1 and 366"));
    }
    let group_by = query.group_by.unwrap_or(GroupBy::Profile);
    let since = Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(days as u64 - 1))
        .ok_or_else(|| ApiError::invalid("days", "too far back"))?;
    let allowed = principal.customer_scope();
    let groups = usage::report(
        &state.db,
        since,
        group_by,
        customer.as_ref().map(CustomerId::as_str),
        allowed.as_deref(),
    )
    .await?;
    let report = UsageReport {
        days,
        group_by,
        since,
        rows: groups.into_iter().map(|g| g.into_row(group_by)).collect(),
    };
    let wants_text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/plain") && !accept.contains("json"));
    Ok(if wants_text {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            lanyard_api::reports::render_tree(&report),
        )
            .into_response()
    } else {
        Json(report).into_response()
    })
}
