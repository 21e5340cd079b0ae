-- The courses sidecar (docs/courses.md). Core tables (community_members, live_sessions,
-- live_attendance) are read, never written.
CREATE TABLE courses (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id      bigint NOT NULL,
    title             text NOT NULL,
    description       text NOT NULL DEFAULT '',
    cover_url         text,
    status            text NOT NULL DEFAULT 'draft'
                      CHECK (status IN ('draft', 'published', 'archived')),
    access_kind       text NOT NULL DEFAULT 'open'
                      CHECK (access_kind IN ('open', 'tier', 'level', 'purchase',
                                             'days_after_join', 'manual')),
    access_value      integer NOT NULL DEFAULT 0,
    price_id          text,
    prerequisite_ids  bigint[] NOT NULL DEFAULT '{}',
    completion_percent integer NOT NULL DEFAULT 100,
    certificate       boolean NOT NULL DEFAULT false,
    lessons_in_order  boolean NOT NULL DEFAULT false,
    min_watch_percent integer NOT NULL DEFAULT 0,
    access_days       integer,
    discussion_channel_id bigint,
    created_by        bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX courses_community ON courses (community_id, id);

CREATE TABLE course_modules (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    course_id   bigint NOT NULL REFERENCES courses(id) ON DELETE CASCADE,
    position    integer NOT NULL DEFAULT 0,
    title       text NOT NULL,
    drip_kind   text NOT NULL DEFAULT 'immediate'
                CHECK (drip_kind IN ('immediate', 'after_days', 'at_date', 'after_previous')),
    drip_days   integer NOT NULL DEFAULT 0,
    drip_at     timestamptz
);
CREATE INDEX course_modules_course ON course_modules (course_id, position, id);

CREATE TABLE course_lessons (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    course_id       bigint NOT NULL REFERENCES courses(id) ON DELETE CASCADE,
    module_id       bigint NOT NULL REFERENCES course_modules(id) ON DELETE CASCADE,
    position        integer NOT NULL DEFAULT 0,
    title           text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('video', 'text', 'audio', 'file', 'quiz',
                                                  'assignment', 'live_session')),
    required        boolean NOT NULL DEFAULT true,
    preview         boolean NOT NULL DEFAULT false,
    body            text NOT NULL DEFAULT '',
    media_url       text,
    duration_s      integer NOT NULL DEFAULT 0,
    live_session_id bigint,
    live_min_percent integer NOT NULL DEFAULT 50,
    quiz            jsonb,
    assignment      jsonb
);
CREATE INDEX course_lessons_course ON course_lessons (course_id, module_id, position, id);

CREATE TABLE quiz_questions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lesson_id   bigint NOT NULL REFERENCES course_lessons(id) ON DELETE CASCADE,
    position    integer NOT NULL DEFAULT 0,
    kind        text NOT NULL CHECK (kind IN ('single', 'multiple', 'true_false', 'short')),
    prompt      text NOT NULL,
    choices     jsonb NOT NULL DEFAULT '[]',
    correct     jsonb NOT NULL,           -- indices (choices) or accepted answers (short)
    points      integer NOT NULL DEFAULT 1
);
CREATE INDEX quiz_questions_lesson ON quiz_questions (lesson_id, position, id);

CREATE TABLE enrolments (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    course_id     bigint NOT NULL REFERENCES courses(id) ON DELETE CASCADE,
    community_id  bigint NOT NULL,
    user_id       bigint NOT NULL,
    state         text NOT NULL,
    reason        text,
    released      boolean NOT NULL DEFAULT false,
    progress_percent integer NOT NULL DEFAULT 0,
    enrolled_at   timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    completed_at  timestamptz,
    expires_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (course_id, user_id)
);
CREATE INDEX enrolments_member ON enrolments (community_id, user_id);

CREATE TABLE lesson_progress (
    enrolment_id  bigint NOT NULL REFERENCES enrolments(id) ON DELETE CASCADE,
    lesson_id     bigint NOT NULL REFERENCES course_lessons(id) ON DELETE CASCADE,
    state         text NOT NULL DEFAULT 'in_progress'
                  CHECK (state IN ('in_progress', 'completed', 'passed', 'failed')),
    watched_s     integer NOT NULL DEFAULT 0,
    position_s    integer NOT NULL DEFAULT 0,
    time_spent_s  integer NOT NULL DEFAULT 0,
    completed_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (enrolment_id, lesson_id)
);

-- The drip schedule: one row per enrolment and timed module, claimed by one process
-- (FOR UPDATE SKIP LOCKED) when due; notified_at makes it happen once.
CREATE TABLE module_unlocks (
    enrolment_id  bigint NOT NULL REFERENCES enrolments(id) ON DELETE CASCADE,
    module_id     bigint NOT NULL REFERENCES course_modules(id) ON DELETE CASCADE,
    unlock_at     timestamptz NOT NULL,
    notified_at   timestamptz,
    PRIMARY KEY (enrolment_id, module_id)
);
CREATE INDEX module_unlocks_due ON module_unlocks (unlock_at) WHERE notified_at IS NULL;

CREATE TABLE quiz_attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lesson_id     bigint NOT NULL REFERENCES course_lessons(id) ON DELETE CASCADE,
    enrolment_id  bigint NOT NULL REFERENCES enrolments(id) ON DELETE CASCADE,
    user_id       bigint NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    deadline      timestamptz,
    question_ids  bigint[] NOT NULL,
    choice_orders jsonb NOT NULL,       -- per question: the shown order of its choices
    submitted_at  timestamptz,
    score         integer,
    max_score     integer,
    passed        boolean,
    late          boolean NOT NULL DEFAULT false,
    answers       jsonb
);
CREATE INDEX quiz_attempts_lesson ON quiz_attempts (lesson_id, enrolment_id, id);

CREATE TABLE assignment_submissions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lesson_id     bigint NOT NULL REFERENCES course_lessons(id) ON DELETE CASCADE,
    enrolment_id  bigint NOT NULL REFERENCES enrolments(id) ON DELETE CASCADE,
    user_id       bigint NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('text', 'link', 'file')),
    content       text NOT NULL,
    submitted_at  timestamptz NOT NULL DEFAULT now(),
    score         integer,
    passed        boolean,
    feedback      text,
    graded_by     bigint,
    graded_at     timestamptz
);
CREATE INDEX assignment_submissions_lesson ON assignment_submissions (lesson_id, id);

CREATE TABLE certificates (
    serial        text PRIMARY KEY,
    course_id     bigint NOT NULL REFERENCES courses(id) ON DELETE CASCADE,
    community_id  bigint NOT NULL,
    user_id       bigint NOT NULL,
    learner_name  text NOT NULL,
    course_title  text NOT NULL,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    revoked_reason text,
    UNIQUE (course_id, user_id)
);

-- Every learner statement (also written to the outbox as learner_statement), kept
-- per course for the xAPI export.
CREATE TABLE course_statements (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    course_id     bigint NOT NULL REFERENCES courses(id) ON DELETE CASCADE,
    community_id  bigint NOT NULL,
    user_id       bigint NOT NULL,
    verb          text NOT NULL,
    object_type   text NOT NULL,
    object_id     text NOT NULL,
    result        jsonb,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX course_statements_course ON course_statements (course_id, id);
