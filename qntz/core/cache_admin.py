"""`qntz cache verify | gc | clear`: the whole cache re-hashed, collected, or emptied."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from qntz.core.cache import Cache, is_key
from qntz.core.hashing import FileDigests
from qntz.core.lockfile import read_lock
from qntz.core.workspace import Workspace

SKIPPED_FOLDERS = {"out", "node_modules", "__pycache__", "site-packages"}


def verify(workspace: Workspace, console: Any) -> int:
    """Re-read every file of every entry; exit 1 when any entry is damaged."""
    cache = Cache(workspace.cache_dir, FileDigests())
    start, checked, size, damaged = time.perf_counter(), 0, 0, []
    for key in cache.keys():
        checked += 1
        size += sum(p.stat().st_size for p in cache.entry_dir(key).rglob("*") if p.is_file())
        _, problem = cache.lookup("", key, strict=True)
        if problem:
            damaged.append((key, problem))
    seconds = time.perf_counter() - start
    for key, problem in damaged:
        console.print(f"[red]damaged[/] {key[:16]}: {problem}")
    console.print(f"{checked} entries, {size / 1e6:.1f} MB re-hashed in {seconds:.2f}s: "
                  f"{len(damaged)} damaged" + (" (a run rebuilds them)" if damaged else ""))
    return 1 if damaged else 0


def referenced_keys(root: Path) -> set[str]:
    """Keys recorded by the lock files of the project's pipelines."""
    keys: set[str] = set()
    for path in _lock_files(root):
        lock = read_lock(path)
        if lock.get("qntz") == 1:
            keys |= {step["key"] for step in lock["steps"].values()}
    return keys


def _lock_files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*.lock.json"):
        parts = path.relative_to(root).parts[:-1]
        if not any(p.startswith(".") or p in SKIPPED_FOLDERS for p in parts):
            found.append(path)
    return found


def gc(workspace: Workspace, console: Any, dry_run: bool) -> int:
    """Remove leftovers of dead processes and entries no lock file of the project uses."""
    cache = Cache(workspace.cache_dir, FileDigests())
    keep = referenced_keys(workspace.root)
    verb = "would remove" if dry_run else "removed"
    leftovers = [p for p in sorted((cache.root / "tmp").glob("*")) if _abandoned(cache, p)]
    unused = [k for k in cache.keys() if k not in keep and not cache.is_locked(k)]
    if not dry_run:
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        for key in unused:
            with cache.locked(key):
                cache.remove(key)
    console.print(f"{verb} {len(unused)} unused entries and {len(leftovers)} temporary "
                  f"folders; kept {len(keep & set(cache.keys()))} entries used by lock files "
                  f"under {workspace.root}")
    return 0


def _abandoned(cache: Cache, path: Path) -> bool:
    """A build folder whose key nobody holds, or a process's library folder (`*-<pid>`)
    whose process is gone."""
    if is_key(path.name[:64]) and path.name[64:65] == "-":
        return not cache.is_locked(path.name[:64])
    pid = path.name.rsplit("-", 1)[-1]
    return pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear(workspace: Workspace) -> int:
    return Cache(workspace.cache_dir, FileDigests()).clear()
