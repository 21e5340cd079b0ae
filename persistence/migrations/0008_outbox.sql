-- The domain-event outbox: one row per state change other parts consume, inserted in
-- the same transaction as the change (persistence/outbox.py, protocol/domain_events.py).
--
-- Order is (xid, id): the writing transaction's id, then the row id. A reader takes only
-- rows whose transaction is older than every transaction still running
-- (pg_snapshot_xmin), so a row can never appear behind a subscriber's position after
-- it moved past: an identity alone would let a slow transaction commit a smaller id
-- after a faster one was consumed.
CREATE TABLE outbox_events (
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    id           bigint GENERATED ALWAYS AS IDENTITY,
    type         text NOT NULL,
    community_id bigint,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (xid, id)
);
-- Retention deletes by age (and only what every subscriber has consumed).
CREATE INDEX outbox_events_created ON outbox_events (created_at);

-- One row per named subscriber: its position, advanced in the same transaction as the
-- subscriber's own writes, and locked (FOR UPDATE) while a batch is handled so two
-- processes running the same subscriber take turns instead of handling twice.
CREATE TABLE outbox_subscribers (
    name          text PRIMARY KEY,
    last_xid      xid8 NOT NULL DEFAULT '0',
    last_id       bigint NOT NULL DEFAULT 0,
    handled       bigint NOT NULL DEFAULT 0,
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
