-- Slack notifications: a durable outbox written in the same transaction as the event it reports,
-- and the message each request's thread hangs from.

CREATE TABLE slack_outbox (
    seq             bigserial PRIMARY KEY,
    id              uuid NOT NULL UNIQUE,
    -- One row per event and kind of delivery: an event recorded twice is delivered once.
    dedupe_key      text NOT NULL UNIQUE,
    request_id      uuid NOT NULL REFERENCES requests (id),
    -- 'post' (a message in the channel or the request's thread), 'update' (the request's first
    -- message, redrawn with the current status), 'dm' (a direct message to the author).
    kind            text NOT NULL CHECK (kind IN ('post', 'update', 'dm')),
    -- JSON: what happened (domain::slack::Event).
    event           text NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'skipped', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- While 'sending': the replica sending it holds it until then.
    lease_until     timestamptz,
    last_error      text,
    -- JSON: every attempt, [{at, error, retry_at}].
    history         text NOT NULL DEFAULT '[]',
    channel         text,
    ts              text,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX slack_outbox_due ON slack_outbox (state, next_attempt_at);
CREATE INDEX slack_outbox_request ON slack_outbox (request_id, seq);

CREATE TABLE slack_threads (
    request_id uuid PRIMARY KEY REFERENCES requests (id),
    channel    text NOT NULL,
    ts         text NOT NULL,
    created_at timestamptz NOT NULL
);
