-- Identity lifecycle: why an account is inactive, the sources whose records drive it (an HR
-- system's termination deactivates the whole identity), the accounts a lifecycle operation acts
-- on (listed while it waits for approval and after it ran), and the index the expiry sweeper reads.
ALTER TABLE resource ADD COLUMN deactivation_reason TEXT;
CREATE INDEX resource_expiry_idx ON resource (expires_at)
    WHERE active AND NOT deleted AND expires_at IS NOT NULL;

CREATE TABLE source (
    source_system       TEXT PRIMARY KEY NOT NULL,
    lifecycle_authority INTEGER NOT NULL DEFAULT 0,
    modified            TEXT NOT NULL
);

CREATE TABLE lifecycle_target (
    operation_id INTEGER NOT NULL REFERENCES operation (id),
    resource_id  BLOB NOT NULL,
    PRIMARY KEY (operation_id, resource_id)
);
