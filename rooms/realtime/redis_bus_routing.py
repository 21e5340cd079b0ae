"""Where the Redis bus's topics live: the list of primaries, and Redis Cluster's slot map.

The bus (:mod:`rooms.realtime.redis_bus`) sends each topic to exactly one primary. With
plain primaries that is ``crc32(topic) % n`` over the URL list, so every process must
parse the list the same way (:func:`split_urls`); with Redis Cluster it is the owner of
the topic's hash slot, read with ``CLUSTER SLOTS`` (:func:`fetch_cluster_slots`) after a
seed said it is a cluster (:func:`is_cluster`). A subscription command may carry topics
of one slot only there (:func:`group_topics`). These are the stateless parts of routing;
the bus keeps the current table and re-reads it when a slot moves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from rooms.realtime.redis_bus_connections import (
    CONNECTION_ERRORS,
    CONNECTION_OR_REPLY_ERRORS,
    command,
)

CLUSTER_SLOTS = 16384
SUBSCRIBE_CHUNK = 1000


def split_urls(value: str | Sequence[str]) -> list[str]:
    """``"redis://a:6379, redis://b:6379"`` (or a list) -> one URL per primary/seed."""
    parts = re.split(r"[,\s]+", value) if isinstance(value, str) else list(value)
    urls = [part.strip() for part in parts if part.strip()]
    if not urls:
        raise ValueError("no Redis URL given (HEARTH_REDIS_URL)")
    return urls


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query,
                       parts.fragment))


def group_topics(topics: list[str], sharded: bool) -> list[list[str]]:
    """Topics in groups that one (S)SUBSCRIBE may carry: one hash slot per group in
    sharded mode (else CROSSSLOT), chunks of ``SUBSCRIBE_CHUNK`` otherwise."""
    if not topics:
        return []
    if sharded:
        by_slot: dict[int, list[str]] = {}
        for topic in topics:
            by_slot.setdefault(key_slot(topic.encode()), []).append(topic)
        return list(by_slot.values())
    return [topics[i:i + SUBSCRIBE_CHUNK] for i in range(0, len(topics), SUBSCRIBE_CHUNK)]


async def is_cluster(seeds: list[dict[str, Any]], connect_timeout: float) -> bool:
    """Whether the first seed that answers ``INFO cluster`` has cluster mode enabled
    (raises the last connection error when none answers)."""
    info: Any = None
    error: BaseException | None = None
    for kwargs in seeds:  # the first seed that answers decides
        try:
            info = await command(kwargs, connect_timeout, "INFO", "cluster")
            break
        except CONNECTION_ERRORS as exc:
            error = exc
    else:
        assert error is not None
        raise error
    return isinstance(info, bytes) and b"cluster_enabled:1" in info


async def fetch_cluster_slots(
    candidates: list[dict[str, Any]], connect_timeout: float,
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(owner name per slot, connection kwargs per primary) from the first node of
    ``candidates`` that answers ``CLUSTER SLOTS``."""
    error: BaseException | None = None
    for kwargs in candidates:
        try:
            reply = await command(kwargs, connect_timeout, "CLUSTER", "SLOTS")
        except CONNECTION_OR_REPLY_ERRORS as exc:
            error = exc
            continue
        owners = [""] * CLUSTER_SLOTS
        nodes: dict[str, dict[str, Any]] = {}
        for start, end, primary, *_replicas in reply:
            host = primary[0].decode() if primary[0] not in (b"", b"?") else kwargs["host"]
            port = int(primary[1])
            name = f"{host}:{port}"
            if name not in nodes:
                nodes[name] = dict(kwargs, host=host, port=port)
            owners[int(start):int(end) + 1] = [name] * (int(end) - int(start) + 1)
        if nodes:
            return owners, nodes
        error = RedisConnectionError("the cluster has no slots assigned")
    raise error if error is not None else RedisConnectionError("no cluster node")
