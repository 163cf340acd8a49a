-- Roster's records on PostgreSQL: the seed's model, every field, plus external ids and account state.

CREATE TABLE resource (
    id            uuid PRIMARY KEY,
    type          smallint NOT NULL,
    typename      text NOT NULL,
    subtype       smallint,
    source_system text NOT NULL,
    identifier    text,
    external_id   text,
    displayname   text,
    description   text,
    notes         text,
    tags          text[] NOT NULL DEFAULT '{}',
    active        boolean NOT NULL DEFAULT true,
    expires_at    timestamptz,
    deleted       boolean NOT NULL DEFAULT false,
    deleted_at    timestamptz,
    created       timestamptz NOT NULL,
    modified      timestamptz NOT NULL,
    CONSTRAINT resource_deleted_at_check CHECK (deleted = (deleted_at IS NOT NULL))
);

-- Identifier and external id are unique per source among live resources (a deleted one frees its key).
CREATE UNIQUE INDEX resource_identifier_key
    ON resource (source_system, identifier, type) WHERE NOT deleted AND identifier IS NOT NULL;
CREATE UNIQUE INDEX resource_external_id_key
    ON resource (source_system, external_id) WHERE NOT deleted AND external_id IS NOT NULL;
CREATE INDEX resource_tags_idx ON resource USING gin (tags);

CREATE TABLE operation (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type          text NOT NULL,
    description   text,
    status        text NOT NULL,
    group_id      uuid,
    source_system text,
    added         bigint NOT NULL DEFAULT 0,
    reactivated   bigint NOT NULL DEFAULT 0,
    removed       bigint NOT NULL DEFAULT 0,
    unchanged     bigint NOT NULL DEFAULT 0,
    rejected      bigint NOT NULL DEFAULT 0,
    reason        text,
    created       timestamptz NOT NULL,
    modified      timestamptz NOT NULL,
    completed     timestamptz
);

CREATE INDEX operation_unfinished_idx ON operation (status) WHERE status IN ('running', 'pending');

CREATE TABLE group_member (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text NOT NULL,
    group_id          uuid NOT NULL REFERENCES resource (id),
    member_id         uuid NOT NULL REFERENCES resource (id),
    member_name       text,
    removed           boolean NOT NULL DEFAULT false,
    -- null: as the group's role in a unified group decides; true/false: set explicitly.
    contributing      boolean,
    last_operation_id bigint REFERENCES operation (id),
    created_timestamp timestamptz NOT NULL,
    removed_timestamp timestamptz,
    CONSTRAINT group_member_key UNIQUE (group_id, member_id)
);

-- member → groups (the unique key above serves group → members).
CREATE INDEX group_member_member_idx ON group_member (member_id, group_id);
