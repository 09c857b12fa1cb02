"""The fast tier imports no torch: a fresh process runs a toy pipeline in parallel and asks
its status, then imports every core module, and says which heavy libraries each part loaded.

A toy run loads none of them (not even numpy); importing the whole core loads no torch
(`core/images.py` imports numpy at the top, and is model I/O bound to leave the core)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fast.toykinds import toy_pipeline

pytestmark = pytest.mark.fast

HEAVY = ("torch", "numpy", "onnx", "onnxruntime", "ray", "tensorrt_rtx", "polygraphy", "fsspec")

SCRIPT = """
    import importlib, json, pkgutil, sys
    sys.path.insert(0, sys.argv[1])
    import toykinds
    import qntz.api as api
    import qntz.core
    from qntz.core.registry import override

    def loaded():
        return sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)

    with override(toykinds.KINDS, only=True):
        done = api.run(sys.argv[2], jobs=2, remote=False)
        states = api.status(sys.argv[2])
    by_run = loaded()
    for module in pkgutil.iter_modules(qntz.core.__path__):
        importlib.import_module(f"qntz.core.{module.name}")
    print(json.dumps({"ok": bool(done), "states": {s: o.state for s, o in states.items()},
                      "by_run": by_run, "by_core": loaded()}))
"""


def test_core_and_a_toy_run_import_no_torch(tmp_path: Path):
    (tmp_path / ".qntz").mkdir()
    path = tmp_path / "toy.yaml"
    path.write_text(toy_pipeline("""
        a: {uses: emit, text: A}
        b: {uses: emit, text: B, needs: [load]}
        c: {uses: emit, needs: [a, b]}
    """))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(Path(__file__).parent), str(path),
         json.dumps(HEAVY)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["ok"] and set(said["states"].values()) == {"cached"}
    assert said["by_run"] == [], f"a toy run imported {said['by_run']}"
    assert "torch" not in said["by_core"] and "onnx" not in said["by_core"], said["by_core"]
