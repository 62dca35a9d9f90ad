-- Database instances requests run against, the PODs allowed to use each, and their databases.

CREATE TABLE instances (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL,
    name_key            text NOT NULL UNIQUE,
    engine              text NOT NULL CHECK (engine IN ('postgres', 'mongodb', 'sqlite')),
    host                text,
    port                integer,
    username            text,
    tls_mode            text NOT NULL,
    uri                 text,
    path                text,
    environment         text NOT NULL,
    required_approvals  integer NOT NULL CHECK (required_approvals BETWEEN 1 AND 3),
    run_mode            text NOT NULL CHECK (run_mode IN ('on_approval', 'manual')),
    slack_approval      boolean NOT NULL,
    limits              text NOT NULL,
    secret_ciphertext   bytea,
    secret_key_id       text,
    databases_synced_at timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE TABLE instance_pods (
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    pod_id      uuid NOT NULL REFERENCES pods (id) ON DELETE CASCADE,
    PRIMARY KEY (instance_id, pod_id)
);
CREATE INDEX instance_pods_pod ON instance_pods (pod_id);

CREATE TABLE instance_databases (
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    name        text NOT NULL,
    PRIMARY KEY (instance_id, name)
);
