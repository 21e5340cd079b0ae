"""What every REST route shares: the error table, the body decoder, the OpenAPI document.

``errors`` maps each :class:`protocol.codes.ErrorCode` to its one HTTP status and turns
every failure (a domain refusal, a bad body, aiohttp's own 404/405/413) into the
documented ``{"error": {"code", "message"}}`` body; ``decoding`` reads bodies, paths
and queries into bounded msgspec types and checks every text; ``openapi`` keeps the
route table and renders it as an OpenAPI 3.1 document and as ``docs/rest.md``.
"""
