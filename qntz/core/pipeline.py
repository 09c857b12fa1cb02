"""Pipeline files (format version 1): parse, validate as a whole, and resolve the DAG."""

from __future__ import annotations

import graphlib
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.data import check_spec
from qntz.core.errors import PipelineError
from qntz.core.inputs import parse_inputs
from qntz.core.registry import KINDS
from qntz.core.schema import FACTORY_PATTERN, ID_PATTERN, top_level_schema
from qntz.core.schema_memo import SchemaMemo
from qntz.core.spec import Pipeline, StepSpec
from qntz.core.wording import did_you_mean
from qntz.core.workspace import Workspace
from qntz.core.yamlfile import Location, PathKey, load_yaml, locate

if TYPE_CHECKING:
    import jsonschema

LOAD_ID = "load"


def load_pipeline(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Pipeline:
    """Read and validate a whole pipeline file; raise PipelineError at the first problem.
    `overrides` ({"step.param": value}, as `--set` gives them) replace or add parameters
    before anything is validated, so they are checked, hashed and locked like the file's."""
    path = Path(path)
    doc, marks = load_yaml(path)
    if not isinstance(doc, dict):
        raise PipelineError("a pipeline file must be a YAML mapping", where=f"{path}:1:1",
                            hint="start from pipelines/quickstart.yaml")
    for name, value in (overrides or {}).items():
        _override(doc, name, value, path)
    memo = SchemaMemo(Workspace.of(path.resolve().parent).cache_dir)
    _check_schema(doc, top_level_schema(), path, marks, (), memo=memo)
    pipeline = Pipeline(path=path, name=doc["name"], inputs={}, data=doc.get("data") or {},
                        steps={}, marks=marks, memo=memo)
    _check_names(doc, pipeline)
    _check_plain(doc, pipeline)
    pipeline.inputs = parse_inputs(doc.get("inputs") or {}, pipeline.where)
    for name in pipeline.data:
        check_spec(pipeline, name)
    pipeline.steps = _parse_steps(doc, pipeline)
    _check_graph(pipeline)
    _check_step_inputs(pipeline)
    for spec in pipeline.steps.values():
        KINDS[spec.kind].check(spec, pipeline)
    memo.save()
    return pipeline


def _override(doc: dict[str, Any], name: str, value: Any, path: Path) -> None:
    """One `--set step.param=value` (`step.a.b=value` sets inside a mapping parameter)."""
    steps = doc.get("steps") if isinstance(doc.get("steps"), dict) else {}
    sid, _, param = name.partition(".")
    ids = ([LOAD_ID] if "model" in doc else []) + list(steps)
    if sid not in ids:
        raise PipelineError(f"--set {name}: no step '{sid}'{did_you_mean(sid, ids)}",
                            where=str(path), hint="steps: " + ", ".join(ids))
    holder, key = (doc, "model") if sid == LOAD_ID and "model" in doc else (steps, sid)
    body = dict(holder[key] or {}) if isinstance(holder[key], dict) or not holder[key] else None
    kind_name = body.get("uses", sid) if body is not None else None
    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if body is None or kind is None:  # refused below, where the file is checked
        return
    keys = param.split(".")
    allowed = [p for p in kind.schema().get("properties", {}) if p not in ("uses", "needs")]
    if keys[0] not in allowed:
        raise PipelineError(f"--set {name}: step '{sid}' ({kind_name}) has no parameter "
                            f"'{keys[0]}'{did_you_mean(keys[0], allowed)}", where=str(path),
                            hint="use one of: " + ", ".join(allowed) + " (see `qntz steps`)")
    target = body
    for part in keys[:-1]:
        target[part] = dict(target.get(part) or {}) if isinstance(target.get(part) or {},
                                                                  dict) else {}
        target = target[part]
    target[keys[-1]] = value
    holder[key] = body


def unsafe_name(what: str, value: Any, where: str) -> PipelineError:
    return PipelineError(
        f"{what} {_short(value)} is not a safe name", where=where,
        hint=f"use letters, digits, _, - and . (not first), at most 64 characters: {ID_PATTERN}")


def _check_names(doc: dict[str, Any], pipeline: Pipeline) -> None:
    """Names that become folder names, matched whole (`$` alone lets a final newline by)."""
    if not re.fullmatch(ID_PATTERN, doc["name"]):
        raise unsafe_name("pipeline name", doc["name"], pipeline.where("name"))
    for sid in doc["steps"]:
        if not re.fullmatch(ID_PATTERN, sid):
            raise unsafe_name("step id", sid, pipeline.where("steps", sid, "<key>"))


def _check_plain(doc: Any, pipeline: Pipeline) -> None:
    """JSON's data model: text keys and finite numbers (hashing and generated data need both)."""
    stack: list[tuple[PathKey, Any]] = [((), doc)]
    while stack:
        at, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise PipelineError(f"{value} is not a finite number", where=pipeline.where(*at),
                                hint="write a finite number")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise PipelineError(
                        f"key {key!r} is not text", where=pipeline.where(*at, key, "<key>"),
                        hint=f"quote it: '{key}':")
                stack.append(((*at, key), item))
        elif isinstance(value, list):
            stack.extend(((*at, index), item) for index, item in enumerate(value))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _raw_steps(doc: dict[str, Any], pipeline: Pipeline) -> list[tuple[str, dict[str, Any]]]:
    raw = [(sid, dict(body or {})) for sid, body in doc["steps"].items()]
    explicit_load = any(body.get("uses", sid) == "load" for sid, body in raw)
    if "model" in doc:
        if explicit_load:
            raise PipelineError("both a `model:` section and a `load` step", where=pipeline.where(
                "model"), hint="keep one of them")
        return [(LOAD_ID, dict(doc["model"])), *raw]
    if not explicit_load:
        raise PipelineError("no model to load", where=pipeline.where(),
                            hint="add a `model:` section (factory, torchscript or onnx)")
    return raw


def _parse_steps(doc: dict[str, Any], pipeline: Pipeline) -> dict[str, StepSpec]:
    steps: dict[str, StepSpec] = {}
    previous: str | None = None
    for sid, body in _raw_steps(doc, pipeline):
        at = ("model",) if sid == LOAD_ID and "model" in doc else ("steps", sid)
        kind_name = body.get("uses", "load" if at == ("model",) else sid)
        kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            field_at = (*at, "uses") if "uses" in body else (*at, "<key>")
            raise PipelineError(
                f"step '{sid}': unknown step kind '{kind_name}'"
                f"{did_you_mean(str(kind_name), list(KINDS))}",
                where=pipeline.where(*field_at),
                hint="set `uses:` to one of " + ", ".join(KINDS) + " (see `qntz steps`)")
        _check_schema(body, kind.schema(), pipeline.path, pipeline.marks, at, sid, kind_name,
                      pipeline.memo)
        needs = body.pop("needs", None)
        resources = body.pop("resources", None)
        body.pop("uses", None)
        if needs is None:
            needs = [previous] if previous else []
        needs = [needs] if isinstance(needs, str) else list(needs)
        if kind.consumes_model and LOAD_ID not in needs and sid != LOAD_ID:
            needs.append(_load_id(steps))
        spec = StepSpec(sid, kind_name, tuple(dict.fromkeys(needs)), body,
                        kind.with_defaults(body), at, resources)
        steps[sid] = _insert_implicit(spec, steps, pipeline)
        previous = sid
    return steps


def _insert_implicit(spec: StepSpec, steps: dict[str, StepSpec],
                     pipeline: Pipeline) -> StepSpec:
    """Steps a kind adds before itself (e.g. the fp16 conversion a TensorRT fp16 build needs).

    Each takes over the step's ONNX input; the step then consumes the last one added.
    """
    added = KINDS[spec.kind].implicit_steps(spec, {**steps, spec.id: spec}, pipeline)
    for new_id, kind_name, given in added:
        source = next(n for n in reversed(spec.needs) if "onnx" in provided_by(steps[n]))
        kind = KINDS[kind_name]
        steps[new_id] = StepSpec(new_id, kind_name, (source,), given, kind.with_defaults(given),
                                 spec.at)
        needs = tuple(new_id if n == source else n for n in spec.needs)
        spec = replace(spec, needs=needs)
    return spec


def _load_id(steps: dict[str, StepSpec]) -> str:
    for sid, spec in steps.items():
        if spec.kind == "load":
            return sid
    return LOAD_ID


def _check_graph(pipeline: Pipeline) -> None:
    for sid, spec in pipeline.steps.items():
        for need in spec.needs:
            if need not in pipeline.steps:
                raise PipelineError(
                    f"step '{sid}' needs '{need}', which is not a step"
                    f"{did_you_mean(need, list(pipeline.steps))}",
                    where=pipeline.where("steps", sid, "needs"),
                    hint="name a step defined under `steps:`")
            if need == sid:
                raise PipelineError(f"step '{sid}' needs itself",
                                    where=pipeline.where("steps", sid, "needs"),
                                    hint="remove it from its own `needs`")
    graph = {sid: spec.needs for sid, spec in pipeline.steps.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise PipelineError(
            "steps form a cycle: " + " -> ".join(reversed(cycle)),
            where=pipeline.where("steps", cycle[0], "needs"),
            hint="remove one of these `needs` so the steps can be ordered") from None


def _check_step_inputs(pipeline: Pipeline) -> None:
    for sid, spec in pipeline.steps.items():
        kind = KINDS[spec.kind]
        wanted = kind.consumes
        if not wanted:
            continue
        offered = {p for need in spec.needs for p in provided_by(pipeline.steps[need])}
        if not offered & set(wanted):
            raise PipelineError(
                f"step '{sid}' ({spec.kind}) consumes {' or '.join(wanted)}, "
                f"but its needs ({', '.join(spec.needs) or 'none'}) provide "
                f"{', '.join(sorted(offered)) or 'nothing'}",
                where=pipeline.where("steps", sid),
                hint=f"set `needs:` to a step that produces {wanted[0]}")


def provided_by(spec: StepSpec) -> tuple[str, ...]:
    return tuple(KINDS[spec.kind].provides_for(spec.params))


def _check_schema(value: Any, schema: dict[str, Any], path: Path,
                  marks: dict[PathKey, Location], at: PathKey, step_id: str | None = None,
                  kind: str | None = None, memo: SchemaMemo | None = None) -> None:
    key = memo.key(value, schema) if memo else None
    if memo and key in memo:
        return
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=_error_order)
    if not errors:
        if memo:
            memo.add(key)
        return
    error = errors[0]
    where_path = (*at, *error.absolute_path)
    message, hint, where_path = _explain(error, where_path, step_id, kind)
    loc = locate(marks, where_path)
    where = f"{path}:{loc[0]}:{loc[1]}" if loc else str(path)
    raise PipelineError(message, where=where, hint=hint)


def _error_order(error: jsonschema.ValidationError) -> tuple[int, list[tuple[int, int, str]]]:
    """Shallowest first, then by path; keys of any type (an int, null) still compare."""
    return len(error.absolute_path), [
        (0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.path]


PATTERNS = {FACTORY_PATTERN: ("module.path:attr", "dotted Python names, e.g. models.tiny:TinyCNN")}


def _explain(error: jsonschema.ValidationError, at: PathKey, step_id: str | None,
             kind: str | None) -> tuple[str, str | None, PathKey]:
    owner = f"step '{step_id}' ({kind})" if step_id else "pipeline"
    field_name = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if "propertyNames" in error.relative_schema_path:
        bad = unsafe_name("step id", error.instance, "")
        return bad.message, bad.hint, (*at, error.instance, "<key>")
    if error.validator == "pattern" and error.validator_value == ID_PATTERN:
        what = "pipeline name" if field_name == "name" else f"{owner}: '{field_name}'"
        bad = unsafe_name(what, error.instance, "")
        return bad.message, bad.hint, at
    if error.validator == "pattern" and error.validator_value in PATTERNS:
        shape, hint = PATTERNS[error.validator_value]
        return (f"{owner}: '{field_name}' is {_short(error.instance)}, not {shape}", hint, at)
    if error.validator == "maximum":
        return (f"{owner}: '{field_name}' is {_short(error.instance)}, more than the maximum "
                f"{error.validator_value}", f"use at most {error.validator_value}", at)
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        key = extra[0] if extra else "?"
        name = str(key)
        return (f"{owner}: unknown parameter '{name}'{did_you_mean(name, allowed)}",
                "use one of: " + ", ".join(a for a in allowed if a not in ("uses", "needs"))
                + (" (see `qntz steps`)" if step_id else ""), (*at, key, "<key>"))
    if error.validator == "required":
        return f"{owner}: {error.message}", "add it", at
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return (f"{owner}: '{field_name}' must be {expected}, got {_short(error.instance)}",
                f"write {field_name} as {expected}", at)
    if error.validator == "enum":
        options = ", ".join(map(str, error.validator_value))
        return (f"{owner}: '{field_name}' is {_short(error.instance)}"
                f"{did_you_mean(str(error.instance), [str(v) for v in error.validator_value])}",
                f"use one of: {options}", at)
    return (f"{owner}: '{field_name}': {_short(error.message, 200)}",
            "fix the value" + (" (see `qntz steps`)" if step_id else ""), at)
