"""The lock file beside a pipeline (`<stem>.lock.json`): what each step was last built from
and what it made. Committed with the pipeline; `status` reads it to say why a step is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qntz.core.cache import is_key
from qntz.core.hashing import write_atomic

FORMAT = 1


def lock_path(pipeline_path: Path) -> Path:
    return pipeline_path.with_name(f"{pipeline_path.stem}.lock.json")


def read_lock(path: Path) -> dict[str, Any]:
    """The recorded steps; a missing, unreadable or malformed lock is an empty one."""
    try:
        return parse_lock(path.read_text())
    except OSError:
        return {"steps": {}}


def parse_lock(text: str) -> dict[str, Any]:
    """A lock file's text, its malformed step entries left out."""
    try:
        lock = json.loads(text)
    except ValueError:
        return {"steps": {}}
    if not isinstance(lock, dict) or not isinstance(lock.get("steps"), dict):
        return {"steps": {}}
    steps = {sid: step for sid, step in lock["steps"].items() if _well_formed(step)}
    return {**lock, "steps": steps}


def _well_formed(step: Any) -> bool:
    """A key that is not one (64 hex digits) never reaches a path: the step is dropped."""
    return (isinstance(step, dict) and is_key(step.get("key"))
            and all(isinstance(step.get(part, {}), dict)
                    for part in ("params", "extras", "inputs", "libraries", "outputs")))


def step_entry(key: str, record: dict[str, Any], outputs: dict[str, str],
               figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """A step's lock record: its key, what the key was made of, its lasting outputs and the
    deterministic figures it reports (a compare's accuracy; wall-clock ones never)."""
    entry = {"key": key, **record, "outputs": outputs}
    return {**entry, "figures": figures} if figures else entry


def merged(path: Path, name: str, order: list[str],
           updates: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The lock with `updates` recorded over what it holds (another process may have written
    since), keeping only steps of the pipeline, in its order; and whether that changes it."""
    current = read_lock(path)
    steps = {**current["steps"], **updates}
    new = {"qntz": FORMAT, "name": name,
           "steps": {sid: steps[sid] for sid in order if sid in steps}}
    return new, new != current


def merge_lock(path: Path, name: str, order: list[str],
               updates: dict[str, dict[str, Any]]) -> None:
    """Write the merged lock when it changes. Call under the pipeline's lock."""
    new, changed = merged(path, name, order, updates)
    if changed:
        write_atomic(path, json.dumps(new, indent=1, sort_keys=True) + "\n")
