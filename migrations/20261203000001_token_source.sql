-- Tokens from an exchange (POST /v1/auth/token) record the trusted OpenID issuer and the
-- subject it vouched for; tokens issued by an operator have neither.
ALTER TABLE issued_token
    ADD COLUMN source_issuer  text,
    ADD COLUMN source_subject text,
    ADD CONSTRAINT issued_token_source_both
        CHECK ((source_issuer IS NULL) = (source_subject IS NULL));
