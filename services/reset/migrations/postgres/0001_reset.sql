-- The embedded directory: who may reset, how they prove it, where their code goes.
CREATE TABLE accounts (
    account_id     TEXT PRIMARY KEY NOT NULL,
    -- argon2id, PHC string format.
    password_hash  TEXT NOT NULL,
    recovery_email TEXT NOT NULL,
    enabled        BIGINT NOT NULL DEFAULT 1,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- One row per reset saga. Keyed by the SHA-256 of the bearer reset_id; saga_id is the
-- internal name used for idempotency downstream. Timestamps are Unix milliseconds.
CREATE TABLE resets (
    token_hash      TEXT PRIMARY KEY NOT NULL,
    saga_id         TEXT NOT NULL UNIQUE,
    account_id      TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    locale          TEXT NOT NULL,
    client_ip       TEXT NOT NULL,
    user_agent      TEXT NOT NULL,
    state           TEXT NOT NULL,
    -- HMAC-SHA256(key, saga_id || 0 || code) of the current code; never the code itself.
    code_hash       BYTEA NOT NULL,
    code_expires_at BIGINT NOT NULL,
    -- When the current code was issued (the resend cooldown runs from here); NULL when its
    -- mail could not be handed to the notifier, so the user may resend at once.
    last_sent_at    BIGINT,
    -- Codes issued so far (1 for the first mail; each resend adds one).
    sends           BIGINT NOT NULL,
    wrong_attempts  BIGINT NOT NULL DEFAULT 0,
    verified_at     BIGINT,
    completed_at    BIGINT,
    new_key_id      TEXT,
    notice_sent     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- Bumped by every transition; transitions are conditional on it.
    version         BIGINT NOT NULL DEFAULT 0
);
-- At most one live reset per account: a newer StartReset supersedes the older one.
CREATE UNIQUE INDEX resets_one_live_per_account ON resets (account_id)
    WHERE state IN ('code_sent', 'verified', 'confirming');
-- The sweeper's work: sagas to finish and notices to send.
CREATE INDEX resets_by_state ON resets (state, updated_at);

-- Rate-limit events: one row per StartReset attempt per scope ('ip', 'account').
CREATE TABLE rate_events (
    scope   TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX rate_events_by_subject ON rate_events (scope, subject, at);
