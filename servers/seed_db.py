"""The compose file's one-shot `seed` service: reset the apps' data set, then exit.

`python -m servers.seed_db` drops and recreates the `users` table in the database that
DATABASE_URL names and fills it with ROWS rows (default 10), with the same function the harness
runs before every cell (app.dataset.reset_dataset), then prints the count read back. It
exits 0 only when that count is ROWS, so the app services, which wait for this service to
complete successfully, never start against an unseeded database.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from app.dataset import DEFAULT_ROWS, reset_dataset

__all__ = ["DEFAULT_ROWS", "main"]


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    url = env.get("DATABASE_URL", "")
    if not url:
        print("seed_db: DATABASE_URL is not set", file=sys.stderr)
        return 2
    raw = env.get("ROWS", str(DEFAULT_ROWS))
    try:
        rows = int(raw)
    except ValueError:
        rows = -1
    if rows < 0:
        print(f"seed_db: ROWS must be a whole number >= 0, got {raw!r}", file=sys.stderr)
        return 2

    count = reset_dataset(url, rows)
    print(f"seed_db: users has {count} rows", file=sys.stderr)
    return 0 if count == rows else 1


if __name__ == "__main__":
    sys.exit(main())
