"""Adapters to the outside world: processes, PostgreSQL, servers, wrk, pgbench, the stacks'
virtual environments, the machine. They speak the domain's types."""
