-- Executions of approved requests (at most one per approved revision) and their stored results.

CREATE TABLE executions (
    id            uuid PRIMARY KEY,
    request_id    uuid NOT NULL REFERENCES requests (id),
    revision      integer NOT NULL,
    revision_hash text NOT NULL,
    status        text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'interrupted')),
    -- The portal process running it, and until when its claim holds.
    owner         text NOT NULL,
    lease_until   timestamptz NOT NULL,
    -- PostgreSQL targets: the transaction id recorded just before COMMIT, to learn the outcome
    -- after a crash without writing anything to the target.
    target_txid   text,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    -- JSON: {kind, message, sqlstate, statement} or NULL.
    error         text,
    -- JSON: the per-statement report.
    statements    text NOT NULL,
    UNIQUE (request_id, revision)
);
CREATE INDEX executions_status ON executions (status, lease_until);

CREATE TABLE execution_results (
    execution_id    uuid NOT NULL REFERENCES executions (id),
    statement_index integer NOT NULL,
    columns         text NOT NULL,
    rows            text NOT NULL,
    row_count       integer NOT NULL,
    truncated       boolean NOT NULL,
    PRIMARY KEY (execution_id, statement_index)
);
