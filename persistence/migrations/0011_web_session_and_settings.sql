-- "Sign out everywhere" revokes every refresh token of one user: index the live ones
-- by user so that it does not scan the table.
CREATE INDEX refresh_tokens_live_by_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

-- The owner's settings page: a community has a short description besides its name.
ALTER TABLE communities ADD COLUMN description text NOT NULL DEFAULT '';
