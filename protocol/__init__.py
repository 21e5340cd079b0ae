"""Hearth protocol v1: wire types, codecs and the sans-I/O session. No I/O here."""
