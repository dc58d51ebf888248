-- The code a resend replaced (its HMAC, like code_hash): a VerifyCode with it still counts
-- as a wrong attempt, but the user is told the code was replaced by the newest mail's.
ALTER TABLE resets ADD COLUMN replaced_code_hash BYTEA;
