"""Accounts and credentials: registration, login, token rotation, bots, authentication.

Token formats follow docs/rest.md:

- access token: HS256 JWT (``sub``, ``typ="access"``, ``exp``, ``iat``, ``jti``), 15 min,
  keyed with HMAC-SHA256(HEARTH_SECRET, "hearth access token v1") (see ``signing_key``);
- bot token: ``hb.<token_id>.<secret>``, stored as sha256(secret), never expires;
- refresh token: ``hr.<random>``, stored as sha256(token), 30 days, rotated on each use;
  presenting a used one revokes its whole family (stolen-token detection).

Passwords are hashed with argon2id (argon2-cffi) in a worker thread, so the event loop
never blocks on the deliberately slow hash, and a semaphore bounds how many hashes run
at once (each may take tens of MiB of memory).

Failures are raised as :class:`AuthError` subclasses carrying the HTTP status and error
code of the REST contract, so ``server/api_auth.py`` (and the gateway) map them without
a lookup table.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

import argon2
import asyncpg
import jwt

from persistence import accounts, outbox
from persistence.database import Database
from protocol.domain_events import LoggedIn
from protocol.models import User
from protocol.rest import BotCreated, Provisioned, ProvisionedChannel, ProvisionedUser, TokenPair

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,32}")
PASSWORD_MIN, PASSWORD_MAX = 8, 256
DISPLAY_NAME_MAX = 64
LOADTEST_MAX_USERS = 200_000

BOT_TOKEN_PREFIX = "hb."
REFRESH_TOKEN_PREFIX = "hr."


# ----------------------------------------------------------------------------- errors


class AuthError(Exception):
    """A refused request: ``status`` and ``code`` are the REST reply's."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(AuthError):
    status, code = 400, "invalid_request"


class InvalidCredentials(AuthError):
    status, code = 401, "invalid_credentials"


class InvalidToken(AuthError):
    status, code = 401, "invalid_token"


class Forbidden(AuthError):
    status, code = 403, "forbidden"


class NotFound(AuthError):
    status, code = 404, "not_found"


class UsernameTaken(AuthError):
    status, code = 409, "username_taken"


class TooManyAttempts(AuthError):
    """Login throttled; ``retry_after`` is whole seconds until an attempt may succeed."""

    status, code = 429, "too_many_attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# ------------------------------------------------------------------------ wire types


# -------------------------------------------------------------------------- throttle


class SlidingWindow:
    """Per-key event timestamps within the last ``window_s`` seconds, in process memory.

    In-process is enough for a brute-force brake: with several nodes an attacker gets at
    most ``limit`` attempts per node. Memory is bounded by pruning idle keys whenever the
    table grows past ``max_keys`` (and evicting the oldest ones if pruning is not enough).
    """

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._events: dict[str, collections.deque[float]] = {}

    def _live(self, key: str, now: float) -> collections.deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def retry_after(self, key: str) -> float:
        """0 if another event is allowed now, else seconds until one is."""
        now = self._clock()
        events = self._live(key, now)
        if events is None or len(events) < self.limit:
            return 0.0
        return events[-self.limit] + self.window_s - now

    def add(self, key: str) -> None:
        now = self._clock()
        events = self._live(key, now)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._prune(now)
            events = self._events[key] = collections.deque()
        events.append(now)
        if len(events) > self.limit:
            events.popleft()  # only the newest ``limit`` matter

    def clear(self, key: str) -> None:
        self._events.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in list(self._events):
            self._live(key, now)
        excess = len(self._events) - self.max_keys // 2
        if excess > 0:  # still full of live keys: drop those idle the longest
            for key in sorted(self._events, key=lambda k: self._events[k][-1])[:excess]:
                del self._events[key]


# ---------------------------------------------------------------------- the service


def signing_key(secret: str) -> bytes:
    """The HS256 key of access tokens, derived from HEARTH_SECRET.

    Derived rather than the raw string: config allows 16-character secrets while PyJWT
    warns below 32 bytes, and a fixed-length derived key also separates access-token
    signing from any other use of the secret. Every node derives the same key.
    """
    return hmac.new(secret.encode(), b"hearth access token v1", hashlib.sha256).digest()


def _sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class Authenticator:
    """Issues and checks every credential of Hearth.

    Login throttling: at most ``account_failure_limit`` failed logins per username per
    ``account_window_s`` (a success clears the count), and at most
    ``address_attempt_limit`` login attempts per remote address per ``address_window_s``;
    beyond either, :class:`TooManyAttempts` with the seconds until the window frees up.
    The per-account limit lets anyone hold a known username's logins off for the window;
    that is the accepted price of capping guesses per account across many addresses.

    Account enumeration: a login for an unknown user (or a bot) runs a dummy argon2
    verification and fails with the same error as a wrong password, so neither the reply
    nor its timing tells whether the account exists. Registration of a taken name does
    answer 409 ``username_taken``: a sign-up form has to say so, so this is accepted.
    Registration is not throttled here (shared addresses such as a classroom NAT sign up
    many accounts at once); its argon2 hash per request is what slows probing through it.

    Bot-token lookups are cached in process for ``bot_token_cache_ttl_s`` (default 30 s,
    capped at 60 s): a revocation takes effect at once on the node that performed it and
    within that TTL on every other node. Users resolved from access JWTs are cached the
    same way (a JWT stays valid until its ``exp`` regardless).

    ``password_hasher`` carries the argon2 cost parameters (argon2-cffi's defaults in
    production; tests pass cheap ones). ``on_register`` runs inside the registration
    transaction with the new user, e.g. to add them to a starter community.
    """

    def __init__(self, db: Database, secret: str, *, access_ttl_s: int = 900,
                 refresh_ttl_s: int = 30 * 24 * 3600,
                 account_failure_limit: int = 5, account_window_s: float = 15 * 60.0,
                 address_attempt_limit: int = 30, address_window_s: float = 60.0,
                 password_hasher: argon2.PasswordHasher | None = None,
                 hash_concurrency: int | None = None,
                 bot_token_cache_ttl_s: float = 30.0,
                 loadtest_provisioning: bool = False,
                 on_register: Callable[[asyncpg.Connection, User], Awaitable[None]] | None = None,
                 ) -> None:
        if not secret:
            raise ValueError("Authenticator needs a non-empty signing secret")
        self.db = db
        self._signing_key = signing_key(secret)
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.loadtest_provisioning = loadtest_provisioning
        self._hasher = password_hasher or argon2.PasswordHasher()
        self._hash_slots = asyncio.Semaphore(hash_concurrency or max(2, os.cpu_count() or 2))
        self._dummy_hash: str | None = None
        self._account_failures = SlidingWindow(account_failure_limit, account_window_s)
        self._address_attempts = SlidingWindow(address_attempt_limit, address_window_s)
        self._cache_ttl_s = min(bot_token_cache_ttl_s, 60.0)
        self._bot_cache: dict[tuple[int, bytes], tuple[float, User]] = {}
        self._user_cache: dict[int, tuple[float, User]] = {}
        self._cache_max = 50_000
        self._on_register = on_register

    # -------------------------------------------------------------- password hashing

    async def _hash(self, password: str) -> str:
        async with self._hash_slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                log.error("stored password hash is not an argon2 hash")
                return False

        async with self._hash_slots:
            return await asyncio.to_thread(verify)

    async def _dummy_verify(self, password: str) -> None:
        """Spend what a real verification costs, so unknown users cost the same time."""
        if self._dummy_hash is None:
            self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
        await self._verify(self._dummy_hash, password)

    # ------------------------------------------------------------------- validation

    @staticmethod
    def _check_username(username: str) -> None:
        if not USERNAME_RE.fullmatch(username):
            raise InvalidRequest("username must be 3-32 characters of A-Z a-z 0-9 _ . -")

    @staticmethod
    def _check_password(password: str) -> None:
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            raise InvalidRequest(f"password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters")

    @staticmethod
    def _display_name(display_name: str | None, username: str) -> str:
        name = (display_name if display_name is not None else username).strip()
        if not 1 <= len(name) <= DISPLAY_NAME_MAX:
            raise InvalidRequest(f"display_name must be 1-{DISPLAY_NAME_MAX} characters")
        return name

    # ----------------------------------------------------------------------- tokens

    def _access_token(self, user_id: int) -> str:
        now = int(time.time())
        claims = {"sub": str(user_id), "typ": "access", "iat": now,
                  "exp": now + self.access_ttl_s, "jti": secrets.token_urlsafe(12)}
        return jwt.encode(claims, self._signing_key, algorithm="HS256")

    def _refresh_expiry(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.refresh_ttl_s)

    async def _issue_pair_txn(self, conn: asyncpg.Connection, user: User) -> TokenPair:
        refresh = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await accounts.insert_refresh_token(conn, user_id=user.id, token_hash=_sha256(refresh),
                                            expires_at=self._refresh_expiry())
        return TokenPair(user=user, access_token=self._access_token(user.id),
                         refresh_token=refresh, expires_in=self.access_ttl_s)

    # ------------------------------------------------------------------ operations

    async def register(self, username: str, password: str,
                       display_name: str | None = None) -> TokenPair:
        """Create a password account and sign it in.

        A taken username raises :class:`UsernameTaken` (409): this reveals that the
        account exists, which a sign-up form cannot avoid; it is accepted.
        """
        self._check_username(username)
        self._check_password(password)
        name = self._display_name(display_name, username)
        password_hash = await self._hash(password)
        try:
            async with self.db.transaction("auth.register") as conn:
                user = await accounts.create_user(conn, username=username, display_name=name,
                                                  password_hash=password_hash)
                if self._on_register is not None:
                    await self._on_register(conn, user)
                return await self._issue_pair_txn(conn, user)
        except accounts.UsernameTaken:
            raise UsernameTaken("that username is taken") from None

    def _throttle_check(self, account_key: str, remote: str | None) -> None:
        wait = max(self._address_attempts.retry_after(remote) if remote else 0.0,
                   self._account_failures.retry_after(account_key))
        if wait > 0:
            raise TooManyAttempts("too many login attempts; try again later",
                                  retry_after=max(1, math.ceil(wait)))

    async def login(self, username: str, password: str, remote: str | None = None) -> TokenPair:
        """Check a password and issue a token pair, under the login throttle.

        Unknown users, bots and wrong passwords all raise the same
        :class:`InvalidCredentials` after the same argon2 work.
        """
        account_key = username.lower()[:64]  # bounded memory; real names are <= 32
        self._throttle_check(account_key, remote)
        if remote:
            self._address_attempts.add(remote)
        found: tuple[int, str] | None = None
        if USERNAME_RE.fullmatch(username):  # no account can have any other name
            async with self.db.connection() as conn:
                found = await accounts.get_user_auth_by_username(conn, username)
        if found is None or len(password) > PASSWORD_MAX:
            await self._dummy_verify(password[:PASSWORD_MAX])
            ok = False
        else:
            ok = await self._verify(found[1], password)
        if not ok or found is None:
            self._account_failures.add(account_key)
            raise InvalidCredentials("invalid username or password")
        self._account_failures.clear(account_key)
        user_id, password_hash = found
        upgraded = (await self._hash(password)
                    if self._hasher.check_needs_rehash(password_hash) else None)
        async with self.db.transaction("auth.login") as conn:
            if upgraded is not None:  # cost parameters were raised since it was stored
                await accounts.set_password_hash(conn, user_id, upgraded)
            user = await accounts.get_user(conn, user_id)
            if user is None:  # deleted between the two statements
                raise InvalidCredentials("invalid username or password")
            await outbox.append_txn(conn, [LoggedIn(user_id=user_id)])
            return await self._issue_pair_txn(conn, user)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token into a new pair; reuse revokes the family (then 401)."""
        if not refresh_token.startswith(REFRESH_TOKEN_PREFIX):
            raise InvalidToken("invalid refresh token")
        new_refresh = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.db.transaction("auth.refresh") as conn:
            outcome = await accounts.consume_refresh_token_txn(
                conn, token_hash=_sha256(refresh_token), new_token_hash=_sha256(new_refresh),
                new_expires_at=self._refresh_expiry())
            user = None
            if outcome.status is accounts.RefreshStatus.ROTATED and outcome.user_id is not None:
                user = await accounts.get_user(conn, outcome.user_id)
        # Out of the transaction: a detected reuse must commit its revocation first.
        if outcome.status is accounts.RefreshStatus.REUSED:
            log.warning("refresh token reuse for user %s: family revoked", outcome.user_id)
        if user is None:
            raise InvalidToken("invalid refresh token")
        return TokenPair(user=user, access_token=self._access_token(user.id),
                         refresh_token=new_refresh, expires_in=self.access_ttl_s)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the refresh token's family. Unknown tokens are ignored (idempotent).

        Access tokens already issued stay valid until they expire (at most
        ``access_ttl_s``); that is the stateless-JWT trade-off of the contract.
        """
        if not refresh_token.startswith(REFRESH_TOKEN_PREFIX):
            return
        async with self.db.transaction("auth.logout") as conn:
            await accounts.revoke_refresh_family_txn(conn, _sha256(refresh_token))

    async def logout_everywhere(self, user_id: int) -> int:
        """Revoke every refresh-token family of ``user_id``: every browser and app signed
        in as them must sign in again once its access token expires (at most
        ``access_ttl_s``). Returns how many families were live."""
        async with self.db.transaction("auth.logout_everywhere") as conn:
            return await accounts.revoke_user_refresh_tokens_txn(conn, user_id)

    async def create_bot(self, owner: User, username: str,
                         display_name: str | None = None) -> BotCreated:
        """A bot account owned by ``owner`` and its long-lived token (shown only now)."""
        if owner.bot:
            raise Forbidden("bots cannot create bots")
        self._check_username(username)
        name = self._display_name(display_name, username)
        secret = secrets.token_urlsafe(32)
        try:
            async with self.db.transaction("auth.create_bot") as conn:
                user = await accounts.create_user(conn, username=username, display_name=name,
                                                  password_hash=None, is_bot=True,
                                                  bot_owner_id=owner.id)
                token_id = await accounts.insert_bot_token(conn, user.id, _sha256(secret))
        except accounts.UsernameTaken:
            raise UsernameTaken("that username is taken") from None
        return BotCreated(user=user, token=f"{BOT_TOKEN_PREFIX}{token_id}.{secret}")

    async def revoke_bot_token(self, token_id: int) -> bool:
        """Revoke a bot token: at once here, within the cache TTL on other nodes."""
        async with self.db.transaction("auth.revoke_bot_token") as conn:
            revoked = await accounts.revoke_bot_token(conn, token_id)
        for key in [k for k in self._bot_cache if k[0] == token_id]:
            del self._bot_cache[key]
        return revoked

    # --------------------------------------------------------------- authentication

    def _cache_put(self, cache: dict[Any, tuple[float, User]], key: Hashable, user: User) -> None:
        if len(cache) >= self._cache_max:
            now = time.monotonic()
            for k in [k for k, (expiry, _) in cache.items() if expiry <= now]:
                del cache[k]
            if len(cache) >= self._cache_max:
                cache.clear()
        cache[key] = (time.monotonic() + self._cache_ttl_s, user)

    @staticmethod
    def _cache_get(cache: dict[Any, tuple[float, User]], key: Hashable) -> User | None:
        hit = cache.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del cache[key]
            return None
        return hit[1]

    async def authenticate(self, token: str) -> User | None:
        """The user an access JWT or bot token stands for, or None if it is not valid."""
        if token.startswith(BOT_TOKEN_PREFIX):
            return await self._authenticate_bot(token)
        try:
            claims = jwt.decode(token, self._signing_key, algorithms=["HS256"],
                                options={"require": ["exp", "iat", "sub", "typ"]})
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != "access":
            return None
        try:
            user_id = int(claims["sub"])
        except (TypeError, ValueError):
            return None
        user = self._cache_get(self._user_cache, user_id)
        if user is None:
            async with self.db.connection() as conn:
                user = await accounts.get_user(conn, user_id)
            if user is None:
                return None
            self._cache_put(self._user_cache, user_id, user)
        return user

    async def _authenticate_bot(self, token: str) -> User | None:
        _, _, rest = token.partition(BOT_TOKEN_PREFIX)
        id_part, dot, secret = rest.partition(".")
        if not dot or not secret or not id_part.isdigit() or len(id_part) > 18:
            return None
        key = (int(id_part), _sha256(secret))
        user = self._cache_get(self._bot_cache, key)
        if user is None:
            async with self.db.connection() as conn:
                user = await accounts.user_for_bot_token(conn, key[0], key[1])
            if user is None:
                return None
            self._cache_put(self._bot_cache, key, user)
        return user

    # ------------------------------------------------------------ load-test helpers

    async def provision_loadtest(self, users: int, room_size: int,
                                 prefix: str | None = None) -> Provisioned:
        """Bulk bot accounts in one community, split into private rooms of ``room_size``.

        Only when constructed with ``loadtest_provisioning=True`` (else
        :class:`NotFound`, so the route looks absent). Unauthenticated by design: a load
        generator bootstraps from nothing, and the flag must never be on in production.
        The default prefix is random so repeated runs do not clash.
        """
        if not self.loadtest_provisioning:
            raise NotFound("not found")
        if not 1 <= users <= LOADTEST_MAX_USERS:
            raise InvalidRequest(f"users must be 1-{LOADTEST_MAX_USERS}")
        if not 1 <= room_size <= users:
            raise InvalidRequest("room_size must be between 1 and users")
        prefix = prefix if prefix is not None else f"lt{secrets.token_hex(3)}_"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,24}", prefix):
            raise InvalidRequest("prefix must be 1-24 characters of A-Z a-z 0-9 _ . -")
        if len(prefix) + len(str(users - 1)) > 32 or len(prefix) + 1 < 3:
            raise InvalidRequest("prefix makes usernames outside 3-32 characters")
        try:
            async with self.db.transaction("auth.provision_loadtest") as conn:
                created = await accounts.bulk_create_bot_users_txn(conn, prefix, users)
                community_id, rooms = await accounts.provision_rooms_txn(
                    conn, community_name=f"loadtest {prefix}",
                    user_ids=[uid for uid, _, _ in created], room_size=room_size)
        except accounts.UsernameTaken as exc:
            raise UsernameTaken(f"username {exc.username!r} is taken; use another prefix") \
                from None
        return Provisioned(
            community_id=community_id,
            users=[ProvisionedUser(id=uid, username=name, token=token)
                   for uid, name, token in created],
            channels=[ProvisionedChannel(id=cid, member_ids=members) for cid, members in rooms])
