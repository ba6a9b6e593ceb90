"""The comparison that chose the open loop's generator: every candidate at every rate against
an app that answers at once (rounds interleaved, in a shuffled order), then each once against
an app that stalls 1 s every 2.5 s. The server counts what arrived, whichever sent it."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from harness.infra import generators
from harness.infra.environment import PROJECT_ROOT, git_commit, machine, now_iso
from harness.infra.process import free_port, register_child, unregister_child
from harness.infra.server import get_json
from loadgen import targets

RATES = (500.0, 1000.0, 2000.0)
BIN_S = 0.1  # arrivals are counted in bins this long to see how evenly they came
STALL_RATE = 200.0
STALL_RUN_S = 2 * targets.EVERY_S  # two whole stalls


@contextmanager
def serving(app: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """uvicorn serving loadgen.targets:`app` on 127.0.0.1, one process (with `env` added to
    its environment), until the block ends."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"loadgen.targets:{app}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--log-level",
            "warning",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    register_child(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                get_json(url + "/_arrivals", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        unregister_child(proc)


def _arrivals(url: str) -> list[float]:
    _, found = get_json(url + "/_arrivals")
    return [float(t) for t in found]


def evenness(arrivals: Sequence[float], duration_s: float) -> float | None:
    """The coefficient of variation of arrivals per BIN_S over the run's whole bins: 0 for a
    perfectly even rate."""
    if len(arrivals) < 2:
        return None
    start = min(arrivals)
    bins = [0] * int(duration_s / BIN_S)
    for t in arrivals:
        i = int((t - start) / BIN_S)
        if i < len(bins):
            bins[i] += 1
    mean = statistics.fmean(bins)
    return round(statistics.pstdev(bins) / mean, 3) if mean else None


def _measure(
    candidate: generators.Candidate, url: str, rate: float, duration_s: float
) -> dict[str, Any]:
    _arrivals(url)  # whatever came before is not this run's
    ran = generators.run(candidate.argv(url + "/", rate, duration_s), duration_s + 60)
    arrived = _arrivals(url)
    reported = candidate.sent(ran.stdout)
    due = rate * duration_s
    return {
        "generator": candidate.name,
        "rate": rate,
        "duration_s": duration_s,
        "due": round(due),
        "arrived": len(arrived),
        "answered": reported,
        "held": round(len(arrived) / due, 4),
        "cv_per_bin": evenness(arrived, duration_s),
        "cpu_s": round(ran.cpu_s, 3),
        "wall_s": round(ran.wall_s, 2),
        "cpu_s_per_1000": round(1000 * ran.cpu_s / len(arrived), 4) if arrived else None,
        "finished_at": now_iso(),
    }


def compare(
    rounds: int,
    duration_s: float,
    seed: int,
    say: Callable[[str], None],
    candidates: Sequence[generators.Candidate] = generators.CANDIDATES,
) -> dict[str, Any]:
    """Every candidate at every rate in each round (shuffled), then each against the stall."""
    rng = random.Random(seed)
    records = []
    started = now_iso()
    with serving("minimal") as url:
        for round_ in range(1, rounds + 1):
            plan = [(c, r) for c in candidates for r in RATES]
            rng.shuffle(plan)
            for candidate, rate in plan:
                record = {**_measure(candidate, url, rate, duration_s), "round": round_}
                say(f"round {round_}: {candidate.name} at {rate:g}/s: {_brief(record)}")
                records.append(record)
    for candidate in candidates:
        with serving("stalling") as url:  # fresh: its first stall 1.5 s after its first request
            record = {**_measure(candidate, url, STALL_RATE, STALL_RUN_S), "stalling": True}
            say(f"stall: {candidate.name} at {STALL_RATE:g}/s: {_brief(record)}")
            records.append(record)
    return {
        "kind": "generators",
        "machine": machine(),
        "git": git_commit(),
        "started_at": started,
        "finished_at": now_iso(),
        "versions": {c.name: c.version() for c in candidates},
        "how": {c.name: c.how for c in candidates},
        "from_due": {c.name: c.from_due for c in candidates},
        "parameters": {
            "rates": list(RATES),
            "rounds": rounds,
            "duration_s": duration_s,
            "seed": seed,
            "bin_s": BIN_S,
            "stall": {
                "rate": STALL_RATE,
                "duration_s": STALL_RUN_S,
                "every_s": targets.EVERY_S,
                "stall_s": targets.STALL_S,
            },
        },
        "records": records,
    }


def _brief(record: dict[str, Any]) -> str:
    return (
        f"{record['arrived']} of {record['due']} arrived, "
        f"{record['cpu_s']:.2f} CPU-s ({record['cpu_s_per_1000']} per 1,000)"
    )
