-- Portal core: organisation, accounts, sessions, audit log.

CREATE TABLE pods (
    id            BLOB PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL UNIQUE,
    slack_channel TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE users (
    id                   BLOB PRIMARY KEY NOT NULL,
    email                TEXT NOT NULL UNIQUE,
    name                 TEXT NOT NULL,
    password_hash        TEXT NOT NULL,
    role                 TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'developer')),
    home_pod_id          BLOB REFERENCES pods (id),
    disabled             BOOLEAN NOT NULL DEFAULT FALSE,
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins        INTEGER NOT NULL DEFAULT 0,
    delayed_until        TEXT,
    locked_at            TEXT,
    slack_user_id        TEXT,
    password_changed_at  TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX users_home_pod ON users (home_pod_id);

CREATE TABLE pod_managers (
    pod_id  BLOB NOT NULL REFERENCES pods (id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (pod_id, user_id)
);
CREATE INDEX pod_managers_user ON pod_managers (user_id);

-- A session is one signed-in device and the family of its refresh tokens.
CREATE TABLE sessions (
    id             BLOB PRIMARY KEY NOT NULL,
    user_id        BLOB NOT NULL REFERENCES users (id),
    user_agent     TEXT,
    ip             TEXT,
    created_at     TEXT NOT NULL,
    last_seen_at   TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    revoked_reason TEXT
);
CREATE INDEX sessions_user ON sessions (user_id, revoked_at);

CREATE TABLE refresh_tokens (
    id         BLOB PRIMARY KEY NOT NULL,
    session_id BLOB NOT NULL REFERENCES sessions (id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    rotated_at TEXT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE revoked_tokens (
    jti        BLOB PRIMARY KEY NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB NOT NULL UNIQUE,
    at          TEXT NOT NULL,
    actor_id    BLOB,
    action      TEXT NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    ip          TEXT,
    user_agent  TEXT,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_events_actor ON audit_events (actor_id, seq);
CREATE INDEX audit_events_action ON audit_events (action, seq);
CREATE INDEX audit_events_target ON audit_events (target_id, seq);

-- Append-only: the application never updates or deletes audit rows. Tampering that bypasses this
-- (direct file edits) is caught by `quorum audit verify`.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
