"""wrk: the argv (local binary or a container), running it, and parsing the Lua script's JSON."""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.domain import latency
from harness.domain.axes import WrkRunner
from harness.domain.errors import HarnessError
from harness.domain.latency import Histograms
from harness.domain.requests import Requests
from harness.domain.result import WrkResult
from harness.infra import histogram
from harness.infra.process import run_measured
from servers.registry import WRK_IMAGE as DEFAULT_IMAGE  # the seed's; its entrypoint is wrk

# Beside the package, not in it: the compose file mounts harness/ into the wrk container.
SCRIPT = Path(__file__).resolve().parent.parent / "wrk_report.lua"
MARKER = "WRK_JSON "
# make diagnose's addition: answers counted per second (wrk_seconds.lua).
SECONDS_SCRIPT = SCRIPT.with_name("wrk_seconds.lua")
SECONDS_MARKER = "WRK_SECONDS "


@dataclass(frozen=True)
class WrkCommand:
    url: str
    connections: int
    duration_s: float
    threads: int
    timeout_s: float
    runner: WrkRunner = WrkRunner.local
    image: str = DEFAULT_IMAGE
    cpus: frozenset[int] = frozenset()  # pin wrk to these CPUs (empty: wherever it likes)
    # A foreign service's requests, where more than a GET of the URL: the script then sends them.
    requests: Requests | None = None
    per_second: bool = False  # also count answers per second (WRK_SECONDS)

    @property
    def script(self) -> Path:
        mix = self.requests if self.requests is not None and not plain(self.requests) else None
        if mix is None and not self.per_second:
            return SCRIPT
        text = render_lua(mix, urlsplit(self.url).netloc) if mix is not None else SCRIPT.read_text()
        if self.per_second:
            text += "\n" + SECONDS_SCRIPT.read_text()
        return _written(text)

    def argv(self) -> list[str]:
        options = [
            "-t",
            str(self.threads),
            "-c",
            str(self.connections),
            "-d",
            f"{self.duration_s:g}s",
            "--timeout",
            f"{self.timeout_s:g}s",
        ]
        if self.runner is WrkRunner.local:
            return [local_binary(), *options, "-s", str(self.script), self.url]
        # Host networking so 127.0.0.1 inside the container is the host's loopback.
        return [
            "docker",
            "run",
            "--rm",
            "--network",
            "host",
            *(["--cpuset-cpus", ",".join(map(str, sorted(self.cpus)))] if self.cpus else []),
            "-v",
            f"{self.script.parent}:/scripts:ro",
            self.image,
            *options,
            "-s",
            f"/scripts/{self.script.name}",
            self.url,
        ]


def plain(requests: Requests) -> bool:
    """One GET with no headers of its own: the URL alone says it, as for the demo app."""
    (only, *more) = requests.items
    return not more and only.method == "GET" and not only.headers and not only.body


def lua_string(text: str) -> str:
    """`text` as a Lua string literal: printable ASCII as is, every other byte escaped."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def render_lua(requests: Requests, host: str) -> str:
    """wrk's script for `requests`: each connection sends the next of one weighted cycle
    (wrk's request() hook), then the report script that prints the run's JSON."""
    built = []
    for r in requests.items:
        headers = ", ".join(
            f"[{lua_string(k)}] = {lua_string(v)}" for k, v in (("Host", host), *r.headers)
        )
        body = lua_string(r.body) if r.body else "nil"
        built.append(
            f"    wrk.format({lua_string(r.method)}, {lua_string(r.path)}, {{{headers}}}, {body}),"
        )
    order = ", ".join(str(i + 1) for i in requests.order())
    prelude = "\n".join(
        [
            "-- A foreign service's requests (REQUESTS), rendered by the harness.",
            "local built, order, next_i = nil, {" + order + "}, 0",
            "init = function(args)",
            "  built = {",
            *built,
            "  }",
            "end",
            "request = function()",
            "  next_i = next_i % #order + 1",
            "  return built[order[next_i]]",
            "end",
            "",
        ]
    )
    return prelude + SCRIPT.read_text()


@functools.cache
def _scripts_dir() -> Path:
    """A private directory for this process's rendered scripts, removed when it exits."""
    path = Path(tempfile.mkdtemp(prefix="wrk-scripts-"))
    path.chmod(0o755)  # readable by wrk in a container, which may run as another user
    atexit.register(shutil.rmtree, path, True)
    return path


def _written(text: str) -> Path:
    path = _scripts_dir() / f"requests-{hashlib.sha256(text.encode()).hexdigest()[:12]}.lua"
    if not path.exists():
        path.write_text(text)
    return path


def mix_file(requests: Requests) -> Path:
    """`requests` for the open loop (loadgen/openloop.py --requests): the items and one cycle."""
    items = [r.to_json() for r in requests.items]
    text = json.dumps({"items": items, "order": requests.order()})
    path = _scripts_dir() / f"requests-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    if not path.exists():
        path.write_text(text)
    return path


def threads_for(connections: int, cores: int | None = None) -> int:
    return max(1, min(connections, cores or os.cpu_count() or 1))


def local_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise HarnessError(
            "wrk not found on PATH; install it (sudo apt-get install -y wrk) or use WRK=docker"
        )
    return found


def version(runner: WrkRunner = WrkRunner.local, image: str = DEFAULT_IMAGE) -> str:
    argv = (
        [local_binary(), "-v"]
        if runner is WrkRunner.local
        else ["docker", "run", "--rm", image, "-v"]
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr) else ""


def histograms(data: dict[str, Any], connections: int) -> Histograms | None:
    """Both distributions of the run, from the buckets the Lua hook exported after wrk's
    correction; None where it exported none (a wrk whose stats struct is not 4.1's), or where
    they disagree with wrk's own percentiles or correction (another wrk): the run's throughput
    stands, and its tables show wrk's percentiles alone."""
    try:
        return _histograms(data, connections)
    except ValueError:
        return None


def _histograms(data: dict[str, Any], connections: int) -> Histograms | None:
    exported = data.get("histogram")
    if not exported or not data["requests"]:
        return None
    corrected = {int(v): int(c) for v, c in exported["buckets"]}
    total = sum(corrected.values())
    # The buckets must give back wrk's own percentiles (to a rank, C's long double aside).
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        rank = latency.wrk_rank(p, total)
        near = {latency.wrk_percentile(corrected, p, r) for r in (rank - 1, rank, rank + 1)}
        if data["latency_us"][name] not in near:
            raise ValueError(
                f"the exported histogram gives {name} {latency.wrk_percentile(corrected, p)} µs, "
                f"wrk printed {data['latency_us'][name]} µs"
            )
    interval = latency.wrk_interval(int(data["duration_us"]), int(data["requests"]), connections)
    return histogram.histograms(corrected, interval)


def parse(stdout: str, connections: int) -> WrkResult:
    """The result from wrk's stdout: the one line the Lua done() hook printed. `connections`:
    wrk's -c, which its correction of the latency histogram depends on."""
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if len(lines) != 1:
        raise ValueError(f"expected one {MARKER.strip()} line in wrk output, found {len(lines)}")
    data = json.loads(lines[0][len(MARKER) :])
    lat, err = data["latency_us"], data["errors"]
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        bytes=int(data["bytes"]),
        p50_ms=lat["p50"] / 1e3,
        p90_ms=lat["p90"] / 1e3,
        p99_ms=lat["p99"] / 1e3,
        p999_ms=lat["p999"] / 1e3,
        max_ms=lat["max"] / 1e3,
        mean_ms=round(lat["mean"] / 1e3, 3),
        connect_errors=int(err["connect"]),
        read_errors=int(err["read"]),
        write_errors=int(err["write"]),
        timeouts=int(err["timeout"]),
        status_errors=int(err["status"]),
        histograms=histograms(data, connections),
    )


def parse_seconds(stdout: str) -> dict[str, dict[int, int]]:
    """{"ok": {second: answers}, "other": {...}}: the WRK_SECONDS line, seconds of
    CLOCK_MONOTONIC (time.monotonic's); answers with a status of 400 or more are `other`."""
    lines = [line for line in stdout.splitlines() if line.startswith(SECONDS_MARKER)]
    if len(lines) != 1:
        raise ValueError(f"expected one {SECONDS_MARKER.strip()} line in wrk output")
    data = json.loads(lines[0][len(SECONDS_MARKER) :])
    return {kind: {int(s): int(n) for s, n in data[kind].items()} for kind in ("ok", "other")}


@dataclass(frozen=True)
class WrkRun:
    result: WrkResult
    cpu_s: float
    seconds: dict[str, dict[int, int]] | None = None  # with WrkCommand.per_second


def _affinity(command: WrkCommand) -> Callable[[], None] | None:
    if not command.cpus:
        return None
    return lambda: os.sched_setaffinity(0, command.cpus)


class LoadFailed(HarnessError):
    """wrk died, overran, or printed no report: the cell's load, not the run, has failed."""


def run(command: WrkCommand, grace_s: float = 15.0) -> WrkRun:
    """Run wrk to completion (killed if it overruns by `grace_s`) and parse its report."""
    local = command.runner is WrkRunner.local
    done = run_measured(
        command.argv(), command.duration_s + grace_s, then=_affinity(command) if local else None
    )
    if done.code is None:
        raise LoadFailed(f"wrk did not finish within {command.duration_s + grace_s:g}s")
    try:
        seconds = parse_seconds(done.stdout) if command.per_second else None
        return WrkRun(parse(done.stdout, command.connections), done.cpu_s, seconds)
    except (ValueError, KeyError) as exc:
        raise LoadFailed(
            f"wrk exited {done.code} without a report ({exc}): {done.stderr.strip()[-300:]}"
        ) from None
