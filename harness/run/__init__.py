"""Orchestration: the lifecycle of one cell, a run of cells, a failure map, `serve`. It writes
raw records to the store and tells a listener what happens; it never draws a report."""
