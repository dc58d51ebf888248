-- The help desk's trail in the reset service (kagi.v1.ResetAdmin): who looked at or acted
-- on an account's resets, as which operator, and why (detail "operator=ID reason=…").
-- Never a code, a reset ID or an address.
CREATE TABLE admin_audit (
    seq        BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    caller     TEXT NOT NULL,
    action     TEXT NOT NULL,
    account_id TEXT NOT NULL,
    detail     TEXT NOT NULL,
    trace_id   TEXT NOT NULL
);
CREATE INDEX admin_audit_by_account ON admin_audit (account_id, seq);
-- The newest reset of an account, for the help desk's look-up.
CREATE INDEX resets_by_account ON resets (account_id, created_at);
