-- A token bound to a source system may also have its reads bound to it: 'bound' reads only that
-- source's data, 'all' (every token created before) reads every source's.
ALTER TABLE api_token ADD COLUMN read_scope text NOT NULL DEFAULT 'all'
    CONSTRAINT api_token_read_scope_check CHECK (read_scope IN ('all', 'bound'));
