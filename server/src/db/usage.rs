//! Usage rollups (`usage_rollup`) and the usage report read from them.
//!
//! The group-commit audit writer's statement folds the rows it inserts into per-day rollup
//! rows (see [`upsert_ctes`] and `crate::audit`), so the report reads a few thousand rollup
//! rows instead of millions of audit rows and never disagrees with them.

use chrono::NaiveDate;
use sqlx::PgPool;

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

/// The histogram columns, `h00, h01, ...`.
fn hist_columns() -> impl Iterator<Item = String> {
    (0..DURATION_BOUNDS.len()).map(|j| format!("h{j:02}"))
}

/// The common table expressions that fold a batch into the rollups, for the audit writer's
/// statement: they aggregate the rows its `ev` expression inserted (`RETURNING` their
/// `occurred_at, customer_id, profile, case_id, actor, action, outcome, cache_hit,
/// duration_ms`), so the rollups are computed from exactly those rows and cost no
/// parameters. Groups are applied in key order, so concurrent writers lock rollup rows in
/// the same order.
pub fn upsert_ctes() -> String {
    let columns: Vec<String> = hist_columns().collect();
    let cols = columns.join(", ");
    let counts = (0..DURATION_BOUNDS.len())
        .map(|j| format!("count(*) FILTER (WHERE b = {j})"))
        .collect::<Vec<_>>()
        .join(", ");
    let add_hist = columns
        .iter()
        .map(|c| format!("{c} = t.{c} + EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "used AS (
             SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, customer_id, profile,
                    coalesce(case_id, '') AS case_id, actor, coalesce(tier, '') AS tier,
                    outcome, cache_hit, duration_ms,
                    width_bucket(duration_ms - 1, lanyard_duration_bounds()) AS b
             FROM ev
             WHERE action = '{CREDENTIAL_ACTION}' AND customer_id IS NOT NULL
               AND profile IS NOT NULL
         ), counts AS (
             INSERT INTO usage_rollup AS t (day, customer_id, profile, case_id, actor, tier,
                                            requests, successes, cache_hits, cache_lookups,
                                            duration_count, duration_sum)
             SELECT day, customer_id, profile, case_id, actor, tier, count(*),
                    count(*) FILTER (WHERE outcome = 'success'),
                    count(*) FILTER (WHERE cache_hit), count(cache_hit), count(duration_ms),
                    coalesce(sum(duration_ms), 0)
             FROM used GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
             ON CONFLICT (day, customer_id, profile, case_id, actor, tier) DO UPDATE SET
                 requests = t.requests + EXCLUDED.requests,
                 successes = t.successes + EXCLUDED.successes,
                 cache_hits = t.cache_hits + EXCLUDED.cache_hits,
                 cache_lookups = t.cache_lookups + EXCLUDED.cache_lookups,
                 duration_count = t.duration_count + EXCLUDED.duration_count,
                 duration_sum = t.duration_sum + EXCLUDED.duration_sum
         ), by_profile AS (
             INSERT INTO usage_profile_duration AS t (day, customer_id, profile, case_id, tier,
                                                      {cols})
             SELECT day, customer_id, profile, case_id, tier, {counts}
             FROM used WHERE duration_ms IS NOT NULL
             GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
             ON CONFLICT (day, customer_id, profile, case_id, tier) DO UPDATE SET {add_hist}
         ), by_actor AS (
             INSERT INTO usage_actor_duration AS t (day, customer_id, actor, {cols})
             SELECT day, customer_id, actor, {counts}
             FROM used WHERE duration_ms IS NOT NULL
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
             ON CONFLICT (day, customer_id, actor) DO UPDATE SET {add_hist}
         )"
    )
}

pub use lanyard_api::reports::GroupBy;

/// The rollup column a grouping reads.
fn column(group_by: GroupBy) -> &'static str {
    match group_by {
        GroupBy::Profile => "profile",
        GroupBy::Customer => "customer_id",
        GroupBy::Case => "case_id",
        GroupBy::Actor => "actor",
        GroupBy::Tier => "tier",
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
/// `allowed` customers: the counts and users from `usage_rollup`, the p95 from the
/// duration histograms.
pub async fn report(
    pool: &PgPool,
    since: NaiveDate,
    group_by: GroupBy,
    customer: Option<&str>,
    allowed: Option<&[String]>,
) -> Result<Vec<UsageGroup>, sqlx::Error> {
    let key = column(group_by);
    // Only the filters in use: a generic plan over `$2 IS NULL OR ...` misjudges the rows.
    let mut filter = String::from("day >= $1");
    if customer.is_some() {
        filter.push_str(" AND customer_id = $2");
    }
    if allowed.is_some() {
        filter.push_str(" AND customer_id = ANY($3)");
    }
    let counts_sql = format!(
        "SELECT {key}, sum(requests::float8), sum(successes::float8), sum(cache_hits::float8),
                sum(cache_lookups::float8), sum(duration_count::float8),
                sum(duration_sum::float8), array_agg(DISTINCT actor ORDER BY actor)
         FROM usage_rollup WHERE {filter} AND ($2::text IS NOT NULL OR true)
           AND ($3::text[] IS NOT NULL OR true)
         GROUP BY {key} ORDER BY {key}"
    );
    let hist_table = match group_by {
        GroupBy::Actor => "usage_actor_duration",
        _ => "usage_profile_duration",
    };
    // Sums in float8: exact for integers below 2^53, and about twice as fast as int8's
    // 128-bit accumulator over the ~50 histogram columns.
    let sums: Vec<String> = hist_columns()
        .map(|c| format!("sum({c}::float8)"))
        .collect();
    let hist_sql = format!(
        "SELECT {key}, ARRAY[{}] FROM {hist_table}
         WHERE {filter} AND ($2::text IS NOT NULL OR true) AND ($3::text[] IS NOT NULL OR true)
         GROUP BY {key}",
        sums.join(", ")
    );
    // The two queries run side by side, on two connections.
    #[allow(clippy::type_complexity)]
    let counts = sqlx::query_as::<_, (String, f64, f64, f64, f64, f64, f64, Vec<String>)>(
        sqlx::AssertSqlSafe(counts_sql),
    )
    .bind(since)
    .bind(customer)
    .bind(allowed)
    .fetch_all(pool);
    let hists = sqlx::query_as::<_, (String, Vec<f64>)>(sqlx::AssertSqlSafe(hist_sql))
        .bind(since)
        .bind(customer)
        .bind(allowed)
        .fetch_all(pool);
    let (counts, hists) = tokio::try_join!(counts, hists)?;
    let hists: std::collections::HashMap<String, Vec<i64>> = hists
        .into_iter()
        .map(|(key, hist)| (key, hist.into_iter().map(|n| n as i64).collect()))
        .collect();
    Ok(counts
        .into_iter()
        .map(
            |(key, requests, successes, cache_hits, cache_lookups, dc, ds, users)| UsageGroup {
                p95_ms: hists.get(&key).and_then(|h| p95(h)),
                key,
                requests: requests as i64,
                successes: successes as i64,
                cache_hits: cache_hits as i64,
                cache_lookups: cache_lookups as i64,
                duration_count: dc as i64,
                duration_sum: ds as i64,
                users,
            },
        )
        .collect())
}

impl UsageGroup {
    /// The group as a report row: counts become rates where the API shows rates.
    pub fn into_row(self, group_by: GroupBy) -> lanyard_api::reports::UsageRow {
        let key = Some(self.key);
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        lanyard_api::reports::UsageRow {
            profile: key.clone().filter(|_| group_by == GroupBy::Profile),
            customer: key.clone().filter(|_| group_by == GroupBy::Customer),
            case_id: key
                .clone()
                .filter(|k| group_by == GroupBy::Case && !k.is_empty()),
            actor: key.clone().filter(|_| group_by == GroupBy::Actor),
            tier: key.filter(|k| group_by == GroupBy::Tier && !k.is_empty()),
            total_requests: self.requests,
            successful_requests: self.successes,
            success_rate: ratio(self.successes, self.requests).unwrap_or(0.0),
            avg_duration_ms: ratio(self.duration_sum, self.duration_count),
            p95_duration_ms: self.p95_ms,
            cache_hits: self.cache_hits,
            cache_hit_rate: ratio(self.cache_hits, self.cache_lookups),
            user_count: self.users.len(),
            users: self.users,
        }
    }
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
