"""A foreign service's answers: asked for before a run (each request twice, to learn the status
and the shape it keeps) and sampled while the load runs, one request at a time."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from harness.domain.requests import Request, Requests, describe, same_shape, shape
from harness.domain.result import Checks


@dataclass(frozen=True)
class Answer:
    status: int  # 0: none came (the error says why)
    shape: Any = None
    error: str = ""

    @property
    def success(self) -> bool:
        """As wrk counts it: a status below 400 is no error."""
        return 0 < self.status < 400


def ask(base_url: str, request: Request, timeout_s: float = 10.0) -> Answer:
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=timeout_s)
    try:
        body = request.body.encode() or None
        conn.request(request.method, request.path, body=body, headers=dict(request.headers))
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, shape(data, response.getheader("Content-Type", "")))
    except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: UnicodeError
        return Answer(0, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    finally:
        conn.close()


def answering(base_url: str, requests: Requests, timeout_s: float = 10.0) -> str | None:
    """None if every request of the mix gets a success (one request each); else what was wrong."""
    for r in requests.items:
        if (a := ask(base_url, r, timeout_s)).error:
            return f"{r.label} failed: {a.error}"
        if not a.success:
            return f"{r.label} answered {a.status}, not a success (below 400)"
    return None


def verify(
    base_url: str, requests: Requests, known: list[Any] | None
) -> tuple[list[Any], str | None]:
    """The shapes to hold the answers to: learnt (`known` None), or `known` checked again with
    one answer each; and what was wrong, if anything."""
    if known is None:
        return learn(base_url, requests)
    for r, expected in zip(requests.items, known, strict=True):
        a = ask(base_url, r)
        if a.error or not a.success:
            return known, f"{r.label} answered {a.status or a.error}, not a success (below 400)"
        if not same_shape(expected, a.shape):
            return known, (
                f"{r.label} answered another shape than at the run's first cell: "
                f"{describe(a.shape)}, not {describe(expected)}"
            )
    return known, None


def learn(base_url: str, requests: Requests) -> tuple[list[Any], str | None]:
    """The shape each request's answer keeps, from two answers each; or what was wrong."""
    shapes = []
    for r in requests.items:
        first, second = ask(base_url, r), ask(base_url, r)
        for a in (first, second):
            if a.error:
                return [], f"{r.label} failed: {a.error}"
            if not a.success:
                return [], f"{r.label} answered {a.status}, not a success (below 400)"
        if not same_shape(first.shape, second.shape):
            return [], (
                f"{r.label} answered two shapes: {describe(first.shape)} then "
                f"{describe(second.shape)}"
            )
        shapes.append(second.shape if first.shape in ([], "null") else first.shape)
    return shapes, None


class Checker:
    """While the load runs, sends the mix's requests in turn, one at a time, every `every_s`,
    and counts the answers whose status or shape differs from what `learn` saw. A context
    manager: the thread stops, and its last request is given up, when the window ends."""

    def __init__(
        self, base_url: str, requests: Requests, shapes: list[Any], every_s: float, timeout_s: float
    ) -> None:
        self.base_url, self.requests, self.shapes = base_url, requests, shapes
        self.every_s, self.timeout_s = every_s, timeout_s
        self.sampled = self.answered = self.mismatched = 0
        self.first = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="answers-checker", daemon=True)

    def __enter__(self) -> Checker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 1)

    def _run(self) -> None:
        order = self.requests.order()
        i = 0
        # The first sample after one interval: the load generator has started by then.
        while not self._stop.wait(self.every_s):
            index = order[i % len(order)]
            i += 1
            answer = ask(self.base_url, self.requests.items[index], self.timeout_s)
            if self._stop.is_set():
                break  # the window closed while it waited: not part of it
            self._count(self.requests.items[index], self.shapes[index], answer)

    def _count(self, request: Request, expected: Any, answer: Answer) -> None:
        self.sampled += 1
        if answer.error:
            return  # the load's own failures are counted by the load generator
        self.answered += 1
        problem = ""
        if not answer.success:
            problem = f"{request.label} answered {answer.status}"
        elif not same_shape(expected, answer.shape):
            problem = f"{request.label} answered another shape: {describe(answer.shape)}"
        if problem:
            self.mismatched += 1
            self.first = self.first or f"{problem} at {time.strftime('%H:%M:%S')}"

    def checks(self) -> Checks:
        return Checks(self.sampled, self.answered, self.mismatched, self.first)
