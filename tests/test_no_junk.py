"""qntz writes only into its cache and output folders: not the current folder, not $TMPDIR,
not beside the pipeline (the lock file aside). The example pipelines run for real, with a
preflight step, from a folder that is neither the project nor the pipeline's."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO

OWNED = (".qntz", "out")  # the cache and the output folder, wherever the root is


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if "__pycache__" not in p.parts}


def _with_preflight(source: Path, target: Path) -> None:
    """The quickstart with `preflight` first and the capture method left to it."""
    spec = yaml.safe_load(source.read_text())
    steps = {"preflight": {}, "capture": {"uses": "auto"}}
    steps.update({k: v for k, v in spec["steps"].items() if k != "capture"})
    steps["onnx"] = {**steps["onnx"], "opset": 18}  # preflight picks export: dynamo needs 18
    spec["name"], spec["steps"] = "quickstart-preflight", steps
    target.write_text(yaml.safe_dump(spec, sort_keys=False))


def _owned(path: str) -> bool:
    parts = Path(path).parts
    # the root is the pipeline's folder, its parent (the project) or, in older layouts, the cwd
    for skip in range(3):
        if len(parts) > skip and parts[skip] in OWNED and \
                all(p not in OWNED for p in parts[:skip]):
            return True
    return path.endswith(".lock.json")


def test_runs_leave_nothing_outside_the_cache_and_outputs(tmp_path):
    project, elsewhere, tmp = tmp_path / "project", tmp_path / "elsewhere", tmp_path / "tmp"
    shutil.copytree(REPO / "pipelines", project / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__", "out", ".qntz", "*.lock.json"))
    elsewhere.mkdir()
    tmp.mkdir()
    pipelines = project / "pipelines"
    _with_preflight(pipelines / "quickstart.yaml", pipelines / "quickstart-preflight.yaml")
    files = [pipelines / "quickstart-preflight.yaml", pipelines / "encoder.yaml"]
    if importlib.util.find_spec("tensorrt_rtx") is not None:
        files.append(pipelines / "quickstart-tensorrt.yaml")
    before = {"elsewhere": _tree(elsewhere), "tmp": _tree(tmp), "project": _tree(project)}
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("QNTZ_CACHE", None)
    for file in files:
        proc = subprocess.run([sys.executable, "-m", "qntz", "run", str(file)],
                              cwd=elsewhere, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    junk = {}
    for name, folder in (("elsewhere", elsewhere), ("tmp", tmp), ("project", project)):
        new = _tree(folder) - before[name]
        junk[name] = sorted(p for p in new if name == "tmp" or not _owned(p))
    assert junk == {"elsewhere": [], "tmp": [], "project": []}
