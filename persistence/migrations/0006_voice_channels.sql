-- Voice rooms (issue 6): two more channel kinds, and server mutes that outlive a
-- participant's connection (a muted member must not unmute by leaving and re-joining).
-- The CHECK constraint of 0001 is replaced, not widened in place (PostgreSQL cannot).

ALTER TABLE channels DROP CONSTRAINT channels_kind_check;
ALTER TABLE channels ADD CONSTRAINT channels_kind_check CHECK (kind IN
    ('text', 'announcement', 'category', 'thread', 'dm', 'group_dm', 'voice', 'stage'));

-- One row per member muted by a moderator in a community's voice rooms
-- (rooms/voice.py); deleted when the mute is lifted or the member leaves the community.
CREATE TABLE voice_server_mutes (
    community_id    bigint NOT NULL,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    actor_id        bigint REFERENCES users(id) ON DELETE SET NULL,
    audit_id        bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, user_id),
    FOREIGN KEY (community_id, user_id) REFERENCES community_members (community_id, user_id)
        ON DELETE CASCADE
);
