-- Scripts: limits in milliseconds with the sandbox's own limits, and what a script run leaves
-- behind (returned value, console output, every database call).

-- Limits are stored as JSON text; rename and rescale the old keys and add the new ones.
UPDATE request_revisions SET limits = jsonb_build_object(
    'wall_ms', (limits::jsonb ->> 'wall_secs')::bigint * 1000,
    'db_call_ms', (limits::jsonb ->> 'statement_timeout_secs')::bigint * 1000,
    'memory_mb', 128,
    'max_calls', 1000,
    'max_rows', (limits::jsonb ->> 'max_rows')::bigint,
    'max_result_bytes', (limits::jsonb ->> 'max_result_bytes')::bigint,
    'max_log_bytes', 1048576)::text
WHERE limits::jsonb ? 'wall_secs';

UPDATE instances SET limits = ((limits::jsonb - 'wall_secs')
        || jsonb_build_object('wall_ms', (limits::jsonb ->> 'wall_secs')::bigint * 1000))::text
WHERE limits::jsonb ? 'wall_secs';
UPDATE instances SET limits = ((limits::jsonb - 'statement_timeout_secs')
        || jsonb_build_object('db_call_ms', (limits::jsonb ->> 'statement_timeout_secs')::bigint * 1000))::text
WHERE limits::jsonb ? 'statement_timeout_secs';

-- JSON: the value the script returned (NULL when it returned nothing or failed).
ALTER TABLE executions ADD COLUMN result text;
-- JSON: [{level, message, at_ms}] in order.
ALTER TABLE executions ADD COLUMN logs text NOT NULL DEFAULT '[]';
-- JSON: {logs_truncated, peak_memory_bytes, protections} for script runs, else NULL.
ALTER TABLE executions ADD COLUMN sandbox text;

CREATE TABLE execution_calls (
    execution_id uuid NOT NULL REFERENCES executions (id),
    seq          integer NOT NULL,
    -- `query`, or the MongoDB method (`find`, `updateMany`, …).
    op           text NOT NULL,
    -- The statement (first 500 characters) or the collection.
    target       text NOT NULL,
    at_ms        bigint NOT NULL,
    duration_ms  double precision NOT NULL,
    rows         bigint NOT NULL,
    error        text,
    PRIMARY KEY (execution_id, seq)
);
