//! The usage report.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// How report rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum GroupBy {
    Profile,
    Customer,
    Case,
    Actor,
    /// The session's access tier (absent: the role's base grant).
    Tier,
}

/// Credential requests that named a session, over whole UTC days.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct UsageReport {
    pub days: i64,
    pub group_by: GroupBy,
    /// First day covered (UTC); the report runs to now.
    pub since: NaiveDate,
    pub rows: Vec<UsageRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct UsageRow {
    /// The group's profile (`group_by=profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The group's customer (`group_by=customer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// The group's case (`group_by=case`; absent for customer sessions, which have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// The group's actor (`group_by=actor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The group's tier (`group_by=tier`; absent for the roles' base grants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
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
    /// The group this row is about, as the report's tree names it.
    pub fn label(&self, group_by: GroupBy) -> String {
        match (
            &self.profile,
            &self.customer,
            &self.case_id,
            &self.actor,
            &self.tier,
        ) {
            (Some(p), ..) => format!("Profile: {p}"),
            (_, Some(c), ..) => format!("Customer: {c}"),
            (_, _, Some(c), ..) => format!("Case: {c}"),
            (_, _, _, Some(a), _) => format!("Actor: {a}"),
            (.., Some(t)) => format!("Tier: {t}"),
            _ if group_by == GroupBy::Tier => "Tier: (base grant)".into(),
            _ => "Case: (customer sessions)".into(),
        }
    }
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
            row.label(report.group_by),
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
                tier: None,
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
