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

-- Where retention cut each chain: the last removed row's seq and hash, from which
-- `audit verify` goes on. Kept apart from audit_chain so that pruning never waits on a
-- writer's head row (or a writer on it).
CREATE TABLE audit_chain_prune (
    chain_id    uuid        PRIMARY KEY REFERENCES audit_chain (id) ON DELETE RESTRICT,
    pruned_seq  bigint      NOT NULL CHECK (pruned_seq >= 1),
    pruned_hash bytea       NOT NULL CHECK (octet_length(pruned_hash) = 32),
    pruned_at   timestamptz NOT NULL DEFAULT now()
);

-- The shared chain of administrative events (customers, roles, sessions, tokens).
INSERT INTO audit_chain (id, writer) VALUES ('00000000-0000-0000-0000-000000000001', 'admin');

-- Rows written before this migration have no chain (`audit verify` counts them apart).
-- No foreign key to audit_chain: it would cost a lookup per inserted row on the credential
-- path, and `audit verify` matches rows to chains anyway.
ALTER TABLE audit_event
    ADD COLUMN chain_id uuid,
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

-- The upper bound of `ms`'s bucket (a binary search: width_bucket over the bounds as lower
-- bounds of `ms - 1`).
CREATE FUNCTION lanyard_duration_bucket(ms integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (lanyard_duration_bounds())[width_bucket(ms - 1, lanyard_duration_bounds()) + 1];

-- Usage rollups, over the credential requests that named a session
-- (`action = 'credentials.issue'` with a customer and a profile), per UTC day. The
-- group-commit writer updates them in the same statement that inserts the audit rows, so
-- they never drift from them. Their names compare byte by byte (COLLATE "C"): reports
-- group and sort thousands of them, and the locale's rules would only slow that down.
--
-- usage_rollup: the counts, per customer, profile, case and actor (the users of a profile).
CREATE TABLE usage_rollup (
    day            date   NOT NULL,
    customer_id    text COLLATE "C" NOT NULL,
    profile        text COLLATE "C" NOT NULL,
    case_id        text COLLATE "C" NOT NULL,  -- '' for customer sessions
    actor          text COLLATE "C" NOT NULL,
    requests       bigint NOT NULL,
    successes      bigint NOT NULL,
    cache_hits     bigint NOT NULL,
    cache_lookups  bigint NOT NULL,  -- requests whose cache_hit is known
    duration_count bigint NOT NULL,
    duration_sum   bigint NOT NULL,
    PRIMARY KEY (day, customer_id, profile, case_id, actor)
);

-- Duration histograms (requests per bucket of lanyard_duration_bounds(), h00 the first),
-- per profile (which also gives customer and case), and per actor. They are kept apart from
-- the counts, and in plain columns rather than an array, so that a 30-day report sums a few
-- thousand rows' columns: the p95 is what makes a report over raw rows slow.
CREATE TABLE usage_profile_duration (
    day         date NOT NULL,
    customer_id text COLLATE "C" NOT NULL,
    profile     text COLLATE "C" NOT NULL,
    case_id     text COLLATE "C" NOT NULL,
    h00 bigint NOT NULL DEFAULT 0,
    h01 bigint NOT NULL DEFAULT 0,
    h02 bigint NOT NULL DEFAULT 0,
    h03 bigint NOT NULL DEFAULT 0,
    h04 bigint NOT NULL DEFAULT 0,
    h05 bigint NOT NULL DEFAULT 0,
    h06 bigint NOT NULL DEFAULT 0,
    h07 bigint NOT NULL DEFAULT 0,
    h08 bigint NOT NULL DEFAULT 0,
    h09 bigint NOT NULL DEFAULT 0,
    h10 bigint NOT NULL DEFAULT 0,
    h11 bigint NOT NULL DEFAULT 0,
    h12 bigint NOT NULL DEFAULT 0,
    h13 bigint NOT NULL DEFAULT 0,
    h14 bigint NOT NULL DEFAULT 0,
    h15 bigint NOT NULL DEFAULT 0,
    h16 bigint NOT NULL DEFAULT 0,
    h17 bigint NOT NULL DEFAULT 0,
    h18 bigint NOT NULL DEFAULT 0,
    h19 bigint NOT NULL DEFAULT 0,
    h20 bigint NOT NULL DEFAULT 0,
    h21 bigint NOT NULL DEFAULT 0,
    h22 bigint NOT NULL DEFAULT 0,
    h23 bigint NOT NULL DEFAULT 0,
    h24 bigint NOT NULL DEFAULT 0,
    h25 bigint NOT NULL DEFAULT 0,
    h26 bigint NOT NULL DEFAULT 0,
    h27 bigint NOT NULL DEFAULT 0,
    h28 bigint NOT NULL DEFAULT 0,
    h29 bigint NOT NULL DEFAULT 0,
    h30 bigint NOT NULL DEFAULT 0,
    h31 bigint NOT NULL DEFAULT 0,
    h32 bigint NOT NULL DEFAULT 0,
    h33 bigint NOT NULL DEFAULT 0,
    h34 bigint NOT NULL DEFAULT 0,
    h35 bigint NOT NULL DEFAULT 0,
    h36 bigint NOT NULL DEFAULT 0,
    h37 bigint NOT NULL DEFAULT 0,
    h38 bigint NOT NULL DEFAULT 0,
    h39 bigint NOT NULL DEFAULT 0,
    h40 bigint NOT NULL DEFAULT 0,
    h41 bigint NOT NULL DEFAULT 0,
    h42 bigint NOT NULL DEFAULT 0,
    h43 bigint NOT NULL DEFAULT 0,
    h44 bigint NOT NULL DEFAULT 0,
    h45 bigint NOT NULL DEFAULT 0,
    h46 bigint NOT NULL DEFAULT 0,
    h47 bigint NOT NULL DEFAULT 0,
    h48 bigint NOT NULL DEFAULT 0,
    h49 bigint NOT NULL DEFAULT 0,
    h50 bigint NOT NULL DEFAULT 0,
    h51 bigint NOT NULL DEFAULT 0,
    h52 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, customer_id, profile, case_id)
);

CREATE TABLE usage_actor_duration (
    day         date NOT NULL,
    customer_id text COLLATE "C" NOT NULL,
    actor       text COLLATE "C" NOT NULL,
    h00 bigint NOT NULL DEFAULT 0,
    h01 bigint NOT NULL DEFAULT 0,
    h02 bigint NOT NULL DEFAULT 0,
    h03 bigint NOT NULL DEFAULT 0,
    h04 bigint NOT NULL DEFAULT 0,
    h05 bigint NOT NULL DEFAULT 0,
    h06 bigint NOT NULL DEFAULT 0,
    h07 bigint NOT NULL DEFAULT 0,
    h08 bigint NOT NULL DEFAULT 0,
    h09 bigint NOT NULL DEFAULT 0,
    h10 bigint NOT NULL DEFAULT 0,
    h11 bigint NOT NULL DEFAULT 0,
    h12 bigint NOT NULL DEFAULT 0,
    h13 bigint NOT NULL DEFAULT 0,
    h14 bigint NOT NULL DEFAULT 0,
    h15 bigint NOT NULL DEFAULT 0,
    h16 bigint NOT NULL DEFAULT 0,
    h17 bigint NOT NULL DEFAULT 0,
    h18 bigint NOT NULL DEFAULT 0,
    h19 bigint NOT NULL DEFAULT 0,
    h20 bigint NOT NULL DEFAULT 0,
    h21 bigint NOT NULL DEFAULT 0,
    h22 bigint NOT NULL DEFAULT 0,
    h23 bigint NOT NULL DEFAULT 0,
    h24 bigint NOT NULL DEFAULT 0,
    h25 bigint NOT NULL DEFAULT 0,
    h26 bigint NOT NULL DEFAULT 0,
    h27 bigint NOT NULL DEFAULT 0,
    h28 bigint NOT NULL DEFAULT 0,
    h29 bigint NOT NULL DEFAULT 0,
    h30 bigint NOT NULL DEFAULT 0,
    h31 bigint NOT NULL DEFAULT 0,
    h32 bigint NOT NULL DEFAULT 0,
    h33 bigint NOT NULL DEFAULT 0,
    h34 bigint NOT NULL DEFAULT 0,
    h35 bigint NOT NULL DEFAULT 0,
    h36 bigint NOT NULL DEFAULT 0,
    h37 bigint NOT NULL DEFAULT 0,
    h38 bigint NOT NULL DEFAULT 0,
    h39 bigint NOT NULL DEFAULT 0,
    h40 bigint NOT NULL DEFAULT 0,
    h41 bigint NOT NULL DEFAULT 0,
    h42 bigint NOT NULL DEFAULT 0,
    h43 bigint NOT NULL DEFAULT 0,
    h44 bigint NOT NULL DEFAULT 0,
    h45 bigint NOT NULL DEFAULT 0,
    h46 bigint NOT NULL DEFAULT 0,
    h47 bigint NOT NULL DEFAULT 0,
    h48 bigint NOT NULL DEFAULT 0,
    h49 bigint NOT NULL DEFAULT 0,
    h50 bigint NOT NULL DEFAULT 0,
    h51 bigint NOT NULL DEFAULT 0,
    h52 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, customer_id, actor)
);

-- The credential requests already recorded, folded as the writer folds new ones.
CREATE TEMPORARY TABLE used_before ON COMMIT DROP AS
    SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, customer_id, profile,
           coalesce(case_id, '') AS case_id, actor, outcome, cache_hit, duration_ms,
           width_bucket(duration_ms - 1, lanyard_duration_bounds()) AS b
    FROM audit_event
    WHERE action = 'credentials.issue' AND customer_id IS NOT NULL AND profile IS NOT NULL;

INSERT INTO usage_rollup (day, customer_id, profile, case_id, actor, requests, successes,
                          cache_hits, cache_lookups, duration_count, duration_sum)
SELECT day, customer_id, profile, case_id, actor, count(*),
       count(*) FILTER (WHERE outcome = 'success'), count(*) FILTER (WHERE cache_hit),
       count(cache_hit), count(duration_ms), coalesce(sum(duration_ms), 0)
FROM used_before GROUP BY 1, 2, 3, 4, 5;

INSERT INTO usage_profile_duration (day, customer_id, profile, case_id, h00, h01, h02, h03, h04, h05, h06, h07, h08, h09, h10, h11, h12, h13, h14, h15, h16, h17, h18, h19, h20, h21, h22, h23, h24, h25, h26, h27, h28, h29, h30, h31, h32, h33, h34, h35, h36, h37, h38, h39, h40, h41, h42, h43, h44, h45, h46, h47, h48, h49, h50, h51, h52)
SELECT day, customer_id, profile, case_id, count(*) FILTER (WHERE b = 0), count(*) FILTER (WHERE b = 1), count(*) FILTER (WHERE b = 2), count(*) FILTER (WHERE b = 3), count(*) FILTER (WHERE b = 4), count(*) FILTER (WHERE b = 5), count(*) FILTER (WHERE b = 6), count(*) FILTER (WHERE b = 7), count(*) FILTER (WHERE b = 8), count(*) FILTER (WHERE b = 9), count(*) FILTER (WHERE b = 10), count(*) FILTER (WHERE b = 11), count(*) FILTER (WHERE b = 12), count(*) FILTER (WHERE b = 13), count(*) FILTER (WHERE b = 14), count(*) FILTER (WHERE b = 15), count(*) FILTER (WHERE b = 16), count(*) FILTER (WHERE b = 17), count(*) FILTER (WHERE b = 18), count(*) FILTER (WHERE b = 19), count(*) FILTER (WHERE b = 20), count(*) FILTER (WHERE b = 21), count(*) FILTER (WHERE b = 22), count(*) FILTER (WHERE b = 23), count(*) FILTER (WHERE b = 24), count(*) FILTER (WHERE b = 25), count(*) FILTER (WHERE b = 26), count(*) FILTER (WHERE b = 27), count(*) FILTER (WHERE b = 28), count(*) FILTER (WHERE b = 29), count(*) FILTER (WHERE b = 30), count(*) FILTER (WHERE b = 31), count(*) FILTER (WHERE b = 32), count(*) FILTER (WHERE b = 33), count(*) FILTER (WHERE b = 34), count(*) FILTER (WHERE b = 35), count(*) FILTER (WHERE b = 36), count(*) FILTER (WHERE b = 37), count(*) FILTER (WHERE b = 38), count(*) FILTER (WHERE b = 39), count(*) FILTER (WHERE b = 40), count(*) FILTER (WHERE b = 41), count(*) FILTER (WHERE b = 42), count(*) FILTER (WHERE b = 43), count(*) FILTER (WHERE b = 44), count(*) FILTER (WHERE b = 45), count(*) FILTER (WHERE b = 46), count(*) FILTER (WHERE b = 47), count(*) FILTER (WHERE b = 48), count(*) FILTER (WHERE b = 49), count(*) FILTER (WHERE b = 50), count(*) FILTER (WHERE b = 51), count(*) FILTER (WHERE b = 52)
FROM used_before WHERE duration_ms IS NOT NULL GROUP BY 1, 2, 3, 4;

INSERT INTO usage_actor_duration (day, customer_id, actor, h00, h01, h02, h03, h04, h05, h06, h07, h08, h09, h10, h11, h12, h13, h14, h15, h16, h17, h18, h19, h20, h21, h22, h23, h24, h25, h26, h27, h28, h29, h30, h31, h32, h33, h34, h35, h36, h37, h38, h39, h40, h41, h42, h43, h44, h45, h46, h47, h48, h49, h50, h51, h52)
SELECT day, customer_id, actor, count(*) FILTER (WHERE b = 0), count(*) FILTER (WHERE b = 1), count(*) FILTER (WHERE b = 2), count(*) FILTER (WHERE b = 3), count(*) FILTER (WHERE b = 4), count(*) FILTER (WHERE b = 5), count(*) FILTER (WHERE b = 6), count(*) FILTER (WHERE b = 7), count(*) FILTER (WHERE b = 8), count(*) FILTER (WHERE b = 9), count(*) FILTER (WHERE b = 10), count(*) FILTER (WHERE b = 11), count(*) FILTER (WHERE b = 12), count(*) FILTER (WHERE b = 13), count(*) FILTER (WHERE b = 14), count(*) FILTER (WHERE b = 15), count(*) FILTER (WHERE b = 16), count(*) FILTER (WHERE b = 17), count(*) FILTER (WHERE b = 18), count(*) FILTER (WHERE b = 19), count(*) FILTER (WHERE b = 20), count(*) FILTER (WHERE b = 21), count(*) FILTER (WHERE b = 22), count(*) FILTER (WHERE b = 23), count(*) FILTER (WHERE b = 24), count(*) FILTER (WHERE b = 25), count(*) FILTER (WHERE b = 26), count(*) FILTER (WHERE b = 27), count(*) FILTER (WHERE b = 28), count(*) FILTER (WHERE b = 29), count(*) FILTER (WHERE b = 30), count(*) FILTER (WHERE b = 31), count(*) FILTER (WHERE b = 32), count(*) FILTER (WHERE b = 33), count(*) FILTER (WHERE b = 34), count(*) FILTER (WHERE b = 35), count(*) FILTER (WHERE b = 36), count(*) FILTER (WHERE b = 37), count(*) FILTER (WHERE b = 38), count(*) FILTER (WHERE b = 39), count(*) FILTER (WHERE b = 40), count(*) FILTER (WHERE b = 41), count(*) FILTER (WHERE b = 42), count(*) FILTER (WHERE b = 43), count(*) FILTER (WHERE b = 44), count(*) FILTER (WHERE b = 45), count(*) FILTER (WHERE b = 46), count(*) FILTER (WHERE b = 47), count(*) FILTER (WHERE b = 48), count(*) FILTER (WHERE b = 49), count(*) FILTER (WHERE b = 50), count(*) FILTER (WHERE b = 51), count(*) FILTER (WHERE b = 52)
FROM used_before WHERE duration_ms IS NOT NULL GROUP BY 1, 2, 3;
