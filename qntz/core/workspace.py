"""Where a project's cache and outputs live, and the only places qntz writes.

The project root is the nearest folder above the pipeline holding `.qntz/`, else the git
top level, else the pipeline's folder — never the current folder, so running a pipeline
from anywhere finds the same cache and outputs.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from qntz.core.errors import QntzError

MARKER = ".qntz"


class OutsideWorkspace(QntzError):
    """A path qntz was about to write or remove is not inside its own folders: a bug or a
    hostile name, refused before anything is touched."""


def project_root(start: Path) -> Path:
    """The project a pipeline (or, for cache commands, the current folder) belongs to.

    The search for `.qntz/` stops at the git top level: a stray `.qntz/` above a repository
    never captures it.
    """
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / MARKER).is_dir() or (folder / ".git").exists():
            return folder
    return start


def inside(base: Path, path: Path) -> Path:
    """`path`, after checking that it resolves inside `base`; raises otherwise."""
    resolved, base_resolved = path.resolve(), base.resolve()
    if resolved != base_resolved and base_resolved not in resolved.parents:
        raise OutsideWorkspace(f"refusing to write {path}: it is outside {base}",
                               hint="step ids and names must be plain names (see `qntz "
                               "validate`)")
    return path


@dataclass
class Workspace:
    """A project's folders: `<root>/.qntz/cache` (or $QNTZ_CACHE) and `<root>/out/<name>/`."""

    root: Path
    cache_dir: Path

    @classmethod
    def of(cls, start: Path) -> Workspace:
        root = project_root(start)
        cache = os.environ.get("QNTZ_CACHE")
        if not cache:
            return cls(root, checked_cache(root / MARKER / "cache", root, "the cache folder"))
        return cls(root, checked_cache(Path(cache).resolve(), root, f"QNTZ_CACHE={cache}"))

    def out(self, name: str) -> Path:
        return inside(self.root / "out", self.root / "out" / name)


def checked_cache(folder: Path, root: Path, named: str) -> Path:
    """`folder`, once it is known to be one qntz may own: not a file, not `/`, the home
    folder or a folder holding the project, and either new, empty, or marked as a qntz cache
    (the project's own `.qntz/cache` is qntz's by its place)."""
    from qntz.core.cache import CACHE_MARKER
    from qntz.core.errors import PipelineError

    fix = "point QNTZ_CACHE at a new or empty folder (qntz marks it as its own), or unset it"
    if folder.exists() and not folder.is_dir():
        raise PipelineError(f"{named} is not a folder", hint=fix)
    resolved = folder.resolve()
    holders = {Path("/"), Path.home().resolve(), root.resolve(), *root.resolve().parents}
    if resolved in holders:
        raise PipelineError(f"{named} is {resolved}, which holds more than a cache", hint=fix)
    ours = folder == root / MARKER / "cache"
    if not ours and folder.is_dir() and not (folder / CACHE_MARKER).exists() and any(
            folder.iterdir()):
        raise PipelineError(f"{named} is a folder qntz did not create (it has files and no "
                            f"{CACHE_MARKER} marker): qntz will not write or remove there",
                            hint=fix)
    return folder


def lay_out(files: dict[str, Path], target: Path, base: Path) -> None:
    """Make `target` hold exactly `files` (name -> source), atomically: built aside, then
    swapped in. Hard links where the filesystem allows, copies otherwise."""
    inside(base, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.new")
    try:
        aside.mkdir()  # an entry may hold no file (a step that found the conversion wrong)
        for name, source in files.items():
            dest = inside(aside, aside / name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(source, dest)
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(aside, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _link_or_copy(source: Path, dest: Path) -> None:
    """A hard link, except for ONNX external data (`*.data`): onnx refuses to load a data
    file with more than one link (its guard against hard-link attacks), so users could not
    `onnx.load` the laid-out model, nor qntz the cached one."""
    try:
        if dest.name.endswith(".data"):
            raise OSError("copied")
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def same_file(a: Path, b: Path, digests: object, expected: str) -> bool:
    """`a` (in out/) still is the entry's file `b`: the same inode, or the same content."""
    try:
        if a.stat().st_ino == b.stat().st_ino and a.stat().st_dev == b.stat().st_dev:
            return True
        return digests.of(a) == expected  # type: ignore[attr-defined]
    except OSError:
        return False
