-- Tamper evidence and usage rollups for the audit log.
--
-- Hash chains. Every audit row belongs to one chain and carries its position (`seq`, from 1)
-- and `hash` = SHA-256 over the previous row's hash (32 zero bytes before the first row) and
-- this row's content (see `server/src/audit/chain.rs` for the exact encoding). Each writer
-- owns a chain: every group-commit worker of every broker instance starts its own when it
-- first writes (and a new one after any failed write), and the rare administrative events
-- written inside their own transactions share one chain, serialised by a row lock on its
-- head. `audit_chain` holds each chain's head, updated in the same statement or transaction
-- as the rows, so that rows removed from the end of a chain are detected too.
CREATE TABLE audit_chain (
    id         uuid        PRIMARY KEY,
    writer     text        NOT NULL CHECK (char_length(writer) <= 200),
    started_at timestamptz NOT NULL DEFAULT now(),
    head_seq   bigint      NOT NULL DEFAULT 0 CHECK (head_seq >= 0),
    head_hash  bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
               CHECK (octet_length(head_hash) = 32)
);

-- The shared chain of administrative events (customers, roles, sessions, tokens).
INSERT INTO audit_chain (id, writer) VALUES ('00000000-0000-0000-0000-000000000001', 'admin');

-- Rows written before this migration have no chain (`audit verify` counts them apart).
ALTER TABLE audit_event
    ADD COLUMN chain_id uuid REFERENCES audit_chain (id) ON DELETE RESTRICT,
    ADD COLUMN seq      bigint,
    ADD COLUMN hash     bytea,
    ADD CONSTRAINT audit_event_chained CHECK (
        (chain_id IS NULL AND seq IS NULL AND hash IS NULL)
        OR (chain_id IS NOT NULL AND seq >= 1 AND octet_length(hash) = 32));

-- Duration buckets of the usage report's p95: exact to the millisecond up to 10 ms, then
-- steps of at most about 25 %. A duration falls into the first bucket whose upper bound is
-- at least the duration; the last bound stands for "longer than 10 minutes". The report's
-- p95 is the upper bound of the bucket that holds the 95th percentile, which is exactly
-- `percentile_disc(0.95) WITHIN GROUP (ORDER BY lanyard_duration_bucket(duration_ms))`
-- over the same rows. The same bounds are in `server/src/db/usage.rs`.
CREATE FUNCTION lanyard_duration_bounds() RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 100,
             125, 150, 200, 250, 300, 400, 500, 600, 750, 1000, 1250, 1500, 2000, 2500,
             3000, 4000, 5000, 6000, 7500, 10000, 12500, 15000, 20000, 25000, 30000, 40000,
             50000, 60000, 120000, 300000, 600000, 2147483647];

CREATE FUNCTION lanyard_duration_bucket(ms integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT min(b) FROM unnest(lanyard_duration_bounds()) AS b WHERE b >= ms);

-- Usage rollups: one row per UTC day, customer, profile, case, actor and writer shard, over
-- the credential requests that named a session (`action = 'credentials.issue'` with a
-- profile). The group-commit writer updates them in the same statement that inserts the
-- audit rows, so they never drift from them. `shard` (the writer's worker number) keeps
-- concurrent batches from waiting on each other's row locks.
CREATE TABLE usage_rollup (
    day            date     NOT NULL,
    customer_id    text     NOT NULL,
    profile        text     NOT NULL,
    case_id        text     NOT NULL DEFAULT '',  -- '' for customer sessions
    actor          text     NOT NULL,
    shard          smallint NOT NULL,
    requests       bigint   NOT NULL,
    successes      bigint   NOT NULL,
    cache_hits     bigint   NOT NULL,
    cache_lookups  bigint   NOT NULL,  -- requests whose cache_hit is known
    duration_count bigint   NOT NULL,
    duration_sum   bigint   NOT NULL,
    -- Requests per duration bucket, in the order of lanyard_duration_bounds().
    duration_hist  bigint[] NOT NULL,
    PRIMARY KEY (day, customer_id, profile, case_id, actor, shard)
);
