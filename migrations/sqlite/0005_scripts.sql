-- Scripts: limits in milliseconds with the sandbox's own limits, and what a script run leaves
-- behind (returned value, console output, every database call).

-- Limits are stored as JSON; rename and rescale the old keys and add the new ones.
UPDATE request_revisions SET limits = json_object(
    'wall_ms', json_extract(limits, '$.wall_secs') * 1000,
    'db_call_ms', json_extract(limits, '$.statement_timeout_secs') * 1000,
    'memory_mb', 128,
    'max_calls', 1000,
    'max_rows', json_extract(limits, '$.max_rows'),
    'max_result_bytes', json_extract(limits, '$.max_result_bytes'),
    'max_log_bytes', 1048576)
WHERE json_extract(limits, '$.wall_secs') IS NOT NULL;

UPDATE instances SET limits = json_remove(
        json_set(limits, '$.wall_ms', json_extract(limits, '$.wall_secs') * 1000), '$.wall_secs')
WHERE json_extract(limits, '$.wall_secs') IS NOT NULL;
UPDATE instances SET limits = json_remove(
        json_set(limits, '$.db_call_ms', json_extract(limits, '$.statement_timeout_secs') * 1000),
        '$.statement_timeout_secs')
WHERE json_extract(limits, '$.statement_timeout_secs') IS NOT NULL;

-- JSON: the value the script returned (NULL when it returned nothing or failed).
ALTER TABLE executions ADD COLUMN result TEXT;
-- JSON: [{level, message, at_ms}] in order.
ALTER TABLE executions ADD COLUMN logs TEXT NOT NULL DEFAULT '[]';
-- JSON: {logs_truncated, peak_memory_bytes, protections} for script runs, else NULL.
ALTER TABLE executions ADD COLUMN sandbox TEXT;

CREATE TABLE execution_calls (
    execution_id BLOB NOT NULL REFERENCES executions (id),
    seq          INTEGER NOT NULL,
    -- `query`, or the MongoDB method (`find`, `updateMany`, …).
    op           TEXT NOT NULL,
    -- The statement (first 500 characters) or the collection.
    target       TEXT NOT NULL,
    at_ms        INTEGER NOT NULL,
    duration_ms  REAL NOT NULL,
    rows         INTEGER NOT NULL,
    error        TEXT,
    PRIMARY KEY (execution_id, seq)
);
