-- Operator console sessions (`/ui/`). The cookie carries a random token;
-- only its SHA-256 is stored. A session lives while its API key does:
-- revoking the key (or deleting it) ends every session it opened.
-- `account_id` is the account acted for (an admin key may switch it);
-- `csrf` is the token every state-changing form must carry.
CREATE TABLE console_sessions (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    key_id      uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
