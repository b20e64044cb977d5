"""Data sources: one module per source type, registered by name (agent/sources/registry.py)."""
