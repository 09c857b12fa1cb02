"""The pipeline file's JSON Schema: the top level here, each step kind's from its class.

`full_schema()` is what `schemas/pipeline.schema.json` publishes for editors; a test keeps
the file and this code in agreement (`qntz schema > schemas/pipeline.schema.json`).
"""

from __future__ import annotations

from typing import Any

from qntz.core.inputs import DTYPES

# Step ids and pipeline names become folder names: safe path parts by construction.
ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
ID_SCHEMA = {"type": "string", "pattern": ID_PATTERN}
# `module.path:attr.path`, dotted Python identifiers (ASCII), no empty parts.
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
FACTORY_PATTERN = f"^{_DOTTED}:{_DOTTED}$"
FACTORY_SCHEMA = {"type": "string", "pattern": FACTORY_PATTERN, "maxLength": 200}
MAX_SAMPLES = 10_000  # samples, batches and timed runs a step or dataset may ask for

DIM = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "minLength": 1}]}

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["shape"],
    "properties": {
        "shape": {"type": "array", "items": DIM,
                  "description": "ints, or names for dynamic dims"},
        "dtype": {"enum": list(DTYPES), "default": "float32"},
        "dynamic": {
            "type": "object",
            "description": "min, opt, max of each named dim",
            "additionalProperties": {"type": "array", "items": {"type": "integer"},
                                     "minItems": 3, "maxItems": 3},
        },
        "multiple_of": {
            "type": "object",
            "description": "sizes a dynamic dim accepts, e.g. {height: 8} for a U-Net that "
                           "halves it three times; every generated size honours it",
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 4096},
        },
        "range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                  "description": "value range for generated data (integers: both ends "
                                 "included)"},
        "constant": {"type": "boolean", "default": False,
                     "description": "an integer range of one value ([0, 0]) is meant"},
        "role": {"enum": ["mask", "tokens"],
                 "description": "mask: generated rows are padded (ones then zeros, varied "
                                "lengths); tokens: ids at padded positions are the range's "
                                "low end. Inferred as mask for 0/1 integer inputs named "
                                "mask or *_mask"},
    },
}

DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["from"],
    "properties": {
        "from": {"enum": ["generate", "npz", "npy", "images", "callable"]},
        "path": {"type": "string"},
        "function": {**FACTORY_SCHEMA, "description": "module.path:attr yielding batches"},
        "samples": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES},
        "batch": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES},
        "size": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 4096},
                 "minItems": 2, "maxItems": 2},
        "mean": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
        "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                "minItems": 3, "maxItems": 3},
        "input": {"type": "string"},
    },
    "additionalProperties": False,
}


def top_level_schema(steps: dict[str, Any] | None = None,
                     model: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "qntz pipeline (format 1)",
        "type": "object",
        "additionalProperties": False,
        "required": ["qntz", "name", "inputs", "steps"],
        "properties": {
            "qntz": {"const": 1, "description": "format version"},
            "name": {**ID_SCHEMA, "description": "names the output folder out/<name>/"},
            "model": model or {"type": "object"},
            "inputs": {"type": "object", "minProperties": 1,
                       "additionalProperties": INPUT_SCHEMA},
            "data": {"type": "object", "additionalProperties": DATA_SCHEMA},
            "steps": steps or {"type": "object", "minProperties": 1, "propertyNames": ID_SCHEMA,
                               "additionalProperties": {"type": ["object", "null"]}},
        },
    }


def full_schema() -> dict[str, Any]:
    """One schema for editors: a step whose id is a kind gets that kind's parameters."""
    from qntz.core.registry import KINDS

    defs = {f"step.{name}": kind.schema() for name, kind in KINDS.items()}
    by_uses = [
        {"if": {"required": ["uses"], "properties": {"uses": {"const": name}}},
         "then": {"$ref": f"#/$defs/step.{name}"}}
        for name in KINDS
    ]
    any_step = {"type": ["object", "null"], "allOf": by_uses,
                "properties": {"uses": {"enum": list(KINDS)}}}
    steps = {
        "type": "object", "minProperties": 1, "propertyNames": ID_SCHEMA,
        "properties": {
            name: {"if": {"not": {"required": ["uses"]}},
                   "then": {"anyOf": [{"type": "null"}, {"$ref": f"#/$defs/step.{name}"}]},
                   "else": any_step}
            for name in KINDS if name != "load"
        },
        "additionalProperties": {**any_step, "required": ["uses"]},
    }
    load = {**defs["step.load"], "properties": {
        k: v for k, v in defs["step.load"]["properties"].items() if k not in ("uses", "needs")}}
    schema = top_level_schema(steps, load)
    schema["$defs"] = defs
    return schema
