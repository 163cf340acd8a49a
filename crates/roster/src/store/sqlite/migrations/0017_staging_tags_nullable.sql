-- Nothing to change on SQLite, which keeps the numbering shared with PostgreSQL: there, resource
-- staging tables take NULL tags from 0017 on. SQLite cannot drop a column's NOT NULL without
-- rebuilding its table, so it stages an absent list as an empty one instead (store/staging.rs).
SELECT 1;
