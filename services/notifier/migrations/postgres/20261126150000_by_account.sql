-- The help desk's list of an account's recent mails (kagi.v1.NotifierAdmin.ListRecentMails).
CREATE INDEX deliveries_by_account ON deliveries (account_id, created_at);
