-- SCIM: each resource's SCIM document (the attributes roster keeps in no column, extensions
-- included, as the identity provider wrote them), and the lookups identity providers make before
-- every push: a user by userName, a group by displayName, without regard to case.

ALTER TABLE resource ADD COLUMN scim TEXT CHECK (scim IS NULL OR json_valid(scim));

-- Keyed by the lowered value alone, so that only case-insensitive lookups use them (the engine's
-- exact lookups by source and identifier keep to resource_identifier_key).
CREATE INDEX resource_scim_username_idx
    ON resource (lower(identifier)) WHERE NOT deleted AND type = 1;
CREATE INDEX resource_scim_displayname_idx
    ON resource (lower(displayname)) WHERE NOT deleted AND type = 2;
