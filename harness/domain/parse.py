"""Parsers for every value a user gives (CLI flags, Makefile variables): one place, one style.

Each raises UsageError naming the value and what would be valid.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from harness.domain.axes import (
    DRIVERS_FOR,
    SERVERS_2021,
    Driver,
    Latency,
    Mode,
    Pool,
    ServerName,
    SessionStyle,
    Stack,
)
from harness.domain.errors import UsageError
from harness.domain.plan import MAP_VARIANTS
from harness.domain.requests import PATH

T = TypeVar("T")


def _items(text: str, name: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"{name}: empty list {text!r}")
    return items


def parse_choices(
    text: str, name: str, kind: Callable[[str], T], choices: Sequence[str]
) -> list[T]:
    out = []
    for item in _items(text, name):
        if item not in choices:
            raise UsageError(f"{name}: unknown value {item!r}; choose from {', '.join(choices)}")
        out.append(kind(item))
    return list(dict.fromkeys(out))


def parse_servers(text: str, stacks: Sequence[Stack] = (Stack.current,)) -> list[ServerName]:
    """Server names, or `all` for every registered one (under 2021 alone: those it has)."""
    choices = [*(s.value for s in ServerName), "all"]
    named = parse_choices(text, "SERVER", str, choices)
    if "all" in named:
        return list(SERVERS_2021) if list(stacks) == [Stack.y2021] else list(ServerName)
    servers = [ServerName(n) for n in named]
    if Stack.y2021 in stacks and (missing := [s for s in servers if s not in SERVERS_2021]):
        raise UsageError(
            f"SERVER: {', '.join(missing)} is not part of the 2021 stack "
            f"(requirements-2021.lock); choose {', '.join(SERVERS_2021)}"
        )
    return servers


def parse_drivers(
    text: str,
    modes: Sequence[Mode],
    given: bool = True,
    one_each: str = "",
    modes_from: str = "MODES",
) -> list[tuple[Mode, Driver]]:
    """DRIVERS matched to the modes: each mode's app takes the listed drivers that fit it
    (psycopg fits both). A driver given that fits no mode, or a mode left without one, is
    refused; the default list names one driver per mode and is matched silently. `one_each`:
    why each mode may have one driver only; `modes_from`: the settings the modes come from."""
    chosen = parse_choices(text, "DRIVERS", Driver, [d.value for d in Driver])
    for driver in chosen if given else ():
        if not any(driver in DRIVERS_FOR[m] for m in modes):
            serves = " and ".join(str(m) for m in Mode if driver in DRIVERS_FOR[m])
            raise UsageError(
                f"DRIVERS: {driver} drives only the {serves} app, and {modes_from} asks for "
                f"{','.join(modes)}, whose app takes {' or '.join(DRIVERS_FOR[modes[0]])}"
            )
    out = [(m, d) for m in modes for d in chosen if d in DRIVERS_FOR[m]]
    for mode in modes:
        mine = [d for m, d in out if m is mode]
        if not mine:
            raise UsageError(
                f"DRIVERS: {','.join(chosen)} names no driver of the {mode} app; add "
                f"{' or '.join(DRIVERS_FOR[mode])}, or leave {mode} out of {modes_from}"
            )
        if one_each and len(mine) > 1:
            raise UsageError(f"DRIVERS: {one_each}; give one {mode} driver, not {', '.join(mine)}")
    return out


def parse_positive_ints(
    text: str, name: str, maximum: int = 100_000, ordered: bool = False
) -> list[int]:
    """Whole numbers from 1 to `maximum`; sorted, or in the order given (first = baseline)."""
    out = []
    for item in _items(text, name):
        if not re.fullmatch(r"\d+", item) or not 1 <= int(item) <= maximum:
            raise UsageError(f"{name}: {item!r} is not a whole number from 1 to {maximum}")
        out.append(int(item))
    return list(dict.fromkeys(out)) if ordered else sorted(set(out))


def parse_rates(text: str, maximum: float = 50_000) -> list[float]:
    """RATE: requests per second of an open loop, sorted."""
    out = set()
    for item in _items(text, "RATE"):
        try:
            rate = float(item)
        except ValueError:
            rate = 0.0
        if not 0 < rate <= maximum or not math.isfinite(rate):
            raise UsageError(
                f"RATE: {item!r} is not a number of requests per second, 0 < RATE <= {maximum:g}"
            )
        out.add(rate)
    return sorted(out)


def parse_workers(text: str, cpus: int, ordered: bool = False) -> list[int]:
    """Worker counts, where `cpus` stands for this machine's CPU count (workers as deployed)."""
    items = [str(cpus) if t.strip() == "cpus" else t for t in _items(text, "WORKERS")]
    try:
        return parse_positive_ints(",".join(items), "WORKERS", 64, ordered)
    except UsageError as exc:
        raise UsageError(f"{exc}, or cpus (this machine's CPU count)") from None


def parse_latencies(text: str) -> list[Latency]:
    """DB_LATENCY: one-way delays of the relay between the apps and PostgreSQL, sorted."""
    out = []
    for item in _items(text, "DB_LATENCY"):
        try:
            out.append(Latency.parse(item))
        except ValueError:
            raise UsageError(
                f"DB_LATENCY: {item!r} is not a one-way latency; give 0 (direct), a delay with a "
                f"unit up to {Latency.MAX_MS:g}ms (1ms, 0.5ms, 250us), or relay (no delay)"
            ) from None
    return sorted(set(out))


def parse_pools(text: str) -> list[Pool]:
    out = []
    for item in _items(text, "POOLS"):
        try:
            out.append(Pool.parse(item))
        except ValueError as exc:
            raise UsageError(f"POOLS: {exc}") from None
    return list(dict.fromkeys(out))


def parse_duration(text: str, name: str = "DURATION") -> float:
    """'10s', '1.5s', '500ms', '2m'; a bare number is refused, its unit being ambiguous."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*", text)
    if not match:
        raise UsageError(f"{name}: {text!r} needs a unit, e.g. 10s, 500ms or 2m")
    value = float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]
    if not 0 < value <= 3600:
        raise UsageError(f"{name}: {text!r} must be more than 0 and at most 1 hour")
    return value


def parse_wrk_seconds(text: str, name: str) -> float:
    """A duration wrk is given (-d, --timeout): wrk reads whole seconds only."""
    value = parse_duration(text, name)
    if value != int(value):
        raise UsageError(
            f"{name}: {text!r} is not a whole number of seconds, the only durations wrk takes; "
            "e.g. 1s, 2s or 1m"
        )
    return value


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_target(text: str, remote: bool = False) -> tuple[str, str]:
    """(base URL, path) of an http server on this machine's loopback, or, with `remote` (the
    user's explicit ALLOW_REMOTE=1), anywhere: load is sent nowhere else unless asked. The path
    ('' when none is given) is what a foreign service is sent."""
    url = urlsplit(text.strip())
    if url.scheme != "http" or not url.hostname or url.fragment:
        raise UsageError(
            f"TARGET: {text!r} is not a URL like http://127.0.0.1:8001 or http://127.0.0.1:8001/items"
        )
    host = url.hostname
    if not is_loopback(host) and not remote:
        raise UsageError(
            f"TARGET: {host!r} is not a loopback address (127.0.0.1, ::1, localhost); to load "
            "another machine, say so with ALLOW_REMOTE=1"
        )
    try:
        port = url.port
    except ValueError:
        port = None
    if port is None:
        raise UsageError(f"TARGET: {text!r} needs a port, e.g. http://127.0.0.1:8001")
    path = "" if url.path in ("", "/") and not url.query else (url.path or "/")
    if url.query:
        path += "?" + url.query
    if path and not PATH.match(path):
        raise UsageError(
            f"TARGET: path {path!r} must be printable ASCII without spaces (percent-encode it)"
        )
    return f"http://{url.netloc}", path


def parse_variants(text: str) -> list[tuple[Mode, SessionStyle]]:
    """'sync-dependency,async-dependency' -> [(Mode.sync, SessionStyle.dependency), ...]."""
    names = [f"{m}-{s}" for m, s in MAP_VARIANTS]
    out = []
    for item in _items(text, "VARIANTS"):
        mode, _, style = item.partition("-")
        if mode not in {m.value for m in Mode} or style not in {s.value for s in SessionStyle}:
            raise UsageError(f"VARIANTS: unknown variant {item!r}; choose from {', '.join(names)}")
        out.append((Mode(mode), SessionStyle(style)))
    refuse_sync_blocking(out, "VARIANTS")
    return list(dict.fromkeys(out))


def refuse_sync_blocking(variants: Sequence[tuple[Mode, SessionStyle]], name: str) -> None:
    """`blocking` is the async app's mistake (the sync session in `async def`); a sync app
    has no event loop of its own to block."""
    if (Mode.sync, SessionStyle.blocking) in variants:
        how = "MODES=async" if name == "STYLES" else "async-blocking"
        raise UsageError(
            f"{name}: 'blocking' (an async def endpoint calling the sync session) is a variant "
            f"of the async app only; use {how}"
        )


def parse_stacks(
    text: str, tokens_given: bool, styles: Sequence[SessionStyle], styles_name: str = "STYLES"
) -> list[Stack]:
    """STACK, and what the 2021 stack cannot honour (refused, not ignored)."""
    chosen = parse_choices(text, "STACK", Stack, [s.value for s in Stack])
    if Stack.y2021 in chosen:
        if tokens_given:
            raise UsageError(
                "TOKENS: the 2021 stack has no thread limiter to size: sync code runs on "
                "asyncio's default executor, of min(32, CPUs + 4) threads; leave TOKENS unset"
            )
        if SessionStyle.limited in styles:
            raise UsageError(
                f"{styles_name}: 'limited' needs Depends(max_concurrency=...), which FastAPI 0.63 "
                "(the 2021 stack) does not have; choose dependency or context"
            )
    return chosen


def refuse_in_2021(stacks: Sequence[Stack], drivers: Sequence[tuple[Mode, Driver]]) -> None:
    """The 2021 stack has SQLAlchemy 1.4 and no psycopg (3)."""
    if Stack.y2021 in stacks and any(d is Driver.psycopg for _, d in drivers):
        raise UsageError(
            "DRIVERS: psycopg (3) is not part of the 2021 stack: SQLAlchemy 1.4 has no "
            "postgresql+psycopg dialect and requirements-2021.lock no psycopg; choose psycopg2 "
            "(sync) and asyncpg (async)"
        )


def parse_one(values: Sequence[T], name: str, why: str) -> T:
    """The single value a setting must have where only one makes sense."""
    if len(values) != 1:
        raise UsageError(f"{name}: {why}; give one value, not {len(values)}")
    return values[0]
