"""The stage of a live session: how its voice room opens.

:class:`StageRoomOptions` answers, on whichever process the first member joins a
stage, whether its room must mix for a large audience and record
(``rooms/voice.py: StageOptions``); it needs only PostgreSQL, so the voice rooms and
the live sessions can both be given it without needing each other.
"""

from __future__ import annotations

from pathlib import Path

from persistence import live as live_db
from persistence.database import Database
from protocol.live import LiveSessionState


class StageRoomOptions:
    """Mix threshold and recording path of live sessions' stage rooms."""

    def __init__(self, db: Database, data_dir: Path, mix_listeners_above: int = 25) -> None:
        self.db = db
        self.data_dir = data_dir
        self.mix_listeners_above = mix_listeners_above
        """Listeners above which a stage's audience gets the server-side mix."""

    def recording_path(self, session_id: int) -> Path:
        """Where a recorded session's WAV goes: ``<data_dir>/recordings/<id>.wav``."""
        return self.data_dir / "recordings" / f"{session_id}.wav"

    async def stage_room_options(self, channel_id: int
                                 ) -> tuple[int | None, str | None] | None:
        """How a stage's room opens while its session is live, on whichever process the
        first member joins (:class:`rooms.voice.StageOptions`); None for a channel that
        is not a live session's stage."""
        async with self.db.connection() as conn:
            session_id = (await live_db.sessions_of_channels(conn, [channel_id])).get(
                channel_id)
            row = None if session_id is None else await live_db.get_session(conn, session_id)
        if row is None or row.session.state is not LiveSessionState.LIVE:
            return None
        record = str(self.recording_path(row.id)) if row.session.recorded else None
        return self.mix_listeners_above, record
