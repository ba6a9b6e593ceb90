"""`make diagnose`: a service someone else started, loaded level by level until it first stalls
(or to the last level), each level judged second by second from wrk's answers per second, its
processes dumped by py-spy and their sockets counted while the load runs; the cause named per
process from where its threads wait (domain/diagnosis.py).

The dumps are taken with `py-spy dump --nonblocking`: the service is never paused, so a dump
cannot disturb the seconds being judged; the price is that a stack may be torn (a thread that
moved while it was read), which a cause named from a share of several dumps absorbs.
"""

from __future__ import annotations

import gzip
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.domain.diagnosis import (
    STOPS,
    Cause,
    Level,
    ProcessLevel,
    Round,
    diagnose,
    pool_waits,
    shows,
    stacks,
    waits,
)
from harness.domain.requests import Requests
from harness.infra import service, wrk
from harness.infra.occupancy import DumpFailed, dump_one

# The first dump of a level comes this far into it (wrk has opened its connections by then).
FIRST_DUMP_S = 0.5
# How long a stalled service is given to recover before the next round: a deadlock frees itself
# at each pool timeout (30 s by default), one batch of the requests it still holds at a time.
RECOVER_S = 180.0
# Tries of one nonblocking dump before it is recorded as failed.
DUMP_ATTEMPTS = 3
# A whole second is judged only where the level covered it this far from either end.
EDGE_S = 0.05


@dataclass(frozen=True)
class DiagnosePlan:
    url: str  # the service's URL with the path each request takes (or the mix's base)
    port: int
    pid: int | None  # given; else found from the port at each level
    levels: tuple[int, ...]  # connections, rising
    rounds: int
    duration_s: float
    pause_s: float
    timeout_s: float
    dump_every_s: float = 1.0
    requests: Requests | None = None

    def estimate_s(self) -> float:
        return self.rounds * len(self.levels) * (self.duration_s + self.pause_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "port": self.port,
            "pid": self.pid,
            "levels": list(self.levels),
            "rounds": self.rounds,
            "duration_s": self.duration_s,
            "pause_s": self.pause_s,
            "timeout_s": self.timeout_s,
            "dump_every_s": self.dump_every_s,
            "dumps": "py-spy dump --nonblocking",
            "requests": self.requests.to_json() if self.requests else None,
        }


@dataclass
class _Seen:
    """What the sampler saw of one process during one level."""

    dumps: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    clients: int | None = None
    out: dict[str, int] = field(default_factory=dict)

    def add_sockets(self, found: service.Sockets | None) -> None:
        if found is None:
            return
        self.clients = max(self.clients or 0, found.clients)
        for remote, n in found.out.items():
            self.out[remote] = max(self.out.get(remote, 0), n)


def answers(url: str, timeout_s: float) -> int | None:
    """The HTTP status the service answers with (an error status is an answer), or None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError, http.client.HTTPException):
        return None  # no answer, or not HTTP


def check_dumpable(found: service.Service) -> None:
    """py-spy must read the service before any load is sent: the first failure, in one line."""
    errors = []
    for pid in found.processes:
        try:
            _dump(pid)  # as the ramp reads it: a torn read is tried again
            return
        except DumpFailed as exc:
            errors.append(str(exc))
    raise DumpFailed(errors[0] if errors else f"no process of {found.describe()} to dump")


def execute(
    plan: DiagnosePlan, dumps_dir: Path, say: Callable[[str], None], rounds: list[Round]
) -> None:
    """Each round's ramp, in turn, into `rounds` level by level (what was measured is there
    however this ends). A round ends at its first level that stalled or answered only errors;
    a level whose dumps name a cause while answers keep coming is followed by the next: how
    the fault grows with the load is part of the evidence."""
    pace = 0  # the most answers in one second so far: the service's, kept across rounds
    for number in range(1, plan.rounds + 1):
        waited = 0.0
        if number > 1:
            waited = _recovered(plan)
            if waited < 0:
                why = (
                    f"a process still held threads in a pool's checkout, or the service gave no "
                    f"answer, {RECOVER_S:g} s after round {number - 1}"
                )
                rounds.append(Round(number, (), why))
                return
        rounds.append(Round(number, (), waited_s=waited))
        for i, connections in enumerate(plan.levels):
            time.sleep(plan.pause_s if i else 0.0)
            level = measure_level(plan, connections, number, dumps_dir, pace)
            rounds[-1] = replace(rounds[-1], levels=(*rounds[-1].levels, level))
            pace = max(pace, *(a + b for a, b in zip(level.ok, level.other, strict=True)))
            say(_line(number, level))
            if level.verdict in STOPS:
                break


def _recovered(plan: DiagnosePlan) -> float:
    """Seconds until the service answers and none of its processes holds threads in a pool's
    checkout (a request reaches one worker; another may still be deadlocked); -1 if that
    does not come within RECOVER_S."""
    start = time.monotonic()
    deadline = start + RECOVER_S
    while time.monotonic() < deadline:
        if answers(plan.url, min(5.0, max(0.5, deadline - time.monotonic()))) is not None and (
            not any(_still_deadlocked(pid) for pid in service.find(plan.port, plan.pid).processes)
        ):
            return round(time.monotonic() - start, 1)
        time.sleep(1.0)
    return -1.0


def _still_deadlocked(pid: int) -> bool:
    try:
        return shows(Cause.pool_deadlock, _dump(pid))
    except DumpFailed:
        return False  # gone, or unreadable now: its answers will tell


def _line(number: int, level: Level) -> str:
    named = level.named()
    cause = f"; {named.cause} in process {named.pid}" if named else ""
    since = level.stalled_from_s if level.stalled_from_s is not None else level.failing_from_s
    when = f" from {since:g} s" if since is not None else ""
    return (
        f"round {number}, {level.connections} connections: {level.verdict}{when}, "
        f"{level.ok_rps:.0f} req/s, p99 {level.p99_ms:.0f} ms{cause}"
    )


def measure_level(
    plan: DiagnosePlan, connections: int, number: int, dumps_dir: Path, pace: int = 0
) -> Level:
    """One level: wrk's answers per second, every process dumped and its sockets counted.
    `pace`: the most answers in one second earlier in the round."""
    found = service.find(plan.port, plan.pid)  # again: a server may have replaced a worker
    command = wrk.WrkCommand(
        url=plan.url,
        connections=connections,
        duration_s=plan.duration_s,
        threads=wrk.threads_for(connections),
        timeout_s=plan.timeout_s,
        requests=plan.requests,
        per_second=True,
    )
    cpu_before = {pid: service.cpu_seconds(pid) for pid in found.processes}
    t0 = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(wrk.run, command)
        seen = _sample(found, plan, t0, load)
        run = load.result()  # wrk's own failure ends the diagnosis (LoadFailed)
    elapsed = time.monotonic() - t0
    assert run.seconds is not None, "asked wrk for answers per second"
    first = int(t0 + EDGE_S) + 1
    last = int(t0 + plan.duration_s - EDGE_S)  # the first second not wholly inside
    ok = tuple(run.seconds["ok"].get(s, 0) for s in range(first, last))
    other = tuple(run.seconds["other"].get(s, 0) for s in range(first, last))
    r = run.result
    level = Level(
        connections=connections,
        ok=ok,
        other=other,
        first_second_s=round(first - t0, 2),
        ok_rps=round(r.ok_rps, 1),
        p50_ms=r.p50_ms,
        p99_ms=r.p99_ms,
        timeouts=r.timeouts,
        socket_errors=r.connect_errors + r.read_errors + r.write_errors,
        status_errors=r.status_errors,
        processes=(),
        paced_before=pace,
    )
    stopped = level.verdict in STOPS  # by its seconds alone
    processes = tuple(
        _process(
            pid, seen[pid], cpu_before.get(pid), elapsed, stopped, number, connections, dumps_dir
        )
        for pid in found.processes
    )
    return replace(level, processes=processes)


def _sample(
    found: service.Service, plan: DiagnosePlan, t0: float, load: Future[Any]
) -> dict[int, _Seen]:
    """Dumps and sockets of every process, every `dump_every_s` while the load runs."""
    seen = {pid: _Seen() for pid in found.processes}
    due = t0 + FIRST_DUMP_S
    end = t0 + plan.duration_s
    while not load.done() and due < end:
        time.sleep(max(0.0, due - time.monotonic()))
        for pid in found.processes:
            at = round(time.monotonic() - t0, 2)
            try:
                seen[pid].dumps.append((at, _dump(pid)))
            except DumpFailed as exc:
                seen[pid].errors.append(f"{at:g} s: {exc}")
            seen[pid].add_sockets(service.sockets(pid, plan.port))
        due += plan.dump_every_s
    return seen


def _dump(pid: int) -> list[dict[str, Any]]:
    """One dump of a running process; a read torn by the running threads ("Failed to get stack
    traces", about one in four under load) is tried again at once."""
    for _ in range(DUMP_ATTEMPTS - 1):
        with suppress(DumpFailed):
            return dump_one(pid, nonblocking=True)
    return dump_one(pid, nonblocking=True)


def _process(
    pid: int,
    seen: _Seen,
    cpu_before: float | None,
    elapsed: float,
    stalled: bool,
    number: int,
    connections: int,
    dumps_dir: Path,
) -> ProcessLevel:
    dumps = [d for _, d in seen.dumps]
    # A process that held no client (an arbiter, a supervisor) has no part in a stall.
    serving = seen.clients is None or seen.clients > 0
    found = diagnose(dumps, stalled=stalled and serving)
    first = next((at for at, d in seen.dumps if shows(found.cause, d)), None)
    shown = next((d for at, d in seen.dumps if at == first), dumps[-1] if dumps else [])
    cpu_after = service.cpu_seconds(pid)
    cpu = (
        round(100 * (cpu_after - cpu_before) / elapsed, 1)
        if cpu_before is not None and cpu_after is not None
        else None
    )
    name = f"r{number}-c{connections}-p{pid}.json.gz"
    if seen.dumps:
        dumps_dir.mkdir(parents=True, exist_ok=True)
        kept = [{"at_s": at, "threads": d} for at, d in seen.dumps]
        (dumps_dir / name).write_bytes(gzip.compress(json.dumps(kept).encode(), mtime=0))
    pool, _, in_pool = pool_waits(shown)
    # The threads a deadlock holds: the most busy at once in the dumps that show it (a torn
    # dump may miss one).
    showing = [d for _, d in seen.dumps if shows(found.cause, d)] or [shown]
    busy = max(p - i for p, i, _ in map(pool_waits, showing))
    return ProcessLevel(
        pid=pid,
        dumps=len(dumps),
        dump_errors=tuple(seen.errors),
        clients=seen.clients,
        out=dict(seen.out),
        cpu_percent=cpu,
        threads=len(shown),
        threadpool=pool,
        busy=busy,
        in_pool=dict(in_pool),
        waits=dict(waits(shown).most_common()),
        cause=found.cause,
        evidence=found.evidence,
        fix=found.fix,
        first_seen_s=first if found.cause is not Cause.healthy else None,
        stacks=tuple((n, tuple(frames)) for n, frames in stacks(shown)[:6]),
        file=f"{dumps_dir.name}/{name}" if seen.dumps else "",
    )
