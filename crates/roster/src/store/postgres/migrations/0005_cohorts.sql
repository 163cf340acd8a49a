-- Cohorts and prime identities: every resource may hang under one prime. An account's prime is
-- its cohort; a prime's prime is its parent; the root is the prime with none.
ALTER TABLE resource ADD COLUMN prime_id uuid REFERENCES resource (id);
CREATE INDEX resource_prime_idx ON resource (prime_id, source_system) WHERE prime_id IS NOT NULL;

-- The member groups of a unified group, each with its role.
CREATE TABLE unified_link (
    unified_id uuid NOT NULL REFERENCES resource (id),
    group_id   uuid NOT NULL REFERENCES resource (id),
    role       text NOT NULL CHECK (role IN ('authoritative', 'mirror')),
    created    timestamptz NOT NULL,
    PRIMARY KEY (unified_id, group_id)
);
CREATE INDEX unified_link_group_idx ON unified_link (group_id);
