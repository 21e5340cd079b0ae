"""Hearth persistence."""
