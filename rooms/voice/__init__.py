"""Voice rooms and live sessions: the gateway signalling, the voice roster, stage,
Q&A and scheduled live sessions. The media workers are in ``rooms.media``.
"""
