-- Case-bound access: access tiers on roles, the case system's answer and a second person's
-- approval on sessions, and the durable outbox of events delivered to webhooks.

-- Customers whose support sessions all wait for a second person's approval.
ALTER TABLE customer ADD COLUMN requires_approval boolean NOT NULL DEFAULT false;

-- A role's named tiers: {"write": {"session_policy": {...}, "policy_arns": [...],
-- "max_duration_seconds": 3600, "requires_approval": true}}, checked by the server
-- (server/src/domain/tier.rs) before it is stored.
ALTER TABLE role ADD COLUMN tiers jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(tiers) = 'object');

ALTER TABLE session
    ADD COLUMN tier             text CHECK (tier ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    ADD COLUMN case_title       text CHECK (char_length(case_title) <= 300),
    ADD COLUMN case_url         text CHECK (char_length(case_url) <= 2048),
    ADD COLUMN case_check       text CHECK (case_check IN ('open', 'unavailable')),
    -- The session's length; with an approval, `expires_at` is set from it when approved
    -- (until then `expires_at` is when the request itself expires).
    ADD COLUMN duration_seconds integer CHECK (duration_seconds BETWEEN 60 AND 43200),
    ADD COLUMN approval         text CHECK (approval IN ('pending', 'approved', 'denied')),
    ADD COLUMN decided_by       text CHECK (char_length(decided_by) BETWEEN 1 AND 128),
    ADD COLUMN decided_at       timestamptz,
    ADD COLUMN decision_comment text CHECK (char_length(decision_comment) <= 500),
    -- When the `session.ended` event was written (the expiry sweeper's mark).
    ADD COLUMN ended_event_at   timestamptz,
    ADD CONSTRAINT session_decided CHECK (
        (approval IS NULL OR approval = 'pending') = (decided_by IS NULL AND decided_at IS NULL)),
    ADD CONSTRAINT session_decided_not_self CHECK (decided_by IS DISTINCT FROM requested_by);

-- Sessions that ended before events existed have nothing to announce (live ones will).
UPDATE session SET ended_event_at = now()
WHERE ended_event_at IS NULL AND (expires_at <= now() OR revoked_at IS NOT NULL);
CREATE INDEX session_unended ON session (expires_at)
    WHERE ended_event_at IS NULL AND revoked_at IS NULL;
CREATE INDEX session_pending ON session (created_at) WHERE approval = 'pending';

-- Events, written in the same transaction as the change they describe.
CREATE TABLE event_outbox (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    type         text        NOT NULL CHECK (type ~ '^[a-z]+\.[a-z_]+$'),
    -- Deliveries of events with one key reach each webhook in the order they were written
    -- (`session:<id>`, `case:<id>`).
    ordering_key text        NOT NULL,
    session_id   uuid,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_outbox_session ON event_outbox (session_id) WHERE session_id IS NOT NULL;

-- One row per event and configured webhook that receives it.
CREATE TABLE webhook_delivery (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event           bigint      NOT NULL REFERENCES event_outbox (id) ON DELETE CASCADE,
    webhook         text        NOT NULL CHECK (char_length(webhook) BETWEEN 1 AND 64),
    ordering_key    text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- An instance is delivering it until then (another takes over after a crash).
    leased_until    timestamptz,
    last_status     integer,
    last_error      text CHECK (char_length(last_error) <= 500),
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event, webhook)
);
CREATE INDEX webhook_delivery_due ON webhook_delivery (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_delivery_order ON webhook_delivery (webhook, ordering_key, id)
    WHERE state = 'pending';
CREATE INDEX webhook_delivery_state ON webhook_delivery (webhook, state);

-- Cases closed through the API: no session opens on them afterwards, unless the case system
-- answers "open" to a question asked after the close (the case was reopened there).
CREATE TABLE closed_case (
    case_id   text        PRIMARY KEY CHECK (case_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$'),
    closed_at timestamptz NOT NULL,
    closed_by text        NOT NULL CHECK (char_length(closed_by) BETWEEN 1 AND 128)
);

-- Signatures of case-system requests already acted on: a replay within the five minutes a
-- signature is accepted is refused.
CREATE TABLE used_signature (
    signature   text        PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Usage reports by tier (`group_by=tier`): the rollups carry the session's tier ('' for the
-- base grant), taken from the credential request's audit detail.
ALTER TABLE usage_rollup ADD COLUMN tier text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE usage_rollup DROP CONSTRAINT usage_rollup_pkey,
    ADD PRIMARY KEY (day, customer_id, profile, case_id, actor, tier);
ALTER TABLE usage_profile_duration ADD COLUMN tier text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE usage_profile_duration DROP CONSTRAINT usage_profile_duration_pkey,
    ADD PRIMARY KEY (day, customer_id, profile, case_id, tier);
