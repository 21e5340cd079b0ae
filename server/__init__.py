"""Hearth server."""
