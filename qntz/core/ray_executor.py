"""`qntz run FILE... --executor ray`: each step a Ray task, artifacts through the remote cache.

The driver submits one task per step, in DAG order, with the resources its kind declares
(or the step's `resources:`); Ray places it, retries it when a worker or node is lost
(`max_retries`), and passes no data but the step's outcome. What is still unsettled after
that (a task Ray gave up on, a step whose entry the remote lacks) is submitted again, a few
rounds at most. A task runs the step in the worker's copy of the project (Ray's
`working_dir`): the step's inputs are pulled from the remote cache, the step is built under
its key's lock (or pulled, when another pipeline or colleague built it), and pushed; found
in the node's own cache, it is pushed too. The driver then pulls everything into its own
cache, lays out `out/` and writes the lock file, as a local run would. Nothing here imports
Ray unless this executor is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qntz.core.errors import PipelineError
from qntz.core.states import DONE

EXCLUDES = [".qntz/cache", "out", ".git", ".venv", "__pycache__", "*.lock.json"]
MAX_RETRIES = 2  # Ray's own retries of a task whose worker or node was lost
RESUBMITS = 2  # then rounds of submitting again what is still unsettled


def build_step(pipeline: str, step_id: str, *after: dict[str, Any]) -> dict[str, Any]:
    """In a Ray worker: build (or pull) one step whose needs are on the remote cache, and
    make sure the remote has it before saying it is done.

    The step may be cached in this node's own cache without being on the remote: an earlier
    attempt of this task (Ray retries it when its worker or node is lost) committed it here
    and was killed before its push finished, or an earlier run on this node built it and
    pushed it to another remote. A local hit is therefore pushed too (a no-op when the
    remote has it), else the driver, which gets every artifact from the remote, lacks it."""
    import ray

    from qntz.core.pipeline import load_pipeline
    from qntz.core.results import outcomes
    from qntz.core.runner import SilentReporter, open_session

    node = ray.get_runtime_context().get_node_id()
    current = open_session(load_pipeline(pipeline), may_build=lambda sid: sid == step_id)
    blocked = [a["step"] for a in after if a["state"] not in DONE]
    if blocked and not current.runs_without(step_id, blocked):  # as in a local run
        return {"step": step_id, "state": "skipped", "node": node, "key": None,
                "reason": f"{blocked[0]} did not finish", "on_remote": False}
    # keep going: a need that failed elsewhere must not keep the others from being pulled
    results = current.run(SilentReporter(), [step_id], keep_going=True)
    done = outcomes(current, results)
    if step_id not in done:  # a need could not be had here: the run stopped before it
        need = next((o for o in done.values() if not o.ok), None)
        reason = f"{need.id}: {need.reason}" if need else "the step did not run"
        return {"step": step_id, "state": "failed", "node": node, "key": None,
                "reason": reason, "on_remote": False}
    result = done[step_id]
    state, reason = result.state, str(result.error) if result.error else ""
    artifact = next(r.artifact for r in results if r.id == step_id)
    on_remote = False
    if result.ok and artifact is not None:
        why = _pushed(current, artifact)
        on_remote = not why
        reason = reason or why
    return {"step": step_id, "state": state, "node": node, "key": result.key,
            "reason": reason, "on_remote": on_remote}


def _pushed(current: Any, artifact: Any) -> str:
    """Push `artifact` unless the remote has it: '' once the remote holds it, else why not
    (the remote link gives up, with a warning, on the first failure)."""
    if current.remote.url is None:
        return "; ".join(current.remote.warnings) or "no remote cache on this node"
    current.remote.push(artifact)
    if current.remote.url is None:
        return current.remote.warnings[-1] if current.remote.warnings else "push failed"
    return ""


def run_on_ray(files: list[Any], address: str | None, reporter: Any) -> list[Any]:
    """Every pipeline's steps on the cluster; then each laid out here. Returns RunResults."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # before anything opens a session
        raise PipelineError("--executor ray needs Ray, which is not installed",
                            hint='pip install "qntz[ray]", or leave out --executor ray')
    from qntz.core.pipeline import load_pipeline
    from qntz.core.results import outcomes, result
    from qntz.core.runner import open_session

    # the driver builds nothing: it gets every step from the remote, once the tasks are done
    sessions = [open_session(f if hasattr(f, "steps") else load_pipeline(f),
                             may_build=lambda sid: False) for f in files]
    root = _common_root(sessions)
    remote = sessions[0].remote.url
    import ray

    _connect(ray, address, {"working_dir": str(root), "excludes": EXCLUDES,
                            "env_vars": {"QNTZ_REMOTE": remote, "OMP_NUM_THREADS": _threads()}})
    try:
        task = ray.remote(max_retries=MAX_RETRIES)(build_step)
        placed = _place(ray, task, sessions, root, _remote_or_none(remote))
        nodes = {n["NodeID"]: n for n in ray.nodes()}
    finally:
        ray.shutdown()
    results = []
    for current in sessions:
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


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _connect(ray: Any, address: str | None, runtime_env: dict[str, Any]) -> None:
    """`ray.init` on the cluster at `address`, as given. Ray swaps a loopback host for this
    machine's outward address (and gives the driver that address too), so a cluster bound
    to the loopback interface alone (`ray start --node-ip-address 127.0.0.1`, as the tests
    start one, and nothing of it reachable from the network) could not be reached: for a
    loopback address, Ray's single-machine rule (its own switch for that, which makes
    the local address 127.0.0.1) holds while connecting."""
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - another Ray layout: connect as Ray would
        ray_constants = None
    host = (address or "").rpartition(":")[0].strip("[]") or address
    loopback = address is not None and host in LOOPBACK
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if loopback and saved is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False,
                 runtime_env=runtime_env)
    finally:
        if loopback and saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved


def _remote_or_none(url: str | None) -> Any:
    """The remote, for the driver to check what reached it; None when it cannot be
    opened here (the run's own remote link then warns)."""
    from qntz.core.remote import Remote, RemoteUnavailable

    try:
        return Remote(url) if url else None
    except RemoteUnavailable:
        return None


def _place(ray: Any, task: Any, sessions: list[Any], root: Path,
           remote: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Every step's task, and what each did. After Ray's own retries, up to RESUBMITS more
    rounds submit again what is unsettled: a step whose task Ray gave up on (its worker or
    node lost again and again), a finished step whose entry the remote lacks, and whatever
    waited on either. A step whose task failed on its own stays failed."""
    steps = {(_relative(s, root), sid): s.pipeline.steps[sid]
             for s in sessions for sid in s.pipeline.order()}
    placed: dict[tuple[str, str], dict[str, Any]] = {}
    seen: set[str] = set()  # keys the driver has found on the remote
    for _ in range(1 + RESUBMITS):
        redo: set[tuple[str, str]] = set()
        for key, spec in steps.items():  # in DAG order: needs first
            needs = [(key[0], n) for n in spec.needs]
            if _unsettled(placed.get(key), remote, seen) or (
                    placed[key]["state"] == "skipped" and any(n in redo for n in needs)):
                redo.add(key)
        if not redo:
            break
        refs: dict[tuple[str, str], Any] = {}
        for key, spec in steps.items():
            if key in redo:
                args = [refs.get((key[0], n), placed.get((key[0], n))) for n in spec.needs]
                refs[key] = task.options(**_resources(spec)).remote(key[0], key[1], *args)
        for key, ref in refs.items():
            placed[key] = _outcome(ray, ref, key[1], [placed.get((key[0], n))
                                                     for n in steps[key].needs])
    for key, done in placed.items():
        if done["state"] == "lost":
            placed[key] = {**done, "state": "failed",
                           "reason": "lost on the cluster (its worker or node died, through "
                                     f"{MAX_RETRIES} retries and {RESUBMITS} resubmissions): "
                                     f"{done['reason']}"}
        elif done["state"] in DONE and _unsettled(done, remote, seen):
            placed[key] = {**done, "state": "failed",
                           "reason": "finished on the cluster but never reached the remote "
                                     f"cache: {done['reason'] or 'no reason given'}"}
    return placed


def _unsettled(done: dict[str, Any] | None, remote: Any, seen: set[str]) -> bool:
    """Not yet submitted, lost by Ray, or finished without its entry on the remote (as its
    task says, or as the driver finds: what the driver cannot pull, it cannot lay out)."""
    if done is None or done["state"] == "lost":
        return True
    if done["state"] not in DONE:
        return False
    if not done.get("on_remote"):
        return True
    key = done.get("key")
    if remote is None or key is None or key in seen:
        return False
    from qntz.core.remote import RemoteUnavailable

    try:
        found = remote.has(key)
    except RemoteUnavailable:  # cannot tell from here: the task said it pushed it
        found = True
    if found:
        seen.add(key)
    return not found


def _outcome(ray: Any, ref: Any, sid: str, needs: list[dict[str, Any] | None]) -> dict[str, Any]:
    """What a task returned; a task that raised failed, one that Ray could not finish
    (its worker or node lost more often than it retries) is lost, and one that raised
    because a need did not finish is skipped."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        reason = f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
        blocked = [n["step"] for n in needs if n is not None and n["state"] not in DONE]
        if blocked:
            state, reason = "skipped", f"{blocked[0]} did not finish"
        elif isinstance(exc, ray.exceptions.RayTaskError):
            state = "failed"
        else:
            state = "lost"
        return {"step": sid, "state": state, "node": None, "key": None, "reason": reason,
                "on_remote": False}


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
