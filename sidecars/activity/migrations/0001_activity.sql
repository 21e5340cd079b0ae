-- The activity sidecar: what each member did, from the domain-event outbox.
-- event_id is deliberately not unique: exactly-once handling is the outbox
-- subscriber's job (position and rows commit together), and a test counts rows per
-- event to prove it.
CREATE TABLE activity_items (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     text NOT NULL,
    community_id bigint NOT NULL,
    user_id      bigint NOT NULL,
    kind         text NOT NULL,
    object_id    bigint,
    at           timestamptz NOT NULL
);
CREATE INDEX activity_items_member ON activity_items (community_id, user_id, id DESC);
CREATE INDEX activity_items_event ON activity_items (event_id);

CREATE TABLE activity_totals (
    community_id bigint NOT NULL,
    user_id      bigint NOT NULL,
    kind         text NOT NULL,
    total        bigint NOT NULL,
    PRIMARY KEY (community_id, user_id, kind)
);
