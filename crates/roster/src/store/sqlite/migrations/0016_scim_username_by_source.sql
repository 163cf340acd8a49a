-- SCIM's userName check (`source_system = $1 AND lower(identifier) = lower($2)`) finds its row
-- through both columns, whatever the planner's statistics say. Keyed by the lowered name alone,
-- a source that the statistics (taken before it filled) showed as empty was read row by row
-- through its source_system instead, so each create cost more until the next ANALYZE.
DROP INDEX resource_scim_username_idx;
CREATE INDEX resource_scim_username_idx
    ON resource (source_system, lower(identifier)) WHERE NOT deleted AND type = 1;
