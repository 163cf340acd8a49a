-- Webhook subscriptions: each has its own durable cursor into the change feed; a delivery worker
-- claims one at a time with a lease (holder, until) and never holds a transaction across a call.
CREATE TABLE subscription (
    id              BLOB PRIMARY KEY,
    url             TEXT NOT NULL,
    format          TEXT NOT NULL,
    source_system   TEXT,
    group_id        BLOB,
    kinds           TEXT NOT NULL DEFAULT '',
    secret          TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'active',
    cursor          TEXT NOT NULL,
    delivered       INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_attempt_at TEXT,
    next_attempt_at TEXT NOT NULL,
    holder          TEXT,
    until           TEXT,
    created         TEXT NOT NULL
);

CREATE INDEX subscription_due_idx ON subscription (next_attempt_at) WHERE status = 'active';
