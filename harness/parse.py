"""Parsers for every value a user gives (CLI flags, Makefile variables): one place, one style.

Each raises UsageError naming the value and what would be valid.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from harness.errors import UsageError
from harness.model import Pool
from servers.registry import ServerName

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


def parse_servers(text: str) -> list[ServerName]:
    if text.strip() == "all":
        return list(ServerName)
    return parse_choices(text, "SERVER", ServerName, [s.value for s in ServerName])


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


def parse_nonnegative_int(text: str, name: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise UsageError(f"{name}: {text!r} is not a whole number >= 0")
    return int(text)


def parse_target(text: str) -> str:
    """An http URL of a server on this machine's loopback: load is never sent anywhere else."""
    url = urlsplit(text.strip())
    if url.scheme != "http" or not url.hostname or url.path not in ("", "/"):
        raise UsageError(f"TARGET: {text!r} is not a base URL like http://127.0.0.1:8001")
    host = url.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"TARGET: {host!r} is not a loopback address (127.0.0.1, ::1, localhost)")
    try:
        port = url.port
    except ValueError:
        port = None
    if port is None:
        raise UsageError(f"TARGET: {text!r} needs a port, e.g. http://127.0.0.1:8001")
    return f"http://{url.netloc}"
