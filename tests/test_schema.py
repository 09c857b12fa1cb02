"""The published JSON Schema agrees with what qntz validates."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from conftest import REPO
from qntz.core.errors import PipelineError
from qntz.core.pipeline import load_pipeline
from qntz.core.schema import full_schema

PUBLISHED = REPO / "schemas" / "pipeline.schema.json"
EXAMPLES = sorted((REPO / "pipelines").glob("*.yaml"))


def test_published_schema_is_up_to_date():
    assert json.loads(PUBLISHED.read_text()) == full_schema(), (
        "run `qntz schema > schemas/pipeline.schema.json`")


def test_published_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(full_schema())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_both(path):
    load_pipeline(path)
    jsonschema.validate(yaml.safe_load(path.read_text()), full_schema())


BAD_STEPS = [
    {"onnx": {"opset": "17"}},
    {"onnx": {"opsett": 17}},
    {"capture": {"uses": "trace", "strict": "yes"}},
    {"x": {"uses": "simplify", "backend": "onnxsimm"}},
    {"x": {"opset": 17}},  # not a kind, and no `uses`
]


@pytest.mark.parametrize("steps", BAD_STEPS, ids=lambda s: json.dumps(s))
def test_bad_steps_fail_both(tmp_path, steps):
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["steps"] = {"capture": {"uses": "trace"}, **steps}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, full_schema())
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PipelineError):
        load_pipeline(path)


def test_an_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads `1e-4` as text; a user writing `max_drop: 1e-4` means a number."""
    path = tmp_path / "p.yaml"
    path.write_text("qntz: 1\nname: t\nmodel: {factory: m:f}\n"
                    "inputs: {x: {shape: [1, 4]}}\nsteps:\n  onnx: {}\n"
                    "  int8: {uses: quantize, max_drop: 1e-4}\n")
    assert load_pipeline(path).steps["int8"].params["max_drop"] == 1e-4
