-- Relays of the change log to other systems (NATS JetStream): who relays now (a lease, taken over
-- once it expires) and the feed cursor up to which the target has acknowledged everything.
CREATE TABLE relay (
    name     text PRIMARY KEY,
    holder   text NOT NULL,
    until    timestamptz NOT NULL,
    position text NOT NULL DEFAULT ''
);
