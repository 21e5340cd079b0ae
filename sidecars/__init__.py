"""Sidecars: parts of Hearth beside the realtime core (courses, billing, analytics...).

Each is a package here that sees the core only through :mod:`sidecars.api`; see there.
"""
