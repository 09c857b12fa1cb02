"""Content hashing: canonical JSON keys, file digests with a stat cache, library versions."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import cache
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """Sorted-key, whitespace-free JSON: equal values always give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest_value(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


class FileDigests:
    """sha256 of files, remembered by (size, mtime, inode, ctime) so unchanged files are not
    re-read, as git does.

    Touching a file changes its mtime, which only costs a re-read: the digest, and therefore
    every cache key, stays the same. An edit in place that restores the mtime (`touch -r`)
    still changes the ctime, which no program can set back: it is re-read too.
    `of(path, trust_stat=False)` always re-reads: what a running step consumes is checked
    that way. Safe to share between threads; `save` merges
    with what other processes saved meanwhile.
    """

    def __init__(self, store: Path | None = None):
        self._store = store
        self._known: dict[str, list] = _read_store(store) if store is not None else {}
        self._changed: dict[str, list] = {}
        self._lock = threading.Lock()

    def of(self, path: Path, trust_stat: bool = True) -> str:
        path = Path(path).resolve()
        signature = _signature(path.stat())
        with self._lock:
            known = self._known.get(str(path))
        if trust_stat and known and known[:-1] == signature:
            return known[-1]
        digest = self._read(path)
        self._note(str(path), [*signature, digest])
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """A digest already known for `path` (a file just moved into the cache)."""
        path = Path(path).resolve()
        self._note(str(path), [*_signature(path.stat()), digest])

    def _note(self, name: str, entry: list) -> None:
        with self._lock:
            self._known[name] = entry
            self._changed[name] = entry

    @staticmethod
    def _read(path: Path) -> str:
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                sha.update(chunk)
        return sha.hexdigest()

    def save(self) -> None:
        """Merge what this process learned into the store, atomically; a read-only or full
        cache only loses the speed-up."""
        with self._lock:
            changed, self._changed = self._changed, {}
        if self._store is None or not changed or not self._store.parent.is_dir():
            return  # no cache folder yet (`qntz status` in a new project): nothing to keep
        from filelock import FileLock

        try:
            with FileLock(str(self._store) + ".lock"):
                merged = {**_read_store(self._store), **changed}
                write_atomic(self._store, json.dumps(merged))
        except OSError:
            pass


def _read_store(store: Path) -> dict[str, list]:
    """The remembered digests; anything malformed is forgotten, never trusted."""
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(known, dict):
        return {}
    return {k: v for k, v in known.items() if isinstance(v, list) and len(v) == 5
            and all(isinstance(x, int) for x in v[:4]) and isinstance(v[4], str)}


def _signature(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]


def write_atomic(path: Path, text: str) -> None:
    """Write aside, then rename: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@cache
def library_version(distribution: str) -> str | None:
    """Installed version of a distribution, read from metadata (never imports it)."""
    version = _installed_versions().get(_normal(distribution))
    if version is not None:
        return version
    from importlib import metadata  # eggs and other layouts: the thorough, slower way

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@cache
def _installed_versions() -> dict[str, str]:
    """Name -> version of every `.dist-info` folder on the path, first one first, as
    importlib.metadata finds them; read from the folder names, which carry both (a
    fully cached run cannot afford importlib.metadata's import)."""
    import sys

    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and "-" in name:
                dist, _, version = name[:-len(".dist-info")].partition("-")
                found.setdefault(_normal(dist), version)
    return found


def _normal(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def library_versions(distributions: tuple[str, ...]) -> dict[str, str | None]:
    return {name: library_version(name) for name in distributions}
