-- Notifications (src/notify): the outbox. One row per alert sent on (or
-- held for) its channels; `deliveries` holds each channel's state
-- ({channel, status, attempts, next_at, last_error, delivered_at}).
-- `uid` is made by the daemon, so an entry spooled on disk while the
-- database was down is written once however often the flush is retried.
CREATE TABLE notification_outbox (
    id          BIGSERIAL PRIMARY KEY,
    uid         TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    severity    TEXT NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'CRITICAL')),
    kind        TEXT NOT NULL,
    cause       TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    deliveries  JSONB NOT NULL DEFAULT '[]',
    -- Some channel still to be tried.
    pending     BOOLEAN NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notification_outbox_pending ON notification_outbox (created_at) WHERE pending;
CREATE INDEX notification_outbox_created ON notification_outbox (created_at DESC);
