"""Security properties of real media worker processes: what a worker inherits from
its parent, and which remote ICE candidates it will send connectivity checks to."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator

import pytest

from protocol import media_ipc as ipc
from rooms.media import passthrough
from rooms.media.pool import MediaPool
from tests.media_peers import ClientPeer


@pytest.fixture
async def sock_dir() -> AsyncIterator[str]:
    # AF_UNIX paths are limited to ~100 bytes: pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="hm-", dir="/tmp")
    passthrough.set_host_address_mode("loopback")
    yield path
    passthrough.set_host_address_mode("default")
    shutil.rmtree(path, ignore_errors=True)


def _environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="reads the worker's environment from /proc, which only Linux "
                           "has (Linux is the platform Hearth supports)")
async def test_spawned_worker_does_not_inherit_the_gateway_secrets(
    sock_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_SECRET", "s3cret-signing-key")
    monkeypatch.setenv("HEARTH_DATABASE_URL", "postgresql://hearth:pw@db/hearth")
    monkeypatch.setenv("HEARTH_REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    key = os.urandom(32)
    pool = await MediaPool.start(1, sock_dir, ice="loopback", key=key)
    try:
        env = _environ_of(pool.pids[0])
        assert "HEARTH_SECRET" not in env
        assert "HEARTH_DATABASE_URL" not in env
        assert "HEARTH_REDIS_URL" not in env
        # What it needs to run (and the proof that it did: it answered with the key).
        assert env["PATH"] == os.environ["PATH"]
        assert env["LC_ALL"] == "C.UTF-8"
        assert env["HEARTH_MEDIA_KEY"] == key.hex()
        stats = await pool.stats()
        assert [s.rooms for s in stats.values()] == [0]
    finally:
        await pool.close()


# -- remote ICE candidates --------------------------------------------------------

@pytest.mark.parametrize(("host", "loopback", "private", "allowed"), [
    ("127.0.0.1", False, True, False),
    ("127.0.0.1", True, True, True),
    ("::1", False, True, False),
    ("::ffff:127.0.0.1", False, True, False),
    ("169.254.169.254", True, True, False),
    ("fe80::1", True, True, False),
    ("224.0.0.251", True, True, False),
    ("ff02::fb", True, True, False),
    ("255.255.255.255", True, True, False),
    ("240.0.0.1", True, True, False),
    ("0.0.0.0", True, True, False),
    ("::", True, True, False),
    ("0.1.2.3", True, True, False),
    ("abcd-1234.local", True, True, False),
    ("example.com", True, True, False),
    ("10.1.2.3", False, True, True),
    ("172.20.0.5", False, True, True),
    ("192.168.1.20", False, True, True),
    ("100.64.3.4", False, True, True),
    ("fd12::5", False, True, True),
    ("10.1.2.3", False, False, False),
    ("192.168.1.20", False, False, False),
    ("fd12::5", False, False, False),
    ("93.184.216.34", False, False, True),
    ("2606:4700::1111", False, False, True),
])
def test_candidate_policy(host: str, loopback: bool, private: bool, allowed: bool) -> None:
    from rooms.media.worker import candidate_allowed

    assert candidate_allowed(host, allow_loopback=loopback, allow_private=private) is allowed


class _StunTrap(asyncio.DatagramProtocol):
    """A UDP port on 127.0.0.1 that counts what arrives (STUN checks, if any)."""

    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1


async def _trap() -> tuple[asyncio.DatagramTransport, _StunTrap, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _StunTrap, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    return transport, proto, port


def _with_candidate(offer: str, line: str) -> str:
    """The offer with ``line`` added to every media section, as a client could
    craft it (aiortc reads a bundle's candidates from its last section)."""
    return offer.replace("a=mid:", line + "\r\na=mid:")


async def _remote_hosts(worker: object, room_id: str, pid: int) -> set[str]:
    from rooms.media.worker import Worker

    assert isinstance(worker, Worker)
    pc = worker.rooms[room_id].peers[pid].pc
    ice = pc.getTransceivers()[0].sender.transport.transport
    return {c.ip for c in ice.getRemoteCandidates()}


@pytest.mark.parametrize("ice", ["default", "loopback"])
async def test_loopback_candidates_get_no_checks_unless_the_worker_uses_loopback(
    sock_dir: str, ice: passthrough.HostAddressMode
) -> None:
    # Both sides gather on 127.0.0.1 (the fixture); the worker is told whether its
    # ICE mode is loopback. Two crafted candidates point at UDP ports we listen on:
    # one inside the offer, one trickled. With ice=default they must never be sent
    # a STUN check; with ice=loopback they are (which proves the trap sees checks).
    from rooms.media.worker import Worker

    worker = Worker(ice=ice)
    t_offer, in_offer, port_offer = await _trap()
    t_trickle, trickled, port_trickle = await _trap()
    client = ClientPeer(None, slots=1)
    try:
        await worker.handle(ipc.OpenRoom(id=1, room_id="r"))
        # Only the crafted candidates (a real one would connect and end the checks),
        # and no end-of-candidates: a trickling client sends more later.
        real = "".join(line for line in (await client.offer()).splitlines(keepends=True)
                       if not line.startswith(("a=candidate:", "a=end-of-candidates")))
        offer = _with_candidate(
            real, f"a=candidate:9 1 udp 2130706431 127.0.0.1 {port_offer} typ host")
        await worker.handle(ipc.Join(id=2, room_id="r", participant_id=1, offer_sdp=offer))
        await worker.handle(ipc.AddCandidate(
            id=3, room_id="r", participant_id=1, sdp_mline_index=0,
            candidate=f"candidate:8 1 udp 2130706431 127.0.0.1 {port_trickle} typ host"))
        await asyncio.sleep(2.5)
        if ice == "default":
            assert (in_offer.received, trickled.received) == (0, 0)
            assert "127.0.0.1" not in await _remote_hosts(worker, "r", 1)
            assert worker.candidates_dropped >= 2
        else:
            assert in_offer.received > 0 and trickled.received > 0
    finally:
        await client.close()
        await worker.close()
        t_offer.close()
        t_trickle.close()


@pytest.mark.parametrize("private", [True, False])
async def test_crafted_candidates_are_dropped(sock_dir: str, private: bool) -> None:
    from rooms.media.worker import Worker

    worker = Worker(ice="loopback", private_candidates=private)
    client = ClientPeer(None, slots=1)
    bad = ["169.254.169.254", "224.0.0.251", "0.0.0.0", "255.255.255.255",
           "3f0a1b2c-1111-2222-3333-444455556666.local", "fe80::1"]
    try:
        await worker.handle(ipc.OpenRoom(id=1, room_id="r"))
        # No end-of-candidates: the client trickles more after its offer.
        offer = (await client.offer()).replace("a=end-of-candidates\r\n", "")
        for n, host in enumerate([*bad, "10.9.8.7"]):
            offer = _with_candidate(
                offer, f"a=candidate:{n} 1 udp 2130706431 {host} {40000 + n} typ host")
        await worker.handle(ipc.Join(id=2, room_id="r", participant_id=1, offer_sdp=offer))
        for n, host in enumerate([*bad, "192.168.77.1"]):
            await worker.handle(ipc.AddCandidate(
                id=10 + n, room_id="r", participant_id=1, sdp_mline_index=0,
                candidate=f"candidate:{20 + n} 1 udp 2130706431 {host} {41000 + n} typ host"))
        hosts = await _remote_hosts(worker, "r", 1)
        assert not hosts & set(bad)
        assert "127.0.0.1" in hosts  # the client's real (loopback) candidate stays
        assert ({"10.9.8.7", "192.168.77.1"} <= hosts) is private
        assert not ({"10.9.8.7", "192.168.77.1"} & hosts) or private
    finally:
        await client.close()
        await worker.close()


def test_private_candidates_option_reaches_the_worker_command_line() -> None:
    from rooms.media.pool import worker_command
    from rooms.media.worker import parse_args

    argv = worker_command("/tmp/x.sock", private_candidates=False)[3:]
    assert parse_args(argv).private_candidates is False
    assert parse_args(worker_command("/tmp/x.sock")[3:]).private_candidates is True
