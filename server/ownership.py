"""Who owns a community when nobody set it up through the API: the first account of a
fresh install, and ``hearth grant-owner`` for installs that already have people.

Why: the embedded install creates a starter community owned by a system account that
cannot sign in (persistence/accounts.py ``ensure_system_user_txn``), so without this
nobody could manage it. Both paths change the owner in one transaction with an audit
entry (``community.owner``); the previous owner stays a member as ``admin``.
"""

from __future__ import annotations

from dataclasses import dataclass

from persistence import accounts as accounts_db
from persistence import audit as audit_db
from persistence import communities as communities_db
from persistence.database import Connection, Database

SYSTEM_USERNAME = "hearth"
"""The system account that owns the starter community until someone claims it."""


async def claim_starter_txn(conn: Connection, community_id: int, user_id: int) -> bool:
    """Inside a registration transaction: make ``user_id`` the starter community's owner
    if this is the first person on the install and the system account still owns it.

    Race-safe: the owner is swapped with a compare-and-set on the locked community row
    (:func:`persistence.communities.transfer_ownership_txn` with ``only_from``), so of
    several first registrations committing at once exactly one becomes the owner; the
    others see the owner already changed and stay members. An install that already had
    people when this ran first changes nothing (use ``hearth grant-owner`` there).
    """
    if await communities_db.human_accounts_besides(conn, user_id):
        return False
    system_id = await conn.fetchval(
        "SELECT id FROM users WHERE lower(username) = $1 AND is_bot AND password_hash IS NULL",
        SYSTEM_USERNAME)
    if system_id is None:
        return False
    previous = await communities_db.transfer_ownership_txn(conn, community_id, user_id,
                                                           only_from=int(system_id))
    if previous is None:
        return False
    await audit_db.record(conn, community_id=community_id, actor_id=None,
                          action="community.owner", target_type="member", target_id=user_id,
                          reason="first account of a new install",
                          before={"owner_id": previous}, after={"owner_id": user_id})
    return True


class GrantError(Exception):
    """``hearth grant-owner`` cannot do it; the message says why, for the operator."""


@dataclass(frozen=True)
class Granted:
    community_id: int
    community_name: str
    user_id: int
    previous_owner_id: int | None
    """None when the user already owned it (nothing changed)."""


async def grant_owner(db: Database, community_id: int, username: str) -> Granted:
    """Make the account ``username`` the owner of ``community_id`` (an operator's act,
    audited with no actor); they join it if they were not a member."""
    async with db.transaction("grant_owner") as conn:
        community = await communities_db.get_community(conn, community_id)
        if community is None:
            raise GrantError(f"no community with id {community_id}")
        found = await accounts_db.get_user_auth_by_username(conn, username)
        if found is None:
            raise GrantError(f"no person with the username {username!r} (bots cannot own)")
        user_id = found[0]
        previous = await communities_db.transfer_ownership_txn(conn, community_id, user_id)
        if previous is not None:
            await audit_db.record(conn, community_id=community_id, actor_id=None,
                                  action="community.owner", target_type="member",
                                  target_id=user_id, reason="hearth grant-owner",
                                  before={"owner_id": previous}, after={"owner_id": user_id})
        return Granted(community.id, community.name, user_id, previous)
