-- The revocation epoch a client checks before serving cached credentials
-- (GET /v1/auth/whoami): the latest revocation among the sessions a subject opened.
CREATE INDEX session_revoked_per_requester ON session (requested_by, revoked_at)
    WHERE revoked_at IS NOT NULL;
