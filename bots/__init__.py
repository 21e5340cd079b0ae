"""Hearth bots."""
