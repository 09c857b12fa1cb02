"""The quickstart's work as a plain script: the same library calls, without qntz.

The baseline for `runner_overhead.py`: load and seed the model, trace it, export ONNX
(opset 17, dynamic batch), simplify with onnxsim and check it on 3 inputs, quantize to INT8
(pre-processing, static Q/DQ calibrated on 16 batches) and to FP16, then compare the five
candidates with eager PyTorch on 8 inputs and the three ONNX ones on 64 hold-out batches,
timing each with 3 + 20 runs.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxsim
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "pipelines"))
warnings.simplefilter("ignore")

from models.tiny_cnn import TinyCNN  # noqa: E402
from models.tiny_data import calibration, holdout  # noqa: E402


def ort_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def timed(call, n: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def quantized(out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.float16 import convert_float_to_float16

    class Reader:
        def __init__(self) -> None:
            self.batches = iter({"x": b} for b in calibration())

        def get_next(self):
            return next(self.batches, None)

    quant_pre_process(str(out / "b.onnx"), str(out / "pre.onnx"))
    quantize_static(str(out / "pre.onnx"), str(out / "int8.onnx"), Reader(), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    onnx.save(convert_float_to_float16(onnx.load(str(out / "b.onnx")), keep_io_types=True),
              str(out / "fp16.onnx"))


def main() -> None:
    out = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    model = TinyCNN(num_classes=10).eval()
    rng = np.random.default_rng(0)
    example = torch.from_numpy(rng.uniform(0, 1, (4, 3, 64, 64)).astype(np.float32))
    traced = torch.jit.trace(model, (example,))
    traced.save(str(out / "model.pt"))
    torch.onnx.export(torch.jit.load(str(out / "model.pt")), (example,), str(out / "a.onnx"),
                      dynamo=False, opset_version=17, input_names=["x"], output_names=["output"],
                      dynamic_axes={"x": {0: "batch"}})
    onnx.checker.check_model(str(out / "a.onnx"))
    simplified, _ = onnxsim.simplify(onnx.load(str(out / "a.onnx")), check_n=0)
    onnx.save(simplified, str(out / "b.onnx"))
    quantized(out)
    a, b = ort_session(out / "a.onnx"), ort_session(out / "b.onnx")
    for batch in (1, 16, 8):
        feed = {"x": rng.uniform(0, 1, (batch, 3, 64, 64)).astype(np.float32)}
        assert np.allclose(a.run(None, feed)[0], b.run(None, feed)[0], 1e-4, 1e-5)
    batches = (1, 1, 1, 1, 16, 16, 8, 8)
    feeds = [rng.uniform(0, 1, (b, 3, 64, 64)).astype(np.float32) for b in batches]
    loaded = torch.jit.load(str(out / "model.pt"))
    with torch.inference_mode():
        want = [model(torch.from_numpy(f)).numpy() for f in feeds]
        for run in (lambda f: loaded(torch.from_numpy(f)).numpy(),
                    lambda f: a.run(None, {"x": f})[0], lambda f: b.run(None, {"x": f})[0]):
            for f, w in zip(feeds, want):
                assert np.allclose(run(f), w, 1e-3, 1e-4)
        extra = [ort_session(out / "int8.onnx"), ort_session(out / "fp16.onnx")]
        for f, w in zip(feeds, want):
            for sess in extra:
                assert (sess.run(None, {"x": f})[0].argmax(1) == w.argmax(1)).mean() >= 0.5
        batches = list(holdout())
        labels = [model(torch.from_numpy(x)).numpy().argmax(1) for x in batches]
        for sess in (b, *extra):
            agree = [(sess.run(None, {"x": x})[0].argmax(1) == y).mean()
                     for x, y in zip(batches, labels)]
            assert np.mean(agree) >= 0.5
        timing = feeds[-1][:4]
        tensor = torch.from_numpy(timing)
        for run in (lambda: model(tensor), lambda: loaded(tensor),
                    lambda: a.run(None, {"x": timing}), lambda: b.run(None, {"x": timing})):
            timed(run)


if __name__ == "__main__":
    main()
