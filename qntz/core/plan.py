"""Planning: each step's cache key, and whether it is cached or stale and why (no torch)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from qntz.core.cache import Artifact, Cache
from qntz.core.hashing import FileDigests, canonical_json, digest_value, library_versions
from qntz.core.pipeline import provided_by
from qntz.core.registry import KINDS, provider
from qntz.core.spec import Pipeline, StepSpec
from qntz.core.states import PlanState

FORMAT = 1


@dataclass
class StepState:
    id: str
    kind: str
    state: PlanState  # pending: after a stale step, re-runs if its inputs change
    reason: str
    key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_record(spec: StepSpec, pipeline: Pipeline, inputs: dict[str, Artifact],
               digests: FileDigests, missing: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything that changes the step's output, and nothing else; `missing`: the needs
    that did not finish (a kind that `runs_without` them), and why, which its output says."""
    kind = KINDS[spec.kind]
    record: dict[str, Any] = {
        "format": FORMAT,
        "kind": spec.kind,
        "kind_version": kind.version,
        "params": spec.params,
        "inputs": {sid: inputs[sid].digest if sid in inputs else None for sid in spec.needs},
        "extras": kind.key_extras(spec, pipeline, digests),
        "libraries": library_versions(kind.libraries),
    }
    source = provider(spec.kind)
    if source and not source.startswith("qntz=="):
        record["plugin"] = source  # a plugin's own release enters its steps' keys
    if spec.kind != "load":
        record["model_inputs"] = {n: s.record() for n, s in pipeline.inputs.items()}
    if missing:
        record["missing"] = dict(missing)
    return json.loads(canonical_json(record))  # as the lock file will hold it: lists, not tuples


def record_key(record: dict[str, Any]) -> str:
    return digest_value(record)


def why_stale(record: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """A reason a person can act on, from the difference with the last recorded run."""
    if not previous:
        return "not in cache (never run)"
    reasons: list[str] = []
    old_params, new_params = previous.get("params", {}), record["params"]
    for name in sorted(set(old_params) | set(new_params)):
        if old_params.get(name) != new_params.get(name):
            reasons.append(f"params changed: {name} {_short(old_params.get(name))} → "
                           f"{_short(new_params.get(name))}")
    old_files = previous.get("extras", {}).get("files", {})
    for name, digest in record["extras"].get("files", {}).items():
        if old_files.get(name) != digest:
            reasons.append(f"source changed: {name}")
    for name in sorted(set(record["extras"]) - {"files"}):
        old, new = previous.get("extras", {}).get(name), record["extras"][name]
        if old != new:
            scalar = isinstance(new, (str, int, float)) and isinstance(old, (str, int, float))
            reasons.append(f"{name} changed: {old} → {new}" if scalar else f"{name} changed")
    for sid, digest in record["inputs"].items():
        if previous.get("inputs", {}).get(sid) != digest:
            reasons.append(f"input changed: {sid}")
    if previous.get("model_inputs") != record.get("model_inputs"):
        reasons.append("`inputs` section changed")
    for lib, version in record["libraries"].items():
        old = previous.get("libraries", {}).get(lib)
        if old != version:
            reasons.append(f"{lib} {old} → {version}")
    if previous.get("kind_version") != record["kind_version"]:
        reasons.append(f"{record['kind']} step updated")
    return "; ".join(reasons) if reasons else "not in cache"


def _pending(needs: list[str]) -> str:
    """A step after a stale one: its key is known only once its inputs are rebuilt."""
    names = ", ".join(needs)
    its = "its output changes" if len(needs) == 1 else "their outputs change"
    return f"may re-run: after {names} re-run{'s' if len(needs) == 1 else ''}, if {its}"


def _short(value: Any) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def plan(pipeline: Pipeline, order: list[str], cache: Cache, lock: dict[str, Any],
         force: set[str] = frozenset()) -> tuple[dict[str, StepState], dict[str, Artifact]]:
    """State of every step in `order`, walking down from the cached ones."""
    states: dict[str, StepState] = {}
    found: dict[str, Artifact] = {}
    for sid in order:
        spec = pipeline.steps[sid]
        stale_needs = [n for n in spec.needs if n not in found]
        if stale_needs:
            states[sid] = StepState(sid, spec.kind, "pending", _pending(stale_needs))
            continue
        record = key_record(spec, pipeline, found, cache.digests)
        key = record_key(record)
        artifact, problem = cache.lookup(sid, key, declared=provided_by(spec))
        if sid in force:
            states[sid] = StepState(sid, spec.kind, "stale", "forced", key)
        elif artifact is None:
            reason = problem or why_stale(record, lock.get("steps", {}).get(sid))
            states[sid] = StepState(sid, spec.kind, "stale", reason, key)
        else:
            states[sid] = StepState(sid, spec.kind, "cached", "up to date", key)
            found[sid] = artifact
    return states, found
