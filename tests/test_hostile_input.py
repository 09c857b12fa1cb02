"""Hostile and odd input: one line naming the place and a fix, never a traceback or a hang.

Cases that hung once run the CLI in a subprocess with a timeout, so a regression fails
instead of hanging CI.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from conftest import Result, pipeline_text

STEPS = "capture: {uses: trace}\nonnx: {opset: 17}"
TIMEOUT = 20


def check_error(result, code: int, *must_contain: str) -> str:
    assert result.code == code, result
    assert "Traceback" not in result.err + result.out, result.err
    lines = [ln for ln in result.err.strip().splitlines() if ln.strip()]
    error = next((ln for ln in lines if "error:" in ln), "")
    assert error and "fix:" in error, result.err
    for text in must_contain:
        assert text in error, (text, error)
    return error


def _limit_memory() -> None:  # a regression must fail, not take the machine with it
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def bounded(ws, *args: str):
    """The CLI in a subprocess that must finish within TIMEOUT seconds."""
    try:
        proc = subprocess.run([sys.executable, "-m", "qntz", *map(str, args)], cwd=ws.root,
                              capture_output=True, text=True, timeout=TIMEOUT,
                              preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"qntz {' '.join(map(str, args))} did not finish in {TIMEOUT}s")
    return Result(proc.returncode, proc.stdout, proc.stderr)


def with_data(path: str, kind: str = "npy") -> str:
    extra = f"data:\n  calib: {{from: {kind}, path: {path}}}\n"
    return pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}\nonnx: {}\n"
                         "int8: {uses: quantize, data: calib}", extra=extra)


# --- hangs -------------------------------------------------------------------------------

def test_alias_bomb_is_refused(ws):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = ws.pipeline("qntz: 1\nname: t\n" + "\n".join(f"x{ln}" for ln in lines) + "\n",
                       "bomb.yaml")
    check_error(bounded(ws, "validate", bomb), 2, "bomb.yaml", "100000")


def test_recursive_alias_is_refused(ws):
    ws.pipeline("qntz: 1\nname: t\nsteps: &s {a: *s}\n", "loop.yaml")
    check_error(bounded(ws, "validate", "loop.yaml"), 2, "loop.yaml:3")


@pytest.mark.parametrize("kind", ["npy", "npz", "images"])
def test_data_path_to_a_device_is_refused(ws, kind):
    ws.pipeline(with_data("/dev/zero", kind))
    check_error(bounded(ws, "status", "pipeline.yaml"), 2, "pipeline.yaml:11:", "/dev/zero",
                "folder of images" if kind == "images" else "regular file")


def test_data_path_to_a_fifo_is_refused(ws):
    os.mkfifo(ws.root / "calib.npy")
    ws.pipeline(with_data("calib.npy"))
    check_error(bounded(ws, "status", "pipeline.yaml"), 2, "pipeline.yaml:", "regular file")


def test_pipeline_file_that_is_a_fifo_is_refused(ws):
    os.mkfifo(ws.root / "fifo.yaml")
    check_error(bounded(ws, "validate", "fifo.yaml"), 2, "fifo.yaml", "regular file")


def test_billion_compare_samples_is_refused_before_running(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN",
                              STEPS + "\ncompare: {needs: [onnx], samples: 1000000000}"))
    check_error(bounded(ws, "run", "pipeline.yaml"), 2, "pipeline.yaml:", "samples", "10000")


@pytest.mark.parametrize("step", [
    "int8: {uses: quantize, samples: 100000000}",
    "compare: {needs: [onnx], iterations: 1000000000}",
])
def test_other_counts_are_capped(ws, step):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS + "\n" + step))
    check_error(ws.qntz("validate", "pipeline.yaml"), 2, "pipeline.yaml:", "maximum")


@pytest.mark.parametrize("shape, dynamic", [
    ("[batch, 100000000000]", "{batch: [1, 2, 4]}"),
    ("[batch, 3, 4096, 4096]", "{batch: [1, 2, 4]}"),
    ("[batch, 3, 16, 16]", "{batch: [1, 2, 10000000]}"),
])
def test_huge_generated_inputs_are_refused(ws, shape, dynamic):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS, shape=shape, dynamic=dynamic))
    check_error(ws.qntz("validate", "pipeline.yaml"), 2, "pipeline.yaml:", "input 'x'")


# --- tracebacks ---------------------------------------------------------------------------

def test_non_utf8_pipeline_file(ws):
    path = ws.root / "latin1.yaml"
    path.write_bytes(pipeline_text("models.clean:SmallCNN", STEPS).encode()
                     + "# caf\xe9\n".encode("latin-1"))
    check_error(ws.qntz("validate", path), 2, "latin1.yaml:13:", "UTF-8")


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting(ws, opening, closing):
    text = pipeline_text("models.clean:SmallCNN", STEPS).replace(
        "model:\n", f"deep: {opening * 800}1{closing * 800}\nmodel:\n")
    ws.pipeline(text)
    check_error(ws.qntz("validate", "pipeline.yaml"), 2, "pipeline.yaml:3:", "deep")


@pytest.mark.parametrize("key, shown", [
    ("1", "1"), ("null", "None"), ('"a\\0b"', "a\\x00b"), ("a" * 300, "a" * 64),
    ('"../../../victim"', "../../../victim"), (".hidden", ".hidden"), ('"a\\nb"', "a\\nb"),
    ('"x\\n"', "x\\n"), ('"caf\\u00e9"', "café"),
])
def test_unsafe_step_ids_point_at_the_key(ws, key, shown):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", f"{key}: {{uses: trace}}\nonnx: {{}}"))
    error = check_error(ws.qntz("validate", "pipeline.yaml"), 2, "pipeline.yaml:11:3",
                        "step id", shown)
    assert "A-Za-z0-9" in error


@pytest.mark.parametrize("name", ["'../x'", "'a/b'", "'" + "n" * 65 + "'", "'.x'", "1"])
def test_unsafe_pipeline_names(ws, name):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS).replace("name: t", f"name: {name}"))
    check_error(ws.qntz("validate", "pipeline.yaml"), 2, "pipeline.yaml:2:7", "name")


def test_long_ids_and_names_at_the_limit_are_fine(ws):
    text = pipeline_text("models.clean:SmallCNN", "c" * 64 + ": {uses: trace}\nonnx: {}")
    ws.pipeline(text.replace("name: t", "name: " + "n" * 64))
    result = ws.qntz("validate", "pipeline.yaml")
    assert result.code == 0, result


@pytest.mark.parametrize("factory", ["..models:x", ".:x", "models..clean:SmallCNN",
                                     "models.clean:SmallCNN.", "models.clean:", ":x",
                                     "models/clean:SmallCNN", "models.clean:Small-CNN"])
@pytest.mark.parametrize("command", ["validate", "status"])
def test_malformed_factory(ws, factory, command):
    ws.pipeline(pipeline_text(f"'{factory}'", STEPS))
    check_error(ws.qntz(command, "pipeline.yaml"), 2, "pipeline.yaml:4:", "factory")


def test_malformed_data_function(ws):
    extra = "data:\n  calib: {from: callable, function: '..data:batches'}\n"
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS, extra=extra))
    check_error(ws.qntz("status", "pipeline.yaml"), 2, "pipeline.yaml:11:", "function")


@pytest.mark.parametrize("bounds", ["[-.inf, .inf]", "[0, .inf]", "[.nan, 1.0]", "[0, .nan]"])
def test_infinite_or_nan_range(ws, bounds):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS).replace("[0.0, 1.0]", bounds))
    check_error(ws.qntz("status", "pipeline.yaml"), 2, "pipeline.yaml:9:", "finite")


@pytest.mark.parametrize("step", ["compare: {needs: [onnx], atol: .inf}",
                                  "compare: {needs: [onnx], rtol: .nan}"])
def test_non_finite_parameters(ws, step):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS + "\n" + step))
    check_error(ws.qntz("status", "pipeline.yaml"), 2, "pipeline.yaml:13:", "finite")


@pytest.mark.parametrize("kwargs", ["{1: 2}", "{when: 2024-01-01}", "{b: !!binary aGk=}",
                                    "{s: !!set {a}}", "{n: " + "9" * 5000 + "}"])
def test_values_that_are_not_plain_data(ws, kwargs):
    text = pipeline_text("models.clean:SmallCNN", STEPS).replace(
        "factory: models.clean:SmallCNN", f"factory: models.clean:SmallCNN\n  kwargs: {kwargs}")
    ws.pipeline(text)
    result = ws.qntz("status", "pipeline.yaml")
    if "2024" in kwargs:  # a date is read as the text it is
        assert result.code == 0, result
    else:
        check_error(result, 2, "pipeline.yaml:5:")


def test_unhashable_key(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS) + "? [a, b]\n: 1\n")
    check_error(ws.qntz("validate", "pipeline.yaml"), 2, "pipeline.yaml:13:")


def test_torchscript_that_is_not_a_zip(ws):
    (ws.root / "m.pt").write_bytes(b"not a zip file at all")
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS).replace(
        "factory: models.clean:SmallCNN", "torchscript: m.pt"))
    check_error(ws.qntz("run", "pipeline.yaml"), 1, "m.pt")


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04garbage"])
def test_garbage_weights(ws, content):
    (ws.root / "w.pt").write_bytes(content)
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS).replace(
        "factory: models.clean:SmallCNN", "factory: models.clean:SmallCNN\n  weights: w.pt"))
    check_error(ws.qntz("run", "pipeline.yaml"), 2, "w.pt")


def test_weights_that_are_not_a_state_dict(ws):
    import torch

    torch.save(torch.zeros(3), ws.root / "w.pt")
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS).replace(
        "factory: models.clean:SmallCNN", "factory: models.clean:SmallCNN\n  weights: w.pt"))
    check_error(ws.qntz("run", "pipeline.yaml"), 1, "w.pt")


@pytest.mark.parametrize("name", ["weights", "torchscript", "onnx"])
def test_model_files_must_be_regular_files(ws, name):
    source = "factory: models.clean:SmallCNN\n  " if name == "weights" else ""
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS).replace(
        "factory: models.clean:SmallCNN", f"{source}{name}: /dev/zero"))
    check_error(ws.qntz("validate", "pipeline.yaml"), 2, "pipeline.yaml:", "regular file")


def test_image_folder_that_is_the_whole_disk(ws):
    ws.pipeline(with_data("/", "images"))  # hashed when int8's key is computed, during run
    check_error(bounded(ws, "run", "pipeline.yaml"), 2, "pipeline.yaml:11:", "100000")


def test_fifo_among_images_is_skipped(ws):
    from PIL import Image

    (ws.root / "images").mkdir()
    Image.new("RGB", (8, 8)).save(ws.root / "images" / "a.png")
    os.mkfifo(ws.root / "images" / "b.png")
    from qntz.core.images import image_files

    assert image_files(ws.root / "images", "here") == [ws.root / "images" / "a.png"]


def test_raw_control_character_names_line_and_column(ws):
    ws.pipeline(pipeline_text("models.clean:SmallCNN", STEPS).replace("name: t", "name: t\0"))
    check_error(ws.qntz("validate", "pipeline.yaml"), 2, "pipeline.yaml:2:8", "U+0000")


def test_merge_keys_work_and_own_keys_override(ws):
    text = pipeline_text("models.clean:SmallCNN", "capture: {uses: trace}\n"
                         "onnx: {<<: *base, opset: 18}")
    ws.pipeline(text.replace("steps:", "x-base: &base {opset: 17}\nsteps:"))
    from qntz.core.yamlfile import load_yaml

    doc, _ = load_yaml(ws.root / "pipeline.yaml")
    assert doc["steps"]["onnx"] == {"opset": 18}
