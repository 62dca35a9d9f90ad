-- Database instances requests run against, the PODs allowed to use each, and their databases.

CREATE TABLE instances (
    id                  BLOB PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL,
    name_key            TEXT NOT NULL UNIQUE,
    engine              TEXT NOT NULL CHECK (engine IN ('postgres', 'mongodb', 'sqlite')),
    host                TEXT,
    port                INTEGER,
    username            TEXT,
    tls_mode            TEXT NOT NULL,
    uri                 TEXT,
    path                TEXT,
    environment         TEXT NOT NULL,
    required_approvals  INTEGER NOT NULL CHECK (required_approvals BETWEEN 1 AND 3),
    run_mode            TEXT NOT NULL CHECK (run_mode IN ('on_approval', 'manual')),
    slack_approval      BOOLEAN NOT NULL,
    limits              TEXT NOT NULL,
    secret_ciphertext   BLOB,
    secret_key_id       TEXT,
    databases_synced_at TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE instance_pods (
    instance_id BLOB NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    pod_id      BLOB NOT NULL REFERENCES pods (id) ON DELETE CASCADE,
    PRIMARY KEY (instance_id, pod_id)
);
CREATE INDEX instance_pods_pod ON instance_pods (pod_id);

CREATE TABLE instance_databases (
    instance_id BLOB NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    PRIMARY KEY (instance_id, name)
);
