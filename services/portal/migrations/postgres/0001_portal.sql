-- The portal keeps no state in memory: sessions, their CSRF tokens and the login rate
-- limits live here, so any replica can serve any request. Times are Unix milliseconds.

-- One row per browser session, keyed by the SHA-256 of the random cookie value.
CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY NOT NULL,
    csrf          TEXT NOT NULL,
    -- The logged-in account; NULL for a session that only carries a CSRF token.
    account_id    TEXT,
    -- Menu 2 in progress: the reset service's bearer handle and the ID it was started for.
    reset_id      TEXT,
    reset_account TEXT,
    created_at    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL
);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen);

-- Fixed-window counters of login attempts, per account ID and per client address.
CREATE TABLE login_attempts (
    bucket       TEXT PRIMARY KEY NOT NULL,
    window_start BIGINT NOT NULL,
    attempts     BIGINT NOT NULL
);
