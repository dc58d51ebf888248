-- "Check my authenticator" on 「4. リセット完了」: the account whose new key this session has
-- just shown, and until when (Unix ms) the session may check that account's authenticator
-- and, to register it again (FAQ 7), see that key once more. A reissue is no login: this
-- is all it grants.
ALTER TABLE sessions ADD COLUMN check_account TEXT;
ALTER TABLE sessions ADD COLUMN check_until BIGINT;
