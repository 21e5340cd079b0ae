"""How the web client's files (``web/``: the pages and ``/static/``) travel: revalidated
caching and compression.

The pages import their ES modules by plain, unversioned names (no build step, so no
content hashes in file names), so a browser may keep a copy but must ask before using
it: ``Cache-Control: no-cache`` with the ETag and Last-Modified aiohttp's FileResponse
already sends makes a repeat visit a round of cheap 304s instead of stale code after an
upgrade. Text files are compressed (gzip/deflate, as the browser accepts); the vendored
markdown libraries and the page modules shrink to about a quarter.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
"""Content types worth compressing (images and audio already are)."""

CONDITIONAL = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since",
               "If-Range", "Range")

PAGES = frozenset({"/", "/mod", "/voice", "/settings"})
"""The HTML pages server/app.py serves next to /static/."""


def is_web_file(path: str) -> bool:
    """Whether ``path`` is one of the web client's files rather than an API route."""
    return path.startswith("/static/") or path in PAGES


@web.middleware
async def web_files_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Caching and compression headers for the web client's files; other routes pass."""
    response = await handler(request)
    if request.method not in ("GET", "HEAD") or not is_web_file(request.path):
        return response
    if isinstance(response, web.FileResponse):
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Vary"] = "Accept-Encoding"
        # FileResponse picks its content type only when it sends: guess it the same way.
        kind = "text/html" if request.path in PAGES else mimetypes.guess_type(request.path)[0]
        # Not on a conditional or ranged request: its answer is usually a bodiless 304
        # (or a 206), and aiohttp would still frame a gzip stream around nothing.
        conditional = any(h in request.headers for h in CONDITIONAL)
        if kind and kind.startswith(COMPRESSIBLE) and not conditional:
            response.enable_compression()
    return response
