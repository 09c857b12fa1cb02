"""`--executor ray` on a real local Ray cluster of two nodes: a head, and a worker node whose
custom resource `gpu_t4` stands in for a GPU type. Artifacts travel through a remote cache
on a shared folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, pipeline_text

pytest.importorskip("ray")
RAY = Path(sys.executable).with_name("ray")
ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(*args: str) -> None:
    subprocess.run([str(RAY), *args], check=True, capture_output=True, timeout=120,
                   env={**os.environ, **ENV})


@pytest.fixture(scope="module")
def cluster() -> str:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--object-store-memory", "100000000", "--disable-usage-stats"]
    _ray("start", "--head", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard=false", *common)
    try:
        _ray("start", "--address", address, "--num-cpus", "1", "--resources",
             '{"gpu_t4": 1}', *common)
        yield address
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)


def qntz(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qntz", *map(str, args)], cwd=cwd, text=True,
                          capture_output=True, timeout=900, env={**os.environ, **ENV, **env})


def project(folder: Path, steps: str) -> Path:
    shutil.copytree(REPO / "tests" / "zoo", folder / "models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".qntz").mkdir(parents=True)
    path = folder / "p.yaml"
    path.write_text(pipeline_text("models.clean:SmallCNN", steps))
    return path


AUTO = "preflight: {}\ncapture: {uses: auto}\nonnx: {opset: 18}"
PINNED = "capture: {uses: trace}\nonnx: {}\nsimplify: {resources: {resources: {gpu_t4: 1}}}"


def test_pinned_step_runs_on_its_node_and_matches_a_local_run(tmp_path, cluster):
    remote = {"QNTZ_REMOTE": str(tmp_path / "remote")}
    pipeline = project(tmp_path / "a", PINNED)
    result = qntz(pipeline.parent, "run", pipeline, "--executor", "ray", "--address", cluster,
                  "--json", env=remote)
    assert result.returncode == 0, result.stderr
    placement = json.loads(result.stdout)["placement"]
    assert placement["simplify"]["node_resources"] == ["gpu_t4"]
    assert {p["state"] for p in placement.values()} == {"ran"}
    local = project(tmp_path / "b", PINNED)
    assert qntz(local.parent, "run", local, env={}).returncode == 0
    assert pipeline.with_name("p.lock.json").read_text() == \
        local.with_name("p.lock.json").read_text()
    again = qntz(pipeline.parent, "run", pipeline, "--executor", "ray", "--address", cluster,
                 "--json", env=remote)
    assert {p["state"] for p in json.loads(again.stdout)["placement"].values()} <= {
        "cached", "pulled"}


@pytest.mark.slow
def test_quickstart_and_encoder_together(tmp_path, cluster):
    remote = {"QNTZ_REMOTE": str(tmp_path / "remote")}
    for name in ("ray", "local"):
        shutil.copytree(REPO / "pipelines", tmp_path / name / "pipelines",
                        ignore=shutil.ignore_patterns("__pycache__", "*.lock.json"))
        (tmp_path / name / ".qntz").mkdir()
    files = ["pipelines/quickstart.yaml", "pipelines/encoder.yaml"]
    done = qntz(tmp_path / "ray", "run", *files, "--executor", "ray", "--address", cluster,
                env=remote)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for file in files:
        assert qntz(tmp_path / "local", "run", file, env={}).returncode == 0
    for lock in ("quickstart.lock.json", "encoder.lock.json"):
        ray_lock = json.loads((tmp_path / "ray" / "pipelines" / lock).read_text())
        local_lock = json.loads((tmp_path / "local" / "pipelines" / lock).read_text())
        assert ray_lock == local_lock, lock


def test_killing_a_worker_mid_step_loses_nothing(tmp_path, cluster):
    remote = {"QNTZ_REMOTE": str(tmp_path / "remote")}
    pipeline = project(tmp_path / "a", AUTO)
    proc = subprocess.Popen([sys.executable, "-m", "qntz", "run", pipeline, "--executor", "ray",
                             "--address", cluster], cwd=pipeline.parent, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **ENV, **remote})
    killed = _kill_a_busy_worker(deadline=time.monotonic() + 120)
    out, err = proc.communicate(timeout=900)
    assert killed, "no worker was seen running a step"
    assert "Traceback" not in err
    again = qntz(pipeline.parent, "run", pipeline, "--executor", "ray", "--address", cluster,
                 env=remote)
    assert again.returncode == 0, again.stderr
    fresh = project(tmp_path / "b", AUTO)
    lock = pipeline.with_name("p.lock.json")
    shutil.copy(lock, fresh.with_name("p.lock.json"))
    pulled = qntz(fresh.parent, "pull", fresh, env=remote)
    assert pulled.returncode == 0 and "not on the remote" not in pulled.stdout, pulled.stdout
    assert qntz(fresh.parent, "cache", "verify", env={}).returncode == 0
    assert qntz(pipeline.parent, "cache", "verify", env={}).returncode == 0


def _kill_a_busy_worker(deadline: float) -> bool:
    """SIGKILL the first Ray worker process seen running `build_step`."""
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", "ray::build_step"], capture_output=True,
                               text=True).stdout.split()
        if found:
            time.sleep(1.0)  # let it get into the step
            os.kill(int(found[0]), signal.SIGKILL)
            return True
        time.sleep(0.1)
    return False
