-- API tokens the broker signed. A token is honoured only while its row exists, unexpired and
-- unrevoked, so revocation is one UPDATE seen by every instance.
CREATE TABLE issued_token (
    jti         uuid        PRIMARY KEY,
    subject     text        NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 128),
    role        text        NOT NULL CHECK (role IN ('admin', 'support', 'service', 'auditor')),
    customers   text[],
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CHECK (expires_at > issued_at)
);
