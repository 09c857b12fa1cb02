"""Content-addressed store of step outputs, written atomically and verified on use."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qntz.hashing import FileDigests, digest_value

MANIFEST = "qntz-manifest.json"


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
        """Digest of the content: what downstream keys are computed over."""
        return self.manifest["digest"]

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})

    def file(self, name: str) -> Path:
        return self.path / name

    def files(self) -> dict[str, str]:
        return self.manifest["files"]


class Cache:
    """Entries live in `<root>/entries/<key[:2]>/<key>/` with a manifest written last."""

    def __init__(self, root: Path, digests: FileDigests):
        self.root = root
        self.digests = digests

    def entry_dir(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / key

    def lookup(self, step_id: str, key: str) -> tuple[Artifact | None, str | None]:
        """The entry for `key`, or None and why (absent, or corrupt and removed)."""
        path = self.entry_dir(key)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                return None, "cache entry incomplete, rebuilding"
            return None, None
        problem = self._verify(path, manifest_path)
        if problem:
            shutil.rmtree(path, ignore_errors=True)
            return None, f"cache entry corrupt ({problem}), rebuilding"
        manifest = json.loads(manifest_path.read_text())
        return Artifact(step_id, key, path, manifest), None

    def _verify(self, path: Path, manifest_path: Path) -> str | None:
        try:
            manifest = json.loads(manifest_path.read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError):
            return "unreadable manifest"
        for name, expected in files.items():
            target = path / name
            if not target.is_file():
                return f"{name} missing"
            if self.digests.of(target) != expected:
                return f"{name} changed"
        return None

    def workspace(self, key: str) -> Path:
        """A fresh temporary folder a step writes into; committed by rename."""
        path = self.root / "tmp" / f"{key[:16]}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def commit(self, step_id: str, key: str, workspace: Path, provides: list[str],
               summary: dict[str, Any], record: dict[str, Any]) -> Artifact:
        files = {
            str(p.relative_to(workspace)): self.digests.of(p)
            for p in sorted(workspace.rglob("*")) if p.is_file()
        }
        manifest = {
            "key": key, "files": files, "digest": digest_value(files),
            "provides": provides, "summary": summary, "record": record,
        }
        (workspace / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        target = self.entry_dir(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(workspace, target)
        for name, digest in files.items():  # renamed, not changed: no need to read them again
            self.digests.remember(target / name, digest)
        return Artifact(step_id, key, target, manifest)

    def discard(self, workspace: Path) -> None:
        shutil.rmtree(workspace, ignore_errors=True)

    def clear(self) -> int:
        count = sum(1 for _ in (self.root / "entries").glob("*/*")) if self.root.exists() else 0
        shutil.rmtree(self.root, ignore_errors=True)
        return count
