"""The fast tier's fixture: a fresh project with the toy kinds (and no others) registered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import qntz.api as api
from fast import toykinds
from fast.toykinds import HEAD, toy_pipeline
from qntz.core.registry import override


@dataclass
class Project:
    root: Path

    def pipeline(self, steps: str, name: str = "toy.yaml", head: str = HEAD) -> Path:
        path = self.root / name
        path.write_text(toy_pipeline(steps, head))
        return path

    @property
    def path(self) -> Path:
        return self.root / "toy.yaml"

    def run(self, path: Path | None = None, **options: Any) -> api.RunResult:
        toykinds.reset()
        return api.run(path or self.path, remote=False, **options)

    def states(self, path: Path | None = None) -> dict[str, tuple[str, str]]:
        """step id -> (state, reason), as `qntz status` says."""
        return {sid: (s.state, s.reason) for sid, s in api.status(path or self.path).items()}

    def lock(self, path: Path | None = None) -> dict[str, Any]:
        return json.loads((path or self.path).with_name("toy.lock.json").read_text())

    def text(self, step: str, name: str = "toy") -> str:
        return (self.root / "out" / name / step / "text.txt").read_text()

    @property
    def cache_dir(self) -> Path:
        return self.root / ".qntz" / "cache"


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".qntz").mkdir()
    for name in ("QNTZ_CACHE", "QNTZ_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    toykinds.reset()
    with override(toykinds.KINDS, {"text": toykinds.text_runner}, only=True):
        yield Project(tmp_path)
