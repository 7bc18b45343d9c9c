-- Updates (SPEC §8). `update_runs` mirrors `update_state.json` (the file is
-- the source of truth at a crash; this table is what the history lists):
-- one row per bundle applied, or refused (`result = 'rejected'`).
-- `update_events` keeps each run's transitions and failures.
CREATE TABLE update_runs (
    id            TEXT PRIMARY KEY,
    version       TEXT NOT NULL,
    from_version  TEXT NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('upload', 'usb')),
    state         TEXT NOT NULL,
    result        TEXT CHECK (result IN ('done', 'rolled_back', 'failed', 'rejected')),
    step          TEXT NOT NULL DEFAULT '',
    bundle_sha256 TEXT,
    started_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    error         TEXT
);

CREATE INDEX update_runs_started ON update_runs (started_at DESC);

CREATE TABLE update_events (
    id       BIGSERIAL PRIMARY KEY,
    run_id   TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'CRITICAL')),
    state    TEXT NOT NULL,
    message  TEXT NOT NULL
);

CREATE INDEX update_events_run ON update_events (run_id, id);
