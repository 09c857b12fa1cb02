"""The INT8 half of `quantize`: calibrate, quantize, verify, measure, and meet the budget."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qntz.core.errors import PipelineError, first_line
from qntz.core.step import StepContext
from qntz.quantize.actions import node_actions
from qntz.quantize.agreement import measure
from qntz.quantize.bars import compare_bars

AUTO_TOP1 = 0.85  # `min_top1: auto` on the user's data


def quantize_step(ctx: StepContext, source: Path) -> dict[str, Any]:
    import onnx

    from qntz.core.data import load_dataset
    from qntz.core.scratch import scratch
    from qntz.quantize.ort_tools import preprocess
    from qntz.runtime.onnx_files import install_onnx
    from qntz.runtime.onnxinfo import describe

    params = ctx.params
    feeds = load_dataset(ctx.pipeline, params["data"], params["samples"])
    with scratch(ctx, "int8-") as work:
        prepared, note = work / "prepared.onnx", "none"
        if params["preprocess"]:
            ctx.report("pre-processing")  # which reads the source: checked there
            note = preprocess(source, prepared, work, lambda graph: _float32_graph(ctx, graph))
        else:
            _float32_graph(ctx, onnx.load(str(source), load_external_data=False))
            install_onnx(source, prepared)  # the data file renamed with it
        recipe, model = _prepare(ctx, prepared)
        fusion, fused = prepare_dynamic(ctx, prepared, model, feeds, work) if \
            recipe.mode == "dynamic" else (None, None)
        del model
        done = None
        if fused is not None:
            try:  # the fused graph is an optimization: if it cannot be quantized, do without
                done = _quantize(ctx, fused, feeds, work)
                prepared = fused
            except Exception as exc:
                fusion.update(used=False, notes=[*fusion["notes"], "quantizing the fused "
                              f"graph failed ({first_line(exc)}); quantized the unfused one"])
        recipe, build, quantized, coverage, accuracy = done or _quantize(ctx, prepared, feeds,
                                                                         work)
        kept: list[str] = []
        tradeoff: list[dict] = []
        warnings: list[str] = []
        check_metric(ctx, accuracy)
        if params["max_drop"] is not None and accuracy[params["metric"]]["drop"] > params[
                "max_drop"]:
            kept, quantized, coverage, accuracy, tradeoff, warnings = meet_budget(
                ctx, build, prepared, quantized, feeds, coverage["intended"])
        elif params["max_drop"] is None:
            check_agreement(ctx, accuracy)
        check_tolerance(ctx, accuracy)
        install_onnx(quantized, ctx.out / "model.onnx")
        actions = node_actions(prepared, ctx.out / "model.onnx", recipe, params, kept)
        if (work / "calibration.json").is_file():  # tensor ranges, in a stable order
            ranges = json.loads((work / "calibration.json").read_text())
            (ctx.out / "calibration.json").write_text(json.dumps(ranges, sort_keys=True))
    return {"precision": "int8", "recipe": recipe.as_dict(), "preprocess": note,
            "fusion": fusion,
            "calibration": {"data": params["data"] or "generated", "batches": len(feeds),
                            "method": params["method"] if recipe.mode == "static" else None},
            "coverage": {k: v for k, v in coverage.items() if k not in ("intended", "bias")},
            "bias_correction": coverage.get("bias"), "accuracy": accuracy,
            "kept_float_for_budget": kept, "budget_search": tradeoff, "node_actions": actions,
            **({"warnings": warnings} if warnings else {}),
            **({"volatile": ["budget_latency.json"]} if tradeoff else {}),
            **describe(ctx.out / "model.onnx")}


def _prepare(ctx: StepContext, prepared: Path) -> tuple[Any, Any]:
    """The recipe for `prepared` and the model in memory, its weights untied and, for the
    dynamic recipe, its Gemms written as MatMul: read once, written back once if changed."""
    import onnx

    from qntz.quantize.ort_tools import choose_recipe, gemm_to_matmul, untie_weights
    from qntz.runtime.onnx_files import save_onnx

    model = onnx.load(str(prepared))
    changed = untie_weights(model)
    try:
        recipe = choose_recipe(model, ctx.params)
    except ValueError as exc:
        hint = "use recipe: dynamic" if "dynamic" in str(exc).split(":")[0] or \
            "only dynamically" in str(exc) else "use recipe: static"
        raise PipelineError(str(exc), where=ctx.where, hint=hint) from exc
    if recipe.mode == "dynamic":
        changed += gemm_to_matmul(model)
    if changed:
        save_onnx(model, prepared, keep=True)
    return recipe, model


def _float32_graph(ctx: StepContext, graph: Any) -> None:
    """INT8 calibration needs float32 tensors: a float16 model gets that said, not "no node
    was quantized" with a hint about settings the pipeline never set."""
    from qntz.quantize.precision_check import half_graph

    why = half_graph(graph)
    if why:
        raise ctx.fail(f"INT8 calibration needs a float32 graph, and this one is not ({why})",
                       hint="return a float32 model from the factory (`model.float()`, inputs "
                       "`dtype: float32`), or quantize with `precision: fp16`")


def check_agreement(ctx: StepContext, accuracy: dict[str, Any]) -> None:
    """Without a budget, INT8 must agree with the float model on the calibration data at
    least as well as `min_top1` and `min_cosine` ask (documented in the README)."""
    top1, cosine, bar = accuracy["top1"]["agreement"], accuracy["cosine"]["mean"], _top1_bar(ctx)
    low_top1 = None not in (bar, top1) and top1 < bar
    low_cosine = ctx.params["min_cosine"] is not None and cosine < ctx.params["min_cosine"]
    if low_top1 or low_cosine:
        budget = "max_drop: 0.01, metric: top1" if low_top1 else \
            f"max_drop: {1 - ctx.params['min_cosine']:.4g}, metric: cosine"
        top1_part = "" if top1 is None else f"top-1 {_percent(top1)} (min_top1 {bar}), "
        raise ctx.fail(f"INT8 agrees too little with the float model on the calibration "
                       f"data: {top1_part}mean cosine {cosine:.4f} (min_cosine "
                       f"{ctx.params['min_cosine']})",
                       hint=f"set an accuracy budget ({budget}) to keep the sensitive nodes "
                       "float, add calibration data, or lower "
                       f"{'min_top1' if low_top1 else 'min_cosine'} if this accuracy is "
                       "acceptable")


def _top1_bar(ctx: StepContext) -> float | None:
    """`min_top1`; `auto`: 0.85 on the user's data, no check on generated data: random
    inputs are no classification task, and a model's near-tied logits there (random
    weights: the top two 0.17x the logits' RMS apart, median, on timm's MobileNetV3) flip
    under any INT8 error, whatever its accuracy on real inputs."""
    bar = ctx.params["min_top1"]
    if bar != "auto":
        return bar
    return None if ctx.params["data"] is None else AUTO_TOP1


def _percent(value: float | None) -> str:
    return "n/a (not a [batch, classes] output)" if value is None else f"{value:.1%}"


def check_metric(ctx: StepContext, accuracy: dict[str, Any]) -> None:
    """`metric: top1` asks for an arg-max over classes, which only a [batch, classes] output has."""
    if ctx.params["metric"] == "top1" and accuracy["top1"]["agreement"] is None:
        raise ctx.fail("metric top1 needs the model's first output to be [batch, classes]; an "
                       "arg-max over a feature map or hidden states means nothing",
                       hint="use metric: cosine")


def check_tolerance(ctx: StepContext, accuracy: dict[str, Any]) -> None:
    """INT8 that misses, on its own calibration data, the bar a `compare` step of the
    pipeline sets for it fails here (documented in the README): calibration data flatters the
    model it calibrated, so fresh data would miss the bar too, later and at more cost.
    `min_top1: null` / `min_cosine: null` turn the check off for that metric: the user
    wants compare alone to judge it."""
    got = {"top1": accuracy["top1"]["agreement"], "cosine": accuracy["cosine"]["mean"]}
    off = {m for m in got if ctx.params[f"min_{m}"] is None}
    missed = {m: bar for m, bar in compare_bars(ctx.pipeline, ctx.step.id).items()
              if m not in off and got[m] is not None and got[m] < bar}
    if missed:
        metric, bar = next(iter(missed.items()))
        raise ctx.fail(f"INT8 misses the pipeline's tolerance on its own calibration data: "
                       f"{metric} {got[metric]:.6f} < threshold {bar} set by compare",
                       hint=f"set max_drop: {1 - bar:.4g}, metric: {metric} to keep the "
                       "sensitive nodes float, add calibration data, or lower the threshold")


def _quantize(ctx: StepContext, prepared: Path, feeds: list, work: Path) -> tuple:
    """The recipe for `prepared`, its builder, the model built with nothing kept float, its
    coverage and its accuracy against `prepared`."""
    import onnx

    from qntz.quantize.ort_tools import choose_recipe

    graph = onnx.load(str(prepared), load_external_data=False)
    recipe = choose_recipe(graph, ctx.params)
    build = _builder(ctx, prepared, recipe, feeds, work, graph)
    del graph
    ctx.report(f"{recipe.mode} int8 quantization")
    quantized, coverage = build([])
    return recipe, build, quantized, coverage, measure(prepared, quantized, feeds)


def prepare_dynamic(ctx: StepContext, prepared: Path, model: Any, feeds: list, work: Path
                    ) -> tuple[dict[str, Any] | None, Path | None]:
    """On transformer graphs, a copy of `prepared` (`model` in memory, which this changes)
    with the ONNX Runtime fusions that held up against the float model."""
    from qntz.quantize.fusion import fuse_for_onnxruntime
    from qntz.quantize.ort_tools import looks_like_transformer

    params = ctx.params
    names_given = params["nodes"] or params["exclude_nodes"]  # names of the unfused graph
    if not params["fuse"] or names_given or params["target"] != "onnxruntime" or \
            not looks_like_transformer(model):
        return None, None
    ctx.report("fusing attention and normalization for ONNX Runtime")
    fused = work / "fused.onnx"
    dynamic = {name: spec.dynamic_axes for name, spec in ctx.pipeline.inputs.items()}
    try:
        result = fuse_for_onnxruntime(prepared, fused, feeds, dynamic, model)
    except Exception as exc:  # an optimization that breaks must not break the step
        return {"used": False, "notes": [f"fusion failed: {first_line(exc)}"]}, None
    return result.as_dict(), fused if result.used else None


def _builder(ctx: StepContext, prepared: Path, recipe: Any, feeds: list, work: Path,
             graph: Any = None) -> Callable[[list[str]], tuple[Path, dict[str, Any]]]:
    """A function that quantizes with extra nodes kept in float, verified, into `work`;
    `graph`: `prepared` as already read (its graph is all this reads)."""
    import onnx

    from qntz.quantize.float_nodes import protect_float_nodes
    from qntz.quantize.ort_tools import CONV_LIKE, MATMUL_LIKE, Recipe, quantize_int8, weight_nodes
    from qntz.quantize.precision_check import PrecisionMismatch, check_int8

    model = graph if graph is not None else onnx.load(str(prepared), load_external_data=False)
    types = tuple(recipe.op_types or (*CONV_LIKE, *MATMUL_LIKE))
    intended = [n for n in (recipe.nodes or weight_nodes(model, types))
                if n not in recipe.exclude_nodes]
    counter = iter(range(1 << 30))

    def build(keep_float: list[str]) -> tuple[Path, dict[str, Any]]:
        target = work / f"int8-{next(counter)}.onnx"
        variant = Recipe(**{**recipe.as_dict(), "exclude_nodes": recipe.exclude_nodes + keep_float})
        try:
            quantize_int8(prepared, target, variant, ctx.params, feeds, work / "calibration.json")
        except Exception as exc:
            raise ctx.fail(f"INT8 quantization failed: {first_line(exc)}",
                           hint="exclude the failing node or op type (exclude_nodes / "
                           "exclude_op_types), or try recipe: dynamic") from exc
        if variant.mode == "static" and ctx.params["target"] == "onnxruntime":
            protect_float_nodes(target)  # TensorRT wants per-tensor activations, and is not ORT
        wanted = [n for n in intended if n not in keep_float]
        try:
            coverage = check_int8(onnx.load(str(target), load_external_data=False),
                                  variant.mode, wanted)
        except PrecisionMismatch as exc:
            raise ctx.fail(f"asked for int8, got another precision: {exc}",
                           hint="check op_types / nodes / exclude settings") from exc
        bias = None
        if variant.mode == "static" and variant.quantize_bias and ctx.params["bias_correction"]:
            from qntz.quantize.bias_correction import correct_biases

            try:  # an improvement of accuracy: a model it cannot handle goes uncorrected
                bias = correct_biases(target, prepared, feeds)
            except Exception as exc:
                bias = {"layers": 0, "skipped": first_line(exc)}
        _loads(ctx, target)
        return target, {**coverage, "intended": wanted, "bias": bias}

    return build


def _loads(ctx: StepContext, path: Path) -> None:
    from qntz.runtime.ortrun import session

    try:
        session(path)
    except Exception as exc:
        raise ctx.fail(f"ONNX Runtime cannot load the model its quantizer wrote: "
                       f"{first_line(exc)}", hint="keep the node it names float (exclude_nodes) "
                       "or its op type (exclude_op_types)") from exc


def meet_budget(ctx: StepContext, build: Callable, prepared: Path, quantized: Path,
                feeds: list, intended: list[str]) -> tuple:
    """The model with the fewest float nodes meeting the budget, the most sensitive ones
    kept float; the latency of each point explored goes to the volatile
    `budget_latency.json`."""
    from qntz.quantize.budget import search

    kept, path, coverage, result, explored, latencies, warnings = search(
        ctx, build, prepared, quantized, feeds, intended)
    (ctx.out / "budget_latency.json").write_text(json.dumps(
        [{"float_nodes": p["float_nodes"], "chosen": p["chosen"], "latency_ms": ms}
         for p, ms in zip(explored, latencies)], indent=1))
    return kept, path, coverage, result, explored, warnings
