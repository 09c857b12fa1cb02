"""`qntz cache verify | gc | clear`: the whole cache re-hashed, collected, or emptied."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from qntz.core.cache import CACHE_MARKER, Cache, is_key
from qntz.core.errors import PipelineError, QntzError
from qntz.core.hashing import FileDigests
from qntz.core.lease import live_leases, sweep_guard
from qntz.core.lockfile import read_lock
from qntz.core.wording import plural
from qntz.core.workspace import Workspace

SKIPPED_FOLDERS = {"out", "node_modules", "__pycache__", "site-packages"}
OWN_TEMP = re.compile(r"[0-9a-f]{64}-\d+-[0-9a-f]{8}(\.old)?|libraries-\d+")


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
    """Remove leftovers of dead processes and entries that no lock file of the project and
    no live run uses."""
    cache = _owned_cache(workspace)
    if cache is None:
        console.print(f"nothing to collect: {workspace.cache_dir} does not exist")
        return 0
    keep = referenced_keys(workspace.root)
    verb = "would remove" if dry_run else "removed"
    with _sweeping(cache):
        leased = live_leases(cache.root)
        leftovers = [p for p in _temp_folders(cache) if _abandoned(cache, p)]
        unused = [k for k in cache.keys() if k not in keep and k not in leased]
        removed = len(unused) if dry_run else _remove_entries(cache, unused)[0]
        if not dry_run:
            for path in leftovers:
                shutil.rmtree(path, ignore_errors=True)
    in_use = len(set(leased) - keep & set(cache.keys()))
    console.print(f"{verb} {plural(removed, 'unused entry', 'unused entries')} and "
                  f"{plural(len(leftovers), 'temporary folder')}; kept "
                  f"{len(keep & set(cache.keys()))} entries used by lock files under "
                  f"{workspace.root}" + (f" and {in_use} in use by a running qntz"
                                         if in_use else ""))
    return 0


def clear(workspace: Workspace) -> tuple[int, int]:
    """Remove every entry no live run uses, and the leftovers of dead processes; returns
    (removed, kept in use). Raises when entries could not be removed."""
    cache = _owned_cache(workspace)
    if cache is None:
        return 0, 0
    with _sweeping(cache):
        leased = live_leases(cache.root)
        keys = list(cache.keys())
        removed, busy, failures = _remove_entries(cache, [k for k in keys if k not in leased])
        for path in _temp_folders(cache):
            if _abandoned(cache, path):
                shutil.rmtree(path, ignore_errors=True)
        if not leased and not busy:
            _forget_digests(cache)
    if failures:
        raise QntzError(f"could not remove {plural(len(failures), 'cache entry', 'cache entries')}"
                        f" of {len(keys)} from {cache.root}: {failures[0]}",
                        hint="make the cache writable (or remove it as its owner)")
    return removed, busy + sum(1 for k in keys if k in leased)


def _owned_cache(workspace: Workspace) -> Cache | None:
    """The cache, if its folder exists and carries qntz's marker; refused otherwise."""
    folder = workspace.cache_dir
    if not folder.is_dir():
        return None
    if not (folder / CACHE_MARKER).exists():
        if folder != workspace.root / ".qntz" / "cache":
            raise PipelineError(f"{folder} has no {CACHE_MARKER} marker: it is not a folder "
                                "qntz created, and qntz removes nothing there",
                                hint="point QNTZ_CACHE at the cache qntz made, or unset it")
        Cache(folder, FileDigests()).claim()  # the project's own, made before markers
    return Cache(folder, FileDigests())


@contextmanager
def _sweeping(cache: Cache) -> Iterator[None]:
    try:
        with sweep_guard(cache.root, exclusive=True):
            yield
    except OSError as exc:  # read-only (EROFS), not ours to write (EACCES)
        raise QntzError(f"cannot change {cache.root}: {exc.strerror or exc}; nothing removed",
                        hint="run as the cache's owner, or make it writable") from exc


def _remove_entries(cache: Cache, keys: list[str]) -> tuple[int, int, list[str]]:
    """Remove each entry nobody is building: (removed, busy, why others could not go)."""
    removed, busy, failures = 0, 0, []
    for key in keys:
        try:
            with cache.locked_if_free(key) as held:
                if held is None:
                    busy += 1
                    continue
                held.remove()
        except OSError as exc:
            failures.append(f"{exc.strerror or exc}")
            continue
        if cache.entry_dir(key).exists():
            failures.append("it is still there")
        else:
            removed += 1
    return removed, busy, failures


def _temp_folders(cache: Cache) -> list[Path]:
    """The folders of `tmp/` that qntz names (a build, an entry being removed, a process's
    library scratch); anything else there is not qntz's and stays."""
    folder = cache.root / "tmp"
    return sorted(p for p in folder.glob("*") if OWN_TEMP.fullmatch(p.name)) \
        if folder.is_dir() else []


def _forget_digests(cache: Cache) -> None:
    for name in ("file-digests.json", "validated.json"):
        with suppress(OSError):
            (cache.root / name).unlink()


def _abandoned(cache: Cache, path: Path) -> bool:
    """A build folder whose key nobody holds, or a process's library folder (`*-<pid>`)
    whose process is gone."""
    if is_key(path.name[:64]) and path.name[64:65] == "-":
        return not cache.is_locked(path.name[:64])
    pid = path.name.rsplit("-", 1)[-1]
    return pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
