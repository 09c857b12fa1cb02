"""Bad pipelines: exit 2, one line naming the file and place and a fix, no traceback."""

from __future__ import annotations

import re

import pytest

from conftest import pipeline_text

GOOD_STEPS = """
capture: {uses: trace}
onnx: {opset: 17}
"""


def check_one_line_error(result, *must_contain: str) -> None:
    assert result.code == 2, result
    lines = [ln for ln in result.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err + result.out
    assert "fix:" in lines[0], lines[0]
    for text in must_contain:
        assert text in lines[0], (text, lines[0])


def test_good_pipeline_validates(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", GOOD_STEPS))
    result = ws.qntz("validate", "pipeline.yaml")
    assert result.code == 0, result
    assert "load → capture → onnx" in result.out


def test_yaml_syntax_error_names_line_and_column(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", GOOD_STEPS) + "  bad: [1, 2\n")
    check_one_line_error(ws.qntz("validate", "pipeline.yaml"), "pipeline.yaml:", "YAML syntax")


def test_unknown_kind_says_did_you_mean(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trcae}"))
    result = ws.qntz("validate", "pipeline.yaml")
    check_one_line_error(result, "unknown step kind 'trcae'", "did you mean 'trace'")
    assert re.search(r"pipeline\.yaml:\d+:\d+", result.err)


def test_unknown_kind_as_step_id(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "simplfy: {}"))
    check_one_line_error(ws.qntz("validate", "pipeline.yaml"), "did you mean 'simplify'")


def test_cycle_is_named(ws):
    steps = """
    capture: {uses: trace, needs: [onnx]}
    onnx: {needs: [capture]}
    """
    check_one_line_error(ws.qntz("validate", ws.pipeline(
        pipeline_text("models.clean:SmallCNN", steps))), "cycle", "capture", "onnx")


def test_needs_missing_step(ws):
    steps = """
    capture: {uses: trace}
    onnx: {needs: [captur]}
    """
    check_one_line_error(ws.qntz("validate", ws.pipeline(
        pipeline_text("models.clean:SmallCNN", steps))), "needs 'captur'", "did you mean 'capture'")


def test_wrong_parameter_type_points_at_the_value(ws):
    path = ws.pipeline(pipeline_text("models.clean:SmallCNN", """
    capture: {uses: trace}
    onnx: {opset: seventeen}
    """))
    result = ws.qntz("validate", path)
    check_one_line_error(result, "'opset' must be integer", "step 'onnx'")
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if "seventeen" in ln)
    assert f"pipeline.yaml:{line}:" in result.err


def test_unknown_parameter(ws):
    check_one_line_error(ws.qntz("validate", ws.pipeline(pipeline_text(
        "models.clean:SmallCNN", "capture: {uses: trace}\nonnx: {opsett: 17}"))),
        "unknown parameter 'opsett'", "did you mean 'opset'")


def test_missing_weights_file(ws):
    text = pipeline_text("models.clean:SmallCNN", GOOD_STEPS).replace(
        "factory: models.clean:SmallCNN", "factory: models.clean:SmallCNN\n  weights: w/none.pt")
    check_one_line_error(ws.qntz("validate", ws.pipeline(text)), "weights file not found",
                         "none.pt")


def test_factory_attribute_not_found(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCN", GOOD_STEPS))
    result = ws.qntz("run", "pipeline.yaml")
    check_one_line_error(result, "'SmallCN' not found", "did you mean 'SmallCNN'")


def test_factory_module_not_found(ws):
    ws.pipeline(pipeline_text("models.nothere:Net", GOOD_STEPS))
    check_one_line_error(ws.qntz("status", "pipeline.yaml"), "models.nothere", "not found")


def test_bad_dtype(ws):
    text = pipeline_text("models.clean:SmallCNN", GOOD_STEPS).replace(
        "range: [0.0, 1.0]", "range: [0.0, 1.0]\n    dtype: float33")
    check_one_line_error(ws.qntz("validate", ws.pipeline(text)), "'float33'",
                         "did you mean 'float32'")


def test_named_dimension_without_range(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", GOOD_STEPS,
                              shape="[batch, 3, size, size]"))
    check_one_line_error(ws.qntz("validate", "pipeline.yaml"),
                         "named dimension 'size' has no range", "dynamic: {size:")


def test_missing_pipeline_file(ws):
    check_one_line_error(ws.qntz("validate", "nope.yaml"), "not found")


def test_duplicate_key(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "onnx: {}\nonnx: {}"))
    check_one_line_error(ws.qntz("validate", "pipeline.yaml"), "duplicate key 'onnx'")


@pytest.mark.parametrize("command", ["run", "status", "dag"])
def test_every_command_validates_first(ws, command):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", "capture: {uses: trcae}"))
    check_one_line_error(ws.qntz(command, "pipeline.yaml"), "did you mean 'trace'")


def test_step_consuming_what_nothing_provides(ws):
    check_one_line_error(ws.qntz("validate", ws.pipeline(pipeline_text(
        "models.clean:SmallCNN", "simplify: {}"))), "consumes onnx")


def test_unknown_step_on_command_line(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", GOOD_STEPS))
    check_one_line_error(ws.qntz("run", "pipeline.yaml", "--step", "onx"), "did you mean 'onnx'")
