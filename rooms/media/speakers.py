"""Who is speaking, from RTP packets alone (sans-I/O: no sockets, no clocks of its own).

Why from the RTP audio-level extension (RFC 6464): the SFU never decodes audio, and the
sender already measured its level. Each packet is classified *voiced* when its level is
at or above ``-threshold_dbov`` (level value <= threshold, default 50, i.e. louder than
-50 dBov). A participant is *speaking* while its last voiced packet is younger than
``hold_s`` (default 0.4 s), which bridges the short pauses between words.

Fallback when a peer sends no audio-level extension: a packet is voiced when its Opus
payload is larger than ``dtx_max_bytes`` (default 10). Opus DTX and comfort-noise
packets are 1-3 bytes, real speech frames tens of bytes or more; this only tells
"sound vs silence", so such peers rank with a fixed mid loudness (64) among speakers.

Change events are rate limited: :meth:`SpeakerDetector.poll` returns the new speaking
set only if it differs from the last one returned AND at least ``min_interval_s``
(default 0.5 s) passed since then, so a room emits at most 2 ``Speaking`` per second;
the final state is never lost, it is emitted by a later poll.

Loudness for ranking (loudest-N slot assignment) is an exponential moving average of
``127 - level`` (higher is louder), smoothing factor 0.2 per packet (~100 ms at 50 pps).
"""

from __future__ import annotations

from dataclasses import dataclass

FALLBACK_LOUDNESS = 64.0
"""Loudness assumed for peers without the audio-level extension."""


@dataclass(slots=True)
class _Track:
    loudness: float = 0.0
    last_voiced: float | None = None
    has_levels: bool = False


class SpeakerDetector:
    """Per-room speaker state fed by :meth:`observe` and read by :meth:`poll`."""

    def __init__(
        self,
        threshold_dbov: int = 50,
        hold_s: float = 0.4,
        min_interval_s: float = 0.5,
        dtx_max_bytes: int = 10,
        smoothing: float = 0.2,
    ) -> None:
        if not 0 <= threshold_dbov <= 127:
            raise ValueError("threshold_dbov must be in 0..127")
        self.threshold_dbov = threshold_dbov
        self.hold_s = hold_s
        self.min_interval_s = min_interval_s
        self.dtx_max_bytes = dtx_max_bytes
        self.smoothing = smoothing
        self._tracks: dict[int, _Track] = {}
        self._emitted: frozenset[int] = frozenset()
        self._emitted_at: float | None = None

    def observe(
        self, participant_id: int, now: float, audio_level: int | None, payload_len: int
    ) -> bool:
        """Account one packet; returns whether it was voiced."""
        track = self._tracks.get(participant_id)
        if track is None:
            track = self._tracks[participant_id] = _Track()
        if audio_level is not None:
            track.has_levels = True
            voiced = audio_level <= self.threshold_dbov
            sample = float(127 - min(max(audio_level, 0), 127))
        else:
            voiced = payload_len > self.dtx_max_bytes
            sample = FALLBACK_LOUDNESS if voiced else 0.0
        track.loudness += self.smoothing * (sample - track.loudness)
        if voiced:
            track.last_voiced = now
        return voiced

    def remove(self, participant_id: int) -> None:
        """Forget a participant (left, or muted: its state restarts from silence)."""
        self._tracks.pop(participant_id, None)

    def is_speaking(self, participant_id: int, now: float) -> bool:
        """Voiced within the hold time."""
        track = self._tracks.get(participant_id)
        return (
            track is not None
            and track.last_voiced is not None
            and now - track.last_voiced <= self.hold_s
        )

    def silent_for(self, participant_id: int, now: float) -> float:
        """Seconds since the last voiced packet (infinite if never voiced)."""
        track = self._tracks.get(participant_id)
        if track is None or track.last_voiced is None:
            return float("inf")
        return now - track.last_voiced

    def loudness(self, participant_id: int) -> float:
        """Smoothed loudness, 0 (silent) .. 127 (0 dBov); for ranking only."""
        track = self._tracks.get(participant_id)
        return 0.0 if track is None else track.loudness

    def speaking(self, now: float) -> frozenset[int]:
        """Everyone speaking at ``now`` (not rate limited)."""
        return frozenset(p for p in self._tracks if self.is_speaking(p, now))

    def poll(self, now: float) -> list[int] | None:
        """The sorted speaking set if it changed and may be emitted now, else ``None``."""
        current = self.speaking(now)
        if current == self._emitted:
            return None
        if self._emitted_at is not None and now - self._emitted_at < self.min_interval_s:
            return None
        self._emitted = current
        self._emitted_at = now
        return sorted(current)
