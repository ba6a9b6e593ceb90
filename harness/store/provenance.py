"""One provenance entry per invocation that measured into a run directory, and what must match
before a run may be resumed."""

from __future__ import annotations

from typing import Any

# Compared before a resume: a different machine, Python or package set would mix measurements
# that cannot be compared; a different git commit is worth saying but need not stop a resume.
MACHINE_KEYS = ("cpu_model", "cpu_count", "python")


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the first recorded entry and this invocation's, in plain words."""
    out = []
    for key in MACHINE_KEYS:
        before, after = recorded.get("machine", {}).get(key), now.get("machine", {}).get(key)
        if before != after:
            out.append(f"machine {key}: {before} then, {after} now")
    apps = [f"app_environments.{p}" for p in recorded.get("app_environments") or {}]
    for where in ("packages", *(f"stacks.{s}" for s in recorded.get("stacks") or {}), *apps):
        before, after = _versions(recorded, where), _versions(now, where)
        # Only packages both entries name: the list a run records has grown over time.
        for name in sorted(set(before) & set(after)):
            if before[name] != after[name]:
                out.append(f"{where} {name}: {before[name]} then, {after[name]} now")
    return out


def _versions(entry: dict[str, Any], where: str) -> dict[str, str]:
    if where == "packages":
        return dict(entry.get("packages") or {})
    if where.startswith("app_environments."):  # a user's interpreter (APP_PYTHON)
        python = where.split(".", 1)[1]
        found = ((entry.get("app_environments") or {}).get(python) or {}).get("packages") or {}
        return {k: v for k, v in found.items() if v}
    stack = where.split(".", 1)[1]
    return dict(((entry.get("stacks") or {}).get(stack) or {}).get("packages") or {})
