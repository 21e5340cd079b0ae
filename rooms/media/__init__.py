"""Voice-room media (issue #6): an Opus SFU running in worker processes.

``passthrough`` adapts aiortc (the only module touching its internals), ``speakers``
detects who is talking, ``forwarder`` maps speakers onto listeners' receive slots,
``worker`` is the process main + IPC server, ``pool`` is the gateway-side client.
Imports are left to the submodules so the gateway can import ``pool`` without aiortc.
"""
