"""What measures a record's cell again: `make bench` with that one cell's settings, and the
environment the run had, kept in the record (`replay`)."""

from __future__ import annotations

import os
import shlex
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from harness.domain.axes import Onset, Stack, WrkRunner
from harness.domain.cell import Cell
from harness.domain.parse import is_loopback
from harness.domain.result import Replay
from harness.run.options import Options

# Environment variables that change how a run is measured (harness/infra/pg_binaries.py).
ENVIRONMENT = ("PG_BINARIES",)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _without_password(url: str) -> str:
    """The URL with its password, in the user part or the query, as ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, True)],
        safe="*",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def replay(cell: Cell, options: Options) -> Replay | None:
    """`make bench ...` for `cell` alone, one round, measured as its run measured it; None for
    a warm probe, whose load came from the levels its ramp climbed before it."""
    if cell.onset is Onset.warm:
        return None
    settings = _served(cell) | _sent(cell)
    # A cold probe met its load on a fresh server without a warm-up.
    warmup = 0.0 if cell.onset is Onset.cold else options.warmup_s
    load: dict[str, object] = (
        {"CONNECTIONS": cell.connections}
        if cell.rate is None
        else {"LOAD": "open", "RATE": f"{cell.rate:g}", "OPEN_CONNECTIONS": cell.connections}
    )
    settings |= {
        **({} if cell.requests else {"WORKLOAD": cell.workload}),
        **load,
        "REPEATS": 1,
        "DURATION": _seconds(cell.duration_s),
        "WARMUP": _seconds(warmup),
        "TIMEOUT": _seconds(options.wrk_timeout_s),
        "SETTLE": _seconds(options.settle_s),
        "WRK": options.wrk_runner,
    }
    if options.wrk_runner is WrkRunner.docker:
        settings["WRK_IMAGE"] = options.wrk_image
    if options.pin:
        settings["PIN"] = 1
    environment = {k: os.environ[k] for k in ENVIRONMENT if os.environ.get(k)}
    if options.database_url:
        environment["DATABASE_URL"] = _without_password(options.database_url)
    words = [f"{k}={shlex.quote(str(v))}" for k, v in settings.items()]
    return Replay("make bench " + " ".join(words), environment)


def _served(cell: Cell) -> dict[str, object]:
    """What served the cell: the demo app's server and its settings, the user's app, or the
    target."""
    if (config := cell.config) is not None:
        settings: dict[str, object] = {
            "SERVER": config.name,
            "MODES": cell.mode,
            "STYLES": config.style,
            "DRIVERS": config.driver,
            "LAYERS": config.layer,
            "POOLS": config.pool,
            "POOL_TIMEOUT": _seconds(config.pool_timeout_s),
            "WORKERS": config.workers,
            "STACK": config.stack,
            "ROWS": config.rows,
            "DB_LATENCY": config.db_latency,
            "OCCUPANCY": "on" if config.occupancy else "off",
        }
        if config.stack is not Stack.y2021:  # 2021 has no token limiter to set
            settings["TOKENS"] = config.tokens
        return settings
    if (app := cell.user_app) is not None:
        settings = {
            "APP": app.app,
            "APP_DIR": app.directory,
            "APP_PYTHON": app.python,
            "SERVER": app.name,
            "MODES": cell.mode,
            "TOKENS": app.tokens,
            "WORKERS": app.workers,
        }
        if app.env:
            settings["APP_ENV"] = " ".join(
                f"{k}={shlex.quote(_without_password(v) if '://' in v else v)}" for k, v in app.env
            )
        return settings
    settings = {"TARGET": cell.target, "MODES": cell.mode}
    if not is_loopback(urlsplit(cell.target or "").hostname or ""):
        settings["ALLOW_REMOTE"] = 1  # as its run was allowed to
    return settings


def _sent(cell: Cell) -> dict[str, object]:
    """What a foreign service or a user's app was sent: a path alone is TARGET's (or
    APP_PATH); a mix is its file's, which the record names."""
    if (requests := cell.requests) is None:
        return {}
    (first, *more) = requests.items
    if requests.source or more:
        return {"REQUESTS": requests.source}
    if cell.user_app:
        return {"APP_PATH": first.path}
    return {"TARGET": f"{cell.target}{first.path}"}
