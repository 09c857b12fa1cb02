"""The run record `render` draws (its shape: `qntz.report.render`), built from what a run
left: the recorded run (state and time of each step), the cache entries and their files.

Nothing here reads the clock or the machine: the same run and cache give the same record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import qntz.report.parts as parts
from qntz.core.cache import Artifact

STATES = {"pulled": "cached"}  # a step pulled from the remote cache was not built here


def run_record(pipeline: Any, artifacts: Mapping[str, Artifact], run: dict[str, Any],
               stale: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The record of the recorded `run` (empty: what the cache holds) of `pipeline`;
    `stale`: the steps the pipeline as it is now would re-run, and why."""
    recorded = run.get("steps") or {}
    steps = [_step(pipeline, pipeline.steps[sid], artifacts.get(sid), recorded.get(sid) or {})
             for sid in pipeline.order()]
    _not_run_engines(steps, artifacts)
    return {"report": 1, "pipeline": pipeline.name, "recorded_at": run.get("recorded_at"),
            "stale": stale or [], "verdict": verdict(pipeline, steps, artifacts),
            "steps": steps}


def verdict(pipeline: Any, steps: list[dict[str, Any]], artifacts: Mapping[str, Artifact]
            ) -> list[dict[str, Any]]:
    """Which file to ship: every compared candidate, those that pass first, fastest first,
    with its accuracy against its bar, its speedup, its file in out/ and its size."""
    rows = []
    for step in steps:
        for c in (step.get("compare") or {}).get("candidates", []):
            artifact = artifacts.get(c["name"])
            main = _main_file(artifact)
            rows.append({"name": c["name"], "compare": step["id"], "status": c["status"],
                         "metric": c["metric"], "value": c["value"],
                         "tolerance": c["tolerance"], "speedup": c.get("speedup"),
                         "file": f"out/{pipeline.name}/{c['name']}/{main}" if main else None,
                         "bytes": _bytes(artifact) if main else None})
    return sorted(rows, key=lambda r: (r["status"] != "pass", -(r["speedup"] or 0), r["name"]))


MAIN_FILES = ("model.onnx", "model.plan", "model.pt2", "model.pt")


def _main_file(artifact: Artifact | None) -> str | None:
    if artifact is None:
        return None
    return next((n for n in MAIN_FILES if n in artifact.files()), None)


def _bytes(artifact: Artifact) -> int:
    """The artifact's deployable files: its model file and any external data beside it."""
    total = 0
    for name in artifact.files():
        if name.startswith("model.") and not name.endswith(".json"):
            try:
                total += artifact.file(name).stat().st_size
            except OSError:
                pass
    return total


def _step(pipeline: Any, spec: Any, artifact: Artifact | None, ran: dict[str, Any]
          ) -> dict[str, Any]:
    failed = artifact is not None and bool(artifact.summary.get("failed"))
    state = ran.get("state") or ("failed" if failed else "cached" if artifact else "not run")
    step: dict[str, Any] = {"id": spec.id, "kind": spec.kind, "state": STATES.get(state, state),
                            "seconds": ran.get("seconds"), "needs": list(spec.needs),
                            "built_seconds": artifact.summary.get("seconds") if artifact else None,
                            "summary": _summary(spec, artifact, ran)}
    if artifact is not None:
        part = PARTS.get(spec.kind)
        if part is not None:
            step[part[0]] = part[1](artifact, pipeline)
        elif (section := _kind_section(spec.kind, artifact)) is not None:
            step["section"] = section
    elif ran.get("details") and spec.kind in FAILED_PARTS:  # what it found before failing
        step[spec.kind] = FAILED_PARTS[spec.kind](ran["details"], spec.params)
    return step


def _summary(spec: Any, artifact: Artifact | None, ran: dict[str, Any]) -> str:
    """One line: the error of a step that failed, else what it made."""
    error = ran.get("error") or (artifact.summary.get("failed") if artifact else None)
    if error:
        return str(error).split(f"step '{spec.id}': ", 1)[-1]
    if artifact is None:
        return ""
    from qntz.core.registry import KINDS

    kind = KINDS.get(spec.kind)
    return kind.describe(artifact.summary) if kind is not None else ""


def read_json(artifact: Artifact, name: str) -> Any:
    """A JSON file of the entry, None when absent or unreadable."""
    if name not in artifact.files():
        return None
    try:
        return json.loads(artifact.file(name).read_text())
    except (OSError, ValueError):
        return None


def _compare(artifact: Artifact, pipeline: Any) -> dict[str, Any]:
    return parts.compare(read_json(artifact, "report.json") or {},
                         read_json(artifact, "latency.json") or {})


def _preflight(artifact: Artifact, pipeline: Any) -> dict[str, Any]:
    return parts.preflight(read_json(artifact, "report.json") or {}, pipeline.root)


def _quantize(artifact: Artifact, pipeline: Any) -> dict[str, Any]:
    return parts.quantize(artifact.summary, artifact.manifest.get("record", {}).get("params", {}),
                          read_json(artifact, "budget_latency.json") or [])


def _tensorrt(artifact: Artifact, pipeline: Any) -> dict[str, Any]:
    timing = read_json(artifact, "timing.json") or {}
    return parts.tensorrt(read_json(artifact, "layers.json") or artifact.summary,
                          timing.get("build_seconds"))


FAILED_PARTS = {"quantize": lambda details, params: parts.quantize(
    {**details, "failed": True}, params, [])}
PARTS = {"compare": ("compare", _compare), "preflight": ("preflight", _preflight),
         "quantize": ("quantize", _quantize), "tensorrt": ("tensorrt", _tensorrt)}


def _kind_section(kind_name: str, artifact: Artifact) -> dict[str, Any] | None:
    """The section a kind (a plugin's, mostly) draws of its entry through
    `Step.report_section`, as plain data; a kind whose hook raises gets a note saying so."""
    from qntz.core.registry import KINDS

    kind = KINDS.get(kind_name)
    if kind is None:
        return None
    try:
        section = kind.report_section(artifact)
    except Exception as exc:  # a plugin's bug costs its section, not the user's report
        return {"title": kind_name, "facts": [], "tables": [],
                "notes": [f"{kind_name}.report_section raised {type(exc).__name__}: {exc}"]}
    if section is None:
        return None
    return {"title": str(section.title),
            "facts": [[str(name), _plain(value)] for name, value in section.facts],
            "tables": [{"headers": [str(h) for h in t.headers],
                        "rows": [[_plain(v) for v in row] for row in t.rows],
                        "caption": str(t.caption)} for t in section.tables],
            "notes": [str(n) for n in section.notes]}


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _not_run_engines(steps: list[dict[str, Any]], artifacts: Mapping[str, Artifact]) -> None:
    """An engine a compare could not run here is listed with the engine, with the reason."""
    engines = {s["id"]: s for s in steps if "tensorrt" in s}
    for step in steps:
        for row in (step.get("compare") or {}).get("candidates", []):
            if row.get("status") == "not run" and row["name"] in engines:
                engines[row["name"]]["tensorrt"].setdefault("not_run", []).append(
                    {"name": f"{step['id']}/{row['name']}", "reason": row.get("reason")})
