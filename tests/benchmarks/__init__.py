"""Benchmarks: timed budget checks run by hand (``python -m tests.benchmarks.NAME``), not
collected by pytest; their numbers go to docs/BENCHMARKS.md. They live with the tests,
out of the runtime packages, because nothing at runtime imports them."""
