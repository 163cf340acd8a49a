-- Webhook subscriptions: each has its own durable cursor into the change feed; a delivery worker
-- claims one at a time with a lease (holder, until) and never holds a transaction across a call.
CREATE TABLE subscription (
    id              uuid PRIMARY KEY,
    url             text NOT NULL,
    format          text NOT NULL,
    source_system   text,
    group_id        uuid,
    kinds           text NOT NULL DEFAULT '',
    secret          text NOT NULL,
    status          text NOT NULL DEFAULT 'active',
    cursor          text NOT NULL,
    delivered       bigint NOT NULL DEFAULT 0,
    failures        integer NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    next_attempt_at timestamptz NOT NULL,
    holder          text,
    until           timestamptz,
    created         timestamptz NOT NULL
);

CREATE INDEX subscription_due_idx ON subscription (next_attempt_at) WHERE status = 'active';
