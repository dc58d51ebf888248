-- One row per enrolled account: its current key and the verification counters.
CREATE TABLE accounts (
    account_id     TEXT PRIMARY KEY NOT NULL,
    current_key_id TEXT NOT NULL,
    -- Highest time step ever accepted: a code of this step or older is a replay.
    last_step      INTEGER NOT NULL DEFAULT 0,
    failures       INTEGER NOT NULL DEFAULT 0,
    lockouts       INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER,
    created_at     INTEGER NOT NULL
);

-- Every key ever issued. A destroyed key keeps its metadata for audit; its secret is gone.
CREATE TABLE setup_keys (
    key_id       TEXT PRIMARY KEY NOT NULL,
    account_id   TEXT NOT NULL REFERENCES accounts (account_id),
    created_at   INTEGER NOT NULL,
    algorithm    TEXT NOT NULL,
    digits       INTEGER NOT NULL,
    period       INTEGER NOT NULL,
    kek_id       TEXT,
    nonce        BLOB,
    ciphertext   BLOB,
    destroyed_at INTEGER
);
CREATE INDEX setup_keys_by_account ON setup_keys (account_id);
CREATE INDEX setup_keys_live_by_kek ON setup_keys (kek_id) WHERE ciphertext IS NOT NULL;

-- Rotations by idempotency key, so a retried RotateKey returns the same new key.
CREATE TABLE rotations (
    account_id      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    new_key_id      TEXT NOT NULL,
    previous_key_id TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);

CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    caller     TEXT NOT NULL,
    action     TEXT NOT NULL,
    account_id TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    trace_id   TEXT NOT NULL
);
CREATE INDEX audit_events_by_account ON audit_events (account_id, seq);
