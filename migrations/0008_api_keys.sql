-- API keys (issue 15): `ak_` + 32 random bytes, stored only as the SHA-256
-- of the whole key. A revoked key keeps its row (revoked_at) for the audit
-- trail; creation and revocation also go to audit_log.
CREATE TABLE api_keys (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    key_hash     BYTEA NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    hint         TEXT NOT NULL,
    scopes       TEXT[] NOT NULL CHECK (cardinality(scopes) > 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_live ON api_keys (created_at) WHERE revoked_at IS NULL;
