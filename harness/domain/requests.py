"""What a foreign service is sent: one request (TARGET's path) or a small weighted mix (REQUESTS),
and the shape its answers must keep.

The demo app is checked by its schema; a service the tool did not write is checked by what it
can be held to: a success status, and a JSON shape that stays the same from one answer to the
next (the same keys, the same kinds of values).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from harness.domain.errors import UsageError

# Not HEAD: its answer has no body, which wrk and the open loop would wait for forever.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# A path as it goes on the wire: printable ASCII without spaces (percent-encode the rest).
PATH = re.compile(r"^/[!-~]*$")
MAX_REQUESTS = 20  # a mix is a handful of endpoints, not a recorded session
MAX_WEIGHT = 100
MAX_BODY = 64 * 1024
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
# wrk and the open loop set these themselves, from the URL and the body.
MANAGED_HEADERS = ("host", "content-length", "transfer-encoding", "connection")


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    weight: int = 1

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": [list(h) for h in self.headers],
            "body": self.body,
            "weight": self.weight,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        return cls(
            method=data["method"],
            path=data["path"],
            headers=tuple((str(k), str(v)) for k, v in data.get("headers", [])),
            body=data.get("body", ""),
            weight=int(data.get("weight", 1)),
        )


@dataclass(frozen=True)
class Requests:
    """The requests every connection sends in turn, each `weight` times per cycle."""

    items: tuple[Request, ...]
    source: str = ""  # the file they came from ('' for TARGET's path)

    @property
    def label(self) -> str:
        if len(self.items) == 1:
            return self.items[0].label
        mix = ", ".join(f"{r.weight}× {r.label}" for r in self.items)
        return f"mix ({mix})"

    @property
    def digest(self) -> str:
        """Short and stable: what a cell's id names them by."""
        text = json.dumps([r.to_json() for r in self.items], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def order(self) -> list[int]:
        """Indices of one cycle, each request `weight` times, spread out (smooth weighted
        round robin): a short run, or a connection's first requests, already see the mix."""
        current = [0] * len(self.items)
        total = sum(r.weight for r in self.items)
        out = []
        for _ in range(total):
            for i, r in enumerate(self.items):
                current[i] += r.weight
            best = max(range(len(self.items)), key=lambda i: current[i])
            current[best] -= total
            out.append(best)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "items": [r.to_json() for r in self.items]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Requests:
        return cls(tuple(Request.from_json(r) for r in data["items"]), data.get("source", ""))


def parse_requests(data: Any, source: str) -> Requests:
    """A requests file's content (TOML's `[[request]]` tables, or JSON's list of them under
    "request"), checked: every problem named in one line with the value and what is valid."""
    where = f"REQUESTS: {source}"
    items = data.get("request") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise UsageError(f"{where}: no requests; give one or more [[request]] tables")
    if len(items) > MAX_REQUESTS:
        raise UsageError(f"{where}: {len(items)} requests; at most {MAX_REQUESTS}")
    return Requests(tuple(_request(item, f"{where}: request {i + 1}") for i, item in
                          enumerate(items)), source)  # fmt: skip


def _request(item: Any, where: str) -> Request:
    if not isinstance(item, dict):
        raise UsageError(f"{where}: not a table of method, path, headers, body, weight")
    if unknown := sorted(set(item) - {"method", "path", "headers", "body", "weight"}):
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r}; choose from method, path, headers, body, weight"
        )
    method = str(item.get("method", "GET")).upper()
    if method not in METHODS:
        raise UsageError(f"{where}: method {method!r}; choose from {', '.join(METHODS)}")
    path = item.get("path")
    if not isinstance(path, str) or not PATH.match(path):
        raise UsageError(
            f"{where}: path {path!r} must start with / and be printable ASCII without spaces "
            "(percent-encode the rest)"
        )
    weight = item.get("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= MAX_WEIGHT:
        raise UsageError(f"{where}: weight {weight!r} must be a whole number 1-{MAX_WEIGHT}")
    body = _body(item.get("body", ""), where)
    checked = _headers(item.get("headers", {}), where)
    if body and not any(n.lower() == "content-type" for n, _ in checked):
        checked.append(("Content-Type", "application/json"))
    return Request(method, path, tuple(checked), body, weight)


def _body(body: Any, where: str) -> str:
    """The body as sent: text as given, a TOML table or JSON object as JSON."""
    if not isinstance(body, str):
        body = json.dumps(body)
    if len(body.encode()) > MAX_BODY:
        raise UsageError(f"{where}: body of {len(body.encode())} bytes; at most {MAX_BODY}")
    return body


def _headers(headers: Any, where: str) -> list[tuple[str, str]]:
    """The headers a request may set itself: not those the load generators set."""
    if not isinstance(headers, dict):
        raise UsageError(f"{where}: headers must be a table of name = value")
    checked = []
    for name, value in headers.items():
        if not HEADER_NAME.match(name) or name.lower() in MANAGED_HEADERS:
            raise UsageError(
                f"{where}: header {name!r} cannot be set (a token, and not one of "
                f"{', '.join(MANAGED_HEADERS)}: the load generator sets those)"
            )
        if not isinstance(value, str) or not re.match(r"^[ -~]*$", value):
            raise UsageError(f"{where}: header {name!r} needs a one-line printable ASCII value")
        checked.append((name, value))
    return checked


# --- the shape of an answer ---------------------------------------------------------------------


def shape(body: bytes, content_type: str) -> Any:
    """What an answer is made of, without its values: for JSON, objects by their keys and the
    kinds of their values, lists by their first item; anything else by its media type."""
    if "json" not in content_type.lower():
        return {"media": content_type.split(";")[0].strip() or "none"}
    try:
        return _shape(json.loads(body or b"null"))
    except ValueError:
        return {"media": "invalid JSON"}


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


def same_shape(expected: Any, got: Any, top: bool = True) -> bool:
    """Whether `got` keeps `expected`'s shape. Inside an answer, a null fits any field (a field
    with no value this time) and an empty list any list; the answer itself must be of the same
    kind (an object with the same keys, a list, a scalar), so that an error object in place of
    a list, or of an object with other keys, does not fit."""
    if expected == got:
        return True
    if not top and (got == "null" or expected == "null"):
        return True
    if isinstance(expected, dict) and isinstance(got, dict):
        return set(expected) == set(got) and all(
            same_shape(expected[k], got[k], top=False) for k in expected
        )
    if isinstance(expected, list) and isinstance(got, list):
        return not expected or not got or same_shape(expected[0], got[0], top=False)
    return top and expected == "null"  # a null learnt says nothing of what comes next


def describe(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
