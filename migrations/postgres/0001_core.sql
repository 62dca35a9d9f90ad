-- Portal core: organisation, accounts, sessions, audit log.

CREATE TABLE pods (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    name_key      text NOT NULL UNIQUE,
    slack_channel text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE users (
    id                   uuid PRIMARY KEY,
    email                text NOT NULL UNIQUE,
    name                 text NOT NULL,
    password_hash        text NOT NULL,
    role                 text NOT NULL CHECK (role IN ('admin', 'manager', 'developer')),
    home_pod_id          uuid REFERENCES pods (id),
    disabled             boolean NOT NULL DEFAULT false,
    must_change_password boolean NOT NULL DEFAULT false,
    failed_logins        integer NOT NULL DEFAULT 0,
    delayed_until        timestamptz,
    locked_at            timestamptz,
    slack_user_id        text,
    password_changed_at  timestamptz NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX users_home_pod ON users (home_pod_id);

CREATE TABLE pod_managers (
    pod_id  uuid NOT NULL REFERENCES pods (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (pod_id, user_id)
);
CREATE INDEX pod_managers_user ON pod_managers (user_id);

-- A session is one signed-in device and the family of its refresh tokens.
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id),
    user_agent     text,
    ip             text,
    created_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_user ON sessions (user_id, revoked_at);

CREATE TABLE refresh_tokens (
    id         uuid PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id),
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE revoked_tokens (
    jti        uuid PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);

CREATE TABLE audit_events (
    seq         bigserial PRIMARY KEY,
    id          uuid NOT NULL UNIQUE,
    at          timestamptz NOT NULL,
    actor_id    uuid,
    action      text NOT NULL,
    target_type text,
    target_id   text,
    ip          text,
    user_agent  text,
    details     text NOT NULL,
    prev_hash   text NOT NULL,
    hash        text NOT NULL
);
CREATE INDEX audit_events_actor ON audit_events (actor_id, seq);
CREATE INDEX audit_events_action ON audit_events (action, seq);
CREATE INDEX audit_events_target ON audit_events (target_id, seq);

-- Append-only: the application never updates or deletes audit rows. A deployment should also
-- grant the portal's role only INSERT and SELECT on this table (docs/OPERATIONS.md).
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
