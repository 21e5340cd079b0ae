"""Who owns the starter community (server/ownership.py): the first person to register
on a fresh install (exactly one, even when several register at once), and whoever
``hearth grant-owner`` names on an install that already had people."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

import aiohttp

from persistence.accounts import create_user
from persistence.database import Database
from tests.conftest import TEST_SECRET, RunningServer, app_server
from tests.helpers import bearer, register


async def starter_of(http: aiohttp.ClientSession, server: RunningServer,
                     token: str) -> dict[str, object]:
    async with http.get(f"{server.url}/api/v1/communities", headers=bearer(token)) as reply:
        body = await reply.json()
        assert reply.status == 200, body
    [starter] = [c for c in body["communities"] if c["community"]["name"] == "Hearth"]
    return dict(starter)


async def test_first_of_concurrent_registrations_owns_the_starter_community(
        live_server: RunningServer, db: Database) -> None:
    async with aiohttp.ClientSession() as http:
        people = await asyncio.gather(*(register(http, live_server.url) for _ in range(8)))
        roles = {}
        for person in people:
            starter = await starter_of(http, live_server, person["access_token"])
            roles[person["user"]["id"]] = starter["role"]
        owners = [uid for uid, role in roles.items() if role == "owner"]
        assert len(owners) == 1, roles
        assert list(roles.values()).count("member") == 7
        community_id = starter["community"]["id"]  # type: ignore[index]
        async with db.connection() as conn:
            owner_id = await conn.fetchval("SELECT owner_id FROM communities WHERE id = $1",
                                           community_id)
            system_role = await conn.fetchval(
                "SELECT cm.role FROM community_members cm JOIN users u ON u.id = cm.user_id "
                "WHERE cm.community_id = $1 AND u.username = 'hearth'", community_id)
            audited = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE community_id = $1 "
                "AND action = 'community.owner' AND target_id = $2", community_id, owners[0])
        assert owner_id == owners[0] and system_role == "admin" and audited == 1

        # The owner can manage it: create a channel there (nobody could before).
        owner = next(p for p in people if p["user"]["id"] == owners[0])
        async with http.post(f"{live_server.url}/api/v1/communities/{community_id}/channels",
                             json={"name": "announcements"},
                             headers=bearer(owner["access_token"])) as reply:
            assert reply.status == 201, await reply.text()
        later = await register(http, live_server.url)
        assert (await starter_of(http, live_server, later["access_token"]))["role"] == "member"


async def grant_owner_cli(database_url: str, *args: str) -> tuple[int, str]:
    env = dict(os.environ, HEARTH_DATABASE_URL=database_url, HEARTH_SECRET=TEST_SECRET,
               HEARTH_DATA_DIR=tempfile.mkdtemp(prefix="hearth-data-"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "grant-owner", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_grant_owner_on_an_install_that_already_had_people(
        database_url: str, db: Database) -> None:
    async with db.transaction("test") as conn:  # someone registered before this release
        await create_user(conn, username="pioneer", display_name="Pioneer",
                          password_hash="$argon2id$unused")
    async with app_server(database_url) as server, aiohttp.ClientSession() as http:
        alice = await register(http, server.url, "alice")
        starter = await starter_of(http, server, alice["access_token"])
        assert starter["role"] == "member"  # not a fresh install: nobody claims it
        community_id = starter["community"]["id"]  # type: ignore[index]

        code, out = await grant_owner_cli(database_url, "--community", str(community_id),
                                          "--user", "alice")
        assert code == 0, out
        assert "alice now owns 'Hearth'" in out
        assert (await starter_of(http, server, alice["access_token"]))["role"] == "owner"
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT owner_id FROM communities WHERE id = $1",
                                       community_id) == alice["user"]["id"]

        # Again: nothing to do. Unknown people and communities are explained, exit 1.
        code, out = await grant_owner_cli(database_url, "--community", str(community_id),
                                          "--user", "alice")
        assert code == 0 and "already owns" in out, out
        code, out = await grant_owner_cli(database_url, "--community", str(community_id),
                                          "--user", "nobody-here")
        assert code == 1 and "no person with the username 'nobody-here'" in out, out
        code, out = await grant_owner_cli(database_url, "--community", "999999",
                                          "--user", "alice")
        assert code == 1 and "no community with id 999999" in out, out

        # Handing it on: alice becomes an admin, bob the owner.
        bob = await register(http, server.url, "bob")
        code, out = await grant_owner_cli(database_url, "--community", str(community_id),
                                          "--user", "bob")
        assert code == 0, out
        assert (await starter_of(http, server, bob["access_token"]))["role"] == "owner"
        assert (await starter_of(http, server, alice["access_token"]))["role"] == "admin"
