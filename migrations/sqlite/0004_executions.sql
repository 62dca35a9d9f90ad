-- Executions of approved requests (at most one per approved revision) and their stored results.

CREATE TABLE executions (
    id            BLOB PRIMARY KEY NOT NULL,
    request_id    BLOB NOT NULL REFERENCES requests (id),
    revision      INTEGER NOT NULL,
    revision_hash TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'interrupted')),
    -- The portal process running it, and until when its claim holds.
    owner         TEXT NOT NULL,
    lease_until   TEXT NOT NULL,
    -- PostgreSQL targets: the transaction id recorded just before COMMIT, to learn the outcome
    -- after a crash without writing anything to the target.
    target_txid   TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    -- JSON: {kind, message, sqlstate, statement} or NULL.
    error         TEXT,
    -- JSON: the per-statement report.
    statements    TEXT NOT NULL,
    UNIQUE (request_id, revision)
);
CREATE INDEX executions_status ON executions (status, lease_until);

CREATE TABLE execution_results (
    execution_id    BLOB NOT NULL REFERENCES executions (id),
    statement_index INTEGER NOT NULL,
    columns         TEXT NOT NULL,
    rows            TEXT NOT NULL,
    row_count       INTEGER NOT NULL,
    truncated       BOOLEAN NOT NULL,
    PRIMARY KEY (execution_id, statement_index)
);
