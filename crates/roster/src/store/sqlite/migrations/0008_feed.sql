-- A resource's history finds its changes as resource, group or member.
CREATE INDEX change_member_idx ON change (member_id, seq) WHERE member_id IS NOT NULL;

-- The oldest position the log still holds in full: a cursor before it answers 410 Gone.
CREATE TABLE change_horizon (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    xid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at  TEXT NOT NULL
);
