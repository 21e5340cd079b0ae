-- Permissions (issue 5): custom roles per community, channel overrides, membership tiers.
-- Fixed roles (owner/admin/moderator/member) stay in community_members.role; custom
-- roles add bits on top (a member's base bits are the union of all their roles' bits).

CREATE TABLE community_roles (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    name            text NOT NULL,
    color           integer,                  -- 0xRRGGBB, NULL: none
    position        integer NOT NULL,         -- rank among custom roles, higher outranks
    permissions     bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX community_roles_name ON community_roles (community_id, lower(name));
CREATE INDEX community_roles_community ON community_roles (community_id, position);

-- A member's custom roles; gone with the membership (kick, ban, leave) or the role.
CREATE TABLE member_roles (
    community_id    bigint NOT NULL,
    user_id         bigint NOT NULL,
    role_id         bigint NOT NULL REFERENCES community_roles(id) ON DELETE CASCADE,
    PRIMARY KEY (community_id, user_id, role_id),
    FOREIGN KEY (community_id, user_id)
        REFERENCES community_members (community_id, user_id) ON DELETE CASCADE
);
CREATE INDEX member_roles_role ON member_roles (role_id);
CREATE INDEX member_roles_user ON member_roles (user_id);

-- Channel-level allow/deny bits. target_kind 'everyone' (target_id 0: every member),
-- 'role' (a custom role id) or 'member' (a user id).
CREATE TABLE channel_overrides (
    channel_id      bigint NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    community_id    bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    target_kind     text NOT NULL CHECK (target_kind IN ('everyone', 'role', 'member')),
    target_id       bigint NOT NULL,
    allow           bigint NOT NULL DEFAULT 0,
    deny            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, target_kind, target_id)
);
-- Identify loads only the overrides that concern the member: by community for
-- 'everyone', by role id for the member's roles, by user id for the member.
CREATE INDEX channel_overrides_target ON channel_overrides (target_kind, target_id);
CREATE INDEX channel_overrides_community ON channel_overrides (community_id)
    WHERE target_kind = 'everyone';

-- Membership tiers: a member below a channel's required tier does not see it.
ALTER TABLE community_members ADD COLUMN tier integer NOT NULL DEFAULT 0
    CHECK (tier >= 0);
ALTER TABLE channels ADD COLUMN required_tier integer NOT NULL DEFAULT 0
    CHECK (required_tier >= 0);
