//! L: what one audit row costs Postgres, lever by lever.
//!
//! The cached credential path is bound by its audit row (see P1/P1b/P3), so this benchmark
//! isolates the row: one connection writes `LEVER_BATCHES` batches (default 1,500) of
//! `LEVER_BATCH` rows (default 28, the mean batch the group-commit writer forms under P1's
//! load) of realistic `credentials.issue` rows, each batch in its own committed
//! transaction, exactly as the writer does, into a fresh migrated database per variant.
//! For each variant it reads the Postgres backend's CPU time (`/proc/<pid>/schedstat`,
//! nanoseconds), the WAL bytes written and the wall time, per row:
//!
//! - `L0` the physical floor: binary `COPY` of the same rows into a bare copy of the table
//!   (no index, no constraint, no chain head, no rollups);
//! - `L1` today's statement (`lanyard_server::db::audit::insert_batch`: rows unnested from
//!   column arrays, rollups folded from `RETURNING`, the chain head moved, all in one);
//! - `L2` the rows and head alone (what the rollups cost is L1 − L2);
//! - `L3` the rows alone (what moving the head costs is L2 − L3);
//! - `L4` L2 without the B-tree on `occurred_at` (the id is time-ordered: a BRIN or none);
//! - `L5` L2 with a BRIN index on `occurred_at` instead of the B-tree;
//! - `L6` L2 with the credential detail in four typed columns instead of `jsonb`;
//! - `L7` binary `COPY` of the rows plus the head update, in one transaction (vs L2);
//! - `L8` L1 with a generic plan (`plan_cache_mode = force_generic_plan`): is it planning?
//!
//! Run with `tests/bench L`. There is no goal per lever; the table shows each lever's µs of
//! Postgres CPU per row beside today's (L1), and docs/benchmarks.md says which were kept.

use std::time::Instant;

use chrono::{DateTime, Utc};
use lanyard_server::db::audit::{BatchRow, NewEvent};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::table::{self, Row};

/// A `credentials.issue` row as the cached credential path writes it.
pub fn credential_event(n: usize, session: Uuid) -> NewEvent {
    NewEvent {
        request_id: Some(Uuid::new_v4().to_string()),
        actor_role: Some("support"),
        customer_id: Some("acme-corp".into()),
        role_name: Some("readonly".into()),
        session_id: Some(session),
        case_id: Some("CS-12345".into()),
        profile: Some("cs-12345-acme-corp-readonly".into()),
        source_ip: Some("10.1.2.3".parse().unwrap()),
        user_agent: Some("aws-cli/1.46.3 md/Botocore#1.40 lanyard/0.1.0".into()),
        duration_ms: Some(i32::try_from(n % 3).unwrap()),
        cache_hit: Some(true),
        detail: Some(serde_json::json!({
            "access_key_id": "ASIAQWERTYUIOPASDFGH",
            "expiration": "2026-12-03T17:00:00Z",
            "source_identity": "alice.engineer",
            "role_session_name": "lanyard-alice.engineer-CS-12345",
        })),
        ..NewEvent::success("alice.engineer@example.com", "credentials.issue")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lever {
    Floor,
    Today,
    RowsAndHead,
    RowsOnly,
    NoTimeIndex,
    BrinTimeIndex,
    TypedDetail,
    CopyAndHead,
    GenericPlan,
}

impl Lever {
    fn id(self) -> &'static str {
        match self {
            Lever::Floor => "L0",
            Lever::Today => "L1",
            Lever::RowsAndHead => "L2",
            Lever::RowsOnly => "L3",
            Lever::NoTimeIndex => "L4",
            Lever::BrinTimeIndex => "L5",
            Lever::TypedDetail => "L6",
            Lever::CopyAndHead => "L7",
            Lever::GenericPlan => "L8",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Lever::Floor => "audit row: binary COPY into a bare table (floor)",
            Lever::Today => "audit row: today's statement (rows+rollups+head)",
            Lever::RowsAndHead => "audit row: rows + chain head, no rollups",
            Lever::RowsOnly => "audit row: rows only (no head, no rollups)",
            Lever::NoTimeIndex => "audit row: L2 without the occurred_at B-tree",
            Lever::BrinTimeIndex => "audit row: L2 with occurred_at BRIN",
            Lever::TypedDetail => "audit row: L2 with typed columns for detail",
            Lever::CopyAndHead => "audit row: binary COPY + head (vs L2)",
            Lever::GenericPlan => "audit row: L1 with its plan made once (generic)",
        }
    }
    /// What the variant changes in the freshly migrated schema.
    fn schema(self) -> &'static [&'static str] {
        match self {
            Lever::Floor => {
                &["CREATE TABLE floor (LIKE audit_event INCLUDING IDENTITY INCLUDING DEFAULTS)"]
            }
            Lever::NoTimeIndex => &["DROP INDEX audit_event_occurred_at"],
            Lever::BrinTimeIndex => &[
                "DROP INDEX audit_event_occurred_at",
                "CREATE INDEX audit_event_occurred_at ON audit_event USING brin (occurred_at)",
            ],
            Lever::TypedDetail => &["ALTER TABLE audit_event ADD COLUMN access_key_id text,
                 ADD COLUMN expires_at timestamptz, ADD COLUMN source_identity text,
                 ADD COLUMN role_session_name text"],
            Lever::GenericPlan => &["SET plan_cache_mode = force_generic_plan"],
            _ => &[],
        }
    }
}

/// The columns every variant writes, in order (the floor table has them too).
const COLUMNS: &str = "occurred_at, request_id, actor, actor_role, action, customer_id, \
     role_name, session_id, case_id, profile, source_ip, user_agent, outcome, error_code, \
     duration_ms, cache_hit, detail, chain_id, seq, hash";

/// The rows of a batch unnested from column arrays, as the writer's statement does.
fn unnest_insert(typed_detail: bool) -> String {
    let (extra_cols, extra_sel, extra_types, extra_names) = if typed_detail {
        (
            ", access_key_id, expires_at, source_identity, role_session_name",
            ", ak, ex, si, rs",
            ", $21::text[], $22::timestamptz[], $23::text[], $24::text[]",
            ", ak, ex, si, rs",
        )
    } else {
        ("", "", "", "")
    };
    format!(
        "INSERT INTO audit_event ({COLUMNS}{extra_cols})
         SELECT ts, r, a, ar, ac, c, rn, s, ca, p, ip::inet, ua, o, ec, d, ch, dt, $18, sq, h{extra_sel}
         FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::uuid[], $9::text[], $10::text[], $11::text[],
                     $12::text[], $13::text[], $14::text[], $15::int4[], $16::bool[],
                     $17::jsonb[], $19::int8[], $20::bytea[]{extra_types})
              AS t(ts, r, a, ar, ac, c, rn, s, ca, p, ip, ua, o, ec, d, ch, dt, sq, h{extra_names})"
    )
}

async fn insert_unnest(
    conn: &mut PgConnection,
    sql: &str,
    chain: Uuid,
    rows: &[BatchRow<'_>],
    typed_detail: bool,
    head: Option<&BatchRow<'_>>,
) {
    fn col<'a, T>(rows: &'a [BatchRow<'a>], f: impl Fn(&'a NewEvent) -> T) -> Vec<T> {
        rows.iter().map(|r| f(r.event)).collect()
    }
    let detail = |key: &'static str| {
        move |e: &NewEvent| {
            e.detail
                .as_ref()
                .and_then(|d| d[key].as_str())
                .map(str::to_owned)
        }
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind(col(rows, |e| e.request_id.as_deref()))
        .bind(col(rows, |e| e.actor.as_str()))
        .bind(col(rows, |e| e.actor_role))
        .bind(col(rows, |e| e.action))
        .bind(col(rows, |e| e.customer_id.as_deref()))
        .bind(col(rows, |e| e.role_name.as_deref()))
        .bind(col(rows, |e| e.session_id))
        .bind(col(rows, |e| e.case_id.as_deref()))
        .bind(col(rows, |e| e.profile.as_deref()))
        .bind(col(rows, |e| e.source_ip.map(|ip| ip.to_string())))
        .bind(col(rows, |e| e.user_agent.as_deref()))
        .bind(col(rows, |e| e.outcome.as_str()))
        .bind(col(rows, |e| e.error_code.as_deref()))
        .bind(col(rows, |e| e.duration_ms))
        .bind(col(rows, |e| e.cache_hit))
        .bind(col(rows, |e| {
            if typed_detail {
                None
            } else {
                e.detail.as_ref()
            }
        }))
        .bind(chain)
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.hash.to_vec()).collect::<Vec<_>>());
    if typed_detail {
        q = q
            .bind(col(rows, detail("access_key_id")))
            .bind(col(rows, |e| {
                e.detail
                    .as_ref()
                    .and_then(|d| d["expiration"].as_str())
                    .and_then(|s| s.parse::<DateTime<Utc>>().ok())
            }))
            .bind(col(rows, detail("source_identity")))
            .bind(col(rows, detail("role_session_name")));
    }
    if let Some(head) = head {
        q = q.bind(head.seq).bind(head.hash.to_vec());
    }
    q.execute(conn).await.unwrap();
}

/// The rows in PostgreSQL's binary COPY format (header, tuples, trailer).
fn copy_binary(chain: Uuid, rows: &[BatchRow<'_>]) -> Vec<u8> {
    const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
    let mut out = Vec::with_capacity(rows.len() * 400);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&i32::try_from(b.len()).unwrap().to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    for r in rows {
        let e = r.event;
        out.extend_from_slice(&20i16.to_be_bytes());
        let micros = r.occurred_at.timestamp_micros() - PG_EPOCH_MICROS;
        field(&mut out, Some(&micros.to_be_bytes()));
        field(&mut out, e.request_id.as_deref().map(str::as_bytes));
        field(&mut out, Some(e.actor.as_bytes()));
        field(&mut out, e.actor_role.map(str::as_bytes));
        field(&mut out, Some(e.action.as_bytes()));
        field(&mut out, e.customer_id.as_deref().map(str::as_bytes));
        field(&mut out, e.role_name.as_deref().map(str::as_bytes));
        field(&mut out, e.session_id.as_ref().map(|u| &u.as_bytes()[..]));
        field(&mut out, e.case_id.as_deref().map(str::as_bytes));
        field(&mut out, e.profile.as_deref().map(str::as_bytes));
        let ip = e.source_ip.map(|ip| match ip {
            std::net::IpAddr::V4(v4) => [&[2u8, 32, 0, 4][..], &v4.octets()].concat(),
            std::net::IpAddr::V6(v6) => [&[3u8, 128, 0, 16][..], &v6.octets()].concat(),
        });
        field(&mut out, ip.as_deref());
        field(&mut out, e.user_agent.as_deref().map(str::as_bytes));
        field(&mut out, Some(e.outcome.as_str().as_bytes()));
        field(&mut out, e.error_code.as_deref().map(str::as_bytes));
        let duration = e.duration_ms.map(i32::to_be_bytes);
        field(&mut out, duration.as_ref().map(|d| &d[..]));
        field(
            &mut out,
            e.cache_hit.map(|b| [u8::from(b)]).as_ref().map(|b| &b[..]),
        );
        let detail = e.detail.as_ref().map(|d| {
            let mut v = vec![1u8]; // jsonb's binary format version
            serde_json::to_writer(&mut v, d).unwrap();
            v
        });
        field(&mut out, detail.as_deref());
        field(&mut out, Some(&chain.as_bytes()[..]));
        field(&mut out, Some(&r.seq.to_be_bytes()));
        field(&mut out, Some(&r.hash));
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

async fn copy_in(conn: &mut PgConnection, table: &str, data: &[u8]) {
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {table} ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .unwrap();
    copy.send(data).await.unwrap();
    copy.finish().await.unwrap();
}

async fn move_head(conn: &mut PgConnection, chain: Uuid, last: &BatchRow<'_>) {
    sqlx::query("UPDATE audit_chain SET head_seq = $2, head_hash = $3 WHERE id = $1")
        .bind(chain)
        .bind(last.seq)
        .bind(&last.hash[..])
        .execute(conn)
        .await
        .unwrap();
}

/// Writes one batch, committed, the way `lever` does.
async fn write(conn: &mut PgConnection, lever: Lever, chain: Uuid, rows: &[BatchRow<'_>]) {
    let last = rows.last().unwrap();
    match lever {
        // One statement, its own implicit transaction: as the writer does.
        Lever::Today | Lever::GenericPlan => {
            lanyard_server::db::audit::insert_batch(conn, chain, rows)
                .await
                .unwrap()
        }
        Lever::RowsOnly => {
            insert_unnest(conn, &unnest_insert(false), chain, rows, false, None).await
        }
        Lever::RowsAndHead | Lever::NoTimeIndex | Lever::BrinTimeIndex | Lever::TypedDetail => {
            let typed = lever == Lever::TypedDetail;
            // The head moves in the same statement, as in the writer's (parameters after the
            // typed columns' four).
            let (seq, hash) = if typed { (25, 26) } else { (21, 22) };
            let sql = format!(
                "WITH ev AS ({}) UPDATE audit_chain SET head_seq = ${seq}, head_hash = ${hash} \
                 WHERE id = $18",
                unnest_insert(typed)
            );
            insert_unnest(conn, &sql, chain, rows, typed, Some(last)).await;
        }
        Lever::Floor => copy_in(conn, "floor", &copy_binary(chain, rows)).await,
        Lever::CopyAndHead => {
            let mut tx = conn.begin().await.unwrap();
            copy_in(&mut tx, "audit_event", &copy_binary(chain, rows)).await;
            move_head(&mut tx, chain, last).await;
            tx.commit().await.unwrap();
        }
    }
}

/// CPU nanoseconds a process has run (first field of `/proc/<pid>/schedstat`).
fn schedstat_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

struct Cost {
    cpu_us_per_row: f64,
    wal_bytes_per_row: f64,
    wall_ms_per_batch: f64,
}

async fn measure(lever: Lever, batches: usize, batch: usize) -> Cost {
    // Through sqlx, each COPY waits ~44 ms for a delayed ACK: fewer batches keep the run
    // short (the figures are per row).
    let batches = if matches!(lever, Lever::Floor | Lever::CopyAndHead) {
        (batches / 10).max(50)
    } else {
        batches
    };
    let url = lanyard_tests::database::fresh_migrated_database_url().await;
    let _guard = lanyard_tests::TestDatabase::adopt(&url);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    for statement in lever.schema() {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let chain = Uuid::now_v7();
    lanyard_server::db::audit::start_chain(&mut conn, chain, "bench")
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let session = Uuid::new_v4();
    let events: Vec<NewEvent> = (0..batch).map(|n| credential_event(n, session)).collect();
    let mut seq = 0i64;
    let mut run = async |conn: &mut PgConnection, n: usize| {
        for _ in 0..n {
            let now = lanyard_server::audit::chain::now();
            let rows: Vec<BatchRow<'_>> = events
                .iter()
                .map(|event| {
                    seq += 1;
                    let mut hash = [0u8; 32];
                    hash[..8].copy_from_slice(&seq.to_be_bytes());
                    BatchRow {
                        event,
                        occurred_at: now,
                        seq,
                        hash,
                    }
                })
                .collect();
            write(conn, lever, chain, &rows).await;
        }
    };
    run(&mut conn, batches / 10).await; // warm-up: caches, prepared statements
    let lsn = "SELECT pg_current_wal_insert_lsn()::text";
    let wal_before: String = sqlx::query_scalar(lsn).fetch_one(&mut conn).await.unwrap();
    let cpu_before = schedstat_ns(pid);
    let started = Instant::now();
    run(&mut conn, batches).await;
    let wall = started.elapsed();
    let cpu = schedstat_ns(pid) - cpu_before;
    let wal: f64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{wal_before}')::float8"
    )))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let table = if lever == Lever::Floor {
        "floor"
    } else {
        "audit_event"
    };
    let written: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        written as usize,
        (batches + batches / 10) * batch,
        "{lever:?}"
    );
    conn.close().await.unwrap();
    let rows = (batches * batch) as f64;
    Cost {
        cpu_us_per_row: cpu as f64 / 1e3 / rows,
        wal_bytes_per_row: wal / rows,
        wall_ms_per_batch: wall.as_secs_f64() * 1e3 / batches as f64,
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with tests/bench L"]
async fn levers_of_the_audit_row() {
    let batches = table::env_or("LEVER_BATCHES", 1500);
    let batch = table::env_or("LEVER_BATCH", 28);
    let all = [
        Lever::Today,
        Lever::Floor,
        Lever::RowsAndHead,
        Lever::RowsOnly,
        Lever::NoTimeIndex,
        Lever::BrinTimeIndex,
        Lever::TypedDetail,
        Lever::CopyAndHead,
        Lever::GenericPlan,
    ];
    // `LEVERS=L1,L8` measures only those (L1, the baseline, always).
    let wanted = std::env::var("LEVERS").unwrap_or_default();
    let levers: Vec<Lever> = all
        .into_iter()
        .filter(|l| {
            *l == Lever::Today || wanted.is_empty() || wanted.split(',').any(|w| w == l.id())
        })
        .collect();
    // Passes (`LEVER_PASSES`, default 3) in alternating order, so that a change in the
    // machine's speed weighs on every lever alike; each lever's figure is its lowest.
    let mut costs: Vec<Vec<Cost>> = levers.iter().map(|_| Vec::new()).collect();
    for pass in 0..table::env_or("LEVER_PASSES", 3) {
        let order: Vec<usize> = if pass % 2 == 0 {
            (0..levers.len()).collect()
        } else {
            (0..levers.len()).rev().collect()
        };
        for i in order {
            costs[i].push(measure(levers[i], batches, batch).await);
        }
    }
    let best = |c: &[Cost]| {
        let pick = |f: fn(&Cost) -> f64| c.iter().map(f).fold(f64::INFINITY, f64::min);
        Cost {
            cpu_us_per_row: pick(|c| c.cpu_us_per_row),
            wal_bytes_per_row: pick(|c| c.wal_bytes_per_row),
            wall_ms_per_batch: pick(|c| c.wall_ms_per_batch),
        }
    };
    let today = best(&costs[0]);
    for (lever, c) in levers.iter().zip(&costs) {
        let c = best(c);
        table::report(Row {
            id: lever.id(),
            what: lever.what(),
            figure: format!(
                "{:.1} µs PG CPU/row, {:.0} B WAL/row, {:.2} ms/batch of {batch}",
                c.cpu_us_per_row, c.wal_bytes_per_row, c.wall_ms_per_batch
            ),
            baseline: if *lever == Lever::Today {
                "-".into()
            } else {
                format!("L1: {:.1} µs/row", today.cpu_us_per_row)
            },
            ratio: (*lever != Lever::Today).then(|| c.cpu_us_per_row / today.cpu_us_per_row),
            goal: "",
            met: None,
        });
    }
}
