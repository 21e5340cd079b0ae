"""``python -m loadtest.selfcheck``: what one delivery costs the generator, without a server.

Feeds a generator connection realistic ``message_create`` frames (as raw websocket
bytes, the way the kernel hands them over) and times the whole receive path: websocket
parsing, decoding, latency and seq accounting. Divide a core by this figure to know the
deliveries per second one generator process can absorb: if a run needs more per
process than that, add ``--processes`` (or the generator, not the server, is measured).
"""

from __future__ import annotations

import argparse
import io
import time

import msgspec
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from loadtest.accounting import SeqCursor
from loadtest.client import READY
from loadtest.ipc import ClientSpec, Plan
from loadtest.worker import Generator
from protocol.chat import MessageCreated
from protocol.codec import JSON
from protocol.frames import Dispatch
from protocol.models import Message, User


class _Sink:
    def write(self, data: bytes) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def frames(n: int, content_bytes: int) -> list[bytes]:
    """``n`` unmasked websocket text frames, each a dispatch of one message."""
    author = User(id=3, username="lt_3", display_name="lt_3", bot=True)
    out = []
    for seq in range(1, n + 1):
        content = f"lt:{time.monotonic_ns()}:" + "x" * max(0, content_bytes - 24)
        body = JSON.encode(Dispatch(s=seq, d=MessageCreated(message=Message(
            id=seq, channel_id=7, seq=seq, author=author, content=content,
            created_at=1_700_000_000_000, nonce=f"0.{seq}"))))
        size = len(body)
        header = bytes([0x81, size]) if size < 126 else \
            bytes([0x81, 126]) + size.to_bytes(2, "big")
        out.append(header + body)
    return out


def measure(n: int = 50_000, content_bytes: int = 64, read_size: int = 0) -> float:
    """Microseconds of CPU per delivery (``read_size`` 0: one frame per read)."""
    plan = Plan(worker=0, scenario="chat", url="ws://127.0.0.1:1/gateway", host="127.0.0.1",
                port=1, sources=[], clients=[ClientSpec("t", 7, False)], connect_rate=0,
                connect_concurrency=1, send_rate=0, message_bytes=64, deadline=0)
    gen = Generator(plan, io.BytesIO(), 0)
    conn = gen.conns[0]
    conn.ws = ClientProtocol(parse_uri(plan.url), state=State.OPEN)
    conn.transport = _Sink()
    conn.state = READY
    conn.cursor = SeqCursor(0)
    data = frames(n, content_bytes)
    if read_size:
        joined = b"".join(data)
        data = [joined[i:i + read_size] for i in range(0, len(joined), read_size)]
    start = time.process_time()
    for chunk in data:
        conn.data_received(chunk)
    elapsed = time.process_time() - start
    assert gen.deliveries == n, gen.deliveries
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument("--content-bytes", type=int, default=64)
    args = parser.parse_args()
    one = measure(args.n, args.content_bytes, 0)
    batched = measure(args.n, args.content_bytes, 65_536)
    print(msgspec.json.encode({
        "deliveries": args.n, "content_bytes": args.content_bytes,
        "cpu_us_per_delivery_one_frame_per_read": round(one, 2),
        "cpu_us_per_delivery_64KiB_reads": round(batched, 2),
        "deliveries_per_core_s_upper_bound": round(1e6 / batched),
    }).decode())


if __name__ == "__main__":
    main()
