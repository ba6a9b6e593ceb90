"""Load generators the harness runs as programs of their own, like wrk."""
