"""The same pipelines in two folders, run by separate processes, give the same bytes: the
same key and output digests for every step (wall-clock figures live in volatile files)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def _run(folder: Path, name: str) -> dict:
    shutil.copytree(REPO / "pipelines", folder / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__", "out", ".qntz", "*.lock.json"))
    env = {k: v for k, v in os.environ.items() if k != "QNTZ_CACHE"}
    # a new process each time: one process re-importing the model mangles TorchScript names
    proc = subprocess.run([sys.executable, "-m", "qntz", "run", f"pipelines/{name}.yaml"],
                          cwd=folder, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    locks = [p for p in folder.glob("**/*lock.json") if p.name in (f"{name}.lock.json",
                                                                     "qntz.lock.json")]
    assert len(locks) == 1, locks
    return json.loads(locks[0].read_text())["steps"]


@pytest.mark.parametrize("name", ["quickstart", "encoder"])
def test_two_folders_give_the_same_keys_and_outputs(tmp_path, name):
    one, two = _run(tmp_path / "one", name), _run(tmp_path / "elsewhere" / "two", name)
    assert set(one) == set(two)
    for step in one:
        assert one[step]["outputs"] == two[step]["outputs"], step
        assert one[step]["key"] == two[step]["key"], step


def test_a_torchscript_archive_without_debug_files_loads_and_runs(tmp_path):
    import torch

    from qntz.capture.determinism import rewrite_archive

    model = torch.jit.trace(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()),
                            torch.rand(2, 3))
    first, second = (io.BytesIO(), io.BytesIO())
    torch.jit.save(model, first)
    torch.jit.save(model, second)
    import zipfile

    assert any(n.endswith(".debug_pkl") for n in zipfile.ZipFile(first).namelist())
    (tmp_path / "model.pt").write_bytes(rewrite_archive(first.getvalue()))
    assert rewrite_archive(second.getvalue()) == (tmp_path / "model.pt").read_bytes()
    names = zipfile.ZipFile(tmp_path / "model.pt").namelist()
    assert not any(n.endswith(".debug_pkl") for n in names)
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    x = torch.rand(5, 3)
    assert torch.equal(loaded(x), model(x))
