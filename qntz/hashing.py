"""Content hashing: canonical JSON keys, file digests with a stat cache, library versions."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """Sorted-key, whitespace-free JSON: equal values always give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest_value(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


class FileDigests:
    """sha256 of files, remembered by (size, mtime, inode) so unchanged files are not re-read.

    Touching a file changes its mtime, which only costs a re-read: the digest, and therefore
    every cache key, stays the same.
    """

    def __init__(self, store: Path | None = None):
        self._store = store
        self._known: dict[str, list] = {}
        self._dirty = False
        if store is not None and store.is_file():
            try:
                self._known = json.loads(store.read_text())
            except (OSError, ValueError):
                self._known = {}

    def of(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        known = self._known.get(str(path))
        if known and known[:3] == signature:
            return known[3]
        digest = self._read(path)
        self._known[str(path)] = [*signature, digest]
        self._dirty = True
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """A digest already known for `path` (a file just moved into the cache)."""
        path = Path(path).resolve()
        stat = path.stat()
        self._known[str(path)] = [stat.st_size, stat.st_mtime_ns, stat.st_ino, digest]
        self._dirty = True

    @staticmethod
    def _read(path: Path) -> str:
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                sha.update(chunk)
        return sha.hexdigest()

    def save(self) -> None:
        if self._store is None or not self._dirty:
            return
        self._store.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._store.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self._known))
        os.replace(tmp, self._store)
        self._dirty = False


@cache
def library_version(distribution: str) -> str | None:
    """Installed version of a distribution, read from metadata (never imports it)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions(distributions: tuple[str, ...]) -> dict[str, str | None]:
    return {name: library_version(name) for name in distributions}
