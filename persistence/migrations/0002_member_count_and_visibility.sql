-- Identify must not scale with community size: keep each community's member count in
-- its row (statement-level triggers, so bulk inserts update it once per statement), and
-- index what the visible-channel query filters on.

ALTER TABLE communities ADD COLUMN member_count integer NOT NULL DEFAULT 0;
UPDATE communities c SET member_count = (
    SELECT count(*) FROM community_members m WHERE m.community_id = c.id);

CREATE FUNCTION community_members_count_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communities c SET member_count = c.member_count + d.n
    FROM (SELECT community_id, count(*) AS n FROM new_rows GROUP BY community_id) d
    WHERE c.id = d.community_id;
    RETURN NULL;
END $$;

CREATE FUNCTION community_members_count_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communities c SET member_count = c.member_count - d.n
    FROM (SELECT community_id, count(*) AS n FROM old_rows GROUP BY community_id) d
    WHERE c.id = d.community_id;
    RETURN NULL;
END $$;

CREATE TRIGGER community_members_count_ins AFTER INSERT ON community_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION community_members_count_ins();
CREATE TRIGGER community_members_count_del AFTER DELETE ON community_members
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION community_members_count_del();

CREATE INDEX channels_community_public ON channels (community_id, position, id)
    WHERE NOT private AND NOT (kind = 'thread' AND archived);
