"""REST sidecars (courses, billing, analytics, ...): one package each, seeing the core only
through the published surface (docs/ARCHITECTURE.md, "Dependency rules")."""
