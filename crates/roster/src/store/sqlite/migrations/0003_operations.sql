-- The operations engine: operation parameters, phases and leases; rejected upload lines; the last
-- full-update applied to each group; and the change log, written in the same transaction as
-- every change. SQLite has one writer, so sequence order is commit order.

ALTER TABLE operation ADD COLUMN target TEXT NOT NULL DEFAULT 'memberships';
ALTER TABLE operation ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
ALTER TABLE operation ADD COLUMN phase TEXT;
ALTER TABLE operation ADD COLUMN token_name TEXT;
ALTER TABLE operation ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE operation ADD COLUMN lease_owner TEXT;
ALTER TABLE operation ADD COLUMN lease_expires_at TEXT;
ALTER TABLE operation ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;

CREATE INDEX operation_phase_idx ON operation (phase, id) WHERE phase IS NOT NULL;
CREATE INDEX operation_group_idx ON operation (group_id, id) WHERE group_id IS NOT NULL;

CREATE TABLE operation_rejection (
    operation_id INTEGER NOT NULL REFERENCES operation (id),
    chunk        INTEGER NOT NULL,
    line         INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    PRIMARY KEY (operation_id, chunk, line)
);

CREATE TABLE operation_chunk (
    operation_id INTEGER NOT NULL REFERENCES operation (id),
    chunk        INTEGER NOT NULL,
    lines        INTEGER NOT NULL,
    received     TEXT NOT NULL,
    PRIMARY KEY (operation_id, chunk)
);

CREATE TABLE group_sync (
    group_id     BLOB PRIMARY KEY NOT NULL REFERENCES resource (id),
    operation_id INTEGER NOT NULL REFERENCES operation (id),
    completed    TEXT NOT NULL
);

CREATE TABLE change (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    kind          INTEGER NOT NULL,
    resource_id   BLOB,
    group_id      BLOB,
    member_id     BLOB,
    source_system TEXT,
    operation_id  INTEGER,
    token_name    TEXT,
    attrs         TEXT
);

CREATE INDEX change_resource_idx ON change (resource_id, seq) WHERE resource_id IS NOT NULL;
CREATE INDEX change_group_idx ON change (group_id, seq) WHERE group_id IS NOT NULL;
