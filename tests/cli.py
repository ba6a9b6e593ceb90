"""Running the real CLI (`python -m harness ...`) from tests, the way a user would."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    # A DATABASE_URL in the developer's shell must not change what a test measures.
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def start_harness(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )


def harness(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    proc = start_harness(*args)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
