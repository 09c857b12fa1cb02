"""Why the INT8 step writes residuals as Sum + LayerNormalization (qntz/quantize/fusion.py).

    .venv/bin/python benchmarks/skip_layernorm.py [--hidden 64 256 768 1024 1280]

Times ONNX Runtime's fused residual + LayerNorm (Add + LayerNormalization, which ONNX
Runtime fuses into SkipLayerNormalization) against Sum + LayerNormalization (left alone),
same data, interleaved rounds on the CPU provider, and prints the median ratio per hidden
size. The step's fixed rule holds while every ratio is above 1; re-run it on a new ONNX
Runtime release.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def session(op: str, hidden: int, shape: list[int]) -> ort.InferenceSession:
    gamma = numpy_helper.from_array(np.ones(hidden, np.float32), "gamma")
    beta = numpy_helper.from_array(np.zeros(hidden, np.float32), "beta")
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "skip"], ["total"]),
         helper.make_node("LayerNormalization", ["total", "gamma", "beta"], ["y"], axis=-1)],
        "probe", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                  for n in ("x", "skip")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [gamma, beta])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def ratio(hidden: int, rounds: int, runs: int) -> float:
    shape = [4, 64, hidden]
    feed = {n: np.random.default_rng(0).random(shape, np.float32) for n in ("x", "skip")}
    fused, summed = session("Add", hidden, shape), session("Sum", hidden, shape)
    for sess in (fused, summed):
        for _ in range(10):
            sess.run(None, feed)
    ratios = []
    for _ in range(rounds):
        times = []
        for sess in (fused, summed):
            start = time.perf_counter()
            for _ in range(runs):
                sess.run(None, feed)
            times.append(time.perf_counter() - start)
        ratios.append(times[0] / times[1])
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 768, 1024, 1280])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"ONNX Runtime {ort.__version__}, CPU: SkipLayerNormalization time / "
          "(Sum + LayerNormalization) time, median of interleaved rounds")
    for hidden in args.hidden:
        print(f"  hidden {hidden:>5}: {ratio(hidden, args.rounds, args.runs):.2f}x")


if __name__ == "__main__":
    main()
