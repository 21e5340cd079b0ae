-- Hearth schema v1: accounts, communities, channels, messages, reactions, read state.
-- Applied once, in a transaction, by persistence/migrate.py; never edited after release
-- (later changes are new numbered files).

CREATE TABLE users (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        text NOT NULL,
    display_name    text NOT NULL,
    password_hash   text,                     -- NULL for bots
    is_bot          boolean NOT NULL DEFAULT false,
    bot_owner_id    bigint REFERENCES users(id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));

-- Long-lived bot tokens; only a SHA-256 of the secret is stored.
CREATE TABLE bot_tokens (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash      bytea NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- Rotating refresh tokens. Each use issues a child in the same family; presenting a
-- token that was already used revokes the whole family (theft detection).
CREATE TABLE refresh_tokens (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family_id       uuid NOT NULL,
    token_hash      bytea NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE communities (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL,
    owner_id        bigint NOT NULL REFERENCES users(id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE community_members (
    community_id    bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'moderator', 'member')),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, user_id)
);
CREATE INDEX community_members_user ON community_members (user_id);

CREATE TABLE invites (
    code            text PRIMARY KEY,
    community_id    bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    created_by      bigint NOT NULL REFERENCES users(id),
    max_uses        integer,                  -- NULL: unlimited
    uses            integer NOT NULL DEFAULT 0,
    expires_at      timestamptz,              -- NULL: never
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Every place messages go. community_id is NULL for DMs and group DMs.
-- last_seq is the seq of the newest message: bumped in the same transaction that
-- inserts messages, so per-channel seqs are gap-free and monotonic.
CREATE TABLE channels (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id            bigint REFERENCES communities(id) ON DELETE CASCADE,
    kind                    text NOT NULL CHECK (kind IN
                              ('text', 'announcement', 'category', 'thread', 'dm', 'group_dm')),
    name                    text NOT NULL DEFAULT '',
    topic                   text NOT NULL DEFAULT '',
    parent_id               bigint REFERENCES channels(id) ON DELETE CASCADE,
    private                 boolean NOT NULL DEFAULT false,
    archived                boolean NOT NULL DEFAULT false,
    position                integer NOT NULL DEFAULT 0,
    last_seq                bigint NOT NULL DEFAULT 0,
    thread_root_message_id  bigint,
    created_by              bigint REFERENCES users(id),
    created_at              timestamptz NOT NULL DEFAULT now(),
    dm_key                  text UNIQUE      -- 'lo:hi' user ids for a 1:1 DM, so there is one
);
CREATE INDEX channels_community ON channels (community_id);
CREATE INDEX channels_parent ON channels (parent_id);

-- Explicit membership: private channels, threads (joined members), DMs, group DMs.
CREATE TABLE channel_members (
    channel_id      bigint NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    added_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX channel_members_user ON channel_members (user_id);

CREATE TABLE messages (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id          bigint NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    seq                 bigint NOT NULL,
    author_id           bigint NOT NULL REFERENCES users(id),
    content             text NOT NULL,
    nonce               text,
    reply_to_id         bigint,
    mention_user_ids    bigint[] NOT NULL DEFAULT '{}',
    mention_roles       text[] NOT NULL DEFAULT '{}',
    mention_everyone    boolean NOT NULL DEFAULT false,
    attachments         jsonb NOT NULL DEFAULT '[]',
    thread_id           bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    edited_at           timestamptz,
    deleted_at          timestamptz,
    UNIQUE (channel_id, seq)
);
-- The idempotency key: one author never creates two messages with one nonce.
CREATE UNIQUE INDEX messages_author_nonce ON messages (author_id, nonce) WHERE nonce IS NOT NULL;
CREATE INDEX messages_mentions ON messages USING gin (mention_user_ids);
-- Unread-mention counts (persistence/read_states.py) scan only the messages of a channel
-- after the read marker that mention anybody, not every unread message.
CREATE INDEX messages_with_mentions ON messages (channel_id, seq)
    WHERE mention_everyone OR mention_user_ids <> '{}' OR mention_roles <> '{}';

CREATE TABLE reactions (
    message_id      bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    emoji           text NOT NULL,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, emoji, user_id)
);

CREATE TABLE read_states (
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id      bigint NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    last_read_seq   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, channel_id)
);

-- Singleton settings of an installation (e.g. whether the starter community exists).
CREATE TABLE instance_settings (
    key             text PRIMARY KEY,
    value           jsonb NOT NULL
);
