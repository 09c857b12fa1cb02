"""`qntz report`: out/<name>/report.html from the recorded run and the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qntz.core.errors import QntzError

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
    _, found = plan(pipeline, pipeline.order(), session.cache, session.read_lock())
    session.digests.save()
    html = render(run_record(pipeline, found, read_run(session.out)))
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
