-- Roles: the IAM roles a customer created for the broker, and what their last check found.
CREATE TABLE role (
    customer_id         text        NOT NULL REFERENCES customer (id) ON DELETE CASCADE,
    name                text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    role_arn            text        NOT NULL
                                    CHECK (char_length(role_arn) <= 2048
                                           AND role_arn ~ '^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$'),
    session_kinds       text[]      NOT NULL DEFAULT ARRAY['support', 'customer']
                                    CHECK (cardinality(session_kinds) >= 1
                                           AND session_kinds <@ ARRAY['support', 'customer']),
    max_session_seconds integer     NOT NULL DEFAULT 3600
                                    CHECK (max_session_seconds BETWEEN 900 AND 43200),
    session_policy      jsonb,
    status              text        NOT NULL DEFAULT 'unverified'
                                    CHECK (status IN ('unverified', 'verified', 'failed')),
    trust_check         text        NOT NULL DEFAULT 'not_run'
                                    CHECK (trust_check IN ('not_run', 'passed', 'open', 'inconclusive')),
    verified_at         timestamptz,
    verified_external_id text       REFERENCES external_id (value),
    last_checked_at     timestamptz,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, name),
    CHECK ((status = 'verified') = (verified_at IS NOT NULL))
);
