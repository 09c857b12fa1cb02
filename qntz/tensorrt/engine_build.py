"""Building a TensorRT engine through Polygraphy, and reading back what was built."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

COMPUTE = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY", "FULLY_CONNECTED")
EXPECTED = {"fp32": "FLOAT", "fp16": "HALF", "bf16": "BF16", "int8": "INT8", "fp8": "FP8"}


class BuildFailed(Exception):
    """TensorRT could not parse or build; the message names the node and what to do."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


@contextlib.contextmanager
def captured_log() -> Iterator[list[str]]:
    """Polygraphy's and TensorRT's messages, kept for the summary instead of printed."""
    from polygraphy.logger import G_LOGGER

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= G_LOGGER.WARNING:
                messages.append(" ".join(record.getMessage().split()))

    previous = G_LOGGER.use_python_logging_system
    G_LOGGER.use_python_logging_system = True
    logger = logging.getLogger("Polygraphy")
    handler, propagate = Keep(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        G_LOGGER.use_python_logging_system = previous


def first_error(messages: list[str]) -> str:
    errors = [m for m in messages if m.startswith("[E]") or "Error" in m]
    return errors[0][:300] if errors else ""


def _name(enum_value: Any) -> str:
    return str(enum_value).split(".")[-1]


def parse_onnx(trt: Any, path: Path, strongly_typed: bool = True) -> tuple[Any, Any, Any]:
    """A network from ONNX; a parse failure names the node and its op type."""
    from polygraphy.backend.trt import CreateNetwork
    from polygraphy.backend.trt import util as trt_util

    builder, network = CreateNetwork(strongly_typed=strongly_typed)()
    parser = trt.OnnxParser(network, trt_util.get_trt_logger())
    if not parser.parse_from_file(str(path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        first = errors[0] if errors else None
        if first is None:
            raise BuildFailed("the TensorRT ONNX parser failed without saying why",
                              hint="check the model with `polygraphy inspect model`")
        node = first.node_name() or f"#{first.node()}"
        raise BuildFailed(
            f"TensorRT cannot parse node '{node}' (op {first.node_operator() or '?'}): "
            f"{' '.join(first.desc().split())[:300]}",
            hint="replace or remove that operator in the model, export at another opset, or "
                 "for a Q/DQ model quantize with `target: tensorrt`")
    return builder, network, parser


def network_summary(network: Any) -> dict[str, Any]:
    """Layer count by output type, and the precision each compute layer computes in."""
    producers: dict[str, Any] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            producers[layer.get_output(j).name] = layer
    by_type: Counter[str] = Counter()
    compute = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        by_type[_name(layer.get_output(0).dtype)] += 1
        if _name(layer.type) in COMPUTE:
            compute.append({"name": layer.name, "type": _name(layer.type),
                            "precision": _compute_precision(layer, producers)})
    return {"layers": network.num_layers, "layers_by_output_type": dict(by_type),
            "compute_layers": compute,
            "inputs": [_tensor(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [_tensor(network.get_output(i)) for i in range(network.num_outputs)]}


def _compute_precision(layer: Any, producers: dict[str, Any]) -> str:
    """INT8/FP8 when every operand comes through a DequantizeLinear; else the output type."""
    operands = [layer.get_input(k) for k in range(min(layer.num_inputs, 2))]
    operands = [t for t in operands if t is not None]
    sources = [producers.get(t.name) for t in operands]
    if operands and all(s is not None and _name(s.type) == "DEQUANTIZE" for s in sources):
        return _name(sources[0].get_input(0).dtype)
    return _name(layer.get_output(0).dtype)


def _tensor(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "dtype": _name(tensor.dtype), "shape": list(tensor.shape)}


def check_precision(summary: dict[str, Any], precision: str, min_coverage: float) -> float:
    """The share of compute layers in the asked precision; raise when below `min_coverage`."""
    from qntz.quantize.precision_check import PrecisionMismatch

    layers = summary["compute_layers"]
    if not layers:
        return 1.0
    want = EXPECTED[precision]
    matching = [c for c in layers if c["precision"] == want]
    coverage = len(matching) / len(layers)
    if coverage < min_coverage:
        got = Counter(c["precision"] for c in layers if c["precision"] != want)
        example = next(c["name"] for c in layers if c["precision"] != want)
        raise PrecisionMismatch(
            f"{len(matching)}/{len(layers)} compute layers are {want}; the others are "
            f"{', '.join(f'{n} {p}' for p, n in got.items())} (e.g. '{example}')")
    return coverage


def progress_monitor(trt: Any, report: Callable[[str], None]) -> Any:
    """The builder's progress, phase by phase, where the runtime offers a monitor."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: Any, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            report(f"building: {phase_name}")

        def step_complete(self, phase_name: str, step: int) -> bool:
            report(f"building: {phase_name} {step + 1}/{self.steps.get(phase_name, '?')}")
            return True

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


def build_engine(trt: Any, flavour: str, network: tuple[Any, Any, Any],
                 settings: dict[str, Any]) -> bytes:
    """Polygraphy's config and builder; `settings` holds what qntz decided."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork
    from polygraphy.exception import PolygraphyException

    options: dict[str, Any] = {"profiles": settings["profiles"],
                               "progress_monitor": settings.get("monitor")}
    if settings.get("workspace_mib"):
        options["memory_pool_limits"] = {
            trt.MemoryPoolType.WORKSPACE: settings["workspace_mib"] << 20}
    cache = settings.get("timing_cache")
    if cache is not None and Path(cache).is_file():
        options["load_timing_cache"] = str(cache)
    if flavour == "tensorrt-rtx":
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

        config = CreateConfigRTX(compute_capabilities=settings["compute_capabilities"], **options)
    else:
        config = CreateConfig(hardware_compatibility_level=settings.get("hardware_compatibility"),
                              **settings.get("legacy", {}), **options)
    try:
        engine = EngineBytesFromNetwork(network, config=config,
                                        save_timing_cache=str(cache) if cache else None)()
    except PolygraphyException as exc:
        raise BuildFailed(f"TensorRT could not build the engine: {exc}",
                          hint="see the builder's errors above; try another precision, a larger "
                               "workspace, or other shape profiles") from exc
    return bytes(engine)
