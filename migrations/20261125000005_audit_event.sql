-- Audit events: one row per security-relevant action, denials and errors included.
-- Rows are only ever inserted; secrets never appear here.
CREATE TABLE audit_event (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    request_id  text,
    actor       text        NOT NULL,
    actor_role  text,
    action      text        NOT NULL,
    customer_id text,
    role_name   text,
    session_id  uuid,
    case_id     text,
    profile     text,
    source_ip   inet,
    user_agent  text,
    outcome     text        NOT NULL CHECK (outcome IN ('success', 'denied', 'error')),
    error_code  text,
    duration_ms integer     CHECK (duration_ms >= 0),
    cache_hit   boolean,
    detail      jsonb
);
CREATE INDEX audit_event_occurred_at ON audit_event (occurred_at);
CREATE INDEX audit_event_customer ON audit_event (customer_id, occurred_at);
