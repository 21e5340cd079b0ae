"""Hearth's load-test harness: ``hearth loadtest SCENARIO`` (see ``loadtest/cli.py``).

It speaks only the public protocol (``protocol/``) over real websockets; it never
imports ``server/``, ``rooms/`` or ``persistence/``. Modules, one per concern:
``cli`` (options), ``coordinator`` (phases of one run), ``worker`` (a generator
process), ``client`` (one lean connection), ``wire`` (frames), ``accounting``
(histograms and seq accounting), ``ipc`` (coordinator <-> generators), ``target``
(the server under test, provisioning, /proc), ``report`` and ``html`` (output),
``peers`` (the servers Hearth is compared with).
"""
