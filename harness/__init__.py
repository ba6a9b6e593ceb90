"""The benchmark harness: PostgreSQL management, cells, wrk, results and reports."""
