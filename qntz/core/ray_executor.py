"""`qntz run FILE... --executor ray`: each step a Ray task, artifacts through the remote cache.

The driver submits one task per step, in DAG order, with the resources its kind declares
(or the step's `resources:`); Ray places it, retries it when a worker or node is lost
(`max_retries`), and passes no data but the step's outcome. A task runs the step in the
worker's copy of the project (Ray's `working_dir`): the step's inputs are pulled from the
remote cache, the step is built under its key's lock (or pulled, when another pipeline or
colleague built it), and pushed. The driver then pulls everything into its own cache, lays
out `out/` and writes the lock file, as a local run would. Nothing here imports Ray
unless this executor is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qntz.core.errors import PipelineError

EXCLUDES = [".qntz/cache", "out", ".git", ".venv", "__pycache__", "*.lock.json"]
MAX_RETRIES = 2


def build_step(pipeline: str, step_id: str, *after: dict[str, Any]) -> dict[str, Any]:
    """In a Ray worker: build (or pull) one step whose needs are on the remote cache."""
    import ray

    from qntz.core.pipeline import load_pipeline
    from qntz.core.progress import SilentReporter
    from qntz.core.results import outcomes
    from qntz.core.runner import open_session

    node = ray.get_runtime_context().get_node_id()
    blocked = [a["step"] for a in after if a["state"] not in ("ran", "cached", "pulled")]
    if blocked:
        return {"step": step_id, "state": "skipped", "node": node,
                "reason": f"{blocked[0]} did not finish"}
    current = open_session(load_pipeline(pipeline))
    current.buildable = {step_id}
    result = outcomes(current, current.run(SilentReporter(), [step_id]))[step_id]
    return {"step": step_id, "state": result.state, "node": node, "key": result.key,
            "reason": str(result.error) if result.error else ""}


def run_on_ray(files: list[Any], address: str | None, reporter: Any) -> list[Any]:
    """Every pipeline's steps on the cluster; then each laid out here. Returns RunResults."""
    from qntz.core.pipeline import load_pipeline
    from qntz.core.results import outcomes, result
    from qntz.core.runner import open_session

    sessions = [open_session(f if hasattr(f, "steps") else load_pipeline(f)) for f in files]
    root = _common_root(sessions)
    remote = sessions[0].remote.url
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False,
             runtime_env={"working_dir": str(root), "excludes": EXCLUDES,
                          "env_vars": {"QNTZ_REMOTE": remote, "OMP_NUM_THREADS": _threads()}})
    try:
        task = ray.remote(max_retries=MAX_RETRIES)(build_step)
        refs = [_submit(task, s, root) for s in sessions]
        placed = {key: ray.get(ref) for refs_of in refs for key, ref in refs_of.items()}
        nodes = {n["NodeID"]: n for n in ray.nodes()}
    finally:
        ray.shutdown()
    results = []
    for current in sessions:
        current.buildable = set()
        done = outcomes(current, current.run(reporter))
        placement = _where(_relative(current, root), placed, nodes)
        results.append(result(current, _with_task_errors(done, placement), placement))
    return results


def _with_task_errors(outcomes: dict[str, Any], placement: dict[str, Any]) -> dict[str, Any]:
    """A step its task failed to build fails here with the task's own message."""
    from dataclasses import replace

    from qntz.core.errors import StepFailed

    fixed = dict(outcomes)
    for sid, done in placement.items():
        if done["state"] == "failed" and sid in fixed:
            error = StepFailed(done["reason"] or "failed on the cluster")
            fixed[sid] = replace(fixed[sid], state="failed", reason=str(error), error=error)
        elif done["state"] == "skipped" and sid in fixed:
            fixed[sid] = replace(fixed[sid], state="skipped", reason=done["reason"], error=None)
    return fixed


def _relative(current: Any, root: Path) -> str:
    return current.pipeline.path.resolve().relative_to(root).as_posix()


def _threads() -> str:
    """The driver's thread count, for every task: Ray would give a task as many threads as
    CPUs it asked for, and torch's float sums then differ in their last bits from a local
    run, so the compare reports (and the lock files) would too."""
    import os

    return os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count() or 1)


def _common_root(sessions: list[Any]) -> Path:
    roots = {s.workspace.root for s in sessions}
    if len(roots) != 1:
        raise PipelineError("the pipelines of one cluster run must share a project root",
                            hint="run each project's pipelines separately")
    missing = [str(s.pipeline.path) for s in sessions if s.remote.url is None]
    if missing:
        raise PipelineError("--executor ray moves artifacts through a remote cache, and none "
                            "is configured", where=missing[0],
                            hint="set QNTZ_REMOTE or `remote:` in .qntz/config.yaml")
    return roots.pop()


def _submit(task: Any, current: Any, root: Path) -> dict[tuple[str, str], Any]:
    """One task per step, each waiting on the tasks of its needs."""
    pipeline = current.pipeline
    relative = _relative(current, root)
    refs: dict[str, Any] = {}
    for sid in pipeline.order():
        spec = pipeline.steps[sid]
        options = _resources(spec)
        refs[sid] = task.options(**options).remote(relative, sid,
                                                   *[refs[n] for n in spec.needs])
    return {(relative, sid): ref for sid, ref in refs.items()}


def _resources(spec: Any) -> dict[str, Any]:
    from qntz.core.registry import KINDS

    wanted = {**KINDS[spec.kind].resources(spec.params), **(spec.resources or {})}
    return {k: v for k, v in wanted.items() if k in ("num_cpus", "num_gpus", "memory",
                                                     "accelerator_type", "resources")}


def _where(relative: str, placed: dict[tuple[str, str], dict[str, Any]],
           nodes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per step of one pipeline: what its task did and on which node (its address and the
    custom resources it offers, e.g. a GPU type)."""
    out: dict[str, dict[str, Any]] = {}
    for (pipeline, sid), done in placed.items():
        if pipeline != relative:
            continue
        node = nodes.get(done["node"], {})
        custom = sorted(k for k in node.get("Resources", {})
                        if k not in ("CPU", "GPU", "memory", "object_store_memory")
                        and not k.startswith("node:") and not k.startswith("accelerator_type"))
        out[sid] = {**done, "node_ip": node.get("NodeManagerAddress"), "node_resources": custom}
    return out
