"""Content-addressed store of step outputs: one writer per key, atomic commits, verified.

An entry is `<root>/entries/<key[:2]>/<key>/` holding the step's files and a manifest
written last. Anything short of a complete entry whose manifest is well formed and whose
files match their digests is a miss, never an input. A step is built in
`<root>/tmp/<key>-<pid>-<random>/` while its key's file lock is held, and renamed into
place; whoever waits on the lock finds the entry and reuses it.

The folder carries a marker (`.qntz-cache`) written when qntz creates it: the commands that
remove things (`gc`, `clear`) touch only a folder that has it, and only qntz's own names in
it. Keys come from lock files, manifests and remotes, so none is used as a path before it
is checked to be one (64 hex digits).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from qntz.core.hashing import FileDigests, digest_value

MANIFEST = "qntz-manifest.json"
CACHE_MARKER = ".qntz-cache"
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


@dataclass(frozen=True)
class Artifact:
    """A committed step output: a folder of files plus what they are."""

    step_id: str
    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def provides(self) -> list[str]:
        return self.manifest["provides"]

    @property
    def digest(self) -> str:
        """Digest of the lasting content (volatile files left out): what downstream keys use."""
        return self.manifest["digest"]

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})

    def file(self, name: str) -> Path:
        return self.path / name

    def files(self) -> dict[str, str]:
        """Every stored file and its digest, volatile ones included."""
        return self.manifest["files"]

    def lasting_files(self) -> dict[str, str]:
        """The files that are the same on every run with the same key (what the lock records)."""
        volatile = set(self.manifest.get("volatile", []))
        return {n: d for n, d in self.files().items() if n not in volatile}


class DigestMismatch(ValueError):
    """Files handed to `commit` are not the ones their manifest names."""


class Cache:
    def __init__(self, root: Path, digests: FileDigests):
        self.root = root
        self.digests = digests

    def entry_dir(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / _checked(key)

    def claimed(self) -> bool:
        return (self.root / CACHE_MARKER).exists()

    def claim(self) -> None:
        """Create the cache folder (or adopt qntz's own) with its marker, before writing."""
        marker = self.root / CACHE_MARKER
        if not marker.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            marker.write_text("a qntz cache: `qntz cache gc|clear` manage this folder\n")

    # -- reading: no side effects --------------------------------------------------------
    def lookup(self, step_id: str, key: str, strict: bool = False,
               declared: tuple[str, ...] | None = None) -> tuple[Artifact | None, str | None]:
        """The entry for `key`, or None and why it cannot be used (None when simply absent).

        `strict` re-reads every file; otherwise unchanged size, mtime, ctime and inode are
        trusted (an edit in place changes the ctime, whatever it does to the mtime). With
        `declared` (what the step's kind can provide), an entry providing anything else, or
        nothing where the kind provides something, is damage.
        """
        if not is_key(key):
            return None, None
        path = self.entry_dir(key)
        if not path.is_dir():
            return None, None
        manifest, problem = _read_manifest(path, key)
        if manifest is None:
            return None, f"cache entry {problem}, rebuilding"
        problem = _provides_problem(manifest["provides"], declared) or self._check_files(
            path, manifest, strict)
        if problem:
            return None, f"cache entry corrupt ({problem}), rebuilding"
        return Artifact(step_id, key, path, manifest), None

    def _check_files(self, path: Path, manifest: dict[str, Any], strict: bool) -> str | None:
        present = {p.relative_to(path).as_posix() for p in path.rglob("*")
                   if not p.is_dir()} - {MANIFEST}
        if unlisted := sorted(present - set(manifest["files"])):
            return f"{unlisted[0]} is not in the manifest"
        for name, expected in manifest["files"].items():
            target = path / name
            if target.is_symlink() or not target.is_file():
                return f"{name} missing"
            try:
                if self.digests.of(target, trust_stat=not strict) != expected:
                    return f"{name} changed"
            except OSError as exc:
                return f"{name} unreadable: {exc.strerror}"
        return None

    def keys(self) -> Iterator[str]:
        entries = self.root / "entries"
        if entries.is_dir():
            for path in sorted(entries.glob("*/*")):
                if path.is_dir() and is_key(path.name):
                    yield path.name

    # -- writing: only through the key's lock, held ----------------------------------------
    @contextmanager
    def locked(self, key: str, waiting: Any = None) -> Iterator[Held]:
        """Hold the key's file lock, and with it the only way to write the key's entry;
        `waiting()` is called once if another process has it."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self._lock_path(key)))
        try:
            lock.acquire(timeout=0.2)
        except Timeout:
            if waiting is not None:
                waiting()
            lock.acquire()
        try:
            self._sweep(key)
            yield Held(self, key)
        finally:
            lock.release()

    @contextmanager
    def locked_if_free(self, key: str) -> Iterator[Held | None]:
        """Hold the key's lock if nobody has it, else do not wait (None)."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self._lock_path(key)))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield None
            return
        try:
            yield Held(self, key)
        finally:
            lock.release()

    def is_locked(self, key: str) -> bool:
        with self.locked_if_free(key) as held:
            return held is None

    def _lock_path(self, key: str) -> Path:
        self.claim()
        folder = self.root / "locks" / _checked(key)[:2]
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{key}.lock"

    def _sweep(self, key: str) -> None:
        """Temp folders of this key are leftovers of a killed process: we hold its lock."""
        for leftover in (self.root / "tmp").glob(f"{key}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def workspace(self, key: str) -> Path:
        """A fresh folder for one build: `out/` becomes the entry, `scratch/` is thrown away."""
        path = self.root / "tmp" / f"{_checked(key)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (path / "out").mkdir(parents=True)
        (path / "scratch").mkdir()
        return path

    def _commit(self, step_id: str, key: str, workspace: Path, provides: list[str],
                summary: dict[str, Any], record: dict[str, Any],
                expected: dict[str, str] | None = None) -> Artifact:
        """`Held.commit`: the key's lock is held."""
        out = workspace / "out"
        manifest = self._manifest(key, out, provides, summary, record)
        if expected is not None and manifest["files"] != expected:
            wrong = sorted(set(expected) ^ set(manifest["files"]) | {
                n for n in expected if manifest["files"].get(n) != expected[n]})
            raise DigestMismatch(f"{wrong[0]} does not match its digest")
        target = self.entry_dir(key)
        existing, _ = self.lookup(step_id, key, strict=True)
        if existing is not None and existing.files() == manifest["files"]:
            self.discard(workspace)
            return existing
        target.parent.mkdir(parents=True, exist_ok=True)
        for name in manifest["files"]:
            os.chmod(out / name, READ_ONLY)  # out/ links share the inode: keep editors off it
        # the old entry goes only once the new one is in place: a process that exits here
        # (Ctrl-C leaves a running step behind) loses neither
        old = self._aside(target) if target.exists() else None
        os.replace(out, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.discard(workspace)
        for name, digest in manifest["files"].items():  # renamed, not changed: no re-reading
            self.digests.remember(target / name, digest)
        return Artifact(step_id, key, target, manifest)

    def _manifest(self, key: str, out: Path, provides: list[str], summary: dict[str, Any],
                  record: dict[str, Any]) -> dict[str, Any]:
        files = {p.relative_to(out).as_posix(): self.digests.of(p, trust_stat=False)
                 for p in sorted(out.rglob("*")) if p.is_file()}
        volatile = sorted(set(summary.pop("volatile", None) or []) & set(files))
        lasting = {n: d for n, d in files.items() if n not in volatile}
        manifest = {"key": key, "files": files, "volatile": volatile,
                    "digest": digest_value(lasting), "provides": provides, "summary": summary,
                    "record": record}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        return manifest

    def _remove(self, key: str) -> None:
        """`Held.remove`: the key's lock is held."""
        target = self.entry_dir(key)
        if target.exists():
            self._retire(target)

    def _retire(self, target: Path) -> None:
        """Rename out of the way first, so no reader sees a half-deleted entry."""
        shutil.rmtree(self._aside(target), ignore_errors=True)

    def _aside(self, target: Path) -> Path:
        """`target` renamed into tmp/ (swept with its key's leftovers if never deleted)."""
        trash = self.root / "tmp" / f"{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.old"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.replace(target, trash)
        return trash

    def discard(self, workspace: Path) -> None:
        shutil.rmtree(workspace, ignore_errors=True)


@dataclass(frozen=True)
class Held:
    """A key's lock, held (`Cache.locked`): the only way to write or drop the key's entry,
    so no caller can do either without the lock."""

    cache: Cache
    key: str

    def commit(self, step_id: str, workspace: Path, provides: list[str],
               summary: dict[str, Any], record: dict[str, Any],
               expected: dict[str, str] | None = None) -> Artifact:
        """Move a finished build (`workspace/out`) into place as the key's entry.

        A valid entry already there with the same files (a process that raced without the
        lock) is kept; a corrupt one is replaced, and so is one whose volatile files differ
        (a forced re-run's new figures replace the old). With `expected` (files downloaded
        against a manifest), any other content is refused."""
        return self.cache._commit(step_id, self.key, workspace, provides, summary, record,
                                  expected)

    def remove(self) -> None:
        """Drop the key's entry (corrupt, or collected)."""
        self.cache._remove(self.key)


def is_key(name: Any) -> bool:
    """A cache key (or file digest): 64 lowercase hex digits, safe as a path part."""
    return (isinstance(name, str) and len(name) == 64
            and all(c in "0123456789abcdef" for c in name))


def _checked(key: str) -> str:
    if not is_key(key):
        raise ValueError(f"not a cache key: {key!r}")
    return key


def _provides_problem(provides: list[str], declared: tuple[str, ...] | None) -> str | None:
    if declared is None:
        return None
    if not set(provides) <= set(declared) or (declared and not provides):
        return f"provides {provides or 'nothing'}, the step provides {list(declared)}"
    return None


def _read_manifest(path: Path, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest if it is complete and well formed, else None and what is wrong."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return None, "incomplete (no manifest)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None, "unreadable (manifest is not JSON)"
    problem = manifest_problem(manifest, key)
    return (None, f"malformed ({problem})") if problem else (manifest, None)


def manifest_problem(manifest: Any, key: str) -> str | None:
    if not isinstance(manifest, dict):
        return "manifest is not an object"
    files, volatile = manifest.get("files"), manifest.get("volatile", [])
    if manifest.get("key") != key:
        return "manifest names another key"
    if not isinstance(files, dict) or not all(
            _safe_name(n) and isinstance(d, str) for n, d in files.items()):
        return "bad file list"
    if not isinstance(volatile, list) or not set(volatile) <= set(files):
        return "bad volatile list"
    if not isinstance(manifest.get("provides"), list) or not all(
            isinstance(p, str) for p in manifest["provides"]):
        return "bad provides"
    if not isinstance(manifest.get("summary", {}), dict) or not isinstance(
            manifest.get("record", {}), dict):
        return "bad summary or record"
    lasting = {n: d for n, d in files.items() if n not in volatile}
    if manifest.get("digest") != digest_value(lasting):
        return "digest does not match the file list"
    return None


def _safe_name(name: Any) -> bool:
    """A relative path inside the entry: what lay-out may copy without leaving out/."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    parts = PurePosixPath(name).parts
    return not PurePosixPath(name).is_absolute() and ".." not in parts and name != MANIFEST
