-- One row per persisted sample, all headline series as columns. `id` keeps
-- insertion order, so "flushed in order" after an outage can be checked.
CREATE TABLE metrics (
    id                  BIGSERIAL PRIMARY KEY,
    ts                  TIMESTAMPTZ NOT NULL UNIQUE,
    cpu_percent         REAL,
    ram_percent         REAL,
    ram_used_bytes      BIGINT,
    ram_total_bytes     BIGINT,
    temperature_c       REAL,
    disk_percent        REAL,
    disk_used_bytes     BIGINT,
    disk_total_bytes    BIGINT,
    gpu_percent         REAL,
    gpu_memory_used_bytes  BIGINT,
    gpu_memory_total_bytes BIGINT,
    gpu_temperature_c   REAL,
    gpu_power_mw        REAL
);

-- Samples dropped from the in-memory buffer before they could be written
-- (database down for longer than the buffer holds).
CREATE TABLE metric_gaps (
    id          BIGSERIAL PRIMARY KEY,
    from_ts     TIMESTAMPTZ NOT NULL,
    to_ts       TIMESTAMPTZ NOT NULL,
    dropped     BIGINT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
