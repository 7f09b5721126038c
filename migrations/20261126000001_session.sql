-- Sessions: a grant of access to one customer role for a bounded time.
CREATE TABLE session (
    id                      uuid        PRIMARY KEY,
    kind                    text        NOT NULL CHECK (kind IN ('support', 'customer')),
    customer_id             text        NOT NULL,
    role_name               text        NOT NULL,
    case_id                 text        CHECK (case_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$'),
    reason                  text        CHECK (char_length(reason) BETWEEN 1 AND 500),
    profile_name            text        NOT NULL CHECK (char_length(profile_name) <= 200),
    requested_by            text        NOT NULL CHECK (char_length(requested_by) BETWEEN 1 AND 128),
    requested_by_role       text        NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    expires_at              timestamptz NOT NULL,
    revoked_at              timestamptz,
    revoked_by              text,
    -- The latest expiry of credentials issued for this session: after a revocation, what
    -- was already handed out keeps working until then (STS cannot recall credentials).
    credentials_valid_until timestamptz,
    -- RESTRICT: sessions and what was issued for them are the trail CloudTrail entries lead
    -- back to; deleting a role must not erase it.
    FOREIGN KEY (customer_id, role_name) REFERENCES role (customer_id, name) ON DELETE RESTRICT,
    CHECK (expires_at > created_at),
    CHECK (kind <> 'support' OR (case_id IS NOT NULL AND reason IS NOT NULL)),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX session_customer ON session (customer_id, created_at);
CREATE INDEX session_case ON session (case_id) WHERE case_id IS NOT NULL;
CREATE INDEX session_requester ON session (requested_by, kind, customer_id, role_name, expires_at);

-- One row per AssumeRole the broker made for a session: enough to trace a CloudTrail entry
-- (by AccessKeyId) back to the session, case and person. Never the secret or the token.
CREATE TABLE credential_issue (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id    uuid        NOT NULL REFERENCES session (id) ON DELETE RESTRICT,
    access_key_id text        NOT NULL CHECK (access_key_id ~ '^[A-Z0-9]{16,128}$'),
    expires_at    timestamptz NOT NULL,
    actor         text        NOT NULL,
    request_id    text,
    issued_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credential_issue_session ON credential_issue (session_id);
CREATE INDEX credential_issue_access_key ON credential_issue (access_key_id);
