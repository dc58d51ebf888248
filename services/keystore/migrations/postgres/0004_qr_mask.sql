-- Which of the QR code's eight mask patterns (0-7) the encoder chose for the current key's
-- otpauth URI, remembered when the key is first drawn so that later views (in any replica,
-- after any restart) skip the encoder's mask search, most of the cost of drawing the code.
-- Three bits of choice, not the key. NULL until the key is first drawn; a rotation resets it.
ALTER TABLE accounts ADD COLUMN qr_mask BIGINT;
