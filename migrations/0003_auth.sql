-- Admin sessions (one per issued token, keyed by its jti). The daemon's
-- memory is authoritative; these rows let revocations and the session list
-- survive a restart. Audit events go to audit_log (0001).
CREATE TABLE sessions (
    jti           TEXT PRIMARY KEY,
    username      TEXT NOT NULL DEFAULT 'admin',
    ip            TEXT NOT NULL,
    user_agent    TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    last_activity TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_live ON sessions (created_at) WHERE revoked_at IS NULL;
CREATE INDEX audit_log_action_at ON audit_log (action, at);
