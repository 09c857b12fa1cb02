"""Leases: the cache entries a live run uses, which `qntz cache gc` and `clear` leave alone.

A run holds one lease until it has written its lock file: `leases/<pid>-<id>.lock`, locked
(flock) for the lease's whole life, beside `leases/<pid>-<id>.json`, the keys the run has
produced or consumed, rewritten atomically as they grow. A lease whose lock can be taken
belongs to a process that is gone (killed or finished), whatever its pid is now.

Keys are added under a shared hold on `<cache>/gc.lock`; gc and clear look and remove under
an exclusive one. So a key is either leased before a sweep looks, or the sweep removed its
entry before the run looked it up again (and the run builds it): never removed under a run
that uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from qntz.core.hashing import write_atomic

FOLDER = "leases"
GUARD = "gc.lock"


@contextlib.contextmanager
def sweep_guard(root: Path, exclusive: bool) -> Iterator[None]:
    """Shared while a run adds to its lease; exclusive while gc or clear sweep."""
    fd = os.open(root / GUARD, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class Lease:
    """One run's claim on the keys it uses; a no-op on a cache it cannot write."""

    def __init__(self, root: Path):
        self.root = root
        self.keys: set[str] = set()
        self._fd: int | None = None
        self._name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()

    def add(self, keys: Iterable[str]) -> None:
        with self._lock:
            new = set(keys) - self.keys
            if not new:
                return
            try:
                with sweep_guard(self.root, exclusive=False):
                    if self._fd is None:
                        self._open()
                    self.keys |= new
                    write_atomic(self._path(".json"), json.dumps(sorted(self.keys)))
            except OSError:  # a read-only cache: nobody who cannot write it can collect it
                self.keys |= new

    def _open(self) -> None:
        """Lock the lease under a hidden name, then show it: a sweep never sees an unlocked
        lease of a live run."""
        folder = self.root / FOLDER
        folder.mkdir(exist_ok=True)
        hidden = folder / f".{self._name}.lock.new"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(hidden, self._path(".lock"))
        self._fd = fd

    def _path(self, suffix: str) -> Path:
        return self.root / FOLDER / f"{self._name}{suffix}"

    def release(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            for suffix in (".json", ".lock"):
                with contextlib.suppress(OSError):
                    self._path(suffix).unlink()
            os.close(self._fd)
            self._fd = None


def live_leases(root: Path) -> dict[str, int]:
    """Every key a live run holds, with that run's pid; the leases of dead runs are removed.
    Call under the exclusive sweep guard."""
    from qntz.core.cache import is_key

    held: dict[str, int] = {}
    folder = root / FOLDER
    for lock in sorted(folder.glob("*.lock")) + sorted(folder.glob(".*.lock.new")):
        name = lock.name.removeprefix(".").removesuffix(".new").removesuffix(".lock")
        if not _alive(lock):
            for path in (folder / f"{name}.json", lock):
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        try:
            keys = json.loads((folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            continue
        pid = int(name.split("-")[0]) if name.split("-")[0].isdigit() else 0
        for key in keys if isinstance(keys, list) else []:
            if isinstance(key, str) and is_key(key):
                held[key] = pid
    return held


def _alive(lock: Path) -> bool:
    """Whether some process still holds the lease's lock."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
