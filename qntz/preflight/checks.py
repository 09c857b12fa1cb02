"""The checks behind `preflight`: general rules of export, then each method for real.

Every method is tried on the live model and its result compared with eager on inputs
unlike the capture example (other values, the range's ends, other sizes), so a verdict
is a measurement, not a guess. Findings are located in the model's own source.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from qntz.core.errors import first_line
from qntz.core.inputs import (
    InputSpec,
    capture_example,
    capture_sizes,
    generate_feed,
    size_variants,
)
from qntz.preflight.findings import METHODS, Finding, UserCode, definition_line

STATIC = ("data-dependent-control-flow", "tensor-to-python", "python-math", "numpy-round-trip")
PAST = {"trace": "traced", "script": "scripted", "export": "exported"}
PYTHON_VALUE = {"__bool__", "item", "tolist", "numpy", "__array__", "__int__", "__float__",
                "__index__", "__complex__"}


class Checks:
    """Runs the checks on one live model; collects findings and per-method verdicts."""

    def __init__(self, model: Any, inputs: dict[str, InputSpec], opset: int,
                 report: Callable[[str], None], uses: list[str], scratch: Path,
                 fresh: Callable[[], Any] | None = None):
        self.model, self.inputs, self.opset, self.report = model, inputs, opset, report
        # each method is tried on a model as the capture step sees it: a module that caches
        # a tensor on its first forward (a detector's anchors) holds it after eager ran
        self.fresh: Callable[[], Any] = fresh or (lambda: model)
        self.scratch = scratch  # where the captures are saved and exported, then removed
        self.uses = uses if len(uses) == 1 else []
        self.user = UserCode.of(model)
        self.findings: list[Finding] = []
        self.verdicts: dict[str, str] = {}
        self.details: dict[str, str] = {}
        self.captured: dict[str, Any] = {}
        self.eager_onnx = False  # no method captures it, and its ONNX export agrees with eager
        self.calls: dict[str, tuple[str, int]] = {}
        self.constant_sites: set[tuple[str, int]] = set()  # Python values of constants

    def add(self, rule: str, severity: str, methods: list[str], message: str, fix: str,
            where: tuple[str | None, int | None] = (None, None)) -> None:
        file, line = where if where[0] else definition_line(self.model)
        inside = self.user.inside((file, line)) if file else None
        if inside:
            message = f"{message} (in {inside})"
        finding = Finding(rule, severity, methods, message, fix, file, line)
        if all(f.as_dict() != finding.as_dict() for f in self.findings):
            self.findings.append(finding)

    # -- inputs and agreement -------------------------------------------------------------
    def args(self, feed: dict[str, np.ndarray], model: Any = None) -> Any:
        """(args, kwargs) of a call to `model` (default: the eager model), bound by name."""
        from qntz.runtime.torchio import to_torch

        return to_torch(feed, self.inputs, self.model if model is None else model)

    def run(self, model: Any, feed: dict[str, np.ndarray]) -> Any:
        args, kwargs = self.args(feed, model)
        return model(*args, **kwargs)

    def probes(self) -> list[tuple[str, str, dict[str, np.ndarray]]]:
        """(kind, label, feed): other values at the capture sizes, then other sizes."""
        rng = np.random.default_rng(4242)
        captured = capture_sizes(self.inputs)
        out = [("values", f"{fill} values", generate_feed(self.inputs, captured, rng, fill))
               for fill in ("random", "low", "high")]
        for sizes in size_variants(self.inputs):
            if sizes != captured:
                label = ",".join(f"{d}={v}" for d, v in sizes.items())
                out.append(("sizes", label, generate_feed(self.inputs, sizes, rng)))
        return out

    def serializable(self, method: str, save: Callable[[Any], None]) -> bool:
        """The capture step saves what it captured: some captures work and cannot be saved.

        Into a file: TorchScript's `save` takes a file name, and given a buffer writes a file
        named after it into the current folder."""
        try:
            save(str(self.scratch / f"{method}.pt2"))  # the suffix torch.export.save expects
            return True
        except Exception as exc:
            self.add(f"{method}-not-serializable", "error", [method],
                     f"the {PAST[method]} model cannot be saved: {first_line(exc)}",
                     "replace the construct it names (e.g. a Python autograd.Function){else}",
                     self.user.in_text(str(exc)))
            return False

    def agrees(self, method: str, call: Callable[..., Any]) -> bool:
        """Compare a captured model with eager; record a finding on the first disagreement."""
        import torch

        from qntz.runtime.torchio import call_eager, flatten_outputs

        for kind, label, feed in self.probes():
            # no_grad, not inference_mode: a tensor the model caches must stay usable
            with torch.no_grad():
                want = tensors_only(flatten_outputs(call_eager(self.model, feed, self.inputs)))
                try:
                    got = tensors_only(flatten_outputs(self.run(call, feed)))
                except Exception as exc:
                    self._fails_to_run(method, call, kind, label, exc)
                    return False
            if len(got) != len(want) or any(
                    g.shape != w.shape or not np.allclose(g, w, rtol=1e-3, atol=1e-4,
                                                          equal_nan=True)
                    for g, w in zip(got, want)):
                self._disagreement(method, kind, label, "gives other outputs than eager")
                return False
        return True

    def _fails_to_run(self, method: str, call: Callable[..., Any], kind: str, label: str,
                      exc: Exception) -> None:
        """A captured model that cannot run even on the capture example froze nothing: it
        refuses the call itself (a scripted forward typed `List[Tensor]`, say)."""
        import torch

        try:
            with torch.no_grad():
                self.run(call, capture_example(self.inputs))
        except Exception:
            self.add(f"{method}-fails-to-run", "error", [method],
                     f"the {PAST[method]} model fails to run on the `inputs` example: "
                     f"{first_line(exc)}",
                     "make `inputs` match what the captured forward takes{else}",
                     self.user.in_traceback(exc))
            return
        self._disagreement(method, kind, label, f"fails to run: {first_line(exc)}")

    def _disagreement(self, method: str, kind: str, label: str, what: str) -> None:
        located = self._event_location(method)
        if kind == "values":
            self.add(f"{method}-data-dependent", "error", [method],
                     f"the {PAST[method]} model {what} on inputs with {label}: it froze a value "
                     "or a branch of the capture example",
                     FIXES["data-dependent"], located)
        else:
            self.add(f"{method}-frozen-shape", "error", [method],
                     f"the {PAST[method]} model {what} at {label}: a size of the capture example "
                     "was frozen into it", FIXES["frozen-shape"], located)

    def _event_location(self, method: str) -> tuple[str | None, int | None]:
        for finding in self.findings:
            if method in finding.methods and finding.file:
                return finding.file, finding.line
        return None, None

    def judge(self) -> None:
        """A static finding that a method's real test contradicts (the captured model agrees
        with eager on varied inputs) is a warning for that method, saying so."""
        judged = []
        for f in self.findings:
            held = [m for m in f.methods if self.verdicts.get(m) == "ok"]
            if f.rule not in STATIC or f.severity != "error" or not held:
                judged.append(f)
                continue
            models = " and ".join(f"{PAST[m]}" for m in held)
            note = (f"; yet the {models} model agrees with eager on varied inputs (other "
                    "values, the range's ends, other sizes, padded rows), so it is a warning")
            judged.append(replace(f, severity="warning", methods=held, message=f.message + note))
            rest = [m for m in f.methods if m not in held]
            if rest:
                judged.append(replace(f, methods=rest))
        self.findings = judged

    # -- general rules --------------------------------------------------------------------
    def general(self) -> Any:
        """One device, tensors in and out, torch doing the computing. Returns eager output."""
        import torch

        first: dict[str, str] = {}  # device -> the first parameter or buffer on it
        for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
            first.setdefault(str(tensor.device), name)
        if len(first) > 1:
            on = ", ".join(f"`{name}` on {device}" for device, name in sorted(first.items()))
            self.add("multi-device", "error", list(METHODS),
                     f"parameters and buffers live on {len(first)} devices: {on}",
                     FIXES["multi-device"])
        example = capture_example(self.inputs)
        try:
            with PythonValues(self) as recorder, torch.no_grad():
                output = self.run(self.model, example)
            self.calls = recorder.calls
        except Exception:
            # some higher-order ops (torch.cond, map) refuse a function mode: run it plainly
            self.findings = [f for f in self.findings if f.rule == "multi-device"]
            try:
                with torch.no_grad():
                    output = self.run(self.model, example)
            except Exception as exc:
                self.add("forward-fails", "error", list(METHODS),
                         f"forward fails on the `inputs` example: {first_line(exc)}",
                         "make `inputs` match forward's arguments (names, shapes, dtypes)",
                         self.user.in_traceback(exc))
                return None
        self._check_outputs(output)
        return output

    def _check_outputs(self, output: Any) -> None:
        import torch

        from qntz.runtime.torchio import output_names

        leaves = torch.utils._pytree.tree_leaves(output)
        named = output_names(output, self.inputs, with_none=True)
        nones = [n for n, leaf in zip(named, leaves) if leaf is None]
        if nones:  # an optional output not computed (audio encoders without their mask)
            self.add("none-output", "warning", [],
                     f"forward returns None for {', '.join(nones)}: "
                     f"{'it is' if len(nones) == 1 else 'they are'} left out of every comparison",
                     "nothing to do if that output is unused; else pass the input it needs")
        odd = [type(leaf).__name__ for leaf in leaves
               if not isinstance(leaf, torch.Tensor) and leaf is not None]
        if odd:
            self.add("non-tensor-output", "error", list(METHODS),
                     f"forward returns {', '.join(sorted(set(odd)))}, not only tensors",
                     "return torch tensors (or tuples, lists, dicts of them); convert to "
                     "NumPy after inference, outside the model")

    def python_value(self, name: str, file: str, line: int) -> None:
        code = linecache.getline(file, line).strip()
        if name in ("numpy", "__array__") or any(k in code for k in ("np.", "numpy.", "cv2.")):
            self.add("numpy-round-trip", "error", list(METHODS),
                     f"tensor values leave torch for NumPy/OpenCV: `{code}`",
                     FIXES["numpy"], (file, line))
        elif name == "__bool__":
            self.add("data-dependent-control-flow", "error", ["trace", "export"],
                     f"control flow depends on tensor values: `{code}`",
                     FIXES["control-flow"], (file, line))
        elif "math." in code:
            self.add("python-math", "error", ["trace", "export"],
                     f"`math` computes on a tensor value, outside the graph: `{code}`",
                     FIXES["math"], (file, line))
        else:
            self.add("tensor-to-python", "error", ["trace", "export"],
                     f"a tensor value becomes a Python number ({name.strip('_')}): `{code}`",
                     FIXES["item"], (file, line))


def tensors_only(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Flattened outputs without the `None`s (object arrays holding None): a None output
    is named in the findings and compared with nothing."""
    return [o for o in outputs if not (o.dtype == object and o.shape == () and o.item() is None)]


class PythonValues:
    """Records, during an eager forward, where the user's code turns tensors into Python.

    Data-dependence is judged by data: a value computed only from parameters, buffers and
    constants (never from an input) is the same on every input, so freezing it is right."""

    def __init__(self, checks: Checks):
        self.checks = checks
        self.calls: dict[str, tuple[str, int]] = {}
        self.mode: Any = None
        self.constants = Constants(checks.model)

    def __enter__(self) -> PythonValues:
        from torch.overrides import TorchFunctionMode

        outer = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                name = getattr(func, "__name__", "")
                constant = outer.constants.all_of((args, kwargs))
                file, line = outer.checks.user.caller()
                if file is not None and line is not None:
                    outer.calls.setdefault(name, (file, line))
                    if name in PYTHON_VALUE and not constant:
                        outer.checks.python_value(name, file, line)
                    elif name in PYTHON_VALUE:
                        outer.checks.constant_sites.add((file, line))
                result = func(*args, **(kwargs or {}))
                outer.constants.mark(result, constant)
                return result

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


class Constants:
    """Tensors whose values do not depend on the inputs: the model's parameters, buffers and
    tensor attributes, and what torch computes from them alone."""

    def __init__(self, model: Any):
        import torch

        self.known: dict[int, Any] = {}
        for module in model.modules():
            tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False),
                       *(v for v in vars(module).values() if isinstance(v, torch.Tensor))]
            self.mark(tensors)

    def _tensors(self, value: Any) -> list[Any]:
        import torch

        return [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]

    def mark(self, value: Any, constant: bool = True) -> None:
        """Record the tensors of `value` as constants, or (an in-place write of data into a
        constant) as constants no more."""
        import weakref

        for tensor in self._tensors(value):
            if constant:
                self.known[id(tensor)] = weakref.ref(tensor)
            else:
                self.known.pop(id(tensor), None)

    def all_of(self, value: Any) -> bool:
        """Every tensor in `value` is a constant (true when there is none: a new tensor)."""
        for tensor in self._tensors(value):
            ref = self.known.get(id(tensor))
            if ref is None or ref() is not tensor:
                return False
        return True


ELSE = "{else}"  # where a fix offers the capture methods that work: filled in at the end


def other_methods(fix: str, methods: list[str], verdicts: dict[str, str]) -> str:
    """Fill a fix's `{else}` with the capture methods that work and that the finding does
    not concern: never a method that fails, never the method itself."""
    working = [m for m in ("export", "trace", "script")
               if verdicts.get(m) in ("ok", "risky") and m not in methods]
    clause = ", or capture with " + " or ".join(f"`uses: {m}`" for m in working) \
        if working else ""
    return fix.replace(ELSE, clause)


FIXES = {
    "multi-device": "move the whole model to one device (model.to(device)) before capturing",
    "numpy": "replace the NumPy/OpenCV call with torch ops (torch.sin, torch.clamp, "
             "torch.nn.functional.interpolate, ...) so it stays in the graph",
    "control-flow": "compute both sides and pick with torch.where(cond, a, b), or use "
                    "torch.cond for real branches{else}",
    "math": "use the torch function (torch.sqrt, torch.exp, ...) on the tensor{else}",
    "item": "keep the value a tensor (drop .item()/float()/int() and use it in torch "
            "ops){else}",
    "data-dependent": "replace the Python branch or value with torch.where / "
                      "torch.cond{else}",
    "frozen-shape": "derive sizes in torch (x.shape used directly, reshape(x.shape[0], -1), "
                    "flatten) instead of int(...) or Python arithmetic{else}",
}

