-- Groups, for the walks of nested groups that start from every group (the cycles).
CREATE INDEX resource_group_idx ON resource (id) WHERE type = 2 AND NOT deleted;
