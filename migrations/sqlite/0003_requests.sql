-- Requests, their revisions (each with the hash an approval binds to) and reviews.

CREATE TABLE requests (
    id                BLOB PRIMARY KEY NOT NULL,
    author_id         BLOB NOT NULL REFERENCES users (id),
    last_editor_id    BLOB NOT NULL REFERENCES users (id),
    pod_id            BLOB NOT NULL REFERENCES pods (id),
    -- The current revision's target and kind, copied here for filtering.
    instance_id       BLOB NOT NULL REFERENCES instances (id),
    database_name     TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('query', 'script')),
    mode              TEXT NOT NULL CHECK (mode IN ('read', 'write')),
    justification     TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'changes_requested', 'approved', 'rejected',
                          'cancelled', 'expired', 'running', 'succeeded', 'failed', 'timed_out', 'interrupted')),
    revision          INTEGER NOT NULL,
    revision_hash     TEXT NOT NULL,
    status_changed_at TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX requests_pod_status ON requests (pod_id, status);
CREATE INDEX requests_author ON requests (author_id, created_at);
CREATE INDEX requests_instance ON requests (instance_id);
CREATE INDEX requests_status ON requests (status, status_changed_at);

CREATE TABLE request_revisions (
    request_id    BLOB NOT NULL REFERENCES requests (id),
    number        INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    mode          TEXT NOT NULL,
    instance_id   BLOB NOT NULL,
    database_name TEXT NOT NULL,
    content       TEXT NOT NULL,
    justification TEXT NOT NULL,
    -- The effective limits at the time, as JSON: part of what the hash covers.
    limits        TEXT NOT NULL,
    hash          TEXT NOT NULL,
    editor_id     BLOB NOT NULL REFERENCES users (id),
    created_at    TEXT NOT NULL,
    PRIMARY KEY (request_id, number)
);

CREATE TABLE reviews (
    id            BLOB PRIMARY KEY NOT NULL,
    request_id    BLOB NOT NULL REFERENCES requests (id),
    revision      INTEGER NOT NULL,
    revision_hash TEXT NOT NULL,
    reviewer_id   BLOB NOT NULL REFERENCES users (id),
    decision      TEXT NOT NULL CHECK (decision IN ('approve', 'reject', 'request_changes')),
    comment       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    -- Set when a new revision voids the review.
    voided_at     TEXT,
    -- A person counts once per revision.
    UNIQUE (request_id, revision, reviewer_id)
);
CREATE INDEX reviews_request ON reviews (request_id, revision);
CREATE INDEX reviews_reviewer ON reviews (reviewer_id);
