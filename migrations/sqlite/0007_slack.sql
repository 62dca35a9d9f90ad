-- Slack notifications: a durable outbox written in the same transaction as the event it reports,
-- and the message each request's thread hangs from.

CREATE TABLE slack_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              BLOB NOT NULL UNIQUE,
    -- One row per event and kind of delivery: an event recorded twice is delivered once.
    dedupe_key      TEXT NOT NULL UNIQUE,
    request_id      BLOB NOT NULL REFERENCES requests (id),
    -- 'post' (a message in the channel or the request's thread), 'update' (the request's first
    -- message, redrawn with the current status), 'dm' (a direct message to the author).
    kind            TEXT NOT NULL CHECK (kind IN ('post', 'update', 'dm')),
    -- JSON: what happened (domain::slack::Event).
    event           TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'skipped', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    -- While 'sending': the replica sending it holds it until then.
    lease_until     TEXT,
    last_error      TEXT,
    -- JSON: every attempt, [{at, error, retry_at}].
    history         TEXT NOT NULL DEFAULT '[]',
    channel         TEXT,
    ts              TEXT,
    created_at      TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX slack_outbox_due ON slack_outbox (state, next_attempt_at);
CREATE INDEX slack_outbox_request ON slack_outbox (request_id, seq);

CREATE TABLE slack_threads (
    request_id BLOB PRIMARY KEY NOT NULL REFERENCES requests (id),
    channel    TEXT NOT NULL,
    ts         TEXT NOT NULL,
    created_at TEXT NOT NULL
);
