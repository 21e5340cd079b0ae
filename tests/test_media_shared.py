"""Media workers shared by several gateway processes and nodes (issue #6): real worker
processes, real aiortc peers on 127.0.0.1, real Redis for placement. Each MediaPool
here stands for one gateway process (its own IPC connections); no gateway.

Covers: one room reached from two pools (each participant hears the other), events
routed to one connection (no duplicate Speaking, ParticipantState to the joiner), the
HMAC handshake on TCP (wrong key, no key, unauthenticated requests, oversized
pre-auth frames), a closed gateway connection taking its participants out, SIGKILL of
a worker (``worker_gone``, placement cleared, the room placed again on a live worker),
and a placement naming another host's unix socket (``unreachable``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from protocol import media_ipc as ipc
from rooms.media import passthrough
from rooms.media.pool import (
    LocalPlacement,
    MediaPool,
    MediaRequestError,
    RedisPlacement,
    WorkerConnection,
)
from tests.media_peers import ClientPeer

pytestmark = pytest.mark.slow

KEY = ipc.derive_key("hearth-test-secret-0123456789")
TONES = [440.0, 660.0]


@pytest.fixture
async def sock_dir() -> AsyncIterator[str]:
    path = tempfile.mkdtemp(prefix="hm-", dir="/tmp")
    passthrough.set_host_address_mode("loopback")
    yield path
    passthrough.set_host_address_mode("default")
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


def placement(client: aioredis.Redis) -> RedisPlacement:
    # A unique prefix per test: the session's Redis is shared.
    return RedisPlacement(client, prefix=f"test:{uuid.uuid4().hex[:8]}:voice:room:")  # type: ignore[arg-type]


async def wait_for(predicate: object, timeout: float, step: float = 0.2) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


async def test_two_pools_share_one_room_and_events_are_routed(
        sock_dir: str, redis_client: aioredis.Redis) -> None:
    store = placement(redis_client)
    # b spawned the workers (the supervisor's role); a is another gateway process
    b = await MediaPool.start(2, sock_dir, ice="loopback", placement_store=store, key=KEY,
                              max_slots=2)
    a = await MediaPool.connect(list(b.addresses), store, key=KEY)
    got: dict[str, list[ipc.WorkerEvent]] = {"a": [], "b": []}
    a.on_event(lambda _p, ev: got["a"].append(ev))
    b.on_event(lambda _p, ev: got["b"].append(ev))
    peers = [ClientPeer(440.0, slots=2), ClientPeer(660.0, slots=2)]
    try:
        await a.open_room("r1")
        await b.open_room("r1")  # the same worker: placement found in Redis
        assert (await a.placement("r1")).instance == (await b.placement("r1")).instance
        await peers[0].accept((await a.join("r1", 1, await peers[0].offer())).sdp)
        await peers[1].accept((await b.join("r1", 2, await peers[1].offer())).sdp)

        def both_hear() -> bool:
            return peers[0].heard(1.0, TONES) == {660.0} and \
                peers[1].heard(1.0, TONES) == {440.0}

        assert await wait_for(both_hear, 20), [p.heard(1.0, TONES) for p in peers]

        def states(who: str) -> set[int]:
            return {ev.participant_id for ev in got[who]
                    if isinstance(ev, ipc.ParticipantState) and ev.state == "connected"}

        assert states("a") == {1} and states("b") == {2}  # each to its joiner only
        assert await wait_for(lambda: any(isinstance(ev, ipc.Speaking)
                                          and ev.participant_ids == [1, 2]
                                          for ev in got["a"]), 5)
        # Speaking goes to ONE connection: the joiner of the oldest participant (a)
        assert not any(isinstance(ev, ipc.Speaking) for ev in got["b"])
        speaking = [ev.participant_ids for ev in got["a"] if isinstance(ev, ipc.Speaking)]
        assert all(x != y for x, y in itertools.pairwise(speaking)), speaking

        # pool a goes away (its gateway process died): its participant leaves the
        # worker, the room stays for b, and b now gets the room's Speaking events
        worker_conn = await b.placement("r1")
        await a.close()
        async def participants() -> int:
            s = await worker_conn.call(ipc.GetStats(id=0))
            assert isinstance(s, ipc.WorkerStats)
            return s.participants

        for _ in range(50):  # the worker takes a's participant out when a's link ends
            if await participants() == 1:
                break
            await asyncio.sleep(0.1)
        assert await participants() == 1
        assert await wait_for(lambda: any(isinstance(ev, ipc.Speaking)
                                          and ev.participant_ids == [2]
                                          for ev in got["b"]), 5), got["b"]
    finally:
        for p in peers:
            await p.close()
        await b.close()
        await a.close()


async def test_tcp_handshake_refuses_unauthenticated_peers(
        sock_dir: str, redis_client: aioredis.Redis) -> None:
    pool = await MediaPool.start(1, sock_dir, ice="loopback", key=KEY,
                                 listen="127.0.0.1:0", advertise="127.0.0.1",
                                 placement_store=placement(redis_client))
    try:
        conn = next(iter(pool.workers.values()))
        assert conn.advertise is not None and conn.advertise.startswith("127.0.0.1:")
        tcp = conn.advertise

        def ignore(_p: str, _e: ipc.WorkerEvent) -> None:
            return None

        # the right key over TCP: served
        remote = await WorkerConnection.open(tcp, ignore, key=KEY)
        assert remote.instance == conn.instance
        assert isinstance(await remote.call(ipc.GetStats(id=0)), ipc.WorkerStats)
        await remote.close()
        # a wrong key, or none: refused
        with pytest.raises(MediaRequestError) as err:
            await WorkerConnection.open(tcp, ignore, key=ipc.derive_key("another-secret-000"))
        assert err.value.code == "unauthorized"
        with pytest.raises(MediaRequestError) as err:
            await WorkerConnection.open(tcp, ignore, key=None)
        assert err.value.code == "unauthorized"

        host, port = ipc.split_host_port(tcp)

        async def raw_exchange(payload: bytes) -> tuple[list[bytes], bool]:
            """Send ``payload`` after the hello; frames received and whether closed."""
            reader, writer = await asyncio.open_connection(host, port)
            frames: list[bytes] = []
            try:
                writer.write(payload)
                async with asyncio.timeout(5):
                    while True:
                        header = await reader.readexactly(4)
                        (n,) = ipc.LENGTH_PREFIX.unpack(header)
                        frames.append(await reader.readexactly(n))
            except asyncio.IncompleteReadError:
                return frames, True
            except TimeoutError:
                return frames, False
            finally:
                writer.close()

        # a request before authenticating: an error, then the link is closed
        frames, closed = await raw_exchange(ipc.encode_frame(ipc.OpenRoom(id=7, room_id="x")))
        assert closed and isinstance(ipc.decode_worker_frame(frames[0]), ipc.WorkerHello)
        error = ipc.decode_worker_frame(frames[1])
        assert isinstance(error, ipc.MediaError) and error.code == "unauthorized"
        # an oversized frame before authenticating: closed without reading it
        frames, closed = await raw_exchange(ipc.LENGTH_PREFIX.pack(ipc.MAX_FRAME_BYTES))
        assert closed
        # a forged proof: refused
        forged = ipc.encode_frame(ipc.Authenticate(id=1, client_nonce=b"\0" * 32,
                                                   mac=b"\1" * 32))
        frames, closed = await raw_exchange(forged)
        error = ipc.decode_worker_frame(frames[1])
        assert closed and isinstance(error, ipc.MediaError) and error.code == "unauthorized"
        # nothing was opened by any of them
        stats = (await pool.stats())[conn.path]
        assert stats.rooms == 0
    finally:
        await pool.close()


async def test_sigkill_of_a_worker_reports_worker_gone_and_replaces_the_room(
        sock_dir: str, redis_client: aioredis.Redis) -> None:
    store = placement(redis_client)
    pool = await MediaPool.start(2, sock_dir, ice="loopback", placement_store=store, key=KEY)
    gone: list[tuple[str, list[str]]] = []
    pool.on_worker_gone(lambda worker, rooms: gone.append((worker, rooms)))
    peer = ClientPeer(440.0, slots=1)
    try:
        await pool.open_room("r2")
        conn = await pool.placement("r2")
        await pool.join("r2", 1, await peer.offer())
        value = await store.get("r2")
        assert value is not None and value.startswith(conn.instance + "@")
        victim = pool.pids[pool.addresses.index(conn.path)]
        os.kill(victim, signal.SIGKILL)
        assert await wait_for(lambda: bool(gone), 5)
        assert gone == [(conn.path, ["r2"])]
        assert await store.get("r2") is None  # placement cleared
        # a later open lands on the live worker
        await pool.open_room("r2")
        again = await pool.placement("r2")
        assert again.instance != conn.instance and again.connected
        # the pool starts the dead worker again (single process: no supervisor)
        for _ in range(100):
            if len(await pool.stats()) == 2:
                break
            await asyncio.sleep(0.2)
        assert len(await pool.stats()) == 2 and victim not in pool.pids
        # a stale placement (a dead instance at a live address) is replaced too
        await store.release("r2")
        await store.claim("r2", f"deadbeef@{again.placement_value.partition('@')[2]}")
        replaced = await pool.placement("r2")
        assert replaced.connected and replaced.instance in {
            c.instance for c in pool.workers.values() if c.connected}
        assert (await store.get("r2") or "").startswith(replaced.instance + "@")
    finally:
        await peer.close()
        await pool.close()


async def test_placement_on_another_hosts_unix_socket_is_unreachable(sock_dir: str) -> None:
    store = LocalPlacement()
    pool = await MediaPool.start(1, sock_dir, ice="loopback", placement_store=store, key=KEY)
    try:
        await store.claim("r3", "0123abcd@unix://some-other-host/tmp/hearth-media/x.sock")
        with pytest.raises(MediaRequestError) as err:
            await pool.open_room("r3")
        assert err.value.code == "unreachable" and "media_listen" in err.value.message
        # nothing was re-placed: the room is not split over two workers
        assert (await store.get("r3") or "").startswith("0123abcd@")
    finally:
        await pool.close()
