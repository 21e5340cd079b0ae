-- Automod rules (issue 5). One row per rule; the trigger's own settings live in
-- config (jsonb, validated and compiled by rooms/automod.py when saved and loaded), so a
-- new rule type needs no migration. Rules are read per community (the send path caches
-- the compiled set per process), hence the index.

CREATE TABLE automod_rules (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id        bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    channel_id          bigint REFERENCES channels(id) ON DELETE CASCADE,  -- NULL: whole community
    name                text NOT NULL,
    kind                text NOT NULL,            -- the trigger's type: keyword, regex, ...
    config              jsonb NOT NULL,           -- the whole trigger, including its type
    actions             text[] NOT NULL,
    timeout_s           integer NOT NULL DEFAULT 600,
    exempt_roles        text[] NOT NULL DEFAULT '{}',
    exempt_role_ids     bigint[] NOT NULL DEFAULT '{}',
    exempt_channel_ids  bigint[] NOT NULL DEFAULT '{}',
    exempt_moderators   boolean NOT NULL DEFAULT true,
    enabled             boolean NOT NULL DEFAULT true,
    created_by          bigint REFERENCES users(id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX automod_rules_community ON automod_rules (community_id, id);
