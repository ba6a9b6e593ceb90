"""`make serve`: a throwaway database and one server in the foreground, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from contextlib import ExitStack

from harness import postgres
from harness.errors import UsageError
from harness.metadata import PROJECT_ROOT
from harness.parse import parse_choices, parse_nonnegative_int, parse_positive_ints
from harness.process import kill_group, port_in_use, register_child
from servers.registry import REGISTRY, SEED_PORTS, Launch, Mode, ServerName, server_argv


def serve(args: argparse.Namespace) -> int:
    server = parse_choices(args.server, "SERVER", ServerName, [s.value for s in REGISTRY])[0]
    mode = parse_choices(args.mode, "MODE", Mode, [m.value for m in Mode])[0]
    rows = parse_nonnegative_int(args.rows, "ROWS")
    workers = parse_positive_ints(args.workers, "WORKERS", 64)[0]
    port = SEED_PORTS[mode]
    if port_in_use(port):
        raise UsageError(f"port {port} on 127.0.0.1 is in use; stop what listens there first")
    with ExitStack() as stack:
        if args.database_url:
            db = postgres.check_reachable(args.database_url)
        else:
            db = stack.enter_context(postgres.throwaway_cluster())
        count = postgres.reset_dataset(db.url, rows)
        env = {"DATABASE_URL": db.url, "SESSION_STYLE": args.style}
        argv = server_argv(server, Launch(mode=mode, port=port, workers=workers))
        proc = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env={**os.environ, **env}, start_new_session=True
        )
        register_child(proc)
        stack.callback(kill_group, proc)
        print(
            f"{server} {mode} on http://127.0.0.1:{port} ({count} rows; Ctrl-C stops "
            "the server and the database)",
            file=sys.stderr,
        )

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
            return 0
