"""The Python SDK (``bots/client.py``), the REST helpers and the echo bot against a real
``hearth serve`` process (the ``hearth_server`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bots import echo_bot
from bots.client import ConnectionLost, HearthClient, HearthClosed, HearthError
from bots.rest import HearthRest, RestError, TokenPair
from protocol.chat import (
    ChannelCreated,
    MessageCreated,
    MessageDeleted,
    MessageUpdated,
    ReactionAdded,
    SendMessage,
    TypingStarted,
)
from protocol.codec import JSON
from protocol.codes import CloseCode, ErrorCode
from protocol.communities import MemberLeft
from protocol.frames import Empty, Event, Ready
from protocol.limits import Limits
from protocol.models import ChannelKind, Message, User
from protocol.session import GatewayProtocol, IdentifyRequested, ResumeRequested, State
from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def name() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server(hearth_server: RunningServer) -> Iterator[RunningServer]:
    """``hearth_server``, stopped here with its output pipe closed.

    Workaround until conftest's fixture closes ``process.stdout`` itself: the unclosed
    pipe's ResourceWarning (an error under ``filterwarnings = error``) would fail the
    next test's setup. Stopping the process first leaves its teardown nothing to do.
    """
    yield hearth_server
    proc = hearth_server.process
    if isinstance(proc, subprocess.Popen) and proc.stdout is not None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture
async def rest(server: RunningServer) -> AsyncIterator[HearthRest]:
    async with HearthRest(server.url) as client:
        yield client


class Community:
    """An owner and a member in a fresh community with #general and #dev."""

    def __init__(self, owner: TokenPair, member: TokenPair, community_id: int,
                 general: int, dev: int) -> None:
        self.owner = owner
        self.member = member
        self.community_id = community_id
        self.general = general
        self.dev = dev


async def community(rest: HearthRest) -> Community:
    owner = await rest.register(name(), PASSWORD, display_name="Owner")
    member = await rest.register(name(), PASSWORD)
    as_owner = rest.as_user(owner.access_token)
    created = await as_owner.create_community("Makers")
    general = next(c for c in created.channels if c.name == "general")
    dev = await as_owner.create_channel(created.community.id, "dev", ChannelKind.TEXT,
                                        topic="Building things")
    code = await as_owner.create_invite(created.community.id, max_uses=5)
    snapshot = await rest.as_user(member.access_token).join_invite(code)
    assert snapshot.community.id == created.community.id
    return Community(owner, member, created.community.id, general.id, dev.id)


async def event_of(client: HearthClient, kind: type[Event], **match: object) -> Event:
    def wanted(event: Event) -> bool:
        return isinstance(event, kind) and all(
            _field(event, key) == value for key, value in match.items())

    return await client.wait_for(wanted, timeout=10)


def _field(event: Event, dotted: str) -> object:
    value: object = event
    for part in dotted.split("__"):
        value = getattr(value, part)
    return value


async def no_event(client: HearthClient, kind: type[Event], wait: float = 0.5,
                   **match: object) -> None:
    with pytest.raises(TimeoutError):
        got = await asyncio.wait_for(event_of(client, kind, **match), wait)
        raise AssertionError(f"unexpected {got}")


# ----------------------------------------------------------------------------- REST


async def test_rest_helpers_set_up_accounts_bots_and_communities(rest: HearthRest) -> None:
    setup = await community(rest)
    again = await rest.login(setup.owner.user.username, PASSWORD)
    assert again.user == setup.owner.user
    assert await rest.as_user(again.access_token).me() == setup.owner.user
    bot = await rest.as_user(setup.owner.access_token).create_bot(name(), "Helper")
    assert bot.user.bot and bot.token.startswith("hb.")
    members = await rest.as_user(setup.owner.access_token).members(setup.community_id)
    assert {m.user.id for m in members} >= {setup.owner.user.id, setup.member.user.id}
    with pytest.raises(RestError) as refused:
        await rest.login(setup.owner.user.username, "wrong password!")
    assert refused.value.status == 401 and refused.value.code == "invalid_credentials"
    with pytest.raises(RestError) as unauthorized:
        await rest.as_user("hb.1.forged").create_community("nope")
    assert unauthorized.value.status == 401
    with pytest.raises(ValueError, match="needs a token"):
        await rest.create_community("nope")  # refused before asking the server


# ------------------------------------------------------------------------------ SDK


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_sdk_requests_and_events(server: RunningServer, rest: HearthRest,
                                       encoding: str) -> None:
    setup = await community(rest)
    async with (HearthClient(server.ws_url, setup.owner.access_token, encoding) as a,
                HearthClient(server.ws_url, setup.member.access_token, encoding) as b):
        assert a.user == setup.owner.user and b.user == setup.member.user
        assert a.hello is not None and a.hello.heartbeat_interval_ms > 0
        assert b.channel_named("dev", setup.community_id).id == setup.dev

        sent = await a.send_message(setup.general, f"hello <@{b.user.id}>", nonce="n-1")
        assert isinstance(sent, Message) and sent.mention_user_ids == [b.user.id]
        got = await event_of(b, MessageCreated, message__id=sent.id)
        assert isinstance(got, MessageCreated) and got.message.content == sent.content
        assert b.last_seq >= 1
        again = await a.send_message(setup.general, f"hello <@{b.user.id}>", nonce="n-1")
        assert again.id == sent.id  # same nonce, same message

        edited = await a.edit_message(setup.general, sent.id, "edited")
        assert edited.content == "edited"
        await event_of(b, MessageUpdated, message__content="edited")

        await b.add_reaction(setup.general, sent.id, "👍")
        reacted = await event_of(a, ReactionAdded, message_id=sent.id)
        assert isinstance(reacted, ReactionAdded) and reacted.count == 1
        users = await a.fetch_reactions(setup.general, sent.id, "👍")
        assert [u.id for u in users] == [b.user.id]
        await b.remove_reaction(setup.general, sent.id, "👍")

        await b.typing(setup.general)
        typing_event = await event_of(a, TypingStarted, channel_id=setup.general)
        assert isinstance(typing_event, TypingStarted) and typing_event.user.id == b.user.id

        page = await b.history(setup.general, limit=10)
        assert sent.id in [m.id for m in page.messages]
        state = await b.mark_read(setup.general, sent.seq)
        assert state.last_read_seq == sent.seq

        thread = await a.create_thread(setup.general, "Plans", message_id=sent.id)
        assert thread.kind is ChannelKind.THREAD and thread.parent_id == setup.general
        await event_of(b, ChannelCreated, channel__id=thread.id)
        joined = await b.join_thread(thread.id)
        assert b.user.id in joined.member_ids
        await b.send_message(thread.id, "in the thread")
        archived = await a.set_thread_archived(thread.id, True)
        assert archived.archived
        with pytest.raises(HearthError) as in_archive:
            await b.send_message(thread.id, "too late")
        assert in_archive.value.code == ErrorCode.THREAD_ARCHIVED
        await b.leave_thread(thread.id)

        await a.delete_message(setup.general, sent.id)
        await event_of(b, MessageDeleted, message_id=sent.id)

        with pytest.raises(HearthError) as missing:
            await a.send_message(2**50, "nowhere")
        assert missing.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(HearthError) as empty:
            await a.send_message(setup.general, "")
        assert empty.value.code == ErrorCode.EMPTY_MESSAGE


async def test_bad_token_is_a_final_close(server: RunningServer) -> None:
    client = HearthClient(server.ws_url, "not-a-token")
    with pytest.raises(HearthClosed) as closed:
        await client.connect()
    assert closed.value.code == CloseCode.AUTHENTICATION_FAILED
    await client.close()


async def test_close_leaves_no_task_behind(server: RunningServer,
                                           rest: HearthRest) -> None:
    setup = await community(rest)
    before = asyncio.all_tasks()
    client = HearthClient(server.ws_url, setup.member.access_token)
    await client.connect()
    assert len(asyncio.all_tasks() - before) == 2  # the reader and the heartbeat
    await client.close()
    assert asyncio.all_tasks() - before == set()
    assert [e async for e in client] == []  # the event stream has ended
    with pytest.raises(HearthClosed):
        await client.send_message(setup.general, "after close")


async def test_dropped_connection_resumes_without_loss_or_duplicates(
        server: RunningServer, rest: HearthRest) -> None:
    setup = await community(rest)
    async with (HearthClient(server.ws_url, setup.owner.access_token) as a,
                HearthClient(server.ws_url, setup.member.access_token) as b):
        first = await a.send_message(setup.general, "before")
        await event_of(b, MessageCreated, message__id=first.id)
        session = b.session_id
        await b.drop_connection()
        sent = [await a.send_message(setup.general, f"while away {i}") for i in range(3)]
        got = [await event_of(b, MessageCreated) for _ in sent]
        assert [e.message.id for e in got if isinstance(e, MessageCreated)] == \
            [m.id for m in sent]
        assert b.resumes == 1 and b.identifies == 1 and b.session_id == session
        later = await b.send_message(setup.general, "back")  # requests work again
        await event_of(a, MessageCreated, message__id=later.id)
        await no_event(b, MessageCreated, wait=0.3, message__content="while away 0")


async def test_unresumable_session_is_identified_anew(server: RunningServer,
                                                      rest: HearthRest) -> None:
    setup = await community(rest)
    readies: list[str] = []
    async with HearthClient(server.ws_url, setup.member.access_token) as b:
        b.on_ready(lambda ready: readies.append(ready.session_id))
        b.session_id = "no-such-session"
        await b.drop_connection()
        for _ in range(100):
            if b.identifies == 2 and b.connected:
                break
            await asyncio.sleep(0.05)
        assert b.identifies == 2 and b.resumes == 0
        assert readies and readies[-1] == b.session_id != "no-such-session"
        await b.typing(setup.general)


# --------------------------------------------------------------------------- echo bot


def test_echo_text() -> None:
    assert echo_bot.echo_text("!echo hello world") == "echo: hello world"
    assert echo_bot.echo_text("!echo   padded  ") == "echo: padded"
    assert echo_bot.echo_text("!echo") == "echo: "
    assert echo_bot.echo_text("!echoes") is None
    assert echo_bot.echo_text("say !echo") is None


def test_echo_reply_ignores_itself_and_bots() -> None:
    human = User(id=1, username="ada", display_name="Ada")
    robot = User(id=2, username="other", display_name="Other", bot=True)

    def created(author: User, content: str) -> MessageCreated:
        return MessageCreated(message=Message(id=50, channel_id=9, seq=3, author=author,
                                              content=content, created_at=0))

    reply = echo_bot.reply_to(created(human, "!echo hi"), me=3)
    assert reply == SendMessage(id=0, channel_id=9, content="echo: hi", reply_to_id=50,
                                nonce="echo-50")
    assert echo_bot.reply_to(created(human, "!echo hi"), me=1) is None  # itself
    assert echo_bot.reply_to(created(robot, "!echo hi"), me=3) is None  # another bot
    assert echo_bot.reply_to(created(human, "hello"), me=3) is None


async def test_echo_bot_process_answers_in_its_channels(server: RunningServer,
                                                        rest: HearthRest) -> None:
    setup = await community(rest)
    as_owner = rest.as_user(setup.owner.access_token)
    bot = await as_owner.create_bot(name(), "Echo")
    code = await as_owner.create_invite(setup.community_id)
    await rest.as_user(bot.token).join_invite(code)
    process = subprocess.Popen(  # noqa: ASYNC220 - a real process, as users run the bot
        [sys.executable, "-m", "bots.echo_bot", "--url", server.ws_url,
         "--token", bot.token, "--log-level", "WARNING"],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with HearthClient(server.ws_url, setup.owner.access_token) as owner:
            # The bot answers once its own session is up: ask until it does.
            commands: dict[int, int] = {}

            def answers_a_command(event: Event) -> bool:
                return (isinstance(event, MessageCreated)
                        and event.message.reply_to_id in commands)

            for attempt in range(60):
                command = await owner.send_message(setup.dev, f"!echo hello world {attempt}")
                commands[command.id] = attempt
                try:
                    answer = await owner.wait_for(answers_a_command, timeout=0.5)
                    break
                except TimeoutError:
                    assert process.poll() is None, process.stdout and process.stdout.read()
            else:
                raise AssertionError("the echo bot never answered")
            assert isinstance(answer, MessageCreated)
            assert answer.message.reply_to_id is not None
            attempt = commands[answer.message.reply_to_id]
            assert answer.message.author.id == bot.user.id and answer.message.author.bot
            assert answer.message.content == f"echo: hello world {attempt}"
            assert answer.message.channel_id == setup.dev

            ignored = await owner.send_message(setup.general, "!echoes are not commands")
            await no_event(owner, MessageCreated, message__reply_to_id=ignored.id)
            await no_event(owner, MessageCreated, wait=0.2,  # never echoes its own echo
                           message__reply_to_id=answer.message.id)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output = process.communicate(timeout=15)[0].decode()
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0].decode()
    assert process.returncode == 0, output


# ---------------------------------------------------------------- against a fake gateway
# The SDK's reconnect logic, driven by a websockets server whose brain is the sans-I/O
# GatewayProtocol itself: deterministic drains, lost heartbeats and unanswered requests.


class FakeGateway:
    """A one-session gateway: identify opens session "s1"; resume replays its events."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.events: list[bytes] = []  # encoded events, s = index + 1
        self.connections: list[GatewayProtocol] = []
        self.resumes: list[int] = []
        self.ack_heartbeats = True
        self.answer_requests = True
        self.url = ""

    def publish(self, event: Event) -> None:
        """Buffer an event and write it to the live connection, if any."""
        self.events.append(JSON.encode_event(event))
        self._wake.set()

    async def serve(self) -> AsyncIterator[None]:
        from websockets.asyncio.server import serve

        self._wake = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/gateway"
            yield

    async def _handle(self, ws: Any) -> None:
        loop = asyncio.get_running_loop()

        def now() -> float:
            return loop.time() * 1000

        proto = GatewayProtocol(JSON, self.limits, now())
        self.connections.append(proto)
        sent = 0

        async def flush() -> None:
            for frame in proto.data_to_send():
                await ws.send(frame.decode())

        async def pump() -> None:
            nonlocal sent
            while True:
                await self._wake.wait()
                self._wake.clear()
                while proto.state is State.READY and sent < len(self.events):
                    sent += 1
                    frame = proto.dispatch_frame(sent, self.events[sent - 1])
                    assert frame is not None  # READY, so not closed
                    await ws.send(frame.decode())
                decided = proto.close_code()
                if decided is not None:
                    await flush()
                    await ws.close(int(decided[0]), decided[1])
                    return

        pumping = loop.create_task(pump())
        try:
            await flush()
            async for message in ws:
                if not self.ack_heartbeats and '"heartbeat"' in message:
                    continue
                proto.receive(message, now())
                for event in proto.events():
                    if isinstance(event, IdentifyRequested):
                        proto.accept_identify(Ready(
                            session_id="s1", user=User(id=1, username="me", display_name="Me"),
                            communities=[], private_channels=[], read_states=[]))
                    elif isinstance(event, ResumeRequested):
                        self.resumes.append(event.seq)
                        sent = len(self.events)
                        replay = [JSON.dispatch_frame(s, self.events[s - 1])
                                  for s in range(event.seq + 1, sent + 1)]
                        proto.accept_resume("s1", replay)
                    elif self.answer_requests:
                        proto.reply_ok(event.request.id, Empty())
                await flush()
                self._wake.set()
        finally:
            pumping.cancel()


def _left(user_id: int) -> MemberLeft:
    return MemberLeft(community_id=1, user_id=user_id)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGateway]:
    gateway = FakeGateway(Limits(heartbeat_interval_ms=200))
    async for _ in gateway.serve():
        yield gateway


async def test_drain_reconnects_and_resumes_in_order(fake: FakeGateway) -> None:
    async with HearthClient(fake.url, "token", max_backoff=0.2) as client:
        fake.publish(_left(1))
        fake.publish(_left(2))
        assert [await client.next_event(5) for _ in range(2)] == [_left(1), _left(2)]
        fake.connections[-1].drain(retry_after_ms=50)  # reconnect frame, then 1001
        fake.publish(_left(3))  # buffered while the client is away
        assert await client.next_event(5) == _left(3)
        assert fake.resumes == [2]
        assert client.resumes == 1 and client.identifies == 1 and client.last_seq == 3
        await client.typing(1)  # requests flow on the new connection


async def test_unacknowledged_heartbeats_mean_a_dead_connection(fake: FakeGateway) -> None:
    fake.ack_heartbeats = False
    async with HearthClient(fake.url, "token", max_backoff=0.2) as client:
        for _ in range(100):
            if client.resumes:
                break
            await asyncio.sleep(0.05)
        assert client.resumes >= 1 and fake.resumes[0] == 0


async def test_requests_in_flight_fail_when_the_connection_drops(fake: FakeGateway) -> None:
    fake.answer_requests = False
    async with HearthClient(fake.url, "token", max_backoff=0.2) as client:
        pending = asyncio.create_task(client.typing(1))
        await asyncio.sleep(0.1)
        await client.drop_connection()
        with pytest.raises(ConnectionLost):
            await pending
        fake.answer_requests = True
        await client.typing(1)  # retried on the resumed session
        assert client.resumes == 1


async def test_full_event_queue_drops_the_oldest(fake: FakeGateway) -> None:
    async with HearthClient(fake.url, "token", max_queued_events=3) as client:
        for i in range(1, 6):
            fake.publish(_left(i))
        for _ in range(100):
            if client.last_seq == 5:
                break
            await asyncio.sleep(0.02)
        assert client.dropped_events == 2
        assert [await client.next_event(1) for _ in range(3)] == [_left(3), _left(4), _left(5)]


async def test_unknown_events_are_skipped_but_counted(fake: FakeGateway) -> None:
    async with HearthClient(fake.url, "token") as client:
        fake.publish(_left(1))
        fake.events.append(b'{"t":"from_the_future","x":1}')  # s = 2, unknown to the SDK
        fake.publish(_left(3))
        assert [await client.next_event(5) for _ in range(2)] == [_left(1), _left(3)]
        assert client.last_seq == 3
