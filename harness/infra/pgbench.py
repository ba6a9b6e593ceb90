"""The database ceiling: pgbench running the `/users` query itself, with no HTTP and no Python."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

from harness.domain.errors import HarnessError
from harness.domain.result import PgbenchResult
from harness.infra.pg_binaries import find_binary
from harness.infra.postgres import libpq_url

# The statement SQLAlchemy sends for GET /users (select(User) with both columns).
USERS_QUERY = "SELECT users.id, users.email FROM users;\n"


def parse(output: str, connections: int, duration_s: float) -> PgbenchResult:
    def number(pattern: str) -> float:
        match = re.search(pattern, output, re.MULTILINE)
        if not match:
            raise ValueError(f"pgbench output has no {pattern!r}")
        return float(match[1])

    return PgbenchResult(
        connections=connections,
        duration_s=duration_s,
        transactions=int(number(r"^number of transactions actually processed: (\d+)")),
        failed=int(number(r"^number of failed transactions: (\d+)")),
        tps=number(r"^tps = ([\d.]+)"),
        latency_avg_ms=number(r"^latency average = ([\d.]+) ms"),
    )


def argv(url: str, connections: int, duration_s: float, script: str) -> list[str]:
    threads = max(1, min(connections, os.cpu_count() or 1))
    return [
        find_binary("pgbench"),
        "-n",
        "-c",
        str(connections),
        "-j",
        str(threads),
        "-T",
        str(max(1, round(duration_s))),
        "-f",
        script,
        libpq_url(url),
    ]


def run(url: str, connections: int, duration_s: float) -> PgbenchResult:
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(USERS_QUERY)
        script.flush()
        out = subprocess.run(
            argv(url, connections, duration_s, script.name),
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            stdin=subprocess.DEVNULL,
        )
    try:
        return parse(out.stdout, connections, duration_s)
    except ValueError:
        raise HarnessError(f"pgbench failed: {out.stderr.strip()[-300:]}") from None
