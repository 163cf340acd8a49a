-- The change feed reads the log in commit order: every transaction that wrote changes takes the
-- next commit position just before it commits, under a short lock held until the commit is
-- visible (see docs/changes.md). Its changes are found by transaction id: (xid, seq) is the key
-- (seq alone stays unique), so capture maintains one index for it. A resource's history finds its
-- changes as resource, group or member.
ALTER TABLE change DROP CONSTRAINT change_pkey;
ALTER TABLE change ADD PRIMARY KEY (xid, seq);
CREATE INDEX change_member_idx ON change (member_id, seq) WHERE member_id IS NOT NULL;

CREATE SEQUENCE change_commit_seq;
CREATE TABLE change_commit (
    xid      xid8 PRIMARY KEY,
    position bigint NOT NULL UNIQUE
);

-- The oldest position the log still holds in full: a cursor before it answers 410 Gone.
CREATE TABLE change_horizon (
    id       smallint PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL,
    seq      bigint NOT NULL,
    at       timestamptz NOT NULL
);
