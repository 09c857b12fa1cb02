"""`simplify`: constant folding and graph cleanup with onnxsim (or onnxslim), then checked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.capture.onnx_export import describe_onnx
from qntz.core.errors import first_line
from qntz.core.step import Step, StepContext

if TYPE_CHECKING:
    from qntz.core.spec import Pipeline, StepSpec


class Simplify(Step):
    kind = "simplify"
    version = 1
    help = "simplify the ONNX graph, then check it against its input on random data"
    params = {
        "backend": {"enum": ["onnxsim", "onnxslim"], "default": "onnxsim"},
        "check": {"type": "integer", "minimum": 0, "default": 3,
                  "description": "random inputs on which the result must match its input"},
        "atol": {"type": "number", "minimum": 0, "default": 1e-5},
        "rtol": {"type": "number", "minimum": 0, "default": 1e-4},
    }
    libraries = ("onnx", "onnxruntime", "numpy", "protobuf", "ml_dtypes", "onnxsim", "onnx_ir",
                 "torch", "onnxslim")  # onnxsim imports onnx_ir and torch
    consumes = ("onnx",)
    provides = ("onnx",)

    @classmethod
    def describe(cls, summary: dict[str, Any]) -> str:
        return describe_onnx(summary)

    @classmethod
    def key_extras(cls, step: StepSpec, pipeline: Pipeline, digests: Any) -> dict[str, Any]:
        from qntz.runtime.onnx_files import threshold_key

        return threshold_key()  # another threshold writes other files

    def run(self, ctx: StepContext) -> dict[str, Any]:
        from qntz.core.scratch import scratch
        from qntz.runtime.onnx_files import save_onnx
        from qntz.runtime.onnxinfo import describe

        source = ctx.input_providing("onnx").file("model.onnx")
        backend = ctx.params["backend"]
        try:
            with scratch(ctx, "simplify-"):  # onnxsim's temporary copy of a large model
                simplified = _simplify(source, backend)
        except Exception as exc:
            raise ctx.fail(f"{backend} failed: {first_line(exc)}",
                           hint="try `backend: onnxslim`, or drop this step") from exc
        target = ctx.out / "model.onnx"
        save_onnx(simplified, target)
        worst = _check(ctx, source, target)
        before = describe(source)
        after = describe(target)
        return {"backend": backend, "nodes_before": before["nodes"], "nodes": after["nodes"],
                "ops": after["ops"], "bytes": after["bytes"], "check_max_abs": worst,
                "inputs": after["inputs"], "outputs": after["outputs"], "opset": after["opset"]}


def _simplify(source: Path, backend: str) -> Any:
    """The simplified model, in memory with its tensors. onnxsim gets a model with external
    data by its path: it then works on the file instead of a serialized copy (which
    protobuf refuses past 2 GB). onnxslim gets the model in memory."""
    import onnx

    from qntz.runtime.onnx_files import external_files, load_onnx

    if backend == "onnxslim":  # by path it would read the data with onnx.load (see load_onnx)
        import onnxslim

        return onnxslim.slim(load_onnx(source))
    by_path = bool(external_files(source))
    model = str(source) if by_path else onnx.load(str(source))
    import onnxsim

    simplified, _ = onnxsim.simplify(model, check_n=0)  # by path: read back with its data
    return simplified


SCALE = 1e-3  # compare's `auto` rule: an error within this share of the output's RMS


def _agree(a: Any, b: Any, atol: float, rtol: float) -> bool:
    """allclose, or (an ill-conditioned input, where float32 rounding itself moves the
    result: UNet1D on a constant input) a max error within SCALE of the output's RMS."""
    import numpy as np

    if a.shape != b.shape:
        return False
    if np.allclose(b, a, atol, rtol, equal_nan=True) or not a.size:
        return True
    if not np.issubdtype(a.dtype, np.floating):
        return False
    wide = a.astype(np.float64)
    rms = float(np.sqrt(np.mean(np.square(wide))))
    return bool(np.isfinite(b).all()) and float(np.max(np.abs(wide - b))) <= SCALE * rms


def _check(ctx: StepContext, before: Any, after: Any) -> float:
    """Largest difference between the graphs on random inputs of several sizes."""
    import numpy as np

    from qntz.core.inputs import evaluation_samples

    runs = ctx.params["check"]
    if not runs:
        return 0.0
    samples = evaluation_samples(ctx.pipeline.inputs, 1, seed=7)[:runs]
    wanted = _outputs(before, samples)  # one session at a time: each holds a model's weights
    got = _outputs(after, samples)
    worst = 0.0
    for (label, _), old, new in zip(samples, wanted, got):
        for a, b in zip(old, new):
            if not _agree(a, b, ctx.params["atol"], ctx.params["rtol"]):
                diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.shape == b.shape \
                    else float("inf")
                raise ctx.fail(f"the simplified model differs from its input on {label} "
                               f"(max abs {diff:.3g}, beyond atol {ctx.params['atol']:g} / rtol "
                               f"{ctx.params['rtol']:g} and {SCALE:g} of the output's RMS)",
                               hint="try the other backend, or drop this step")
            if a.size:
                worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    return worst


def _outputs(model: Any, samples: list[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
    """The model's outputs on every sample, from one session dropped before returning."""
    from qntz.runtime.ortrun import run, session

    sess = session(model)
    return [run(sess, feed) for _, feed in samples]
