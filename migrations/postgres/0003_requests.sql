-- Requests, their revisions (each with the hash an approval binds to) and reviews.

CREATE TABLE requests (
    id                uuid PRIMARY KEY,
    author_id         uuid NOT NULL REFERENCES users (id),
    last_editor_id    uuid NOT NULL REFERENCES users (id),
    pod_id            uuid NOT NULL REFERENCES pods (id),
    -- The current revision's target and kind, copied here for filtering.
    instance_id       uuid NOT NULL REFERENCES instances (id),
    database_name     text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('query', 'script')),
    mode              text NOT NULL CHECK (mode IN ('read', 'write')),
    justification     text NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'changes_requested', 'approved', 'rejected',
                          'cancelled', 'expired', 'running', 'succeeded', 'failed', 'timed_out', 'interrupted')),
    revision          integer NOT NULL,
    revision_hash     text NOT NULL,
    status_changed_at timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX requests_pod_status ON requests (pod_id, status);
CREATE INDEX requests_author ON requests (author_id, created_at);
CREATE INDEX requests_instance ON requests (instance_id);
CREATE INDEX requests_status ON requests (status, status_changed_at);

CREATE TABLE request_revisions (
    request_id    uuid NOT NULL REFERENCES requests (id),
    number        integer NOT NULL,
    kind          text NOT NULL,
    mode          text NOT NULL,
    instance_id   uuid NOT NULL,
    database_name text NOT NULL,
    content       text NOT NULL,
    justification text NOT NULL,
    -- The effective limits at the time, as JSON: part of what the hash covers.
    limits        text NOT NULL,
    hash          text NOT NULL,
    editor_id     uuid NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (request_id, number)
);

CREATE TABLE reviews (
    id            uuid PRIMARY KEY,
    request_id    uuid NOT NULL REFERENCES requests (id),
    revision      integer NOT NULL,
    revision_hash text NOT NULL,
    reviewer_id   uuid NOT NULL REFERENCES users (id),
    decision      text NOT NULL CHECK (decision IN ('approve', 'reject', 'request_changes')),
    comment       text NOT NULL,
    created_at    timestamptz NOT NULL,
    -- Set when a new revision voids the review.
    voided_at     timestamptz,
    -- A person counts once per revision.
    UNIQUE (request_id, revision, reviewer_id)
);
CREATE INDEX reviews_request ON reviews (request_id, revision);
CREATE INDEX reviews_reviewer ON reviews (reviewer_id);
