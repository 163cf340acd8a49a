-- Roster's records on SQLite: the same model as on PostgreSQL with the closest types
-- (uuid → 16-byte blob, text[] → JSON array, timestamptz → RFC 3339 text, boolean → integer).

CREATE TABLE resource (
    id            BLOB PRIMARY KEY NOT NULL,
    type          INTEGER NOT NULL,
    typename      TEXT NOT NULL,
    subtype       INTEGER,
    source_system TEXT NOT NULL,
    identifier    TEXT,
    external_id   TEXT,
    displayname   TEXT,
    description   TEXT,
    notes         TEXT,
    tags          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    active        INTEGER NOT NULL DEFAULT 1,
    expires_at    TEXT,
    deleted       INTEGER NOT NULL DEFAULT 0,
    deleted_at    TEXT,
    created       TEXT NOT NULL,
    modified      TEXT NOT NULL,
    CONSTRAINT resource_deleted_at_check CHECK (deleted = (deleted_at IS NOT NULL))
);

CREATE UNIQUE INDEX resource_identifier_key
    ON resource (source_system, identifier, type) WHERE NOT deleted AND identifier IS NOT NULL;
CREATE UNIQUE INDEX resource_external_id_key
    ON resource (source_system, external_id) WHERE NOT deleted AND external_id IS NOT NULL;

CREATE TABLE operation (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    type          TEXT NOT NULL,
    description   TEXT,
    status        TEXT NOT NULL,
    group_id      BLOB,
    source_system TEXT,
    added         INTEGER NOT NULL DEFAULT 0,
    reactivated   INTEGER NOT NULL DEFAULT 0,
    removed       INTEGER NOT NULL DEFAULT 0,
    unchanged     INTEGER NOT NULL DEFAULT 0,
    rejected      INTEGER NOT NULL DEFAULT 0,
    reason        TEXT,
    created       TEXT NOT NULL,
    modified      TEXT NOT NULL,
    completed     TEXT
);

CREATE INDEX operation_unfinished_idx ON operation (status) WHERE status IN ('running', 'pending');

CREATE TABLE group_member (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    source            TEXT NOT NULL,
    group_id          BLOB NOT NULL REFERENCES resource (id),
    member_id         BLOB NOT NULL REFERENCES resource (id),
    member_name       TEXT,
    removed           INTEGER NOT NULL DEFAULT 0,
    contributing      INTEGER,
    last_operation_id INTEGER REFERENCES operation (id),
    created_timestamp TEXT NOT NULL,
    removed_timestamp TEXT,
    CONSTRAINT group_member_key UNIQUE (group_id, member_id)
);

CREATE INDEX group_member_member_idx ON group_member (member_id, group_id);
