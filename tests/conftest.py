"""Fixtures: a fresh workspace per test, pipelines written into it, the real CLI driven."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from qntz.cli import main

REPO = Path(__file__).resolve().parents[1]
ZOO = Path(__file__).parent / "zoo"


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Workspace:
    root: Path
    capsys: pytest.CaptureFixture

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def pipeline(self, text: str, name: str = "pipeline.yaml") -> Path:
        return self.write(name, text)

    def qntz(self, *args: str) -> Result:
        """Run the real CLI in this process (torch is imported once for the whole session)."""
        self.capsys.readouterr()
        code = main([str(a) for a in args])
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def qntz_subprocess(self, *args: str, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run([sys.executable, "-m", "qntz", *map(str, args)], cwd=self.root,
                              capture_output=True, text=True, env={**os.environ, **(env or {})})
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
       ) -> Workspace:
    """A fresh project folder (it holds `.qntz/`), made the current one, with the test zoo's
    models under `models/`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".qntz").mkdir()
    monkeypatch.delenv("QNTZ_CACHE", raising=False)
    shutil.copytree(ZOO, tmp_path / "models", ignore=shutil.ignore_patterns("__pycache__"))
    return Workspace(tmp_path, capsys)


def pipeline_text(factory: str, steps: str, shape: str = "[batch, 3, 16, 16]",
                  dynamic: str = "{batch: [1, 2, 4]}", extra: str = "") -> str:
    """A small pipeline around a zoo model: one float input with a dynamic batch."""
    return textwrap.dedent(f"""\
        qntz: 1
        name: t
        model:
          factory: {factory}
        inputs:
          x:
            shape: {shape}
            dynamic: {dynamic}
            range: [0.0, 1.0]
        """) + extra + "steps:\n" + textwrap.indent(textwrap.dedent(steps).strip(), "  ") + "\n"


TRANSFORMER = """\
qntz: 1
name: t
model: {factory: models.clean:TinyTransformer}
inputs:
  x: {shape: [batch, seq, 32], dynamic: {batch: [1, 2, 4], seq: [4, 8, 16]}}
steps:
  capture: {uses: export}
  onnx: {opset: 18}
"""


def transformer_pipeline(steps: str) -> str:
    """The small transformer, exported; `steps` are added after its onnx step."""
    return TRANSFORMER + textwrap.indent(textwrap.dedent(steps).strip(), "  ") + "\n"


# -- real tmpfs mounts (root only): read-only and full disks ------------------------------
def _mount(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("needs permission to mount a tmpfs (root)")


@pytest.fixture
def mounts():
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        _mount(folder, size)
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
