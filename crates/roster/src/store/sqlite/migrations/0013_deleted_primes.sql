-- The sync plan leaves out cohorts whose prime is deleted: it looks those few primes up here
-- rather than each of a unified group's cohorts by key.
CREATE INDEX resource_deleted_prime_idx ON resource (id) WHERE deleted AND type = 3;
