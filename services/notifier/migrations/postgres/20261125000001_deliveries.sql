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
    attempts BIGINT NOT NULL DEFAULT 0,
    last_reply TEXT,
    created_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    sent_at BIGINT,
    finished_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_rate ON deliveries (rate_key, kind, created_at);
CREATE INDEX deliveries_lease_owner ON deliveries (lease_owner);
