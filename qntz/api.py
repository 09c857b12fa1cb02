"""The Python API for notebooks and CI scripts; the CLI is a thin layer over it.

    import qntz
    result = qntz.run("pipelines/quickstart.yaml", jobs=2)
    if not result:
        print(result.failures())
    result.steps["int8"].files["model.onnx"]      # the laid-out artifact
    result.comparisons["compare"]                 # candidates with their figures

A bad pipeline raises `qntz.PipelineError` (with `.where` and `.hint`); a step that fails
does not raise: its outcome carries the error, and the result is falsy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qntz.errors import PipelineError, QntzError


@dataclass(frozen=True)
class StepOutcome:
    """One step of a run: `state` is ran, cached, failed or skipped."""

    id: str
    kind: str
    state: str
    seconds: float
    reason: str
    key: str | None
    files: dict[str, Path] = field(default_factory=dict)  # laid out under out/<name>/<id>/
    summary: dict[str, Any] = field(default_factory=dict)
    error: QntzError | None = None

    @property
    def ok(self) -> bool:
        return self.state in ("ran", "cached", "pulled")

    def as_dict(self) -> dict[str, Any]:
        """What `qntz run --json` prints for the step."""
        error = None if self.error is None else {
            "message": self.error.message, "where": self.error.where, "hint": self.error.hint}
        return {"id": self.id, "kind": self.kind, "state": self.state,
                "seconds": round(self.seconds, 3), "reason": self.reason or None,
                "key": self.key, "files": {n: str(p) for n, p in self.files.items()},
                "summary": self.summary, "error": error}


@dataclass(frozen=True)
class RunResult:
    """A whole run; truthy only when every step it ran or reused passed."""

    pipeline: Path
    out: Path
    lock: Path
    steps: dict[str, StepOutcome]
    warnings: list[str] = field(default_factory=list)  # e.g. an unreachable remote cache
    placement: dict[str, dict[str, Any]] = field(default_factory=dict)  # cluster: where run

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps.values())

    def __bool__(self) -> bool:
        return self.ok

    @property
    def comparisons(self) -> dict[str, list[dict[str, Any]]]:
        """Each compare step's candidates: status, accuracy figures and latency."""
        return {sid: step.summary.get("candidates", []) for sid, step in self.steps.items()
                if step.kind == "compare"}

    def failures(self) -> list[QntzError]:
        return [s.error for s in self.steps.values() if s.error is not None]


def load_pipeline(path: str | Path) -> Any:
    """Read and validate a pipeline file; raises PipelineError naming file, line and fix."""
    from qntz.pipeline import load_pipeline as load

    return load(path)


def session(pipeline: Any, remote: bool = True) -> Any:
    """The pipeline's session in its project (cache and outputs under the project root,
    the remote cache its config names unless `remote` is False)."""
    from qntz.remote import RemoteLink, configured_remote
    from qntz.runner import Session
    from qntz.workspace import Workspace

    if not hasattr(pipeline, "steps"):
        pipeline = load_pipeline(pipeline)
    workspace = Workspace.of(pipeline.path.parent)
    url = configured_remote(workspace.root) if remote else None
    return Session(pipeline, workspace, RemoteLink(url))


def run(pipeline: str | Path | Any, steps: list[str] | None = None, jobs: int = 1,
        force: bool = False, keep_going: bool = False, reporter: Any = None,
        remote: bool = True) -> RunResult:
    """Run what is stale (with `steps`: those and what they need) and lay out the outputs.
    A step missing locally is pulled from the remote cache when it has it; what is built is
    pushed there."""
    from qntz.progress import SilentReporter

    if jobs < 1:
        raise PipelineError("jobs must be at least 1", hint="e.g. jobs=2 (--jobs 2)")
    current = session(pipeline, remote)
    _check_steps(current.pipeline, steps)
    results = current.run(reporter or SilentReporter(), steps, force, jobs, keep_going)
    return result(current, outcomes(current, results))


def run_all(files: list[str | Path], executor: str = "local", address: str | None = None,
            reporter: Any = None, **options: Any) -> list[RunResult]:
    """Several pipelines: one after the other here, or fanned out over a Ray cluster
    (`executor="ray"`, which needs a remote cache; `address` as `ray.init` takes it)."""
    if executor == "ray":
        from qntz.progress import SilentReporter
        from qntz.ray_executor import run_on_ray

        return run_on_ray(list(files), address, reporter or SilentReporter())
    return [run(f, reporter=reporter, **options) for f in files]


def outcomes(current: Any, results: list[Any]) -> dict[str, StepOutcome]:
    return {r.id: _outcome(r, current.out / r.id) for r in results}


def result(current: Any, steps: dict[str, StepOutcome],
           placement: dict[str, dict[str, Any]] | None = None) -> RunResult:
    return RunResult(current.pipeline.path.resolve(), current.out, current.lock_path.resolve(),
                     steps, current.remote.warnings, placement or {})


def push(pipeline: str | Path | Any) -> dict[str, str]:
    """Upload every step the lock file records and the local cache holds; per step what
    happened (pushed, already there, not in the local cache)."""
    from qntz.remote import Remote

    current = session(pipeline)
    remote = _remote(current)
    done: dict[str, str] = {}
    for sid, step in current.read_lock()["steps"].items():
        artifact, _ = current.cache.lookup(sid, step["key"], strict=True)
        if artifact is None:
            done[sid] = "not in the local cache"
        else:
            done[sid] = "pushed" if _guarded(Remote.push, remote, artifact) else "already there"
    return done


def pull(pipeline: str | Path | Any, steps: list[str] | None = None) -> dict[str, str]:
    """Download the entries the lock file records (or those of `steps`) that the local cache
    lacks, each checked against its digests."""
    current = session(pipeline)
    _check_steps(current.pipeline, steps)
    remote = _remote(current)
    done: dict[str, str] = {}
    for sid, step in current.read_lock()["steps"].items():
        if steps and sid not in steps:
            continue
        if current.cache.lookup(sid, step["key"])[0] is not None:
            done[sid] = "already here"
            continue
        with current.cache.locked(step["key"]):
            pulled = _guarded(remote.pull, current.cache, sid, step["key"])
        done[sid] = "pulled" if pulled else "not on the remote"
    current.digests.save()
    return done


def _remote(current: Any) -> Any:
    from qntz.remote import Remote, RemoteUnavailable

    if current.remote.url is None:
        raise PipelineError("no remote cache is configured", where=str(current.pipeline.path),
                            hint="set QNTZ_REMOTE or `remote: URL` in .qntz/config.yaml "
                            "under the project root")
    try:
        return Remote(current.remote.url)
    except RemoteUnavailable as exc:
        raise QntzError(str(exc), hint="check the URL and that fsspec's backend for it is "
                        "installed") from exc


def _guarded(function: Any, *args: Any) -> Any:
    from qntz.remote import RemoteUnavailable

    try:
        return function(*args)
    except RemoteUnavailable as exc:
        raise QntzError(str(exc), hint="check the remote's address and credentials") from exc


def status(pipeline: str | Path | Any, steps: list[str] | None = None) -> dict[str, Any]:
    """Per step: cached, stale or pending, and why (changes nothing)."""
    current = session(pipeline)
    _check_steps(current.pipeline, steps)
    return current.status(steps)


def remote_has(pipeline: str | Path | Any, states: dict[str, Any]) -> dict[str, bool]:
    """For each planned step with a known key: whether the remote cache holds its entry."""
    current = session(pipeline)
    remote = _remote(current)
    return {sid: _guarded(remote.has, s.key) for sid, s in states.items() if s.key}


def _check_steps(pipeline: Any, steps: list[str] | None) -> None:
    from qntz.pipeline import did_you_mean

    for sid in steps or []:
        if sid not in pipeline.steps:
            raise PipelineError(f"no step '{sid}'{did_you_mean(sid, list(pipeline.steps))}",
                                where=str(pipeline.path),
                                hint="steps: " + ", ".join(pipeline.steps))


def _outcome(result: Any, folder: Path) -> StepOutcome:
    artifact = result.artifact
    files = {name: folder / name for name in artifact.files()} if artifact else {}
    error = result.error or (QntzError(result.reason) if result.state == "failed" else None)
    return StepOutcome(result.id, result.kind, result.state, result.seconds, result.reason,
                       artifact.key if artifact else None, files, result.summary, error)
