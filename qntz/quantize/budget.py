"""The accuracy budget: the most-int8 model that meets `max_drop`, sensitive nodes kept float.

Candidates are every node the quantizer touched, not only the weighted ones: an Add or a
pooling left quantized keeps its error however many convolutions stay float. A candidate is
a node together with the activations reading it (Relu, Clip): ONNX Runtime folds those into
the node's output range, and a node kept float while its activation stays quantized has its
raw, wide output quantized, which is worse than quantizing the node. Each candidate's
sensitivity is measured end to end: the model rebuilt with only that candidate float (the
calibrated ranges are cached, so a rebuild does not calibrate again), scored by the mean
cosine against the float model on the calibration data (beyond MOST_UNITS candidates,
neighbours in graph order are ranked together). Every candidate is ranked; those
whose float alone does not lower the error come last. Cosine, not top-1, ranks: on a few
dozen rows most single nodes change no arg-max. Then the count of top-ranked candidates kept
float is searched: 1, 2, 4, ... until a count meets the budget, then bisection between the
last miss and that count; every point is built and measured for real (top-1 is not monotonic
in the count). Of the points that meet the budget, the one with the fewest float nodes is
kept: the most int8, and a choice that does not depend on the machine's load (choosing by
measured latency would make the artifact vary from run to run). Every point explored is
returned for `quantize.json`, and timed (interleaved rounds) into the volatile
`budget_latency.json`. When no point meets the budget, the same model in FP16 is measured
on the same rows: a budget FP16 misses too is below what any reduced precision keeps there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qntz.core.step import StepContext

LATENCY_RUNS = 10
MOST_UNITS = 64  # candidates ranked one by one; more are ranked in runs of neighbours
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh")


def candidates(reference: Any, quantized: Any) -> list[list[str]]:
    """Nodes of `reference` that read a DequantizeLinear in `quantized`, each with the
    activations that read its output."""
    producers = {o: n.op_type for n in quantized.graph.node for o in n.output}
    touched = {n.name for n in quantized.graph.node
               if any(producers.get(i) == "DequantizeLinear" for i in n.input)}
    readers: dict[str, list[Any]] = {}
    for node in reference.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return [[node.name, *(r.name for r in readers.get(node.output[0], [])
                          if r.op_type in ACTIVATIONS)]
            for node in reference.graph.node
            if node.name in touched and node.op_type not in ACTIVATIONS]


def grouped(units: list[list[str]], most: int = MOST_UNITS) -> list[list[str]]:
    """At most `most` units: neighbours in graph order merged into runs of equal length (a
    diffusion UNet has hundreds of candidates, and each costs a build to rank)."""
    size = -(-len(units) // most)
    return [[name for unit in units[i:i + size] for name in unit]
            for i in range(0, len(units), size)] if size > 1 else units


def sensitivities(build: Callable, score: Callable[[Path], float], units: list[list[str]],
                  report: Callable[[str], None]) -> list[list[str]]:
    """Every unit, those whose float alone lowers the error (`score`) the most first. Some
    raise it (a float node's neighbours lose the integer kernels they fused with), so they
    come last."""
    errors = []
    for index, unit in enumerate(units):
        report(f"sensitivity {index + 1}/{len(units)}")
        path, _ = build(unit)
        errors.append(score(path))
        path.unlink()
    return [units[i] for i in sorted(range(len(units)), key=lambda i: (errors[i], i))]


def latencies_ms(paths: list[Path], feed: dict[str, np.ndarray]) -> list[float]:
    """Median latency of one batch per model on ONNX Runtime, the models timed in turn
    within each round (wall-clock figures: volatile)."""
    import time

    from qntz.runtime.ortrun import run, session

    sessions = [session(p) for p in paths]
    for sess in sessions:
        run(sess, feed)
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(LATENCY_RUNS):
        for sess, spent in zip(sessions, times):
            start = time.perf_counter()
            run(sess, feed)
            spent.append(time.perf_counter() - start)
    return [round(float(np.median(t)) * 1000, 3) for t in times]


def counts_to_try(top: int) -> list[int]:
    """1, 2, 4, ... up to `top` (the most candidates that may stay float)."""
    counts = [1 << i for i in range(top.bit_length()) if 1 << i < top]
    return [*counts, top] if top >= 1 else []


def search(ctx: StepContext, build: Callable, prepared: Path, quantized: Path, feeds: list,
           intended: list[str]
           ) -> tuple[list[str], Path, dict, dict, list[dict], list[float], list[str]]:
    """The point meeting `max_drop` with the fewest float nodes: (kept, model, coverage,
    accuracy, the points explored in order, their latencies, warnings)."""
    import onnx

    from qntz.quantize.agreement import measure, outputs

    metric, budget = ctx.params["metric"], ctx.params["max_drop"]
    expected = outputs(prepared, feeds)
    units = grouped(candidates(onnx.load(str(prepared), load_external_data=False),
                               onnx.load(str(quantized), load_external_data=False)))
    score = lambda p: measure(prepared, p, feeds, expected)["cosine"]["drop"]  # noqa: E731
    ranked = sensitivities(build, score, units, ctx.report)
    top = _most_float(ranked, intended)
    points: dict[int, tuple] = {}

    def meets(count: int) -> bool:
        if count not in points:
            ctx.report(f"budget search: {count} of {len(ranked)} candidates float")
            keep = [name for unit in ranked[:count] for name in unit]
            path, coverage = build(keep)
            points[count] = (keep, path, coverage, measure(prepared, path, feeds, expected))
        return points[count][3][metric]["drop"] <= budget

    miss, hit = 0, None
    for count in counts_to_try(top):
        if meets(count):
            hit = count
            break
        miss = count
    if hit is None:
        tried = ", ".join(f"{points[c][3][metric]['drop']:.4g} with {len(points[c][0])} "
                          "float" for c in points)
        floor = _fp16_drop(ctx, prepared, feeds, expected, metric)
        raise ctx.fail(f"INT8 cannot meet max_drop {budget} in {metric} on the calibration "
                       f"data, even with {top} of {len(units)} quantized nodes float "
                       f"(explored: {tried})" + ("" if floor is None else
                                                f"; the same model in FP16 drops {floor:.4g}"),
                       hint=_hint(metric, budget, sum(len(e) for e in expected), floor),
                       details={"precision": "int8", "budget_search": _explored(
                           points, metric, None)})
    while hit - miss > 1:
        middle = (hit + miss) // 2
        hit, miss = (middle, miss) if meets(middle) else (hit, middle)
    chosen = _chosen(points, metric, budget, feeds[0])
    if hit <= len(ranked) // 2:
        return (*chosen, [])
    return (*chosen, [_mostly_float(ctx, hit, len(ranked),
                                    _fp16_drop(ctx, prepared, feeds, expected, metric))])


def _mostly_float(ctx: StepContext, hit: int, total: int, floor: float | None) -> str:
    """The warning for a budget met only with most candidates float: such a model keeps
    Q/DQ around float islands and may run slower than the float model."""
    return (f"max_drop {ctx.params['max_drop']} is met only with {hit} of {total} candidates "
            "float: little of the model is int8 and it may run no faster than float (see "
            "compare's speed-up)" + ("" if floor is None else f"; FP16 drops {floor:.4g} in "
                                     f"{ctx.params['metric']} on the same rows"))


def _most_float(ranked: list[list[str]], intended: list[str]) -> int:
    """How many of the top candidates may stay float with some intended node still int8
    (with none, the model would not be int8 at all)."""
    float_nodes: set[str] = set()
    for count, unit in enumerate(ranked):
        float_nodes.update(unit)
        if set(intended) <= float_nodes:
            return count
    return len(ranked)


def _fp16_drop(ctx: StepContext, prepared: Path, feeds: list, expected: list,
               metric: str) -> float | None:
    """`metric`'s drop of the model in FP16 on the same rows, the floor of reduced
    precision; None when the model has no FP16 form ONNX Runtime runs."""
    from qntz.quantize.agreement import measure
    from qntz.quantize.ort_tools import convert_fp16

    ctx.report("measuring FP16 on the calibration data")
    half = prepared.with_name("fp16-floor.onnx")
    try:
        convert_fp16(prepared, half, {"exclude_op_types": [], "exclude_nodes": [],
                                      "keep_io_types": True})
        return measure(prepared, half, feeds, expected)[metric]["drop"]
    except Exception:  # only a hint depends on it
        return None


def _hint(metric: str, budget: float, rows: int, floor: float | None) -> str:
    if floor is not None and floor > budget:
        return (f"max_drop {budget} is below what FP16 keeps on these {rows} rows"
                + (" (their top two float scores nearly tie, and any rounding changes "
                   "them)" if metric == "top1" else "") +
                f": raise max_drop above {floor:.4g}, or keep this model float")
    if metric == "top1" and budget < 1 / rows:
        return (f"on {rows} calibration rows one changed arg-max is a drop of {1 / rows:.4g}, "
                f"so max_drop {budget} allows none: add calibration data (samples) or raise "
                "max_drop")
    return "raise max_drop, add calibration data, or use fp16"


def _chosen(points: dict[int, tuple], metric: str, budget: float,
            feed: dict[str, np.ndarray]) -> tuple:
    times = dict(zip(points, latencies_ms([p[1] for p in points.values()], feed)))
    meeting = [c for c in points if points[c][3][metric]["drop"] <= budget]
    best = min(meeting, key=lambda c: (len(points[c][0]), c))
    return (*points[best], _explored(points, metric, best), list(times.values()))


def _explored(points: dict[int, tuple], metric: str, best: int | None) -> list[dict]:
    """The budget points explored, in order, as the summary (and a failure) keeps them."""
    return [{"float_nodes": len(keep), "candidates_float": count,
             "top1": _rounded(result["top1"]["agreement"]),
             "cosine": round(result["cosine"]["mean"], 6),
             "drop": round(result[metric]["drop"], 6), "chosen": count == best}
            for count, (keep, _, _, result) in points.items()]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
