-- A resource line that gives no tags is staged with NULL tags (an empty array cost COPY a parse
-- per line). The staging tables of resource operations created before, still uploading or held,
-- take NULL too. A table dropped meanwhile (its operation finished) is skipped.
DO $$
DECLARE
    staging record;
BEGIN
    FOR staging IN
        SELECT c.table_name FROM information_schema.columns c
        WHERE c.table_schema = current_schema() AND c.table_name ~ '^staging_[0-9]+$'
          AND c.column_name = 'tags' AND c.is_nullable = 'NO'
    LOOP
        EXECUTE format('ALTER TABLE IF EXISTS %I ALTER COLUMN tags DROP NOT NULL',
            staging.table_name);
    END LOOP;
END
$$;
