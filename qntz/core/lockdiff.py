"""`qntz diff [REV]`: a pipeline's lock file at a git revision against the current one.

What changed in each step's key and why (parameters, sources, library versions, inputs),
and each figure the steps record in the lock (a compare's accuracy per candidate) before
and after, as `dvc metrics diff` does for metrics files. Only git reads: nothing changes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from qntz.core.errors import PipelineError, QntzError
from qntz.core.lockfile import parse_lock, read_lock
from qntz.core.plan import why_stale

FIGURES = ("value", "top1", "cosine_min", "max_abs")


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                              text=True, timeout=60)
    except FileNotFoundError as exc:
        raise QntzError("git is not installed", hint="install git to use `qntz diff`") from exc
    except subprocess.TimeoutExpired as exc:
        raise QntzError(f"git {args[0]} took over a minute", where=str(folder),
                        hint="check the repository (a lock held by another git?)") from exc


def lock_at(rev: str, lock: Path) -> dict[str, Any]:
    """The lock file as committed at `rev` (a one-line error when it cannot be read)."""
    folder = lock.parent
    if _git(folder, "rev-parse", "--is-inside-work-tree").returncode != 0:
        raise QntzError(f"{folder} is not in a git repository", where=str(lock),
                        hint="`qntz diff` compares with a git revision: commit the pipeline "
                        "and its lock file in git first")
    if rev.startswith("-"):
        raise PipelineError(f"'{rev}' is not a revision", hint="e.g. HEAD, HEAD~1, main")
    shown = _git(folder, "show", f"{rev}:./{lock.name}")
    if shown.returncode != 0:
        why = (shown.stderr.strip().splitlines() or ["git show failed"])[-1]
        # a usage error (exit 2): the revision named does not hold this lock file
        raise PipelineError(f"not in {rev} ({why.removeprefix('fatal: ')})",
                            where=str(lock), hint="commit the lock file, or name a "
                            "revision that has it")
    try:
        json.loads(shown.stdout)
    except ValueError as exc:
        raise QntzError(f"{lock.name} at {rev} is not valid JSON", where=str(lock),
                        hint="name another revision") from exc
    return {"steps": parse_lock(shown.stdout)["steps"]}


def _reasons(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    full = {"params": {}, "extras": {}, "inputs": {}, "libraries": {}, "kind": "?",
            "kind_version": None}
    reasons = why_stale({**full, **new}, {**full, **old}).split("; ")
    reasons = [r for r in reasons if r not in ("not in cache", "not in cache (never run)")]
    if old.get("outputs") != new.get("outputs"):
        reasons.append("outputs changed")
    return reasons or ["key changed"]


def _ordered(old: dict[str, Any], new: dict[str, Any], order: list[str]) -> list[str]:
    """Step ids in the pipeline's order, then the others (the lock keeps them sorted)."""
    known = [sid for sid in order if sid in new or sid in old]
    return list(dict.fromkeys([*known, *new, *old]))


def step_changes(old: dict[str, Any], new: dict[str, Any], order: list[str] | None = None
                 ) -> list[dict[str, Any]]:
    """Each step added, removed or whose key changed, with the reasons."""
    order = _ordered(old, new, order or [])
    changes = []
    for sid in order:
        before, after = old.get(sid), new.get(sid)
        if before is not None and after is not None and before.get("key") == after.get("key"):
            continue
        kind = (after or before or {}).get("kind")
        change = "added" if before is None else "removed" if after is None else "changed"
        reasons = _reasons(before, after) if before and after else []
        changes.append({"id": sid, "kind": kind, "change": change, "reasons": reasons,
                        "key": {"old": (before or {}).get("key"),
                                "new": (after or {}).get("key")}})
    return changes


def _delta(old: Any, new: Any) -> float | None:
    numbers = isinstance(old, (int, float)) and isinstance(new, (int, float))
    return float(f"{new - old:.6g}") if numbers else None


def figure_changes(old: dict[str, Any], new: dict[str, Any], order: list[str] | None = None
                   ) -> list[dict[str, Any]]:
    """Each recorded figure (per step, per candidate) before and after."""
    rows = []
    for sid in _ordered(old, new, order or []):
        before = (old.get(sid) or {}).get("figures") or {}
        after = (new.get(sid) or {}).get("figures") or {}
        for name in list(after) + [n for n in before if n not in after]:
            b, a = before.get(name) or {}, after.get(name) or {}
            rows.append({"step": sid, "candidate": name,
                         "metric": a.get("metric") or b.get("metric"),
                         "old": b.get("value"), "new": a.get("value"),
                         "change": _delta(b.get("value"), a.get("value")),
                         "status": {"old": b.get("status"), "new": a.get("status")},
                         "figures": {f: {"old": b.get(f), "new": a.get(f)} for f in FIGURES}})
    return rows


def diff_lock(lock: Path, rev: str = "HEAD", order: list[str] | None = None
              ) -> dict[str, Any]:
    """The lock at `rev` against the one on disk; `order`: the pipeline's step order."""
    old = lock_at(rev, lock)["steps"]
    new = read_lock(lock)["steps"]
    changes = step_changes(old, new, order)
    changed = {c["id"] for c in changes}
    return {"lock": str(lock), "rev": rev, "steps": changes,
            "figures": [{**row, "changed": row["step"] in changed}
                        for row in figure_changes(old, new, order)]}


def tracked_locks(folder: Path) -> list[Path]:
    """Lock files git tracks under `folder` (for `qntz diff` without a pipeline)."""
    listed = _git(folder, "ls-files", "--", "*.lock.json")
    if listed.returncode != 0:
        raise QntzError(f"{folder} is not in a git repository",
                        hint="`qntz diff` compares with a git revision: commit the pipeline "
                        "and its lock file in git first")
    return [folder / line for line in listed.stdout.splitlines() if line.strip()]
