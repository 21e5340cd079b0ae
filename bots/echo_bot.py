"""An example bot: answers ``!echo <text>`` with ``echo: <text>``.

Run it with a bot token (``POST /api/v1/bots``) after inviting the bot into a community::

    python -m bots.echo_bot --url ws://127.0.0.1:8080/gateway --token hb.XXXX

It sees every message in the channels it can see, ignores its own messages and those of
other bots (so two bots never echo each other forever), and replies in the same
channel. Its replies carry a nonce derived from the message answered, so a message seen
twice (a resume replays what a dropped connection missed) is still answered only once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from bots.client import HearthClient, HearthError
from protocol.chat import MessageCreated, SendMessage
from protocol.frames import Event
from protocol.models import Message

PREFIX = "!echo"

log = logging.getLogger("hearth.echo_bot")


def echo_text(content: str) -> str | None:
    """``"echo: <text>"`` for ``!echo <text>``; None for anything else."""
    if not content.startswith(PREFIX):
        return None
    rest = content[len(PREFIX):]
    if rest and not rest[0].isspace():
        return None  # "!echoes" is not the command
    return f"echo: {rest.strip()}"


def reply_to(event: Event, me: int) -> SendMessage | None:
    """The reply the bot sends for ``event`` (``id`` is assigned by the client)."""
    if not isinstance(event, MessageCreated):
        return None
    message: Message = event.message
    if message.author.id == me or message.author.bot or message.deleted:
        return None
    text = echo_text(message.content)
    if text is None:
        return None
    return SendMessage(id=0, channel_id=message.channel_id, content=text,
                       reply_to_id=message.id, nonce=f"echo-{message.id}")


async def run(client: HearthClient) -> None:
    """Answer events until the client is closed."""
    me = client.user.id
    async for event in client:
        reply = reply_to(event, me)
        if reply is None:
            continue
        try:
            await client.request(reply)
        except HearthError as exc:  # e.g. forbidden in an announcement channel
            log.info("could not answer in channel %d: %s", reply.channel_id, exc)


async def amain(url: str, token: str, encoding: str) -> None:
    client = HearthClient(url, token, encoding, client_name="hearth-echo-bot/1")
    ready = await client.connect()
    log.info("echo bot %s is ready in %d communities", ready.user.username,
             len(ready.communities))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    worker = asyncio.create_task(run(client))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await worker  # ends once the client is closed (or raised why it ended)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bots.echo_bot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True,
                        help="the gateway, e.g. ws://127.0.0.1:8080/gateway")
    parser.add_argument("--token", required=True, help="a bot token (or an access token)")
    parser.add_argument("--encoding", choices=("json", "msgpack"), default="json")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(amain(args.url, args.token, args.encoding))


if __name__ == "__main__":
    main()
