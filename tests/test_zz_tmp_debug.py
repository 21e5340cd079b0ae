"""Several real gateway processes sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import psutil
import pytest

from tests.conftest import (
    TEST_SECRET,
    RunningServer,
    free_port,
    start_server_process,
    stop_server_process,
)
from tests.helpers import GatewayClient, register
from tests.redis_fixture import RedisServer


DIRS = ["/tmp/dbg_a", "/tmp/dbg_b"]


async def test_redis_restart_under_traffic_loses_nothing_acknowledged(
        database_url: str, redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    """The bus reconnects by itself; messages published while Redis was away reach the
    other node's clients from PostgreSQL, in order, once."""
    node_a = start_server_process(database_url, HEARTH_REDIS_URL=redis_server.url,
                                  HEARTH_LOG_LEVEL="INFO", HEARTH_DATA_DIR=DIRS.pop(0))
    node_b = start_server_process(database_url, HEARTH_REDIS_URL=redis_server.url,
                                  HEARTH_LOG_LEVEL="INFO", HEARTH_DATA_DIR=DIRS.pop(0))
    try:
        sender_account = await register(http, node_a.url)
        reader_account = await register(http, node_b.url)
        sender = await GatewayClient.identified(http, node_a.ws_url,
                                                sender_account["access_token"])
        reader = await GatewayClient.identified(http, node_b.ws_url,
                                                reader_account["access_token"])
        general = sender.channel_named("general")["id"]
        acked: list[int] = []

        async def send(n: int) -> None:
            for i in range(n):
                reply = await sender.request("send_message", channel_id=general,
                                             content=f"r{len(acked)}", nonce=f"r-{i}-{n}",
                                             timeout=30)
                assert reply["op"] == "ok", reply
                acked.append(reply["data"]["message"]["seq"])

        await send(5)
        await asyncio.to_thread(redis_server.stop)
        outage = asyncio.create_task(send(5))  # acknowledged once committed
        await asyncio.sleep(1.0)
        await asyncio.to_thread(redis_server.start)
        await outage
        await send(5)
        got: list[int] = []
        try:
            while len(got) < len(acked):
                got.append((await reader.event("message_create", timeout=15))["message"]["seq"])
        except TimeoutError:
            raise AssertionError(f"received {got}, acknowledged {acked}") from None
        assert got == acked
        await reader.no_event("message_create", wait=0.5)
    finally:
        import glob, os
        for n in (node_a, node_b):
            print("=====", n.url)
        stop_server_process(node_a)
        stop_server_process(node_b)

