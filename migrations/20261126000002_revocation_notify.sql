-- Tell every broker instance at once when authorization state changes, so that their
-- short-lived caches (server/src/revocation.rs) drop what is no longer true. Payloads:
-- token:<jti>, session:<id>, customer:<id>. Sent on commit, only if the transaction commits.
CREATE FUNCTION lanyard_notify_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row record := COALESCE(NEW, OLD);
BEGIN
    IF TG_TABLE_NAME = 'issued_token' THEN
        PERFORM pg_notify('lanyard_revocation', 'token:' || row.jti);
    ELSIF TG_TABLE_NAME = 'session' THEN
        PERFORM pg_notify('lanyard_revocation', 'session:' || row.id);
    ELSIF TG_TABLE_NAME = 'customer' THEN
        PERFORM pg_notify('lanyard_revocation', 'customer:' || row.id);
    ELSE
        PERFORM pg_notify('lanyard_revocation', 'customer:' || row.customer_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER issued_token_revoked AFTER UPDATE OF revoked_at OR DELETE ON issued_token
    FOR EACH ROW EXECUTE FUNCTION lanyard_notify_revocation();
CREATE TRIGGER session_changed AFTER UPDATE OF revoked_at, expires_at OR DELETE ON session
    FOR EACH ROW EXECUTE FUNCTION lanyard_notify_revocation();
CREATE TRIGGER customer_changed AFTER UPDATE OR DELETE ON customer
    FOR EACH ROW EXECUTE FUNCTION lanyard_notify_revocation();
CREATE TRIGGER role_changed AFTER UPDATE OR DELETE ON role
    FOR EACH ROW EXECUTE FUNCTION lanyard_notify_revocation();
