-- When a help-desk operator revoked the account's current key (KeystoreAdmin.RevokeKey):
-- the sealed secret is wiped at the same moment, logins answer NO_KEY and menu 1 shows
-- nothing until a reissue (RotateKey) installs a new key and clears it. NULL: live.
ALTER TABLE accounts ADD COLUMN revoked_at INTEGER;
