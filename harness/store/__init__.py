"""The run directory: metadata with its provenance, raw records, format versions and migrations."""
