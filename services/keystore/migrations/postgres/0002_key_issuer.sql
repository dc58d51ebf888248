-- The otpauth issuer each key was issued with (institution.otpauth_issuer at the time), so
-- a key keeps the name its authenticator entry shows when the institution's changes.
-- NULL: issued before this column, under totp.issuer.
ALTER TABLE accounts ADD COLUMN issuer TEXT;
ALTER TABLE setup_keys ADD COLUMN issuer TEXT;
