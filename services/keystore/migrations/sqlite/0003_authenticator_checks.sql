-- "Check my authenticator" (CheckAuthenticator): each account's allowance of checks, a
-- window anchored at its first check with the checks used in it. Its own counter, apart
-- from the login's failures and lockout, so diagnosing never locks a user out; in the
-- database, so every replica counts the same checks. Only accounts with a key get a row.
CREATE TABLE authenticator_checks (
    account_id   TEXT PRIMARY KEY NOT NULL,
    window_start INTEGER NOT NULL,
    used         INTEGER NOT NULL
);
