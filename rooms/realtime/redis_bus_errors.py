"""The errors the Redis bus (:mod:`rooms.realtime.redis_bus`) raises to its callers.

A module of their own because both the bus and its publisher raise them and callers
(the outage classifier in ``outages.py``) catch them: importing them loads neither the
bus nor redis-py.
"""

from __future__ import annotations


class BusError(Exception):
    """Base class of the Redis bus's errors."""


class BusUnavailable(BusError):
    """Redis could not be reached (at start) or is not what the configuration says."""


class BusOverloaded(BusError):
    """The outgoing queue is full (``max_pending_publishes``); nothing was queued."""


class PublishTimeout(BusError, TimeoutError):
    """Redis did not accept the publish within ``publish_timeout``; it was withdrawn
    unless already on the wire (then it may or may not have been delivered)."""


class PublishFailed(BusError):
    """Redis refused the publish (for example an ACL error)."""


class BusClosed(BusError):
    """The bus is not started, or was closed before the publish went out."""

