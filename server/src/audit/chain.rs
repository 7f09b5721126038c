//! The audit log's hash chains: how a row's hash is computed, and `audit verify`.
//!
//! A row's hash is SHA-256 over, in this order:
//!
//! - the domain tag `lanyard-audit-v1` and a zero byte;
//! - the previous row's hash in the same chain (32 zero bytes before the first row);
//! - the row's `seq` (8 bytes, big-endian);
//! - each content field in [`Content`]'s order, as `0x00` when NULL, otherwise `0x01`, the
//!   length (4 bytes, big-endian) and the bytes of its text form: the time as microseconds
//!   since the Unix epoch, numbers in decimal, booleans as `true`/`false`, the session id in
//!   lower-case hyphenated form, the source IP in its canonical text form and `detail` as
//!   JSON with object keys sorted and no insignificant whitespace.
//!
//! Each text form is what the row reads back as from Postgres, so a verifier recomputes the
//! hash from the stored row alone. The row's `id` is not covered (the database assigns it);
//! the order inside a chain is `seq`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_lc_rs::digest;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, audit::NewEvent};

pub type Hash = [u8; 32];

/// The previous hash of a chain's first row.
pub const GENESIS: Hash = [0; 32];

/// The chain shared by administrative events written inside their own transactions.
pub const ADMIN_CHAIN: Uuid = Uuid::from_u128(1);

/// What a row's hash covers, besides its place in the chain.
#[derive(Debug)]
pub struct Content<'a> {
    pub occurred_at: DateTime<Utc>,
    pub request_id: Option<&'a str>,
    pub actor: &'a str,
    pub actor_role: Option<&'a str>,
    pub action: &'a str,
    pub customer_id: Option<&'a str>,
    pub role_name: Option<&'a str>,
    pub session_id: Option<Uuid>,
    pub case_id: Option<&'a str>,
    pub profile: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub outcome: &'a str,
    pub error_code: Option<&'a str>,
    pub duration_ms: Option<i32>,
    pub cache_hit: Option<bool>,
    pub detail: Option<&'a Value>,
}

/// What the hash of `event`, written at `occurred_at`, covers.
pub fn content(event: &NewEvent, occurred_at: DateTime<Utc>) -> Content<'_> {
    Content {
        occurred_at,
        request_id: event.request_id.as_deref(),
        actor: &event.actor,
        actor_role: event.actor_role,
        action: event.action,
        customer_id: event.customer_id.as_deref(),
        role_name: event.role_name.as_deref(),
        session_id: event.session_id,
        case_id: event.case_id.as_deref(),
        profile: event.profile.as_deref(),
        source_ip: event.source_ip,
        user_agent: event.user_agent.as_deref(),
        outcome: event.outcome.as_str(),
        error_code: event.error_code.as_deref(),
        duration_ms: event.duration_ms,
        cache_hit: event.cache_hit,
        detail: event.detail.as_ref(),
    }
}

/// The time as the database keeps it: whole microseconds.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

pub fn hash(prev: &Hash, seq: i64, row: &Content<'_>) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"lanyard-audit-v1\0");
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    let mut field = |value: Option<&[u8]>| match value {
        None => ctx.update(&[0]),
        Some(bytes) => {
            ctx.update(&[1]);
            ctx.update(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
            ctx.update(bytes);
        }
    };
    fn text(s: Option<&str>) -> Option<&[u8]> {
        s.map(str::as_bytes)
    }
    field(Some(
        row.occurred_at.timestamp_micros().to_string().as_bytes(),
    ));
    field(text(row.request_id));
    field(Some(row.actor.as_bytes()));
    field(text(row.actor_role));
    field(Some(row.action.as_bytes()));
    field(text(row.customer_id));
    field(text(row.role_name));
    field(
        row.session_id
            .map(|s| s.hyphenated().to_string())
            .as_deref()
            .map(str::as_bytes),
    );
    field(text(row.case_id));
    field(text(row.profile));
    field(
        row.source_ip
            .map(|ip| ip.to_string())
            .as_deref()
            .map(str::as_bytes),
    );
    field(text(row.user_agent));
    field(Some(row.outcome.as_bytes()));
    field(text(row.error_code));
    field(
        row.duration_ms
            .map(|d| d.to_string())
            .as_deref()
            .map(str::as_bytes),
    );
    field(
        row.cache_hit
            .map(|b| if b { &b"true"[..] } else { &b"false"[..] }),
    );
    field(row.detail.map(canonical_json).as_deref().map(str::as_bytes));
    let mut out = GENESIS;
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// JSON with object keys sorted, so that it does not depend on the order Postgres's `jsonb`
/// gives them back in.
fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // With serde_json's `preserve_order` the map keeps the sorted insertion order; without
    // it the map is sorted anyway.
    sorted(value).to_string()
}

/// What `audit verify` found.
#[derive(Debug, Default)]
pub struct Verification {
    pub chains: usize,
    pub rows: u64,
    /// Rows written before chains existed.
    pub unchained: i64,
    /// Rows without a chain dated after the chains began: the broker never writes such
    /// rows, so someone inserted them around it.
    pub unchained_since_chains: i64,
    /// Rows at or below their chain's prune point: retention left them behind (a writer's
    /// clock was ahead when they were written); the next pass removes them. Their hashes
    /// cannot be checked.
    pub below_prune_point: u64,
    /// Every break found, at most one per chain, in chain order.
    pub breaks: Vec<Break>,
}

#[derive(Debug)]
pub struct Break {
    pub chain_id: Uuid,
    pub writer: String,
    /// The first row that does not fit its chain (`None`: the chain's end is missing).
    pub row_id: Option<i64>,
    pub seq: i64,
    pub reason: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row_id {
            Some(id) => write!(
                f,
                "row {id} (chain {} of {}, seq {}): {}",
                self.chain_id, self.writer, self.seq, self.reason
            ),
            None => write!(
                f,
                "chain {} of {} after seq {}: {}",
                self.chain_id, self.writer, self.seq, self.reason
            ),
        }
    }
}

/// Walks every chain in `seq` order (from its prune point when retention cut it, see
/// `crate::audit::retention`), recomputing each row's hash from its stored content and the
/// previous row's stored hash. The first row that does not match is the one that
/// was changed (or, when its `seq` skips, follows rows that were removed); a chain whose
/// last row is not its recorded head lost rows at its end.
pub async fn verify(pool: &PgPool) -> Result<Verification, sqlx::Error> {
    let mut tx = db::chain::snapshot(pool).await?;
    let heads: BTreeMap<Uuid, db::chain::ChainRow> = db::chain::heads(&mut tx)
        .await?
        .into_iter()
        .map(|h| (h.id, h))
        .collect();
    let (unchained, unchained_since_chains) = db::chain::unchained(&mut tx).await?;
    let mut result = Verification {
        chains: heads.len(),
        unchained,
        unchained_since_chains,
        ..Verification::default()
    };

    // Per chain: (last seq, last hash) so far, or broken.
    struct Walk {
        seq: i64,
        hash: Hash,
        broken: bool,
    }
    let mut walks: BTreeMap<Uuid, Walk> = BTreeMap::new();
    // Chains cut by retention go on from their prune point.
    let mut pruned_at: BTreeMap<Uuid, i64> = BTreeMap::new();
    for point in db::chain::prune_points(&mut tx).await? {
        pruned_at.insert(point.chain_id, point.pruned_seq);
        let hash: Hash = point.pruned_hash.try_into().unwrap_or(GENESIS);
        walks.insert(
            point.chain_id,
            Walk {
                seq: point.pruned_seq,
                hash,
                broken: false,
            },
        );
    }
    let mut stream = std::pin::pin!(db::chain::rows(&mut tx));
    while let Some(row) = stream.try_next().await? {
        result.rows += 1;
        let walk = walks.entry(row.chain_id).or_insert(Walk {
            seq: 0,
            hash: GENESIS,
            broken: false,
        });
        if walk.broken {
            continue;
        }
        if pruned_at.get(&row.chain_id).is_some_and(|&p| row.seq <= p) {
            result.below_prune_point += 1;
            continue;
        }
        let writer = || {
            heads
                .get(&row.chain_id)
                .map_or_else(String::new, |h| h.writer.clone())
        };
        let mut fail = |reason: String| {
            result.breaks.push(Break {
                chain_id: row.chain_id,
                writer: writer(),
                row_id: Some(row.id),
                seq: row.seq,
                reason,
            });
        };
        if row.seq != walk.seq + 1 {
            walk.broken = true;
            fail(if row.seq <= walk.seq {
                format!("seq {} appears again (a copied or inserted row)", row.seq)
            } else {
                format!(
                    "seq {} follows seq {}: the rows between were removed",
                    row.seq, walk.seq
                )
            });
            continue;
        }
        let source_ip = match row.source_ip.as_deref().map(str::parse::<IpAddr>) {
            None => None,
            Some(Ok(ip)) => Some(ip),
            Some(Err(_)) => {
                walk.broken = true;
                fail("its source IP cannot be read".into());
                continue;
            }
        };
        let expected = hash(
            &walk.hash,
            row.seq,
            &Content {
                occurred_at: row.occurred_at,
                request_id: row.request_id.as_deref(),
                actor: &row.actor,
                actor_role: row.actor_role.as_deref(),
                action: &row.action,
                customer_id: row.customer_id.as_deref(),
                role_name: row.role_name.as_deref(),
                session_id: row.session_id,
                case_id: row.case_id.as_deref(),
                profile: row.profile.as_deref(),
                source_ip,
                user_agent: row.user_agent.as_deref(),
                outcome: &row.outcome,
                error_code: row.error_code.as_deref(),
                duration_ms: row.duration_ms,
                cache_hit: row.cache_hit,
                detail: row.detail.as_ref(),
            },
        );
        if row.hash.as_slice() != expected.as_slice() {
            walk.broken = true;
            fail("its content does not match its hash: the row was changed".into());
            continue;
        }
        walk.seq = row.seq;
        walk.hash = expected;
    }
    for (id, head) in &heads {
        let (seq, last) = walks.get(id).map_or((0, GENESIS), |w| (w.seq, w.hash));
        if walks.get(id).is_some_and(|w| w.broken) {
            continue;
        }
        if seq != head.head_seq || last.as_slice() != head.head_hash.as_slice() {
            result.breaks.push(Break {
                chain_id: *id,
                writer: head.writer.clone(),
                row_id: None,
                seq,
                reason: if seq < head.head_seq {
                    format!(
                        "its head records seq {}: rows at its end were removed",
                        head.head_seq
                    )
                } else {
                    "its rows do not end at its recorded head".into()
                },
            });
        }
    }
    Ok(result)
}
