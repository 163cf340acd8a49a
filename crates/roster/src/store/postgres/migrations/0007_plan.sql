-- The sync plan finds, per mirror tenant, the cohorts with several accounts there, and a cohort's
-- accounts in one tenant, from this index (a range of one source system, in prime order).
CREATE INDEX resource_source_prime_idx ON resource (source_system, prime_id)
    WHERE prime_id IS NOT NULL AND NOT deleted;
