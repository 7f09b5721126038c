-- Customers: one row per SaaS customer whose AWS account the broker reaches.
CREATE TABLE customer (
    id           text        PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    display_name text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    status       text        NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'active', 'disabled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz,
    CHECK ((status = 'disabled') = (disabled_at IS NOT NULL))
);
