-- API tokens (only the SHA-256 of each secret is stored) and the audit trail of every write.

CREATE TABLE api_token (
    id            BLOB PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    secret_hash   BLOB NOT NULL,
    scopes        TEXT NOT NULL CHECK (json_valid(scopes)),
    source_system TEXT,
    expires_at    TEXT,
    created       TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT,
    CONSTRAINT api_token_name_key UNIQUE (name),
    CONSTRAINT api_token_secret_hash_key UNIQUE (secret_hash)
);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    token_id   BLOB,
    token_name TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT,
    detail     TEXT CHECK (detail IS NULL OR json_valid(detail))
);

CREATE INDEX audit_target_idx ON audit (target, id);
CREATE INDEX audit_token_idx ON audit (token_name, id);
CREATE INDEX audit_at_idx ON audit (at);
