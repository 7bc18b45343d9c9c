-- The self-healing audit trail (SPEC §7): every decision and every action
-- the healing worker carried out, with its result. `id` keeps the order in
-- which the worker recorded them (events buffered while the database was
-- down are written later, in order, with their original `at`).
CREATE TABLE self_healing_events (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    event_type  TEXT NOT NULL,
    severity    TEXT NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'CRITICAL')),
    category    TEXT,
    service     TEXT,
    description TEXT NOT NULL,
    action      TEXT,
    result      TEXT NOT NULL,
    duration_ms BIGINT
);

CREATE INDEX self_healing_events_at ON self_healing_events (at DESC);
CREATE INDEX self_healing_events_type ON self_healing_events (event_type, at DESC);
