-- A role's required actions (`s3:GetObject`, …) and what iam:SimulatePrincipalPolicy on the
-- role last said about them: {"checked_at": …, "results": [{"action", "decision"}],
-- "error": …}.
ALTER TABLE role
    ADD COLUMN required_actions text[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(required_actions) <= 100),
    ADD COLUMN validation jsonb;
