-- How many changes a webhook delivery carries at most (one request, in order, acknowledged as a
-- whole); an RFC 8935 (`scim`) subscription carries one security event per request.
ALTER TABLE subscription ADD COLUMN batch_size integer NOT NULL DEFAULT 100;
UPDATE subscription SET batch_size = 1 WHERE format = 'scim';
