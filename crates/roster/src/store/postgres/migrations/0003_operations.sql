-- The operations engine: operation parameters, phases and leases; rejected upload lines; the last
-- full-update applied to each group; and the change log, written in the same transaction as
-- every change.

ALTER TABLE operation
    ADD COLUMN target           text NOT NULL DEFAULT 'memberships',
    ADD COLUMN params           jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN phase            text,
    ADD COLUMN token_name       text,
    ADD COLUMN updated          bigint NOT NULL DEFAULT 0,
    ADD COLUMN lease_owner      text,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN attempts         integer NOT NULL DEFAULT 0;

-- Claims look for queued work and expired leases.
CREATE INDEX operation_phase_idx ON operation (phase, id) WHERE phase IS NOT NULL;
CREATE INDEX operation_group_idx ON operation (group_id, id) WHERE group_id IS NOT NULL;

CREATE TABLE operation_rejection (
    operation_id bigint NOT NULL REFERENCES operation (id),
    chunk        integer NOT NULL,
    line         integer NOT NULL,
    reason       text NOT NULL,
    PRIMARY KEY (operation_id, chunk, line)
);

CREATE TABLE operation_chunk (
    operation_id bigint NOT NULL REFERENCES operation (id),
    chunk        integer NOT NULL,
    lines        bigint NOT NULL,
    received     timestamptz NOT NULL,
    PRIMARY KEY (operation_id, chunk)
);

-- The newest full-update applied to each group: "confirmed at" stays answerable although confirmed
-- memberships are not rewritten, and an older full-update cannot undo a newer one.
CREATE TABLE group_sync (
    group_id     uuid PRIMARY KEY REFERENCES resource (id),
    operation_id bigint NOT NULL REFERENCES operation (id),
    completed    timestamptz NOT NULL
);

-- Every change, in the transaction that made it. `xid` fences readers from transactions that
-- took a sequence number but have not committed yet.
CREATE TABLE change (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at            timestamptz NOT NULL,
    kind          smallint NOT NULL,
    resource_id   uuid,
    group_id      uuid,
    member_id     uuid,
    source_system text,
    operation_id  bigint,
    token_name    text,
    attrs         jsonb
);

CREATE INDEX change_resource_idx ON change (resource_id, seq) WHERE resource_id IS NOT NULL;
CREATE INDEX change_group_idx ON change (group_id, seq) WHERE group_id IS NOT NULL;
