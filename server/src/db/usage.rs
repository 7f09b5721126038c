//! Usage rollups (`usage_rollup`) and the usage report read from them.
//!
//! The group-commit audit writer folds every batch's credential requests into per-day
//! rollup rows in the same statement that inserts the audit rows (see `crate::audit`), so
//! the report reads a few thousand rollup rows instead of millions of audit rows and never
//! disagrees with them.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sqlx::PgPool;

use crate::db::audit::NewEvent;

/// Upper bounds (ms) of the duration buckets; the same list as the SQL function
/// `lanyard_duration_bounds()` (a test checks that they agree).
pub const DURATION_BOUNDS: [i32; 53] = [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    12,
    15,
    20,
    25,
    30,
    40,
    50,
    60,
    75,
    100,
    125,
    150,
    200,
    250,
    300,
    400,
    500,
    600,
    750,
    1000,
    1250,
    1500,
    2000,
    2500,
    3000,
    4000,
    5000,
    6000,
    7500,
    10000,
    12500,
    15000,
    20000,
    25000,
    30000,
    40000,
    50000,
    60000,
    120000,
    300000,
    600000,
    i32::MAX,
];

/// The action whose events the rollups count.
pub const CREDENTIAL_ACTION: &str = "credentials.issue";

/// The bucket a duration falls into: the first whose upper bound is at least `ms`.
pub fn bucket(ms: i32) -> usize {
    DURATION_BOUNDS.partition_point(|&bound| bound < ms)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RollupKey {
    pub day: NaiveDate,
    pub customer_id: String,
    pub profile: String,
    pub case_id: String,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct RollupDelta {
    pub requests: i64,
    pub successes: i64,
    pub cache_hits: i64,
    pub cache_lookups: i64,
    pub duration_count: i64,
    pub duration_sum: i64,
    pub duration_hist: [i64; DURATION_BOUNDS.len()],
}

impl Default for RollupDelta {
    fn default() -> Self {
        RollupDelta {
            requests: 0,
            successes: 0,
            cache_hits: 0,
            cache_lookups: 0,
            duration_count: 0,
            duration_sum: 0,
            duration_hist: [0; DURATION_BOUNDS.len()],
        }
    }
}

/// Folds a batch's events into rollup deltas, in key order (so that concurrent writers lock
/// rollup rows in the same order).
pub fn fold<'a>(
    events: impl IntoIterator<Item = (chrono::DateTime<chrono::Utc>, &'a NewEvent)>,
) -> BTreeMap<RollupKey, RollupDelta> {
    let mut out: BTreeMap<RollupKey, RollupDelta> = BTreeMap::new();
    for (at, e) in events {
        let (Some(customer), Some(profile)) = (&e.customer_id, &e.profile) else {
            continue;
        };
        if e.action != CREDENTIAL_ACTION {
            continue;
        }
        let key = RollupKey {
            day: at.date_naive(),
            customer_id: customer.clone(),
            profile: profile.clone(),
            case_id: e.case_id.clone().unwrap_or_default(),
            actor: e.actor.clone(),
        };
        let d = out.entry(key).or_default();
        d.requests += 1;
        d.successes += i64::from(e.outcome == "success");
        if let Some(hit) = e.cache_hit {
            d.cache_lookups += 1;
            d.cache_hits += i64::from(hit);
        }
        if let Some(ms) = e.duration_ms {
            d.duration_count += 1;
            d.duration_sum += i64::from(ms);
            d.duration_hist[bucket(ms)] += 1;
        }
    }
    out
}

/// How report rows are grouped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Profile,
    Customer,
    Case,
    Actor,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            GroupBy::Profile => "profile",
            GroupBy::Customer => "customer_id",
            GroupBy::Case => "case_id",
            GroupBy::Actor => "actor",
        }
    }
}

/// One group's figures, as counts (the API derives the rates).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageGroup {
    pub key: String,
    pub requests: i64,
    pub successes: i64,
    pub cache_hits: i64,
    pub cache_lookups: i64,
    pub duration_count: i64,
    pub duration_sum: i64,
    /// Upper bound (ms) of the bucket holding the 95th percentile; `None` without durations.
    pub p95_ms: Option<i32>,
    pub users: Vec<String>,
}

/// The 95th percentile as `percentile_disc(0.95)` picks it: the value at position
/// ceil(0.95 × n) in order.
pub fn p95(hist: &[i64]) -> Option<i32> {
    let n: i64 = hist.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = ((0.95 * n as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (i, count) in hist.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return DURATION_BOUNDS.get(i).copied();
        }
    }
    DURATION_BOUNDS.last().copied()
}

/// The report over days `since`..today (UTC), optionally for one customer and limited to
/// `allowed` customers.
pub async fn report(
    pool: &PgPool,
    since: NaiveDate,
    group_by: GroupBy,
    customer: Option<&str>,
    allowed: Option<&[String]>,
) -> Result<Vec<UsageGroup>, sqlx::Error> {
    let hist_sums: Vec<String> = (1..=DURATION_BOUNDS.len())
        .map(|i| format!("sum(duration_hist[{i}])::int8"))
        .collect();
    let key = group_by.column();
    let sql = format!(
        "SELECT {key} AS key, sum(requests)::int8, sum(successes)::int8, sum(cache_hits)::int8,
                sum(cache_lookups)::int8, sum(duration_count)::int8, sum(duration_sum)::int8,
                ARRAY[{hist}] AS hist, array_agg(DISTINCT actor ORDER BY actor) AS users
         FROM usage_rollup
         WHERE day >= $1 AND ($2::text IS NULL OR customer_id = $2)
           AND ($3::text[] IS NULL OR customer_id = ANY($3))
         GROUP BY {key} ORDER BY {key}",
        hist = hist_sums.join(", ")
    );
    #[allow(clippy::type_complexity)]
    let rows: Vec<(String, i64, i64, i64, i64, i64, i64, Vec<i64>, Vec<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .bind(customer)
            .bind(allowed)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(
            |(key, requests, successes, cache_hits, cache_lookups, dc, ds, hist, users)| {
                UsageGroup {
                    key,
                    requests,
                    successes,
                    cache_hits,
                    cache_lookups,
                    duration_count: dc,
                    duration_sum: ds,
                    p95_ms: p95(&hist),
                    users,
                }
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_the_first_bound_at_least_the_duration() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(7), 7);
        assert_eq!(DURATION_BOUNDS[bucket(11)], 12);
        assert_eq!(DURATION_BOUNDS[bucket(12)], 12);
        assert_eq!(DURATION_BOUNDS[bucket(601)], 750);
        assert_eq!(DURATION_BOUNDS[bucket(i32::MAX)], i32::MAX);
    }

    #[test]
    fn p95_picks_the_bucket_of_rank_ceil_095_n() {
        let mut hist = [0i64; DURATION_BOUNDS.len()];
        hist[bucket(2)] = 19;
        hist[bucket(500)] = 1;
        // n = 20, rank 19: still the 2 ms bucket.
        assert_eq!(p95(&hist), Some(2));
        hist[bucket(500)] = 2; // n = 21, rank 20
        assert_eq!(p95(&hist), Some(500));
        assert_eq!(p95(&[0; DURATION_BOUNDS.len()]), None);
    }
}
