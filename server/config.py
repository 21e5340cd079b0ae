"""Hearth's configuration: one typed object, read once, failing fast with the key's name.

Sources, later ones winning: defaults, a TOML file (``--config`` or ``HEARTH_CONFIG``),
environment variables ``HEARTH_<FIELD>`` (upper case), then command-line flags.
Limits are under ``[limits]`` in TOML and ``HEARTH_LIMIT_<NAME>`` in the environment.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from protocol.limits import Limits


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message names the key."""


class Config(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    """PostgreSQL DSN. Unset: an embedded PostgreSQL in ``data_dir``."""
    redis_url: str | None = None
    """Redis for fan-out between processes and nodes. Unset: the in-process bus (one
    process only). Several primaries: a comma-separated list (topics are hashed)."""
    workers: int = 0
    """Gateway processes on this node sharing the port (SO_REUSEPORT). 0: one per core
    when ``redis_url`` is set, else one. More than one needs ``redis_url``."""
    data_dir: str = ".hearth"
    """Where the embedded PostgreSQL and the generated secret live."""
    secret: str | None = None
    """Signs access tokens. Required with ``database_url`` (every node must share it);
    generated and kept in ``data_dir`` for the embedded default."""
    allowed_origins: list[str] = []
    """Browser origins allowed to call the REST API and open the gateway, besides the
    server's own. ``["*"]`` allows any."""
    starter_community: bool = True
    """Create a starter community on a new installation and add new accounts to it."""
    loadtest_provisioning: bool = False
    """Enable ``POST /api/v1/loadtest/provision`` (bulk bot accounts). Never in production."""
    group_commit_window_ms: float = 0.0
    """Extra wait for more messages before a group commit; 0 batches naturally."""
    db_pool_size: int = 20
    admission_per_s: int = 2000
    """New websocket connections a process accepts per second (burst: one second's
    worth); beyond it, HTTP 503 with a jittered Retry-After. Bounds reconnect storms."""
    session_start_concurrency: int = 32
    """Identify/resume a process works on at once, each whole (authentication, claim,
    view, replay, catch-up) and first come first served (server/session_gate.py). After
    a process dies its clients all resume on the survivors: bounded, they finish
    steadily from the first second instead of all late together. Above the database
    pool size (``db_pool_size``) so the pool stays busy."""
    session_start_max_queue_s: float = 5.0
    """Longest estimated wait in that queue; beyond it a newcomer is refused at once
    (HTTP 503 + Retry-After, or ``reconnect`` + close 1013) with a jittered delay
    between the excess and the whole backlog. Keep it well under
    ``limits.identify_timeout_ms`` (10 s): a connection still waiting then is closed
    with 4003 and its place in the queue wasted."""
    presence_ttl_s: float = 45.0
    """Lease of a process's presence in Redis, renewed every third of it: the users of a
    dead process are shown offline within this plus about 3 s. At most 55."""
    presence_batch_ms: int = 1500
    """A community's members get presence changes at most once per this, batched."""
    gc_freeze_interval_s: float = 30.0
    """Move surviving objects out of the cyclic collector's reach this often (see
    server/gc_policy.py); 0 disables and leaves CPython's defaults."""
    gc_full_interval_s: float = 300.0
    """One full collection (the only long pause left) this often, to reclaim cycles."""
    log_level: str = "INFO"
    log_format: str = "text"
    """``text`` for people, ``json`` (one object per line) for log pipelines."""
    access_token_ttl_s: int = 900
    argon2_time_cost: int | None = None
    """Password hashing cost; unset uses argon2-cffi's defaults (recommended). Tests
    lower it to keep the suite fast."""
    argon2_memory_kib: int | None = None
    audit_retention_days: int = 365
    """Audit log entries older than this are deleted (checked hourly); 0 keeps them
    forever."""
    sidecars: list[str] | None = None
    """Sidecars (``sidecars/``) a gateway process mounts: unset or ``all``, every one;
    ``none``, none (they run as their own processes: ``hearth serve --only NAME``)."""
    outbox_retention_days: float = 7.0
    """Domain events older than this that every subscriber consumed are deleted."""
    raid_joins: int = 20
    """Raid signal: this many joins of one community within ``raid_joins_window_s``
    (0 turns the signal off)."""
    raid_joins_window_s: int = 60
    raid_messages: int = 300
    """Raid signal: this many messages in one community within
    ``raid_messages_window_s`` (0 turns the signal off)."""
    raid_messages_window_s: int = 30
    live_reminder_lead_s: float = 600.0
    """Live sessions: registered members get ``live_session_reminder`` this many seconds
    before the planned start (default 10 minutes)."""
    live_reminder_every_s: float = 15.0
    """How often due reminders are looked for (a reminder may come this much late)."""
    stage_mix_listeners_above: int = 25
    """Live-session stages: once more than this many listeners are in the room, they
    all receive one server-side mix (decoded, mixed, encoded once) instead of one
    forwarded track per speaker; 0 means always mix. Speakers keep direct forwards."""
    voice_enabled: bool = True
    """Serve voice rooms (``voice_join`` and the rest); false answers them
    ``voice_unavailable``."""
    media_workers: int | None = None
    """Media worker processes (SFU, ``rooms/media/``) of this node. Unset: one per core
    (the CPU count) under ``--workers N`` (N > 1), where the supervisor owns them and
    every gateway process shares them; 1 for a single process (``hearth serve``, the
    embedded default), which spawns its own. 0: none (voice joins then fail with
    ``voice_unavailable``)."""
    media_capacity_tracks: int | None = None
    """Admission control of each media worker, in outbound tracks (one per receive
    slot of every participant). Unset: the worker's default
    (``rooms/media/worker.py: DEFAULT_CAPACITY_TRACKS``, 175, from the measured cost
    per track in docs/BENCHMARKS.md) until measured on the target hardware."""
    media_listen: str | None = None
    """``host:port``: media workers also listen on TCP there (worker i on port+i; port
    0: any free port each) so that other nodes reach the rooms placed on them. Every
    IPC connection is authenticated with a key derived from ``secret``. Needs
    ``redis_url`` (the shared placement map). Unset: unix sockets only; a room placed
    on another node is then ``voice_unavailable`` here."""
    media_advertise: str | None = None
    """Host other nodes use to reach ``media_listen`` (required when it is a wildcard
    address such as ``0.0.0.0``)."""
    media_ice: str = "default"
    """Which local addresses the media workers gather ICE host candidates on:
    ``default`` (every interface but loopback, aioice's rule), ``loopback`` (127.0.0.1
    only: tests and single-host setups), ``with_loopback`` (both)."""
    media_private_candidates: bool = True
    """Accept clients' ICE candidates in private ranges (RFC 1918, 100.64/10,
    fc00::/7): needed when clients share a LAN/VPN with the media workers. A public
    deployment should set it false so a client cannot make a worker probe the
    worker's own network (loopback, link-local and the like are always refused)."""
    voice_mix_listeners_above: int | None = None
    """Voice rooms opened without options of their own (a live session's stage has
    ``stage_mix_listeners_above``) serve their listeners the server mix once more than
    this many listeners are in the room (docs/voice.md, "Server-side mix"); None: never,
    pure forwarding. Used by load tests of a stage-shaped voice room."""
    limits: Limits = Limits()

    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


_FIELDS = {f.name: f for f in msgspec.structs.fields(Config)}
_LIMIT_FIELDS = {f.name for f in msgspec.structs.fields(Limits)}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_value(raw: str, name: str, annotation: Any) -> Any:
    """Strings from the environment, decoded as JSON when the field is not a string;
    booleans also accept 1/0, yes/no, on/off."""
    if annotation in (str, "str", "str | None") or annotation == (str | None):
        return raw
    if annotation in (bool, "bool"):
        lowered = raw.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        if "list" in str(annotation):
            return [item.strip() for item in raw.split(",") if item.strip()]
        raise ConfigError(f"{name}: cannot read {raw!r}") from None


def _key_of(message: str) -> str:
    """The environment variable behind a msgspec error path such as ``$.limits.x``."""
    match = re.search(r"\$\.([a-z_]+)(?:\.([a-z_]+))?", message)
    if not match:
        return "configuration"
    if match.group(1) == "limits" and match.group(2):
        return f"HEARTH_LIMIT_{match.group(2).upper()}"
    return f"HEARTH_{match.group(1).upper()}"


def load_config(file: str | None = None, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, Any] = {}
    path = file or env.get("HEARTH_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"HEARTH_CONFIG ({path}): {exc}") from exc
    limits = dict(raw.pop("limits", {}))
    for name, field in _FIELDS.items():
        key = f"HEARTH_{name.upper()}"
        if name != "limits" and key in env:
            raw[name] = _env_value(env[key], key, field.type)
    for name in _LIMIT_FIELDS:
        key = f"HEARTH_LIMIT_{name.upper()}"
        if key in env:
            limits[name] = _env_value(env[key], key, int)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if limits:
        raw["limits"] = limits
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{_key_of(str(exc))}: {exc}") from exc
    if not 0 < config.port < 65536:
        raise ConfigError(f"HEARTH_PORT: {config.port} is not a port")
    if config.database_url and not config.secret:
        raise ConfigError("HEARTH_SECRET is required with HEARTH_DATABASE_URL: every node "
                          "must sign tokens with the same secret")
    if not 1 <= config.presence_ttl_s <= 55:
        raise ConfigError("HEARTH_PRESENCE_TTL_S: 1 to 55 seconds (keeps the offline bound "
                          "under 60 s)")
    if config.presence_batch_ms < 100:
        raise ConfigError("HEARTH_PRESENCE_BATCH_MS: at least 100")
    if config.log_format not in ("text", "json"):
        raise ConfigError("HEARTH_LOG_FORMAT: text or json")
    if config.workers < 0:
        raise ConfigError("HEARTH_WORKERS: 0 (automatic) or more")
    if config.workers > 1 and not config.redis_url:
        raise ConfigError("HEARTH_WORKERS > 1 needs HEARTH_REDIS_URL: processes exchange "
                          "events through Redis")
    if config.gc_freeze_interval_s < 0 or config.gc_full_interval_s <= 0:
        raise ConfigError("HEARTH_GC_FREEZE_INTERVAL_S: 0 (off) or more seconds; "
                          "HEARTH_GC_FULL_INTERVAL_S: more than 0 seconds")
    if config.audit_retention_days < 0:
        raise ConfigError("HEARTH_AUDIT_RETENTION_DAYS: 0 (keep forever) or more")
    if config.outbox_retention_days < 0:
        raise ConfigError("HEARTH_OUTBOX_RETENTION_DAYS: 0 or more days")
    for key in ("raid_joins", "raid_messages"):
        if getattr(config, key) < 0:
            raise ConfigError(f"HEARTH_{key.upper()}: 0 (off) or more")
    for key in ("raid_joins_window_s", "raid_messages_window_s"):
        if not 1 <= getattr(config, key) <= 3600:
            raise ConfigError(f"HEARTH_{key.upper()}: 1 to 3600 seconds")
    if config.live_reminder_lead_s < 0 or not 0.05 <= config.live_reminder_every_s <= 3600:
        raise ConfigError("HEARTH_LIVE_REMINDER_LEAD_S: 0 or more; "
                          "HEARTH_LIVE_REMINDER_EVERY_S: 0.05 to 3600 seconds")
    if config.media_workers is not None and not 0 <= config.media_workers <= 256:
        raise ConfigError("HEARTH_MEDIA_WORKERS: 0 (none) to 256")
    if config.media_capacity_tracks is not None and config.media_capacity_tracks < 1:
        raise ConfigError("HEARTH_MEDIA_CAPACITY_TRACKS: at least 1")
    if config.media_ice not in ("default", "loopback", "with_loopback"):
        raise ConfigError("HEARTH_MEDIA_ICE: default, loopback or with_loopback")
    if config.media_listen is not None:
        from protocol.media_ipc import split_host_port

        try:
            host, _port = split_host_port(config.media_listen)
        except ValueError as exc:
            raise ConfigError(f"HEARTH_MEDIA_LISTEN: {exc}") from None
        if host in ("0.0.0.0", "::") and not config.media_advertise:
            raise ConfigError("HEARTH_MEDIA_ADVERTISE is required when HEARTH_MEDIA_LISTEN "
                              "is a wildcard address: other nodes need a host to reach")
        if not config.redis_url:
            raise ConfigError("HEARTH_MEDIA_LISTEN needs HEARTH_REDIS_URL: nodes find a "
                              "room's media worker through the shared placement map")
    if config.stage_mix_listeners_above < 0:
        raise ConfigError("HEARTH_STAGE_MIX_LISTENERS_ABOVE: 0 or more")
    if config.voice_mix_listeners_above is not None and config.voice_mix_listeners_above < 0:
        raise ConfigError("HEARTH_VOICE_MIX_LISTENERS_ABOVE: 0 or more listeners")
    if config.secret is not None and len(config.secret) < 16:
        raise ConfigError("HEARTH_SECRET: use at least 16 characters")
    return config


def worker_count(config: Config) -> int:
    if config.workers:
        return config.workers
    return (os.cpu_count() or 1) if config.redis_url else 1


def media_worker_count(config: Config, *, supervised: bool) -> int:
    """How many media workers a node runs (``media_workers``, see its docstring);
    ``supervised``: the supervisor of ``--workers N`` asks, not a single process."""
    if not config.voice_enabled:
        return 0
    if config.media_workers is not None:
        return config.media_workers
    return (os.cpu_count() or 1) if supervised else 1


def secret_for(config: Config) -> str:
    """The configured secret, or one generated once and kept in the data directory."""
    if config.secret:
        return config.secret
    path = config.data_path() / "secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value, encoding="utf-8")
    path.chmod(0o600)
    return value
