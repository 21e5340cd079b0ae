-- Service principals: scoped, expiring, revocable API keys of one community, for
-- sidecars and outside services (billing sets tiers with `tiers:write`). The secret is
-- shown once at creation; only its SHA-256 is kept (it is 256 random bits, so a fast
-- hash is enough, as for bot tokens).
CREATE TABLE service_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id  bigint NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
    name          text NOT NULL,
    scopes        text[] NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    created_by    bigint REFERENCES users(id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX service_keys_community ON service_keys (community_id, id DESC);
