"""Hearth rooms."""
