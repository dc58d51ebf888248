-- The outgoing mail queue: one row per message, kept after delivery (without its payload)
-- for GetDelivery, idempotency and the per-recipient rate limit. Times are unix milliseconds.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    rate_key TEXT NOT NULL,
    account_id TEXT NOT NULL,
    locale TEXT NOT NULL,
    -- JSON with the code (reset mails); NULL once sent, failed or expired.
    payload TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_reply TEXT,
    created_at INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    sent_at INTEGER,
    finished_at INTEGER,
    lease_owner TEXT,
    lease_until INTEGER
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_rate ON deliveries (rate_key, kind, created_at);
CREATE INDEX deliveries_lease_owner ON deliveries (lease_owner);
