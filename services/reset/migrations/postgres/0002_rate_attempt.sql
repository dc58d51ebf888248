-- Each attempt's random ID (the same for its per-IP and per-account rows), so an attempt
-- that succeeds can be taken back: the limits count failed password checks, not logins.
ALTER TABLE rate_events ADD COLUMN attempt TEXT;
CREATE INDEX rate_events_by_attempt ON rate_events (attempt);
