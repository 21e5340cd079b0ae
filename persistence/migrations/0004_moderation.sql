-- Moderation (issue 5): the audit log, sanctions (timeouts, bans), channel slow mode and
-- lock, community lockdown, reports and the review queue, appeals.

-- Every moderation and permission change, written in the same transaction as the change
-- (persistence/audit.py: record). community_id is NULL only for instance-wide actions.
-- actor_id is kept when the actor is deleted (SET NULL) so the history stays readable.
CREATE TABLE audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    bigint REFERENCES communities(id) ON DELETE CASCADE,
    actor_id        bigint REFERENCES users(id) ON DELETE SET NULL,
    action          text NOT NULL,
    target_type     text NOT NULL,
    target_id       bigint,
    reason          text,
    before          jsonb,
    after           jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- Queries always name one community and page newest first by id; each filter has an
-- index that starts with the community so a filtered page costs the page, not the log.
CREATE INDEX audit_log_community ON audit_log (community_id, id DESC);
CREATE INDEX audit_log_actor ON audit_log (community_id, actor_id, id DESC);
CREATE INDEX audit_log_target ON audit_log (community_id, target_type, target_id, id DESC);
CREATE INDEX audit_log_action ON audit_log (community_id, action, id DESC);
-- The retention purge deletes by age.
CREATE INDEX audit_log_created ON audit_log (created_at);

-- Timeouts live on the membership row: the permission resolver and the send path read
-- this row anyway, so checking a timeout costs nothing extra. timeout_audit_id names the
-- action, so an appeal can point at it.
ALTER TABLE community_members ADD COLUMN timeout_until timestamptz;
ALTER TABLE community_members ADD COLUMN timeout_audit_id bigint;

-- A ban removes the membership (kick) and keeps this row until it expires or is lifted;
-- joining (invites) checks it. expires_at NULL: permanent.
CREATE TABLE community_bans (
    community_id    bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    actor_id        bigint REFERENCES users(id) ON DELETE SET NULL,
    reason          text,
    audit_id        bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    PRIMARY KEY (community_id, user_id)
);
CREATE INDEX community_bans_user ON community_bans (user_id);

-- Purge by author ("their messages of the last H hours") and ban-with-purge read a
-- member's recent messages; without this they would scan every message.
CREATE INDEX messages_author_created ON messages (author_id, created_at);

-- Slow mode (seconds between two messages of one member) and lock, per channel.
ALTER TABLE channels ADD COLUMN slowmode_s integer NOT NULL DEFAULT 0;
ALTER TABLE channels ADD COLUMN locked boolean NOT NULL DEFAULT false;

-- Lockdown (raid mode): joins paused; members who joined less than lockdown_member_age_s
-- ago, or whose account is younger than lockdown_account_age_s, cannot post.
ALTER TABLE communities ADD COLUMN lockdown boolean NOT NULL DEFAULT false;
ALTER TABLE communities ADD COLUMN lockdown_member_age_s integer NOT NULL DEFAULT 0;
ALTER TABLE communities ADD COLUMN lockdown_account_age_s integer NOT NULL DEFAULT 0;

-- The review queue: one item per reported/flagged message (or reported user), however
-- many reports it gets. status: open -> claimed -> resolved.
CREATE TABLE review_items (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('message', 'user')),
    channel_id      bigint REFERENCES channels(id) ON DELETE SET NULL,
    message_id      bigint REFERENCES messages(id) ON DELETE SET NULL,
    target_user_id  bigint REFERENCES users(id) ON DELETE CASCADE,
    content         text NOT NULL DEFAULT '',   -- the message as reported/flagged
    first_reason    text NOT NULL DEFAULT '',
    sources         text[] NOT NULL DEFAULT '{}',  -- 'report', 'automod:<rule>'
    report_count    integer NOT NULL DEFAULT 0,
    flag_count      integer NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'claimed', 'resolved')),
    claimed_by      bigint REFERENCES users(id) ON DELETE SET NULL,
    claimed_at      timestamptz,
    resolved_by     bigint REFERENCES users(id) ON DELETE SET NULL,
    resolved_at     timestamptz,
    decision        text,
    decision_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Dedup: at most one unresolved item per message, and per user for user reports.
CREATE UNIQUE INDEX review_items_open_message ON review_items (message_id)
    WHERE status <> 'resolved' AND message_id IS NOT NULL;
CREATE UNIQUE INDEX review_items_open_user ON review_items (community_id, target_user_id)
    WHERE status <> 'resolved' AND kind = 'user';
CREATE INDEX review_items_queue ON review_items (community_id, status, id DESC);

CREATE TABLE reports (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id         bigint NOT NULL REFERENCES review_items(id) ON DELETE CASCADE,
    community_id    bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    reporter_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id      bigint,
    target_user_id  bigint,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- One reporter counts once per item.
CREATE UNIQUE INDEX reports_once ON reports (item_id, reporter_id);
CREATE INDEX reports_reporter ON reports (reporter_id, created_at);

-- Appeals: one per sanction (the audit entry of the timeout or ban).
CREATE TABLE appeals (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    audit_id        bigint NOT NULL UNIQUE,
    action          text NOT NULL,              -- 'member.ban' or 'member.timeout'
    text            text NOT NULL,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected')),
    resolved_by     bigint REFERENCES users(id) ON DELETE SET NULL,
    resolved_at     timestamptz,
    decision_reason text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appeals_queue ON appeals (community_id, status, id DESC);
