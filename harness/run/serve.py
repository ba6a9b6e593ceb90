"""`make serve`: one server as a cell would start it, on the seed's port, with its data set,
in the foreground until Ctrl-C (or SIGTERM, or SIGHUP)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import ExitStack

from harness.domain.axes import Mode
from harness.domain.cell import ServerConfig
from harness.domain.errors import UsageError
from harness.infra import postgres, stacks
from harness.infra.environment import PROJECT_ROOT
from harness.infra.process import die_with_parent, kill_group, port_in_use, register_child
from harness.infra.relay import relayed
from harness.infra.server import inherited
from harness.run.cell import server_env
from harness.run.session import Interrupted, interrupt_on_signals
from servers.registry import SEED_PORTS, Launch, server_argv


def serve(
    config: ServerConfig, mode: Mode, database_url: str | None, say: Callable[[str], None]
) -> int:
    port = SEED_PORTS[mode]
    if port_in_use(port):
        raise UsageError(f"port {port} on 127.0.0.1 is in use; stop what listens there first")
    python = str(stacks.ensure_venv(config.stack))
    # Signals are handled explicitly: a shell script that starts `make serve` in the background
    # leaves SIGINT ignored, and Python would then never stop on it.
    with ExitStack() as stack:
        stack.enter_context(interrupt_on_signals())
        try:
            if database_url:
                db = postgres.check_reachable(database_url)
            else:
                db = stack.enter_context(postgres.throwaway_cluster())
            count = postgres.reset_dataset(db.url, config.rows)
            relay = stack.enter_context(relayed(db.url, config.db_latency))
            launch = Launch(
                mode=mode, port=port, workers=config.workers, stack=config.stack, python=python
            )
            proc = subprocess.Popen(
                server_argv(config.name, launch),
                cwd=PROJECT_ROOT,
                env={**inherited(), **server_env(config, mode, relay.url if relay else db.url)},
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
            register_child(proc)
            stack.callback(kill_group, proc)
            latency = (
                f", {config.db_latency.ms:g} ms each way to PostgreSQL through the relay on "
                f"127.0.0.1:{relay.port}"
                if relay
                else ""
            )
            say(
                f"{config.name} {mode} on http://127.0.0.1:{port} ({count} rows, "
                f"{config.driver}, {config.layer}, {config.style}, pool {config.pool}, "
                f"{config.tokens_label} tokens, {config.workers} workers{latency}; "
                "Ctrl-C stops the server and the database)"
            )
            return proc.wait()
        except (Interrupted, KeyboardInterrupt):
            say("stopping")
            return 0
