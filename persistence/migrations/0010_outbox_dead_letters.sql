-- Events a subscriber could not handle after repeated attempts: set aside (with the
-- last error) so one poison event does not stop the subscriber for good. An operator
-- reads them here; nothing replays them automatically.
CREATE TABLE outbox_dead_letters (
    subscriber  text NOT NULL,
    event_id    text NOT NULL,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    error       text NOT NULL,
    attempts    integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber, event_id)
);
