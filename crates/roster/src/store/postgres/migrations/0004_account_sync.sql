-- Account sync restores the most recently deleted resource a line names: find deleted resources
-- by their keys without scanning the source.
CREATE INDEX resource_deleted_external_id_idx
    ON resource (source_system, external_id, deleted_at) WHERE deleted AND external_id IS NOT NULL;
CREATE INDEX resource_deleted_identifier_idx
    ON resource (source_system, identifier, type, deleted_at) WHERE deleted AND identifier IS NOT NULL;
-- Has the source deleted resources at all?
CREATE INDEX resource_deleted_source_idx ON resource (source_system) WHERE deleted;
