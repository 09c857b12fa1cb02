"""The cluster executor's path without Ray: each step built as a task would build it (on a
node of its own, its inputs pulled from the remote cache, its output pushed), then the
driver's run that only pulls, lays out and writes the lock file, as `run_on_ray` does after
its tasks. The remote is a plain folder (fsspec's local filesystem)."""

from __future__ import annotations

import shutil

import pytest

import qntz.api as api
from qntz.core import ray_executor
from qntz.core.errors import PipelineError
from qntz.core.results import outcomes
from qntz.core.runner import SilentReporter

pytestmark = pytest.mark.fast

STEPS = """
    a: {uses: emit, text: A}
    b: {uses: emit, text: B, needs: [load]}
    c: {uses: emit, needs: [a, b]}
"""


def task(toy, tmp_path, sid: str) -> dict[str, str]:
    """One step on a fresh node (its own project copy and cache): what each step did."""
    node = tmp_path / f"node-{sid}"
    (node / ".qntz").mkdir(parents=True)
    shutil.copy(toy.path, node / "toy.yaml")
    current = api.session(node / "toy.yaml", may_build=lambda step_id: step_id == sid)
    return {r.id: r.state for r in current.run(SilentReporter(), [sid])}


@pytest.fixture
def remote(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("QNTZ_REMOTE", str(tmp_path / "remote"))
    toy.pipeline(STEPS)
    return tmp_path / "remote"


def test_tasks_build_on_their_nodes_and_the_driver_pulls_everything(toy, tmp_path, remote):
    assert task(toy, tmp_path, "load") == {"load": "ran"}
    assert task(toy, tmp_path, "a") == {"load": "pulled", "a": "ran"}
    assert task(toy, tmp_path, "b") == {"load": "pulled", "b": "ran"}
    assert task(toy, tmp_path, "c") == {"load": "pulled", "a": "pulled", "b": "pulled",
                                        "c": "ran"}
    # the driver builds nothing: it takes what the tasks pushed
    driver = api.session(toy.path, may_build=lambda step_id: False)
    results = driver.run(SilentReporter())
    assert {r.id: r.state for r in results} == dict.fromkeys(["load", "a", "b", "c"], "pulled")
    assert toy.text("c") == "seedAseedB"
    assert set(toy.lock()["steps"]) == {"load", "a", "b", "c"}
    assert toy.run().ok  # and a local run finds it all cached


def test_the_driver_fails_a_step_no_task_pushed(toy, tmp_path, remote):
    task(toy, tmp_path, "load")
    task(toy, tmp_path, "a")
    driver = api.session(toy.path, may_build=lambda step_id: False)
    states = {r.id: r for r in driver.run(SilentReporter())}
    assert states["a"].state == "pulled"
    assert states["b"].state == "failed"
    assert "not built: neither the local nor the remote cache has it" in states["b"].reason
    assert states["c"].state == "skipped"


def test_a_tasks_failure_replaces_the_drivers_own_outcome(toy, tmp_path, remote):
    task(toy, tmp_path, "load")
    driver = api.session(toy.path, may_build=lambda step_id: False)
    done = outcomes(driver, driver.run(SilentReporter()))
    placement = {"a": {"state": "failed", "reason": "worker said no"},
                 "b": {"state": "skipped", "reason": "load did not finish"}}
    fixed = ray_executor._with_task_errors(done, placement)
    assert fixed["a"].state == "failed" and fixed["a"].error.message == "worker said no"
    assert fixed["b"].state == "skipped" and fixed["b"].error is None
    assert fixed["load"] == done["load"]


def test_a_cluster_run_without_a_remote_is_refused_before_ray_is_imported(toy):
    toy.pipeline(STEPS)
    with pytest.raises(PipelineError, match="through a remote cache, and none is configured"):
        api.run_all([toy.path], executor="ray")


def test_each_task_asks_for_what_its_kind_declares_or_the_step_overrides(toy):
    toy.pipeline("""
        a: {uses: emit, text: A}
        b: {uses: emit, resources: {num_gpus: 1, resources: {h200: 1}}}
    """)
    steps = api.load_pipeline(toy.path).steps
    assert ray_executor._resources(steps["a"]) == {"num_cpus": 1}
    assert ray_executor._resources(steps["b"]) == {"num_cpus": 1, "num_gpus": 1,
                                                   "resources": {"h200": 1}}
