"""The work of the `tensorrt` step: parse, configure, build, verify, describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qntz.core.errors import PipelineError
from qntz.core.step import StepContext


def build(ctx: StepContext) -> dict[str, Any]:
    from qntz.quantize.precision_check import PrecisionMismatch
    from qntz.tensorrt import env as tensorrt_env
    from qntz.tensorrt.engine_build import (
        BuildFailed,
        build_engine,
        captured_log,
        check_precision,
        first_error,
        network_summary,
        parse_onnx,
    )

    params, flavour = ctx.params, ctx.extras["runtime"]
    trt = tensorrt_env.import_tensorrt(flavour)
    source = ctx.input_providing("onnx")
    legacy = bool(params["builder_flags"] or params["implicit_calibration"])
    with captured_log() as messages:
        try:
            ctx.report("parsing ONNX")
            network = parse_onnx(trt, source.file("model.onnx"), strongly_typed=not legacy)
            layers = network_summary(network[1])
            settings = _settings(ctx, trt, layers)
            engine = build_engine(trt, flavour, network, settings)
        except BuildFailed as exc:
            detail = first_error(messages)
            raise ctx.fail(f"{exc}{f' ({detail})' if detail else ''}", hint=exc.hint) from exc
    (ctx.out / "engine.plan").write_bytes(engine)

    coverage = None
    if not legacy:
        try:
            coverage = check_precision(layers, params["precision"], params["min_coverage"])
        except PrecisionMismatch as exc:
            raise ctx.fail(f"asked for a {params['precision']} engine, got another precision: "
                           f"{exc}", hint="check the ONNX model's types (a quantize step), or "
                           "lower min_coverage to accept float layers") from exc
    return {"runtime": flavour, "runtime_version": ctx.extras["runtime_version"],
            "precision": params["precision"], "precision_coverage": coverage,
            "targets": _targets(ctx, flavour), "engine_bytes": len(engine),
            "profiles": [_profile_dict(p) for p in settings["profiles"]],
            "engine_inspection": _inspect(trt, engine), "source": source.step_id,
            "timing_cache": settings["timing_cache"] is not None,
            "builder_messages": messages[:50], **layers}


def _settings(ctx: StepContext, trt: Any, layers: dict[str, Any]) -> dict[str, Any]:
    from qntz.tensorrt import env as tensorrt_env
    from qntz.tensorrt.engine_build import progress_monitor

    params = ctx.params
    # tactic timing needs a GPU: an ahead-of-time build on a CPU-only machine has none to keep
    timing = params["timing_cache"] and bool(tensorrt_env.gpus())
    return {
        "profiles": _profiles(ctx, layers["inputs"]), "workspace_mib": params["workspace"],
        "compute_capabilities": [tuple(map(int, c.split("."))) for c in
                                 params["compute_capabilities"]],
        "hardware_compatibility": _hardware_level(trt, params["hardware_compatibility"]),
        "timing_cache": _timing_cache(ctx) if timing else None,
        "monitor": progress_monitor(trt, ctx.report), "legacy": _legacy_settings(ctx),
    }


def _legacy_settings(ctx: StepContext) -> dict[str, Any]:
    """TensorRT 8.6-10.x: builder precision flags and the implicit INT8 calibrator."""
    flags = {flag: True for flag in ctx.params["builder_flags"]}
    name = ctx.params["implicit_calibration"]
    if name:
        from polygraphy.backend.trt import Calibrator

        from qntz.core.data import load_dataset

        feeds = load_dataset(ctx.pipeline, name, None)
        flags["int8"] = True
        flags["calibrator"] = Calibrator(feeds, cache=str(ctx.out / "calibration.cache"))
    return flags


def _profiles(ctx: StepContext, network_inputs: list[dict[str, Any]]) -> list[Any]:
    """The `inputs` section's min/opt/max, then the extra profiles given."""
    from polygraphy.backend.trt import Profile

    inputs = ctx.pipeline.inputs
    shapes = {}
    for name, spec in inputs.items():
        shapes[name] = {k: [spec.dims[d][i] if isinstance(d, str) else d for d in spec.shape]
                        for i, k in enumerate(("min", "opt", "max"))}
    profiles = [shapes, *ctx.params["profiles"]]
    names = {t["name"] for t in network_inputs}
    built = []
    for index, profile in enumerate(profiles):
        unknown = set(profile) - names
        if unknown:
            raise PipelineError(f"profile {index} names unknown input(s) {sorted(unknown)}",
                                where=ctx.where, hint=f"the network's inputs: {sorted(names)}")
        trt_profile = Profile()
        for name in (n for n in profile if n in names):
            trt_profile.add(name, **{k: tuple(v) for k, v in profile[name].items()})
        built.append(trt_profile)
    return built


def _profile_dict(profile: Any) -> dict[str, Any]:
    return {name: {"min": list(s.min), "opt": list(s.opt), "max": list(s.max)}
            for name, s in profile.items()}


def _hardware_level(trt: Any, level: str) -> Any:
    if level == "none" or not hasattr(trt, "HardwareCompatibilityLevel"):
        return None
    return getattr(trt.HardwareCompatibilityLevel, level.upper())


def _timing_cache(ctx: StepContext) -> Path:
    """One timing cache per toolchain and target, kept beside the qntz cache."""
    extras = ctx.extras
    targets = "-".join(ctx.params["compute_capabilities"]) if extras["runtime"] == \
        "tensorrt-rtx" else "-".join(extras.get("gpus", [])) or "nogpu"
    ctx.shared.mkdir(parents=True, exist_ok=True)
    return ctx.shared / f"timing-{extras['runtime']}-{extras['runtime_version']}-{targets}.cache"


def _targets(ctx: StepContext, flavour: str) -> list[str]:
    if flavour == "tensorrt-rtx":
        return list(ctx.params["compute_capabilities"])
    return list(ctx.extras.get("gpus", []))


def _inspect(trt: Any, engine: bytes) -> Any:
    """The engine inspector's per-layer report, where this machine can load the engine."""
    from qntz.tensorrt import env as tensorrt_env

    if not tensorrt_env.gpus():
        return "not available: no GPU on this machine to load the engine"
    try:
        from polygraphy.backend.trt import EngineFromBytes

        loaded = EngineFromBytes(engine)()
        inspector = loaded.create_engine_inspector()
        import json

        return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception as exc:  # a GPU the engine was not built for, or a runtime error
        return f"not available: {type(exc).__name__}: {exc}"
