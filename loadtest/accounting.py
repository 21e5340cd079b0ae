"""Counting what a load test saw: latency histograms and per-channel sequence accounting.

Both are built to be cheap on the hot path (one call per delivery, no allocation in the
common case) and mergeable across generator processes, because one machine needs
several generator processes to reach 100,000 connections and the report is one number.

Histogram: log-linear buckets (32 per power of two, so a bucket is at most ~2.2 % wide)
over microseconds. Percentiles are read from bucket upper bounds, so they are never
optimistic by more than one bucket; ``max`` is kept exactly.

Sequence accounting: Hearth numbers every message in a channel gap-free (``seq`` = 1,
2, 3, ...). Each recipient keeps, per channel, the last seq it saw and the seqs it
skipped. A jump forward counts the skipped seqs as lost; a later arrival of a skipped
seq turns one "lost" into one "out of order"; a seq seen before is a duplicate.
Messages at the tail that a recipient never got are counted at the end against the
channel's final seq (:func:`tail_lost`), which only the coordinator knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SUB_BUCKETS = 32
"""Buckets per power of two."""
_MAX_INDEX = SUB_BUCKETS * 40
MAX_TRACKED_GAPS = 4096
"""Skipped seqs remembered per recipient channel; beyond this a late arrival of an
untracked seq is counted as a duplicate (documented limit; memory stays bounded)."""


def bucket_of(value_us: int) -> int:
    """Bucket index of a value in microseconds (values below 1 us go to bucket 0)."""
    if value_us <= 1:
        return 0
    index = int(math.log2(value_us) * SUB_BUCKETS) + 1
    return index if index < _MAX_INDEX else _MAX_INDEX - 1


def bucket_upper_us(index: int) -> float:
    """Upper bound of bucket ``index`` in microseconds."""
    if index <= 0:
        return 1.0
    return float(2.0 ** (index / SUB_BUCKETS))


class Histogram:
    """A mergeable latency histogram in microseconds, with exact count, sum and max."""

    __slots__ = ("buckets", "count", "max_us", "sum_us")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.sum_us = 0
        self.max_us = 0

    def record(self, value_us: int) -> None:
        if value_us < 0:
            value_us = 0
        index = bucket_of(value_us)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.sum_us += value_us
        if value_us > self.max_us:
            self.max_us = value_us

    def merge(self, other: Histogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.sum_us += other.sum_us
        self.max_us = max(self.max_us, other.max_us)

    def to_wire(self) -> tuple[dict[int, int], int, int, int]:
        return (self.buckets, self.count, self.sum_us, self.max_us)

    @classmethod
    def from_wire(cls, wire: tuple[dict[int, int], int, int, int]) -> Histogram:
        """The inverse of :meth:`to_wire`; msgspec has checked the types (``Tick``)."""
        buckets, count, sum_us, max_us = wire
        hist = cls()
        hist.buckets = dict(buckets)
        hist.count, hist.sum_us, hist.max_us = count, sum_us, max_us
        return hist

    def percentile_us(self, q: float) -> float | None:
        """The ``q``-quantile (0..1) as a bucket upper bound, capped by the exact max."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(bucket_upper_us(index), float(self.max_us))
        return float(self.max_us)

    def summary_ms(self) -> dict[str, float | None]:
        """The report's ``latency_ms`` block: p50, p90, p99, p999, max, mean."""

        def ms(us: float | None) -> float | None:
            return None if us is None else round(us / 1000.0, 3)

        return {
            "p50": ms(self.percentile_us(0.50)),
            "p90": ms(self.percentile_us(0.90)),
            "p99": ms(self.percentile_us(0.99)),
            "p999": ms(self.percentile_us(0.999)),
            "max": ms(float(self.max_us)) if self.count else None,
            "mean": ms(self.sum_us / self.count) if self.count else None,
            "count": self.count,
        }

    def bars_ms(self) -> list[tuple[float, int]]:
        """(bucket upper bound in ms, count) in ascending order, for plotting."""
        return [(bucket_upper_us(i) / 1000.0, self.buckets[i]) for i in sorted(self.buckets)]


@dataclass(slots=True)
class Anomalies:
    """Lost, duplicated and out-of-order counts (for one channel or in total)."""

    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0

    def add(self, other: Anomalies) -> None:
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.out_of_order += other.out_of_order

    def any(self) -> bool:
        return bool(self.lost or self.duplicated or self.out_of_order)


class SeqCursor:
    """One recipient's view of one channel: the last seq seen and the seqs it skipped.

    ``last`` starts at the channel's ``last_seq`` in ``ready`` (messages before the
    session are not expected). ``observe`` returns nothing; it updates ``tally``, the
    channel's shared :class:`Anomalies` in this process.
    """

    __slots__ = ("gaps", "last")

    def __init__(self, baseline: int) -> None:
        self.last = baseline
        self.gaps: set[int] | None = None

    def observe(self, seq: int, tally: Anomalies) -> None:
        last = self.last
        if seq == last + 1:
            self.last = seq
            return
        if seq > last + 1:
            skipped = seq - last - 1
            tally.lost += skipped
            gaps = self.gaps
            if gaps is None:
                gaps = self.gaps = set()
            room = MAX_TRACKED_GAPS - len(gaps)
            if room > 0:
                gaps.update(range(last + 1, last + 1 + min(skipped, room)))
            self.last = seq
            return
        gaps = self.gaps
        if gaps is not None and seq in gaps:
            gaps.discard(seq)
            tally.lost -= 1
            tally.out_of_order += 1
        else:
            tally.duplicated += 1


@dataclass(slots=True)
class ChannelEnd:
    """What one process knows about a channel when the run ends (merged across
    processes by addition / max): used to count messages lost at the tail."""

    recipients: int = 0
    """Recipients still connected at the end (their cursors are counted)."""
    sum_last: int = 0
    """Sum over those recipients of the last seq each saw."""
    max_seen: int = 0
    """Highest seq any recipient here saw."""
    max_acked: int = 0
    """Highest seq returned to a sender here in an ``ok`` reply."""

    def merge(self, other: ChannelEnd) -> None:
        self.recipients += other.recipients
        self.sum_last += other.sum_last
        self.max_seen = max(self.max_seen, other.max_seen)
        self.max_acked = max(self.max_acked, other.max_acked)


def tail_lost(end: ChannelEnd) -> int:
    """Messages at the end of the channel that connected recipients never received:
    every recipient should have reached the channel's final seq (the highest one acked
    or seen anywhere)."""
    final = max(end.max_seen, end.max_acked)
    return max(0, end.recipients * final - end.sum_last)


@dataclass
class ChannelBook:
    """Per-channel anomaly tallies of one process (only channels that have any are
    reported, so the report stays small at 10,000 channels)."""

    tallies: dict[int, Anomalies] = field(default_factory=dict)

    def tally(self, channel_id: int) -> Anomalies:
        tally = self.tallies.get(channel_id)
        if tally is None:
            tally = self.tallies[channel_id] = Anomalies()
        return tally

    def nonzero(self) -> dict[int, Anomalies]:
        return {cid: t for cid, t in self.tallies.items() if t.any()}
