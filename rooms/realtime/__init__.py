"""The realtime core: sessions and their replay buffers, the hub (fan-out), the bus
and its Redis implementation, session recovery (the Redis mirror), the ready
payload, presence, rate limits, and who may see what (the permission rules and
the per-session resolver). It imports no domain package (chat, moderation,
voice): they build on it.
"""
