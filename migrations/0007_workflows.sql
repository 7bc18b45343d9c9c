-- Workflow runs that n8n reports through POST /api/workflows/execution
-- (SPEC §5). One row per execution: a report for the same (workflow_id,
-- execution_id) updates the row (running → success/error). Reports without
-- an execution_id are separate rows (NULLs never conflict).
CREATE TABLE workflow_executions (
    id            BIGSERIAL PRIMARY KEY,
    workflow_id   TEXT NOT NULL,
    execution_id  TEXT,
    workflow_name TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'success', 'error')),
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    duration_ms   BIGINT CHECK (duration_ms >= 0),
    error         TEXT,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, execution_id)
);

CREATE INDEX workflow_executions_started ON workflow_executions (started_at DESC);
CREATE INDEX workflow_executions_workflow ON workflow_executions (workflow_id, started_at DESC);
