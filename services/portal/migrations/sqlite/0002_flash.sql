-- POST/redirect/GET: what a refused form said, and the ID it carried, kept for the one
-- page view after the redirect (a reload then neither repeats the action nor the message).
ALTER TABLE sessions ADD COLUMN flash TEXT;
ALTER TABLE sessions ADD COLUMN flash_input TEXT;
