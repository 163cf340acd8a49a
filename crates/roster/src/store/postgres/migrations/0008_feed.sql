-- The change feed reads the log in (xid, seq) order below the visibility fence: that order is
-- the key (seq alone stays unique), so capture maintains one index for it, not two. A resource's
-- history finds its changes as resource, group or member.
ALTER TABLE change DROP CONSTRAINT change_pkey;
ALTER TABLE change ADD PRIMARY KEY (xid, seq);
CREATE INDEX change_member_idx ON change (member_id, seq) WHERE member_id IS NOT NULL;

-- The oldest position the log still holds in full: a cursor before it answers 410 Gone.
CREATE TABLE change_horizon (
    id  smallint PRIMARY KEY CHECK (id = 1),
    xid xid8 NOT NULL,
    seq bigint NOT NULL,
    at  timestamptz NOT NULL
);
