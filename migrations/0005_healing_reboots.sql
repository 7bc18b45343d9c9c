-- Reboots arasuld asked logind for (SPEC §7, category D). The safety check
-- "no more than 2 reboots per hour" counts these rows, so the limit holds
-- across the reboots themselves and across daemon restarts.
CREATE TABLE reboot_events (
    id            BIGSERIAL PRIMARY KEY,
    requested_at  TIMESTAMPTZ NOT NULL,
    reason        TEXT NOT NULL,
    -- The state saved before the reboot, as JSON (also state_dir/reboot_state.json).
    state         TEXT NOT NULL,
    -- Set by the first start after it: the post-reboot validation.
    validated_at  TIMESTAMPTZ,
    validation    TEXT
);

CREATE INDEX reboot_events_requested_at ON reboot_events (requested_at DESC);
