"""What a run returns: each step's outcome and the whole run's result, typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qntz.core.errors import QntzError
from qntz.core.states import DONE, RunState


@dataclass(frozen=True)
class StepOutcome:
    """One step of a run: `state` is ran, cached, pulled (from the remote cache), failed or
    skipped."""

    id: str
    kind: str
    state: RunState
    seconds: float
    reason: str
    key: str | None
    files: dict[str, Path] = field(default_factory=dict)  # laid out under out/<name>/<id>/
    summary: dict[str, Any] = field(default_factory=dict)
    error: QntzError | None = None

    @property
    def ok(self) -> bool:
        return self.state in DONE

    def as_dict(self) -> dict[str, Any]:
        """What `qntz run --json` prints for the step."""
        error = None if self.error is None else {
            "message": self.error.message, "where": self.error.where, "hint": self.error.hint,
            "details": self.error.details}
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


def outcomes(current: Any, results: list[Any]) -> dict[str, StepOutcome]:
    return {r.id: outcome(r, current.out / r.id) for r in results}


def result(current: Any, steps: dict[str, StepOutcome],
           placement: dict[str, dict[str, Any]] | None = None) -> RunResult:
    return RunResult(current.pipeline.path.resolve(), current.out, current.lock_path.resolve(),
                     steps, current.remote.warnings, placement or {})


def outcome(result: Any, folder: Path) -> StepOutcome:
    artifact = result.artifact
    files = {name: folder / name for name in artifact.files()} if artifact else {}
    error = result.error or (QntzError(result.reason) if result.state == "failed" else None)
    return StepOutcome(result.id, result.kind, result.state, result.seconds, result.reason,
                       artifact.key if artifact else None, files, result.summary, error)


def run_log(out: Path) -> Path:
    """Where the last run of the pipeline whose outputs are `out` (`<root>/out/<name>`) is
    recorded: `<root>/.qntz/runs/<name>.json`, beside the project's cache, not among the
    artifacts (two runs that build the same artifacts lay out the same `out/`)."""
    return out.parent.parent / ".qntz" / "runs" / f"{out.name}.json"


def record_run(result: RunResult) -> None:
    """Keep what this run did to each step (state, seconds, error) and when: the report
    shows the run, and is the same whenever it is regenerated."""
    import json
    import time

    from qntz.core.hashing import write_atomic
    from qntz.core.workspace import inside

    steps = {sid: {"state": s.state, "seconds": round(s.seconds, 3), "key": s.key,
                   "error": s.error.message if s.error else None,
                   **({"details": s.error.details} if s.error and s.error.details else {})}
             for sid, s in result.steps.items()}
    log = {"recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": steps}
    path = run_log(result.out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(inside(path.parent, path), json.dumps(log, indent=1) + "\n")
    except OSError:  # a read-only project serving a cached run: the report uses the plan
        pass


def read_run(out: Path) -> dict[str, Any]:
    """The last recorded run of the pipeline whose outputs are in `out` (empty if none)."""
    import json

    try:
        log = json.loads(run_log(out).read_text())
    except (OSError, ValueError):
        return {}
    return log if isinstance(log, dict) and isinstance(log.get("steps"), dict) else {}
