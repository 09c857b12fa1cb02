"""The accuracy budget: keep the fewest, most sensitive nodes float until `max_drop` is met.

Every quantized node is a candidate. Its sensitivity is measured end to end: the quantized
model with only that node put back in float (a graph edit, no re-quantization), scored by
the mean cosine of the output against the float model. Cosine, not top-1, ranks: on a few
dozen calibration rows most single nodes change no arg-max, and a ranking of ties keeps the
wrong nodes. Then a binary search over how many of the top-ranked nodes stay float finds
the fewest that meet the budget, each point built and verified for real; fewer float nodes
is the faster model. Every point explored is returned, for `quantize.json`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qntz.core.step import StepContext

LATENCY_RUNS = 10


def _with_float_node(quantized: Any, reference: Any, name: str) -> bytes | None:
    """`quantized` with node `name` reading its float inputs again (None if it cannot)."""
    import onnx

    original = next((n for n in reference.graph.node if n.name == name), None)
    if original is None:
        return None
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    node = next((n for n in model.graph.node if n.name == name), None)
    if node is None:
        return None
    present = {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    present |= {o for n in model.graph.node for o in n.output}
    weights = {i.name: i for i in reference.graph.initializer}
    for index, tensor in enumerate(original.input[:len(node.input)]):
        if tensor in weights and tensor not in present:
            model.graph.initializer.append(weights[tensor])
            present.add(tensor)
        if tensor and tensor not in present:
            return None
        node.input[index] = tensor
    return model.SerializeToString()


def sensitivities(quantized: Path, reference: Path, feeds: list, expected: list,
                  nodes: list[str], report: Callable[[str], None]) -> list[tuple[float, str]]:
    """(cosine drop removed by keeping the node float, node), most sensitive first."""
    import onnx

    from qntz.quantize.agreement import measure_outputs
    from qntz.runtime.ortrun import session

    model, float_model = onnx.load(str(quantized)), onnx.load(str(reference))
    base = measure_outputs(_outputs(session(quantized), feeds), expected)["cosine"]["drop"]
    gains = []
    for index, name in enumerate(nodes):
        report(f"sensitivity {index + 1}/{len(nodes)}")
        variant = _with_float_node(model, float_model, name)
        if variant is None:
            gains.append((0.0, name))
            continue
        got = _outputs(session(variant), feeds)
        gains.append((base - measure_outputs(got, expected)["cosine"]["drop"], name))
    return sorted(gains, key=lambda pair: (-pair[0], nodes.index(pair[1])))


def _outputs(sess: Any, feeds: list) -> list[np.ndarray]:
    from qntz.runtime.ortrun import run

    return [run(sess, feed)[0] for feed in feeds]


def latency_ms(path: Path, feed: dict[str, np.ndarray]) -> float:
    """Median latency of one batch on ONNX Runtime (a wall-clock figure: volatile)."""
    import time

    from qntz.runtime.ortrun import run, session

    sess = session(path)
    run(sess, feed)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        run(sess, feed)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


def search(ctx: StepContext, build: Callable, prepared: Path, quantized: Path, feeds: list,
           intended: list[str]) -> tuple[list[str], Path, dict, dict, list[dict], list[float]]:
    """The fewest top-ranked nodes kept float that meet `max_drop`: (kept, model, coverage,
    accuracy, the points explored in order, their latencies)."""
    from qntz.quantize.agreement import measure, outputs

    metric, budget = ctx.params["metric"], ctx.params["max_drop"]
    expected = outputs(prepared, feeds)
    ranked = [n for _, n in sensitivities(quantized, prepared, feeds, expected, intended,
                                          ctx.report)]
    explored: list[dict] = []
    latencies: list[float] = []
    best = None
    low, high = 1, len(ranked) - 1  # all float would not be int8 at all
    while low <= high:
        count = (low + high) // 2
        ctx.report(f"budget search: {count} of {len(ranked)} nodes float")
        path, coverage = build(ranked[:count])
        result = measure(prepared, path, feeds, expected)
        explored.append({"float_nodes": count, "top1": round(result["top1"]["agreement"], 6),
                         "cosine": round(result["cosine"]["mean"], 6),
                         "drop": round(result[metric]["drop"], 6)})
        latencies.append(latency_ms(path, feeds[0]))
        if result[metric]["drop"] <= budget:
            best, high = (ranked[:count], path, coverage, result), count - 1
        else:
            low = count + 1
    if best is None:
        tried = ", ".join(f"{p['drop']:.4g} with {p['float_nodes']} float" for p in explored)
        raise ctx.fail(f"INT8 cannot meet max_drop {budget} in {metric} on the calibration "
                       f"data, even with {len(ranked) - 1} of {len(ranked)} nodes float "
                       f"(explored: {tried})",
                       hint="raise max_drop, add calibration data, or use fp16")
    return (*best, explored, latencies)
