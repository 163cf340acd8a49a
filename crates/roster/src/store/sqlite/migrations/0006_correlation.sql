-- Correlation: a link made or removed by hand is pinned, and rules leave it alone.
ALTER TABLE resource ADD COLUMN prime_pinned INTEGER NOT NULL DEFAULT 0;

CREATE TABLE correlation_rule (
    id                   BLOB PRIMARY KEY NOT NULL,
    name                 TEXT NOT NULL UNIQUE,
    source_system        TEXT NOT NULL,
    target_source_system TEXT NOT NULL,
    normalize            TEXT NOT NULL,
    created              TEXT NOT NULL,
    modified             TEXT NOT NULL
);

CREATE TABLE correlation_case (
    operation_id INTEGER NOT NULL REFERENCES operation (id),
    account_id   BLOB NOT NULL REFERENCES resource (id),
    situation    TEXT NOT NULL,
    prime_id     BLOB,
    candidates   TEXT NOT NULL,
    PRIMARY KEY (operation_id, account_id)
);
CREATE INDEX correlation_case_account_idx ON correlation_case (account_id);
