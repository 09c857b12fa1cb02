"""The quickstart's work as a plain script: the same library calls, without qntz.

The baseline for `runner_overhead.py`: load and seed the model, trace it, export ONNX
(opset 17, dynamic batch), simplify with onnxsim and check it on 3 inputs, then compare the
three candidates with eager PyTorch on the same 8 inputs and time each with 3 + 20 runs.
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
        timing = feeds[-1][:4]
        tensor = torch.from_numpy(timing)
        for run in (lambda: model(tensor), lambda: loaded(tensor),
                    lambda: a.run(None, {"x": timing}), lambda: b.run(None, {"x": timing})):
            timed(run)


if __name__ == "__main__":
    main()
