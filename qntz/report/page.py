"""`qntz report`: out/<name>/report.html from the recorded run and the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qntz.core.errors import PipelineError, QntzError

PAGE = "report.html"


def write_report(session: Any) -> Path:
    """Render the pipeline's last recorded run into `out/<name>/report.html`, atomically;
    the same run and cache give the same bytes."""
    from qntz.core.hashing import write_atomic
    from qntz.core.plan import plan
    from qntz.core.results import read_run
    from qntz.core.workspace import inside
    from qntz.report.record import run_record
    from qntz.report.render import render

    pipeline = session.pipeline
    lock, run = session.read_lock(), read_run(session.out)
    states, current = plan(pipeline, pipeline.order(), session.cache, lock)
    built = _last_built(session, lock)
    if not built and not current and not run:
        raise PipelineError("nothing to report: this pipeline was never run here",
                            where=str(pipeline.path), hint=f"run `qntz run {pipeline.path}` "
                            "first")
    stale = [{"id": s.id, "reason": s.reason} for s in states.values() if s.state != "cached"]
    html = render(run_record(pipeline, {**current, **built}, run, stale))
    target = inside(session.workspace.root / "out", session.out / PAGE)
    if target.is_dir():
        raise QntzError(f"{target} is a folder (a step named '{PAGE}'?)",
                        where=str(pipeline.path), hint="rename that step")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, html)
    except OSError as exc:
        raise QntzError(f"cannot write {target}: {exc.strerror}", where=str(pipeline.path),
                        hint="make out/ writable") from exc
    return target


def _last_built(session: Any, lock: dict[str, Any]) -> dict[str, Any]:
    """The entries the lock file records (what the last run built), where the cache still
    has them: a pipeline edited since is reported as it was run, and said to be stale."""
    from qntz.core.pipeline import provided_by

    found = {}
    for sid, step in lock.get("steps", {}).items():
        if sid in session.pipeline.steps:
            artifact, _ = session.cache.lookup(sid, step["key"],
                                               declared=provided_by(session.pipeline.steps[sid]))
            if artifact is not None:
                found[sid] = artifact
    return found
