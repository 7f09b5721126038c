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

#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub requests: i64,
    pub successes: i64,
    pub cache_hits: i64,
    pub cache_lookups: i64,
    pub duration_count: i64,
    pub duration_sum: i64,
}

/// Requests per duration bucket.
pub type Hist = [i64; DURATION_BOUNDS.len()];

/// A batch's changes to the three rollup tables, each in key order (so that concurrent
/// writers lock rollup rows in the same order).
#[derive(Debug, Default)]
pub struct Rollups {
    pub counts: BTreeMap<RollupKey, Counts>,
    /// By (day, customer, profile, case).
    pub by_profile: BTreeMap<(NaiveDate, String, String, String), Hist>,
    /// By (day, customer, actor).
    pub by_actor: BTreeMap<(NaiveDate, String, String), Hist>,
}

/// Folds a batch's events into rollup changes.
pub fn fold<'a>(
    events: impl IntoIterator<Item = (chrono::DateTime<chrono::Utc>, &'a NewEvent)>,
) -> Rollups {
    let mut out = Rollups::default();
    for (at, e) in events {
        let (Some(customer), Some(profile)) = (&e.customer_id, &e.profile) else {
            continue;
        };
        if e.action != CREDENTIAL_ACTION {
            continue;
        }
        let day = at.date_naive();
        let case_id = e.case_id.clone().unwrap_or_default();
        let key = RollupKey {
            day,
            customer_id: customer.clone(),
            profile: profile.clone(),
            case_id: case_id.clone(),
            actor: e.actor.clone(),
        };
        let d = out.counts.entry(key).or_default();
        d.requests += 1;
        d.successes += i64::from(e.outcome == "success");
        if let Some(hit) = e.cache_hit {
            d.cache_lookups += 1;
            d.cache_hits += i64::from(hit);
        }
        if let Some(ms) = e.duration_ms {
            d.duration_count += 1;
            d.duration_sum += i64::from(ms);
            let b = bucket(ms);
            out.by_profile
                .entry((day, customer.clone(), profile.clone(), case_id))
                .or_insert([0; DURATION_BOUNDS.len()])[b] += 1;
            out.by_actor
                .entry((day, customer.clone(), e.actor.clone()))
                .or_insert([0; DURATION_BOUNDS.len()])[b] += 1;
        }
    }
    out
}

/// The histogram columns, `h00, h01, ...`.
fn hist_columns() -> impl Iterator<Item = String> {
    (0..DURATION_BOUNDS.len()).map(|j| format!("h{j:02}"))
}

/// The common table expressions that apply a batch's [`Rollups`], for the audit writer's
/// statement; their parameters start at `$first` and are bound by [`Rollups::bind`].
pub fn upsert_ctes(first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    let k = DURATION_BOUNDS.len();
    let columns: Vec<String> = hist_columns().collect();
    let insert_hist = |param: String| -> String {
        (0..k)
            .map(|j| format!("({param}::int8[])[(i - 1) * {k} + {}]", j + 1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let add_hist = columns
        .iter()
        .map(|c| format!("{c} = t.{c} + EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cols = columns.join(", ");
    format!(
        "counts AS (
             INSERT INTO usage_rollup AS t (day, customer_id, profile, case_id, actor, requests,
                                            successes, cache_hits, cache_lookups,
                                            duration_count, duration_sum)
             SELECT * FROM UNNEST({}::date[], {}::text[], {}::text[], {}::text[], {}::text[],
                                  {}::int8[], {}::int8[], {}::int8[], {}::int8[], {}::int8[],
                                  {}::int8[])
             ON CONFLICT (day, customer_id, profile, case_id, actor) DO UPDATE SET
                 requests = t.requests + EXCLUDED.requests,
                 successes = t.successes + EXCLUDED.successes,
                 cache_hits = t.cache_hits + EXCLUDED.cache_hits,
                 cache_lookups = t.cache_lookups + EXCLUDED.cache_lookups,
                 duration_count = t.duration_count + EXCLUDED.duration_count,
                 duration_sum = t.duration_sum + EXCLUDED.duration_sum
         ), by_profile AS (
             INSERT INTO usage_profile_duration AS t (day, customer_id, profile, case_id, {cols})
             SELECT day, c, p, ca, {}
             FROM UNNEST({}::date[], {}::text[], {}::text[], {}::text[])
                  WITH ORDINALITY AS r(day, c, p, ca, i)
             ON CONFLICT (day, customer_id, profile, case_id) DO UPDATE SET {add_hist}
         ), by_actor AS (
             INSERT INTO usage_actor_duration AS t (day, customer_id, actor, {cols})
             SELECT day, c, a, {}
             FROM UNNEST({}::date[], {}::text[], {}::text[]) WITH ORDINALITY AS r(day, c, a, i)
             ON CONFLICT (day, customer_id, actor) DO UPDATE SET {add_hist}
         )",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7),
        p(8),
        p(9),
        p(10),
        insert_hist(p(15)),
        p(11),
        p(12),
        p(13),
        p(14),
        insert_hist(p(19)),
        p(16),
        p(17),
        p(18),
    )
}

impl Rollups {
    /// Binds the parameters of [`upsert_ctes`], in order.
    pub fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let n = self.counts.len();
        let (mut days, mut customers, mut profiles, mut cases, mut actors) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut figures: [Vec<i64>; 6] = Default::default();
        for (key, c) in self.counts {
            days.push(key.day);
            customers.push(key.customer_id);
            profiles.push(key.profile);
            cases.push(key.case_id);
            actors.push(key.actor);
            for (column, value) in figures.iter_mut().zip([
                c.requests,
                c.successes,
                c.cache_hits,
                c.cache_lookups,
                c.duration_count,
                c.duration_sum,
            ]) {
                column.push(value);
            }
        }
        let [requests, successes, hits, lookups, dcount, dsum] = figures;
        let (mut p_days, mut p_customers, mut p_profiles, mut p_cases, mut p_hist) =
            (vec![], vec![], vec![], vec![], vec![]);
        for ((day, customer, profile, case), hist) in self.by_profile {
            p_days.push(day);
            p_customers.push(customer);
            p_profiles.push(profile);
            p_cases.push(case);
            p_hist.extend_from_slice(&hist);
        }
        let (mut a_days, mut a_customers, mut a_actors, mut a_hist) =
            (vec![], vec![], vec![], vec![]);
        for ((day, customer, actor), hist) in self.by_actor {
            a_days.push(day);
            a_customers.push(customer);
            a_actors.push(actor);
            a_hist.extend_from_slice(&hist);
        }
        query
            .bind(days)
            .bind(customers)
            .bind(profiles)
            .bind(cases)
            .bind(actors)
            .bind(requests)
            .bind(successes)
            .bind(hits)
            .bind(lookups)
            .bind(dcount)
            .bind(dsum)
            .bind(p_days)
            .bind(p_customers)
            .bind(p_profiles)
            .bind(p_cases)
            .bind(p_hist)
            .bind(a_days)
            .bind(a_customers)
            .bind(a_actors)
            .bind(a_hist)
    }
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
/// `allowed` customers: the counts and users from `usage_rollup`, the p95 from the
/// duration histograms.
pub async fn report(
    pool: &PgPool,
    since: NaiveDate,
    group_by: GroupBy,
    customer: Option<&str>,
    allowed: Option<&[String]>,
) -> Result<Vec<UsageGroup>, sqlx::Error> {
    let key = group_by.column();
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
