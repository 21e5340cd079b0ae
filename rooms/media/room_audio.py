"""A room's server-side audio: the shared mix for large audiences and the recording.

The forwarder (:mod:`rooms.media.forwarder`) forwards each speaker's packets untouched;
only rooms opened with ``mix_listeners_above`` or ``record_path`` get a
:class:`RoomAudio`. It feeds every permitted speaker into one :class:`AudioMixer`,
which decodes, sums and encodes once per 20 ms: the encoded mix goes to the listeners
the forwarder has switched to the mix (while it has any), the PCM to a
:class:`WavRecorder` when the session is recorded. Both come from one mix so the
recording is what the audience heard.

Why the mixer is not always fed: every live stage has a RoomAudio, but until enough
listeners join the room forwards and nobody takes the mix. Decoding every speaker and
encoding every 20 ms then only burns the worker's core, so packets are fed only while
the mix output is active or the room is recorded. When feeding stops, the mixer's
speakers are dropped, so a later mix starts from fresh decoder and jitter state rather
than from audio seconds old.
"""

from __future__ import annotations

from rooms.media.forwarder import MixOutput, RoomSinkConfig
from rooms.media.mixer import AudioMixer, MixerStats
from rooms.media.recorder import WavRecorder


class RoomAudio:
    """Implements :class:`rooms.media.forwarder.RoomAudioSink` for one room."""

    def __init__(self, config: RoomSinkConfig) -> None:
        self._output: MixOutput = config.output
        self._mixer = AudioMixer()
        self._mixer.add_output(self._emit)
        self._recorder: WavRecorder | None = None
        if config.record_path is not None:
            self._recorder = WavRecorder(config.record_path)
            self._mixer.add_pcm_output(self._recorder.write)
        self._mixer.start()

    def _emit(self, payload: bytes, pts: int) -> None:
        if self._output.active:  # nobody takes the mix while the room forwards
            self._output.emit(payload, pts)

    @property
    def mixer_stats(self) -> MixerStats:
        """The mixer's counters (packets fed and decoded, ticks encoded)."""
        return self._mixer.stats

    def feed(self, participant_id: int, payload: bytes, rtp_timestamp: int) -> None:
        """Feed the mixer only when its output is used (module docstring)."""
        if self._recorder is None and not self._output.active:
            for pid in self._mixer.speakers:  # nothing fed now: start afresh later
                self._mixer.remove_speaker(pid)
            return
        self._mixer.feed(participant_id, payload, rtp_timestamp)

    def remove_participant(self, participant_id: int) -> None:
        self._mixer.remove_speaker(participant_id)

    async def close(self) -> tuple[str | None, float]:
        """Stop mixing; finalize the recording. Returns (path or None, seconds)."""
        await self._mixer.stop()
        if self._recorder is None:
            return None, 0.0
        result = await self._recorder.close()
        # After a disk error the file still holds what was written before it.
        return result.path, result.duration_s


def create_room_sink(config: RoomSinkConfig) -> RoomAudio:
    """The worker's sink factory (:data:`rooms.media.forwarder.RoomAudioSinkFactory`)."""
    return RoomAudio(config)
