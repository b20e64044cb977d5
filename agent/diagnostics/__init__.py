"""Active diagnostics: OBD-II PIDs, UDS data identifiers and trouble codes (docs/diagnostics.md)."""
