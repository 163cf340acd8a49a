-- API tokens (only the SHA-256 of each secret is stored) and the audit trail of every write.

CREATE TABLE api_token (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    secret_hash   bytea NOT NULL,
    scopes        text[] NOT NULL,
    source_system text,
    expires_at    timestamptz,
    created       timestamptz NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    -- Names are never reused, so the audit trail names one token unambiguously.
    CONSTRAINT api_token_name_key UNIQUE (name),
    CONSTRAINT api_token_secret_hash_key UNIQUE (secret_hash)
);

CREATE TABLE audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    token_id   uuid,
    token_name text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    request_id text,
    detail     jsonb
);

CREATE INDEX audit_target_idx ON audit (target, id);
CREATE INDEX audit_token_idx ON audit (token_name, id);
CREATE INDEX audit_at_idx ON audit (at);
