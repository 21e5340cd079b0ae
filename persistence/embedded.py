"""An embedded PostgreSQL for the zero-configuration default (``hearth serve``).

Uses the ``pgserver`` package, which ships PostgreSQL binaries inside its wheel, so a
fresh machine needs nothing installed by hand. The server listens on a unix socket in
the data directory only (no TCP port), and is stopped when Hearth exits.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Start (or reuse) a PostgreSQL cluster in ``data_dir``; :attr:`dsn` connects to it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: PostgresServer | None = None
        self.dsn = ""

    def start(self) -> str:
        # pgserver refuses some operations as root unless told the user to run as;
        # it handles that itself on current versions. Silence its platformdirs warning.
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # imported lazily: only the embedded default needs it
            from pgserver.postgres_server import get_server

        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(str(self.data_dir), cleanup_mode="stop")
        self._server = server
        self.dsn = server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return self.dsn

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
