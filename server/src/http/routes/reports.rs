//! The usage report, read from the usage rollups (`db::usage`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::auth::{Action, Principal};
use crate::db::usage::{self, GroupBy, UsageGroup};
use crate::domain::CustomerId;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::ApiQuery;

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

/// Credential requests that named a session, over whole UTC days.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub days: i64,
    pub group_by: GroupBy,
    /// First day covered (UTC); the report runs to now.
    pub since: NaiveDate,
    pub rows: Vec<UsageRow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRow {
    /// The group's profile (`group_by=profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The group's customer (`group_by=customer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// The group's case (`group_by=case`; absent for customer sessions, which have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// The group's actor (`group_by=actor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub total_requests: i64,
    pub successful_requests: i64,
    /// successful_requests / total_requests.
    pub success_rate: f64,
    /// Mean of the requests' durations; null when none was recorded.
    pub avg_duration_ms: Option<f64>,
    /// The 95th percentile duration, as the upper bound of its duration bucket (exact to the
    /// millisecond up to 10 ms, steps of at most ~25 % above).
    pub p95_duration_ms: Option<i32>,
    pub cache_hits: i64,
    /// cache_hits over the requests that reached the credential cache; null when none did.
    pub cache_hit_rate: Option<f64>,
    pub user_count: usize,
    /// Every distinct actor, sorted.
    pub users: Vec<String>,
}

impl UsageRow {
    fn new(group_by: GroupBy, g: UsageGroup) -> Self {
        let key = Some(g.key);
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        UsageRow {
            profile: key.clone().filter(|_| group_by == GroupBy::Profile),
            customer: key.clone().filter(|_| group_by == GroupBy::Customer),
            case_id: key
                .clone()
                .filter(|k| group_by == GroupBy::Case && !k.is_empty()),
            actor: key.filter(|_| group_by == GroupBy::Actor),
            total_requests: g.requests,
            successful_requests: g.successes,
            success_rate: ratio(g.successes, g.requests).unwrap_or(0.0),
            avg_duration_ms: ratio(g.duration_sum, g.duration_count),
            p95_duration_ms: g.p95_ms,
            cache_hits: g.cache_hits,
            cache_hit_rate: ratio(g.cache_hits, g.cache_lookups),
            user_count: g.users.len(),
            users: g.users,
        }
    }

    fn label(&self) -> String {
        match (&self.profile, &self.customer, &self.case_id, &self.actor) {
            (Some(p), ..) => format!("Profile: {p}"),
            (_, Some(c), ..) => format!("Customer: {c}"),
            (_, _, Some(c), _) => format!("Case: {c}"),
            (.., Some(a)) => format!("Actor: {a}"),
            _ => "Case: (customer sessions)".into(),
        }
    }
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
        rows: groups
            .into_iter()
            .map(|g| UsageRow::new(group_by, g))
            .collect(),
    };
    let wants_text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/plain") && !accept.contains("json"));
    Ok(if wants_text {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            render_tree(&report),
        )
            .into_response()
    } else {
        Json(report).into_response()
    })
}

/// The report as the terminal tree users know:
///
/// ```text
/// Profile: customer-acme-corp
/// ├─ Total requests: 1,247
/// ├─ Success rate: 99.2%
/// ├─ Average duration: 234ms
/// ├─ Cache hit rate: 87.3%
/// └─ Users: alice, bob, charlie (12 total)
/// ```
pub fn render_tree(report: &UsageReport) -> String {
    fn thousands(n: i64) -> String {
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    }
    fn percent(rate: Option<f64>) -> String {
        match rate {
            None => "n/a".into(),
            Some(r) if r >= 1.0 => "100%".into(),
            Some(r) => format!("{:.1}%", r * 100.0),
        }
    }
    let mut out = String::new();
    if report.rows.is_empty() {
        out.push_str(&format!(
            "No credential requests since {} ({} days).\n",
            report.since, report.days
        ));
    }
    for (i, row) in report.rows.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let users = row
            .users
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let duration = row
            .avg_duration_ms
            .map_or("n/a".into(), |ms| format!("{}ms", ms.round() as i64));
        let p95 = row
            .p95_duration_ms
            .map_or(String::new(), |ms| format!(" (p95 {}ms)", ms));
        out.push_str(&format!(
            "{}\n├─ Total requests: {}\n├─ Success rate: {}\n├─ Average duration: {duration}{p95}\n├─ Cache hit rate: {}\n└─ Users: {users} ({} total)\n",
            row.label(),
            thousands(row.total_requests),
            percent(Some(row.success_rate)),
            percent(row.cache_hit_rate),
            row.user_count
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_matches_the_known_layout() {
        let report = UsageReport {
            days: 30,
            group_by: GroupBy::Profile,
            since: NaiveDate::from_ymd_opt(2026, 10, 28).unwrap_or_default(),
            rows: vec![UsageRow {
                profile: Some("myservice".into()),
                customer: None,
                case_id: None,
                actor: None,
                total_requests: 1247,
                successful_requests: 1237,
                success_rate: 1237.0 / 1247.0,
                avg_duration_ms: Some(234.4),
                p95_duration_ms: Some(750),
                cache_hits: 1088,
                cache_hit_rate: Some(0.873),
                user_count: 12,
                users: vec![
                    "alice".into(),
                    "bob".into(),
                    "charlie".into(),
                    "dave".into(),
                ],
            }],
        };
        assert_eq!(
            render_tree(&report),
            "Profile: myservice\n├─ Total requests: 1,247\n├─ Success rate: 99.2%\n\
             ├─ Average duration: 234ms (p95 750ms)\n├─ Cache hit rate: 87.3%\n\
             └─ Users: alice, bob, charlie (12 total)\n"
        );
    }
}
