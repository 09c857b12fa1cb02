"""The work of `compare`: reference outputs, candidate outputs, statistics and latency."""

from __future__ import annotations

from typing import Any

import numpy as np

from qntz.compare.rounding_noise import relative_noise
from qntz.compare.row import CandidateRow
from qntz.compare.runners import (
    NotRunnable,
    Runner,
    artifact_kind,
    onnx_runner,
    runner_for,
    torch_runner,
)
from qntz.compare.timing import Clock, interleaved, machine, speedup
from qntz.core.cache import Artifact
from qntz.core.inputs import evaluation_samples, generate_feed, opt_sizes
from qntz.core.step import StepContext
from qntz.runtime.metrics import OutputStats, latency_ms

Samples = list[tuple[str, dict[str, np.ndarray]]]


SIZE_ITERATIONS = 3  # timed runs per input size, per candidate (volatile, like all latency)


REFERENCE = "\0reference"  # the reference's name among the timed models (no step id)
# runners that compute in the calling thread when on the CPU with one intra-op thread
CPU_CLOCKED = {"onnx", "torchscript", "exported_program", "eager"}


def evaluate(ctx: StepContext) -> dict[str, Any]:
    params = ctx.params
    samples = sample_inputs(ctx.pipeline, params)
    ref_id = params["reference"] or _load_id(ctx)
    reference, ref_label = _reference(ctx)
    ctx.report(f"reference {ref_label} on {len(samples)} inputs")
    expected = [reference(feed) for _, feed in samples]
    exact = _float64_reference(ctx) if params["reference"] is None else None
    jitter = _jittered_reference(ctx) if params["reference"] is None else None
    names = getattr(reference, "names", None) or next(
        (list(a.summary["outputs"]) for a in ctx.inputs.values()
         if "onnx" in a.provides and a.summary.get("outputs")), [])
    candidates: list[CandidateRow] = []
    runners = {REFERENCE: reference}
    for step_id, artifact in ctx.inputs.items():
        if step_id == ref_id or artifact_kind(artifact) is None:
            continue
        ctx.report(f"candidate {step_id}")
        candidates.append(_candidate(ctx, artifact, samples, expected, names, runners,
                                     (exact, jitter)))
    for copied in (exact, jitter):  # the model copies they made, before the timing runs
        if copied is not None:
            copied.release()
    ctx.report("timing every model, interleaved")
    timed, clock = _timed(ctx, runners)
    for row in candidates:
        _add_speed(row, timed, REFERENCE, "speedup")
    _speedups_vs_source(ctx, candidates, timed)
    return {"reference": {"id": ref_id, "runs": ref_label,
                          "latency_ms": timed.get(REFERENCE)},
            "machine": {**machine(), "timed_threads": params["threads"], "clock": clock}
            if timed else None,
            "samples": [label for label, _ in samples],
            "tolerance": {k: params[k] for k in ("metric", "atol", "rtol", "scale")},
            "candidates": candidates,
            "passed": all(c["status"] in ("pass", "not run") for c in candidates)}


def _timed(ctx: StepContext, runners: dict[str, Runner]) -> tuple[dict[str, Any], Clock]:
    """Every model timed in the same rounds on compare's `threads`, and the clock used: ONNX
    models on ONNX Runtime's CPU get sessions of their own on that many threads (the
    accuracy runs used every core)."""
    from qntz.core.process import torch_threads
    from qntz.runtime.ortrun import PROVIDER, THREADS

    threads, kinds = ctx.params["threads"], _timed_kinds(ctx, runners)
    if threads and PROVIDER.get() == "cpu":
        token = THREADS.set(threads)
        try:
            for name, kind in kinds.items():
                if kind == "onnx":
                    del runners[name]  # the accuracy session goes before its twin loads
                    runners[name] = _timed_artifact_runner(ctx, name)
        finally:
            THREADS.reset(token)
    clock = _clock(threads, set(kinds.values()))
    feed = _timing_feed(ctx)
    with torch_threads(threads):
        timed = interleaved({n: (lambda r=r: r(feed)) for n, r in runners.items()},
                            ctx.params["iterations"], ctx.params["warmup"], clock=clock)
    return timed, clock


def _timed_kinds(ctx: StepContext, runners: dict[str, Runner]) -> dict[str, str | None]:
    """What runs each timed model: a runner's kind, or "eager" for the PyTorch model."""
    kinds = {name: artifact_kind(ctx.inputs[name]) for name in runners if name != REFERENCE}
    reference = _reference_artifact(ctx)
    kinds[REFERENCE] = "eager" if reference is None else (
        "onnx" if "onnx" in reference.provides else artifact_kind(reference))
    return kinds


def _reference_artifact(ctx: StepContext) -> Artifact | None:
    """The artifact the reference runs, or None for the PyTorch model itself."""
    if ctx.params["reference"] is not None:
        return ctx.inputs[ctx.params["reference"]]
    load = ctx.inputs[_load_id(ctx)]
    return load if "onnx" in load.provides else None


def _timed_artifact_runner(ctx: StepContext, name: str) -> Runner:
    artifact = ctx.inputs[name] if name != REFERENCE else _reference_artifact(ctx)
    assert artifact is not None
    return onnx_runner(artifact.file("model.onnx"))[0]


def _clock(threads: int, kinds: set[str | None]) -> Clock:
    """The calling thread's CPU time where every model computes in that thread, on the CPU;
    the wall clock otherwise (a GPU, an engine or a plugin's runner, a thread pool)."""
    import sys

    from qntz.compare.runners import TORCH_DEVICE
    from qntz.runtime.ortrun import PROVIDER

    torch = sys.modules.get("torch")
    on_cpu = (PROVIDER.get() == "cpu" and TORCH_DEVICE.get() in (None, "cpu")
              and not (torch is not None and torch.cuda.is_initialized()))
    return "cpu" if threads == 1 and on_cpu and kinds <= CPU_CLOCKED else "wall"


def _add_speed(row: CandidateRow, timed: dict[str, Any], against: str, key: str) -> None:
    """`row[key]`: the median per-round ratio of `against`'s time to the row's, with its
    range (`<key>_range`) and whether that range is too wide to trust (`<key>_wide`)."""
    if row["id"] in timed:
        row["latency_ms"] = timed[row["id"]]
    found = speedup(timed.get(against), timed.get(row["id"]))
    if found is not None:
        row[key] = found["median"]
        row[f"{key}_range"] = [found["low"], found["high"]]
        row[f"{key}_wide"] = found["wide"]


def _speedups_vs_source(ctx: StepContext, candidates: list[CandidateRow],
                        timed: dict[str, Any]) -> None:
    """An optimized candidate (quantize, tensorrt) against the float model it came from."""
    for row in candidates:
        source = ctx.inputs[row["id"]].summary.get("source")
        if source is None:
            continue
        row["source"] = source
        _add_speed(row, timed, source, "speedup_vs_source")
        if "speedup_vs_source" in row:
            # within 5% of the float model is noise, not an optimization worth its risk
            row["not_faster_than_source"] = row["speedup_vs_source"] < 1.05


def _load_id(ctx: StepContext) -> str:
    return next(sid for sid, a in ctx.inputs.items() if "model" in a.provides)


def size_of(label: str) -> str | None:
    """The input size part of a sample's label ("batch=16" of "batch=16 random#0")."""
    size, _, variant = label.rpartition(" ")
    return size if size and size != "static" and variant else None


def _size_latencies(runner: Runner, samples: Samples, params: dict[str, Any]
                    ) -> dict[str, float] | None:
    """Median latency on the first input of each size, when there are several sizes."""
    firsts: dict[str, dict[str, np.ndarray]] = {}
    for label, feed in samples:
        size = size_of(label)
        if size is not None:
            firsts.setdefault(size, feed)
    if len(firsts) < 2 or not params["iterations"]:
        return None
    runs = min(SIZE_ITERATIONS, params["iterations"])
    return {size: latency_ms(lambda f=feed: runner(f), runs, 1)["median"]
            for size, feed in firsts.items()}


def sample_inputs(pipeline: Any, params: dict[str, Any]) -> Samples:
    """The labelled inputs a compare step with `params` runs every model on."""
    inputs = pipeline.inputs
    if params["data"]:
        from qntz.core.data import load_dataset
        feeds = load_dataset(pipeline, params["data"], None)
        return [(f"{params['data']}#{i}", feed) for i, feed in enumerate(feeds)]
    if not params["sizes"]:
        return evaluation_samples(inputs, params["samples"], params["seed"])
    rng = np.random.default_rng(params["seed"])
    out: Samples = []
    for sizes in params["sizes"]:
        full = {**opt_sizes(inputs), **sizes}
        label = ",".join(f"{d}={v}" for d, v in full.items())
        for draw in range(params["samples"]):
            out.append((f"{label} random#{draw}", generate_feed(inputs, full, rng)))
    return out


def _timing_feed(ctx: StepContext) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(ctx.params["seed"] + 1)
    sizes = opt_sizes(ctx.pipeline.inputs)
    return generate_feed(ctx.pipeline.inputs, sizes, rng)


def _reference(ctx: StepContext) -> tuple[Runner, str]:
    chosen = ctx.params["reference"]
    if chosen is not None:
        runner, _ = runner_for(ctx.inputs[chosen], ctx.pipeline.inputs)
        return runner, f"{chosen} ({artifact_kind(ctx.inputs[chosen])})"
    load = ctx.inputs[_load_id(ctx)]
    if "onnx" in load.provides:
        runner, _ = onnx_runner(load.file("model.onnx"))
        return runner, "the source ONNX model on ONNX Runtime"
    from qntz.runtime.torchio import model_device

    device = model_device(ctx.live_model())
    where = f" on {device} (TF32 off)" if device is not None else ""
    return torch_runner(ctx.live_model(), ctx.pipeline.inputs, eager=True), \
        f"PyTorch eager{where}"


def _float64_reference(ctx: StepContext) -> Any:
    """The eager model in float64, run (once per input, when a rule asks) to tell the
    float32 reference's own rounding error; None when the reference is not a torch model.
    Its `release()` drops the float64 copy, made on first use only."""
    load = ctx.inputs[_load_id(ctx)]
    if "onnx" in load.provides:
        return None
    memo: dict[int, list[np.ndarray] | None] = {}
    model: list[Any] = []

    def exact(feed: dict[str, np.ndarray], index: int) -> np.ndarray | None:
        if id(feed) not in memo:
            memo[id(feed)] = _run_float64(ctx, model, feed)
        outputs = memo[id(feed)]
        return outputs[index] if outputs is not None and index < len(outputs) else None

    exact.release = model.clear  # type: ignore[attr-defined]
    return exact


def _run_float64(ctx: StepContext, model: list[Any], feed: dict[str, np.ndarray]
                 ) -> list[np.ndarray] | None:
    try:
        if not model:
            model.append(float64_copy(ctx.live_model()))
        wide = {n: a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a
                for n, a in feed.items()}
        return torch_runner(model[0], ctx.pipeline.inputs)(wide)
    except Exception:  # a model that cannot run in float64 just lacks this rule
        return None


def float64_copy(model: Any) -> Any:
    """`copy.deepcopy(model).double()` without the float32 copy in between: every floating
    parameter and buffer is widened straight from the live one (tied weights stay tied),
    the rest deep-copied; `.double()` then runs each module's own `_apply` on tensors that
    are float64 already."""
    import copy

    import torch

    memo: dict[int, Any] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point() and id(tensor) not in memo:
            wide = tensor.detach().double()
            memo[id(tensor)] = torch.nn.Parameter(wide, tensor.requires_grad) \
                if isinstance(tensor, torch.nn.Parameter) else wide
    return copy.deepcopy(model, memo).double()


JITTER_RUNS = 3  # seeded runs of eager under relative noise; the largest change is the bar


def _jittered_reference(ctx: StepContext) -> Any:
    """Eager float32 under relative noise `p` on every intermediate, JITTER_RUNS seeded
    times per input (memoized), on a copy: the noise is added in place and must touch
    neither the live model nor the feed. None when the reference is not a torch model.
    Its `release()` drops the copy, made on first use only."""
    if "onnx" in ctx.inputs[_load_id(ctx)].provides:
        return None
    memo: dict[tuple[int, float], list[list[np.ndarray]] | None] = {}
    model: list[Any] = []

    def jitter(feed: dict[str, np.ndarray], index: int, level: float) -> Any:
        if (id(feed), level) not in memo:
            memo[id(feed), level] = _run_jittered(ctx, model, feed, level)
        runs = memo[id(feed), level]
        return None if runs is None else [r[index] for r in runs if index < len(r)]

    jitter.release = model.clear  # type: ignore[attr-defined]
    return jitter


def _run_jittered(ctx: StepContext, model: list[Any], feed: dict[str, np.ndarray],
                  level: float) -> list[list[np.ndarray]] | None:
    try:
        if not model:
            model.extend(sharing_copy(ctx.live_model()))
        copied, weights = model
        runner = torch_runner(copied, ctx.pipeline.inputs, eager=True)
        runs = []
        for seed in range(JITTER_RUNS):
            with relative_noise(level, seed, weights):
                runs.append(runner({n: a.copy() for n, a in feed.items()}))
        return runs
    except Exception:  # a model that cannot run under the mode just lacks this rule
        return None


def sharing_copy(model: Any) -> tuple[Any, frozenset[int]]:
    """A copy of the model that shares its parameters with the live one (no second copy of
    the weights) and owns everything else: its buffers, and the attributes a forward
    assigns (a cache of noisy values lands on the copy); and the data pointers of those
    shared weights, which the noise must leave alone."""
    import copy

    shared = {id(p): p for p in model.parameters()}
    weights = frozenset(p.untyped_storage().data_ptr() for p in model.parameters())
    return copy.deepcopy(model, shared), weights


def _add_size(sizes: dict[str, list[float]], label: str, got: list[np.ndarray],
              want: list[np.ndarray]) -> None:
    size = size_of(label)
    if size is None:
        return
    sums = sizes.setdefault(size, [0.0, 0.0])
    for g, w in zip(got, want):
        g64, w64 = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g64.shape == w64.shape:
            sums[0] += float(np.nansum(np.square(g64 - w64)))
            sums[1] += float(np.nansum(np.square(w64)))


def _size_rows(sizes: dict[str, list[float]]) -> list[dict[str, Any]] | None:
    """RMS relative error of every output per input size (None with a single size)."""
    if len(sizes) < 2:
        return None
    return [{"size": size, "rms_rel": float(np.sqrt(e / r)) if r > 0 else None}
            for size, (e, r) in sorted(sizes.items(), key=lambda item: _dims(item[0]))]


def _dims(size: str) -> list[int]:
    """ "batch=16,seq=4" as [16, 4], to order sizes as numbers."""
    return [int(part.partition("=")[2]) for part in size.split(",")
            if part.partition("=")[2].isdigit()]


LOSSY_PRECISIONS = ("int8", "fp16", "bf16")


def lossy(artifact: Artifact) -> bool:
    """A candidate made to lose precision (INT8, FP16, BF16 ONNX or engines)."""
    return artifact.summary.get("precision") in LOSSY_PRECISIONS


def _tolerance(ctx: StepContext, step_id: str, output: str, lossy: bool = False
               ) -> dict[str, Any]:
    """Settings for one output of one candidate: step-wide, then per candidate, per output.
    A lossy candidate nobody wrote a bar for is judged by mean cosine ≥ `threshold` (0.99
    by default), range ends apart: INT8 is never within 1e-4 of float, and a conversion
    that broke it (a baked constant, a wrong activation) is far below that cosine."""
    params = ctx.params
    tol = {k: params[k] for k in ("atol", "rtol", "metric", "threshold", "scale")}
    for override in (params["tolerances"].get(step_id, {}), params["outputs"].get(output, {})):
        if "metric" not in override and ({"atol", "rtol"} & set(override)) \
                and tol["metric"] == "auto":
            tol["metric"] = "allclose"  # a tolerance written out is the bar
        tol.update(override)
    if tol["metric"] == "auto" and (params["atol"] is not None or params["rtol"] is not None):
        tol["metric"] = "allclose"
    if tol["metric"] == "auto" and lossy:
        tol["metric"] = "cosine"
    return tol


def _accept_hint(step_id: str, stat: OutputStats) -> str:
    """The tolerance a person writes to accept what was measured, if the loss is fine."""
    value = stat.top1 if stat.metric == "top1" else stat.cosine_mean
    metric = "top1" if stat.metric == "top1" else "cosine"
    if value is None or not np.isfinite(value) or value <= 0:
        return ""
    threshold = np.floor(value * 100) / 100
    return (f" (fix: if this loss is acceptable, write `tolerances: {{{step_id}: {{metric: "
            f"{metric}, threshold: {threshold:.2f}}}}}` on the compare step)")


def _add_outputs(stats: list[OutputStats], label: str, feed: dict[str, np.ndarray],
                 got: list[Any], want: list[Any], references: tuple[Any, Any]) -> None:
    """One input's outputs into their stats, with the float64 and perturbed references
    bound to this input, for the rules that ask for them."""
    exact, jitter = references
    for index, (stat, g, w) in enumerate(zip(stats, got, want)):
        truth = (lambda i=index, f=feed: exact(f, i)) if exact else None
        noisy = (lambda p, i=index, f=feed: jitter(f, i, p)) if jitter else None
        stat.add(label, np.asarray(g), np.asarray(w), truth, noisy)


def _error_text(exc: BaseException) -> str:
    """The error on one line; of a TorchScript interpreter's traceback, the error it names
    ("RuntimeError: …"), not the serialized code around it."""
    import re

    text = str(exc)
    if "TorchScript interpreter" in text:
        said = [line for line in text.splitlines() if re.match(r"\w*(Error|Exception): ", line)]
        text = said[-1] if said else text
    return " ".join(text.split())[:240]


def _device_hint(message: str) -> str:
    if "device" not in message:
        return ""
    return (" (fix: the capture froze a device into the model (preflight's "
            "trace-device-constant names the line): create the tensor from an input, e.g. "
            "x.new_zeros(...), or set compare's `device` to where it was captured)")


def _candidate(ctx: StepContext, artifact: Artifact, samples: Samples,
               expected: list[list[np.ndarray]], default_names: list[str],
               runners: dict[str, Runner], references: tuple[Any, Any] = (None, None)
               ) -> CandidateRow:
    """The candidate's accuracy row; a candidate that ran is added to `runners`, to be
    timed with the others."""
    step_id, kind = artifact.step_id, artifact_kind(artifact)
    row: CandidateRow = {"id": step_id, "artifact": kind}
    try:
        runner, names = runner_for(artifact, ctx.pipeline.inputs)
        names = names or default_names
    except NotRunnable as exc:
        return {**row, "status": "not run", "reason": f"{step_id} ({kind}) not run: {exc}"}
    stats: list[OutputStats] = []
    sizes: dict[str, list[float]] = {}  # size -> [error², reference²] over its inputs
    for (label, feed), want in zip(samples, expected):
        try:
            got = runner(feed)
        except Exception as exc:  # a candidate that crashes is a finding, not a qntz bug
            message = _error_text(exc)
            return {**row, "status": "error",
                    "reason": f"{step_id} ({kind}) failed to run on {label}: "
                              f"{type(exc).__name__}: {message}{_device_hint(message)}"}
        if len(got) != len(want):
            return {**row, "status": "fail", "reason": f"{step_id} ({kind}) returned "
                    f"{len(got)} outputs, the reference {len(want)}"}
        if not stats:
            names = names if len(names) == len(want) else [f"output_{i}" for i in range(len(want))]
            stats = [OutputStats(n, **_tolerance(ctx, step_id, n, lossy(artifact)))
                     for n in names]
        _add_outputs(stats, label, feed, got, want, references)
        _add_size(sizes, label, got, want)
    for stat in stats:
        stat.finish()
    row["outputs"] = [s.as_dict() for s in stats]
    row["sizes"] = _size_rows(sizes)
    row["size_latency_ms"] = _size_latencies(runner, samples, ctx.params)
    row["max_abs"] = max((s.max_abs for s in stats), default=0.0)
    row["cosine_min"] = min((s.cosine_min for s in stats), default=1.0)
    row["top1"] = stats[0].top1 if stats else None
    runners[step_id] = runner
    bad = [s for s in stats if not s]
    if not bad:
        return {**row, "status": "pass", "reason": ""}
    return {**row, "status": "fail",
            "reason": f"{step_id} ({kind}) output '{bad[0].name}': {bad[0].verdict()}"
                      + _accept_hint(step_id, bad[0])}
