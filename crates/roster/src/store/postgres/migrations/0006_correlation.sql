-- Correlation: a link made or removed by hand is pinned, and rules leave it alone.
ALTER TABLE resource ADD COLUMN prime_pinned boolean NOT NULL DEFAULT false;

CREATE TABLE correlation_rule (
    id                   uuid PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    source_system        text NOT NULL,
    target_source_system text NOT NULL,
    normalize            text NOT NULL,
    created              timestamptz NOT NULL,
    modified             timestamptz NOT NULL
);

-- Where each run left each account (candidates: a JSON array of resource ids).
CREATE TABLE correlation_case (
    operation_id bigint NOT NULL REFERENCES operation (id),
    account_id   uuid NOT NULL REFERENCES resource (id),
    situation    text NOT NULL,
    prime_id     uuid,
    candidates   text NOT NULL,
    PRIMARY KEY (operation_id, account_id)
);
CREATE INDEX correlation_case_account_idx ON correlation_case (account_id);
