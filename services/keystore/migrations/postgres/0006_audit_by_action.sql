-- The help desk's "last accepted login" is an account's newest `verify` event. With only
-- (account_id, seq), finding it walked back over every later event of the account (each
-- view of the key, each help-desk look), so the console's account page slowed as the trail
-- grew; with the action in the key it is one index probe.
CREATE INDEX audit_events_by_account_action ON audit_events (account_id, action, seq);
