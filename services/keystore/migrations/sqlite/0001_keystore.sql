-- One row per enrolled account: its current key, sealed, and the verification counters.
-- The current key lives in this row so that VerifyCode reads one row by primary key.
CREATE TABLE accounts (
    account_id     TEXT PRIMARY KEY NOT NULL,
    current_key_id TEXT NOT NULL,
    key_created_at INTEGER NOT NULL,
    algorithm      TEXT NOT NULL,
    digits         INTEGER NOT NULL,
    period         INTEGER NOT NULL,
    kek_id         TEXT NOT NULL,
    nonce          BLOB NOT NULL,
    ciphertext     BLOB NOT NULL,
    -- Highest time step ever accepted: a code of this step or older is a replay.
    last_step      INTEGER NOT NULL DEFAULT 0,
    failures       INTEGER NOT NULL DEFAULT 0,
    lockouts       INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER,
    created_at     INTEGER NOT NULL
);
CREATE INDEX accounts_by_kek ON accounts (kek_id);

-- Every key ever issued, without its secret: the audit record of issue and destruction.
CREATE TABLE setup_keys (
    key_id       TEXT PRIMARY KEY NOT NULL,
    account_id   TEXT NOT NULL REFERENCES accounts (account_id),
    created_at   INTEGER NOT NULL,
    algorithm    TEXT NOT NULL,
    digits       INTEGER NOT NULL,
    period       INTEGER NOT NULL,
    destroyed_at INTEGER
);
CREATE INDEX setup_keys_by_account ON setup_keys (account_id);

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
