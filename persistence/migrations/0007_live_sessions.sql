-- Live sessions (issue 6): scheduled talks on a stage channel, registrations, attendance
-- intervals, Q&A questions and votes.

-- Channel kinds 'voice' and 'stage'. Migration 0006 (voice rooms) adds them too; this
-- statement is written to give the same result whichever of the two ran, so either
-- branch can land first.
ALTER TABLE channels DROP CONSTRAINT IF EXISTS channels_kind_check;
ALTER TABLE channels ADD CONSTRAINT channels_kind_check CHECK (kind IN
    ('text', 'announcement', 'category', 'thread', 'dm', 'group_dm', 'voice', 'stage'));

-- One row per session. The stage state (co-hosts, promoted speakers, raised hands) is
-- kept on the row and changed under its row lock, so every node sees one stage.
CREATE TABLE live_sessions (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id        bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    channel_id          bigint NOT NULL UNIQUE REFERENCES channels(id) ON DELETE CASCADE,
    title               text NOT NULL,
    description         text NOT NULL DEFAULT '',
    host_id             bigint REFERENCES users(id) ON DELETE SET NULL,
    created_by          bigint REFERENCES users(id) ON DELETE SET NULL,
    starts_at           timestamptz NOT NULL,
    duration_s          integer NOT NULL CHECK (duration_s > 0),
    capacity            integer CHECK (capacity > 0),          -- NULL: no limit
    required_tier       integer NOT NULL DEFAULT 0,
    prerequisite_course text,                                  -- free text, not checked
    recorded            boolean NOT NULL DEFAULT false,
    state               text NOT NULL DEFAULT 'scheduled'
                          CHECK (state IN ('scheduled', 'live', 'ended', 'cancelled')),
    started_at          timestamptz,
    ended_at            timestamptz,
    reminded_at         timestamptz,                           -- reminder sent (once)
    cohost_ids          bigint[] NOT NULL DEFAULT '{}',
    speaker_ids         bigint[] NOT NULL DEFAULT '{}',        -- promoted, not hosts
    hand_ids            bigint[] NOT NULL DEFAULT '{}',        -- oldest first
    recording_path      text,
    recording_s         double precision,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX live_sessions_community ON live_sessions (community_id, starts_at);
-- The reminder task asks "which scheduled sessions start soon and were not reminded".
CREATE INDEX live_sessions_reminder_due ON live_sessions (starts_at)
    WHERE state = 'scheduled' AND reminded_at IS NULL;

CREATE TABLE live_registrations (
    session_id      bigint NOT NULL REFERENCES live_sessions(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, user_id)
);
CREATE INDEX live_registrations_user ON live_registrations (user_id);

-- One row per stretch a member spent in the stage's voice room; left_at NULL while
-- they are still there. Written in batches (rooms/live.py: AttendanceWriter).
CREATE TABLE live_attendance (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id      bigint NOT NULL REFERENCES live_sessions(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at       timestamptz NOT NULL,
    left_at         timestamptz,
    CHECK (left_at IS NULL OR left_at >= joined_at)
);
CREATE INDEX live_attendance_session ON live_attendance (session_id, user_id, joined_at);
CREATE INDEX live_attendance_open ON live_attendance (session_id, user_id)
    WHERE left_at IS NULL;

CREATE TABLE live_questions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id      bigint NOT NULL REFERENCES live_sessions(id) ON DELETE CASCADE,
    author_id       bigint REFERENCES users(id) ON DELETE SET NULL,
    text            text NOT NULL,
    state           text NOT NULL DEFAULT 'open'
                      CHECK (state IN ('open', 'answered', 'dismissed')),
    votes           integer NOT NULL DEFAULT 0,
    resolved_by     bigint REFERENCES users(id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- qa_fetch: most votes first, then oldest.
CREATE INDEX live_questions_order ON live_questions (session_id, votes DESC, id);

CREATE TABLE live_question_votes (
    question_id     bigint NOT NULL REFERENCES live_questions(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (question_id, user_id)
);
CREATE INDEX live_question_votes_user ON live_question_votes (user_id);
