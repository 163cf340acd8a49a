-- Relays of the change log to other systems (NATS JetStream): who relays now (a lease, taken over
-- once it expires) and the feed cursor up to which the target has acknowledged everything.
CREATE TABLE relay (
    name     TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    until    TEXT NOT NULL,
    position TEXT NOT NULL DEFAULT ''
);
