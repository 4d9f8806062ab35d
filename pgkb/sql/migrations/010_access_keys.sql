-- Access keys for SigV4 verification. The secret must be recoverable (the server recomputes the
-- HMAC), so it is stored encrypted with a key kept outside the database (data dir, mode 0600).
CREATE TABLE IF NOT EXISTS pgkb.access_keys (
    access_key_id    text PRIMARY KEY,
    secret_encrypted bytea NOT NULL,
    description      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz
);
