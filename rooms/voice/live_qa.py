"""Q&A of a live session: questions, votes and their moderation.

``qa_ask`` is moderated like a chat message (``rooms/chat/chat.py``): the same gate
(timeouts, channel lock, lockdown: ``rooms/moderation/enforcement.py``), the same automod rules
(``rooms/moderation/automod_service.py``: a blocking rule refuses the question and its
alert/timeout actions run), and a per-member rate limit of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from persistence import live as live_db
from persistence.database import Database
from persistence.live import LiveRow
from protocol.base import Request
from protocol.codes import ErrorCode
from protocol.frames import Result
from protocol.limits import Limits
from protocol.live import (
    LiveSessionState,
    QaAsk,
    QaFetch,
    QaSetState,
    QaUpdated,
    QaVote,
    Question,
    QuestionResult,
    QuestionsResult,
    QuestionState,
)
from rooms.chat.chat import check_text
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.automod_service import AutomodService
from rooms.moderation.enforcement import PostGate, check_can_post, check_not_timed_out
from rooms.realtime.access import session_community_bits
from rooms.realtime.bus import channel_topic
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission
from rooms.realtime.rate_limit import RateLimiter
from rooms.realtime.sessions import Session
from rooms.voice.live_base import Access, LiveBase, has

log = logging.getLogger(__name__)

P = Permission
S = LiveSessionState


class LiveQa(LiveBase):
    """Serves the Q&A requests (gateway) and the question list (REST)."""

    def __init__(self, db: Database, hub: Hub, limits: Limits, access: Access, *,
                 gate: PostGate | None = None, automod: AutomodService | None = None,
                 question_limiter: RateLimiter | None = None) -> None:
        super().__init__(db, hub, limits, access)
        self.gate = gate
        self.automod = automod
        self.question_limiter = question_limiter

    def handlers(self) -> dict[type[Request], Callable[[Session, Any], Awaitable[Result]]]:
        return {QaAsk: self.ask, QaVote: self.vote, QaSetState: self.set_question_state,
                QaFetch: self.fetch_questions}

    # ---------------------------------------------------------------------------- Q&A

    async def ask(self, session: Session, req: QaAsk) -> Result:
        """A question, moderated like a chat message (see the module docstring)."""
        async with self.db.connection() as conn:
            row = await self._session(conn, req.session_id)
        channel = self._ws_stage(session, row)
        if row.state not in (S.SCHEDULED, S.LIVE):
            raise RequestError(ErrorCode.CONFLICT, f"the session is {row.state.value}")
        text = req.text.strip()
        check_text(text)
        if not text:
            raise RequestError(ErrorCode.EMPTY_MESSAGE, "a question needs text")
        if len(text) > self.limits.max_question_chars:
            raise RequestError(ErrorCode.CONTENT_TOO_LONG,
                               f"at most {self.limits.max_question_chars} characters")
        if self.gate is not None:
            self.gate.check(session, channel)
        else:
            check_can_post(session, channel)
        if self.question_limiter is not None:
            wait = await self.question_limiter.check(f"qa:{session.user.id}")
            if wait is not None:
                raise RequestError(ErrorCode.RATE_LIMITED, "you are asking too fast",
                                   retry_after_ms=wait)
        verdict = None
        if self.automod is not None:
            verdict = await self.automod.check(session, channel, text, new_message=True)
            blocked = self.automod.blocked_error(verdict)
            if blocked is not None:
                await self.automod.enforce(verdict, session.user, channel, text, None)
                raise blocked
        async with self.db.connection() as conn:
            question = await live_db.add_question(conn, row.id, session.user.id, text)
        await self.hub.publish(channel_topic(channel.id), QaUpdated(question=question))
        if verdict is not None and verdict.hits and self.automod is not None:
            await self.automod.enforce(verdict, session.user, channel, text, None)
        return QuestionResult(question=question)

    async def _question_and_session(self, question_id: int) -> tuple[Question, LiveRow]:
        async with self.db.connection() as conn:
            question = await live_db.get_question(conn, question_id)
            if question is None:
                raise not_found("unknown question")
            row = await self._session(conn, question.session_id)
        return question, row

    async def vote(self, session: Session, req: QaVote) -> Result:
        question, row = await self._question_and_session(req.question_id)
        channel = self._ws_stage(session, row)
        if question.state is QuestionState.DISMISSED:
            raise not_found("unknown question")
        if row.state not in (S.SCHEDULED, S.LIVE):
            raise RequestError(ErrorCode.CONFLICT, f"the session is {row.state.value}")
        check_not_timed_out(session, channel)  # a vote is like a reaction
        async with self.db.connection() as conn:
            updated = await live_db.vote(conn, question.id, session.user.id, req.vote)
        if updated is None:
            raise not_found("unknown question")
        if updated.votes != question.votes:
            await self.hub.publish(channel_topic(channel.id), QaUpdated(question=updated))
        return QuestionResult(question=updated, voted=req.vote)

    def _may_moderate_qa(self, session: Session, row: LiveRow) -> bool:
        bits = session_community_bits(session, row.session.community_id)
        return self.is_host(row, session.user.id) or has(bits, P.MODERATE) \
            or has(bits, P.MANAGE_CHANNELS)

    async def set_question_state(self, session: Session, req: QaSetState) -> Result:
        question, row = await self._question_and_session(req.question_id)
        channel = self._ws_stage(session, row)
        if not self._may_moderate_qa(session, row):
            raise forbidden("only the hosts and moderators answer or dismiss questions")
        async with self.db.connection() as conn:
            updated = await live_db.set_question_state(conn, question.id, req.state,
                                                       session.user.id)
            voted = await live_db.has_voted(conn, question.id, session.user.id)
        if updated is None:
            raise not_found("unknown question")
        # A dismissed question leaves every member's list: its text is not sent again
        # (hosts and moderators still read it with qa_fetch).
        shown = msgspec.structs.replace(updated, text="") \
            if updated.state is QuestionState.DISMISSED else updated
        await self.hub.publish(channel_topic(channel.id), QaUpdated(question=shown))
        return QuestionResult(question=updated, voted=voted)

    async def fetch_questions(self, session: Session, req: QaFetch) -> Result:
        async with self.db.connection() as conn:
            row = await self._session(conn, req.session_id)
        self._ws_stage(session, row)
        return await self._questions(row, session.user.id, self._may_moderate_qa(session, row))

    async def questions_rest(self, user_id: int, session_id: int) -> QuestionsResult:
        async with self.db.connection() as conn:
            row = await self._session(conn, session_id)
        await self._viewable(row, user_id)
        bits = await self.access.community_permissions(row.session.community_id, user_id)
        staff = self.is_host(row, user_id) or has(bits, P.MODERATE) \
            or has(bits, P.MANAGE_CHANNELS)
        return await self._questions(row, user_id, staff)

    async def _questions(self, row: LiveRow, user_id: int, staff: bool) -> QuestionsResult:
        async with self.db.connection() as conn:
            questions = await live_db.list_questions(conn, row.id, include_dismissed=staff)
            voted = await live_db.voted_ids(conn, row.id, user_id)
        return QuestionsResult(session_id=row.id, questions=questions, voted_ids=voted)
