"""The checks behind `preflight`: general rules of export, then each method for real.

Every method is tried on the live model and its result compared with eager on inputs
unlike the capture example (other values, the range's ends, other sizes), so a verdict
is a measurement, not a guess. Findings are located in the model's own source.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable
from typing import Any

import numpy as np

from qntz.errors import first_line
from qntz.findings import METHODS, Finding, UserCode, definition_line
from qntz.inputs import InputSpec, capture_example, generate, opt_sizes, size_variants

PYTHON_VALUE = {"__bool__", "item", "tolist", "numpy", "__array__", "__int__", "__float__",
                "__index__", "__complex__"}


class Checks:
    """Runs the checks on one live model; collects findings and per-method verdicts."""

    def __init__(self, model: Any, inputs: dict[str, InputSpec], opset: int,
                 report: Callable[[str], None], uses: list[str]):
        self.model, self.inputs, self.opset, self.report = model, inputs, opset, report
        self.uses = uses if len(uses) == 1 else []
        self.user = UserCode.of(model)
        self.findings: list[Finding] = []
        self.verdicts: dict[str, str] = {}
        self.details: dict[str, str] = {}
        self.captured: dict[str, Any] = {}
        self.calls: dict[str, tuple[str, int]] = {}

    def add(self, rule: str, severity: str, methods: list[str], message: str, fix: str,
            where: tuple[str | None, int | None] = (None, None)) -> None:
        file, line = where if where[0] else definition_line(self.model)
        finding = Finding(rule, severity, methods, message, fix, file, line)
        if all(f.as_dict() != finding.as_dict() for f in self.findings):
            self.findings.append(finding)

    # -- inputs and agreement -------------------------------------------------------------
    def args(self, feed: dict[str, np.ndarray]) -> tuple[Any, ...]:
        from qntz.torchio import to_torch

        return to_torch(feed, self.inputs)

    def probes(self) -> list[tuple[str, str, dict[str, np.ndarray]]]:
        """(kind, label, feed): other values at the capture sizes, then other sizes."""
        rng = np.random.default_rng(4242)
        opt = opt_sizes(self.inputs)
        out = [("values", f"{fill} values", {n: generate(s, opt, rng, fill)
                                             for n, s in self.inputs.items()})
               for fill in ("random", "low", "high")]
        for sizes in size_variants(self.inputs):
            if sizes != opt:
                label = ",".join(f"{d}={v}" for d, v in sizes.items())
                out.append(("sizes", label, {n: generate(s, sizes, rng)
                                             for n, s in self.inputs.items()}))
        return out

    def serializable(self, method: str, save: Callable[[Any], None]) -> bool:
        """The capture step saves what it captured: some captures work and cannot be saved."""
        import io

        try:
            save(io.BytesIO())
            return True
        except Exception as exc:
            self.add(f"{method}-not-serializable", "error", [method],
                     f"the {method}d model cannot be saved: {first_line(exc)}",
                     "replace the construct it names (e.g. a Python autograd.Function) or use "
                     "another capture method", self.user.in_text(str(exc)))
            return False

    def agrees(self, method: str, call: Callable[..., Any]) -> bool:
        """Compare a captured model with eager; record a finding on the first disagreement."""
        import torch

        from qntz.torchio import flatten_outputs

        for kind, label, feed in self.probes():
            with torch.inference_mode():
                want = flatten_outputs(self.model(*self.args(feed)))
                try:
                    got = flatten_outputs(call(*self.args(feed)))
                except Exception as exc:
                    self._disagreement(method, kind, label, f"fails to run: {first_line(exc)}")
                    return False
            if len(got) != len(want) or any(
                    g.shape != w.shape or not np.allclose(g, w, rtol=1e-3, atol=1e-4,
                                                          equal_nan=True)
                    for g, w in zip(got, want)):
                self._disagreement(method, kind, label, "gives other outputs than eager")
                return False
        return True

    def _disagreement(self, method: str, kind: str, label: str, what: str) -> None:
        located = self._event_location(method)
        if kind == "values":
            self.add(f"{method}-data-dependent", "error", [method],
                     f"the {method}d model {what} on inputs with {label}: it froze a value "
                     "or a branch of the capture example",
                     FIXES["data-dependent"], located)
        else:
            self.add(f"{method}-frozen-shape", "error", [method],
                     f"the {method}d model {what} at {label}: a size of the capture example "
                     "was frozen into it", FIXES["frozen-shape"], located)

    def _event_location(self, method: str) -> tuple[str | None, int | None]:
        for finding in self.findings:
            if method in finding.methods and finding.file:
                return finding.file, finding.line
        return None, None

    # -- general rules --------------------------------------------------------------------
    def general(self) -> Any:
        """One device, tensors in and out, torch doing the computing. Returns eager output."""
        import torch

        devices = {str(t.device) for t in [*self.model.parameters(), *self.model.buffers()]}
        if len(devices) > 1:
            self.add("multi-device", "error", list(METHODS),
                     f"parameters and buffers live on {len(devices)} devices "
                     f"({', '.join(sorted(devices))})", FIXES["multi-device"])
        example = self.args(capture_example(self.inputs))
        try:
            with PythonValues(self) as recorder, torch.inference_mode():
                output = self.model(*example)
            self.calls = recorder.calls
        except Exception:
            # some higher-order ops (torch.cond, map) refuse a function mode: run it plainly
            self.findings = [f for f in self.findings if f.rule == "multi-device"]
            try:
                with torch.inference_mode():
                    output = self.model(*self.args(capture_example(self.inputs)))
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

        leaves = torch.utils._pytree.tree_leaves(output)
        odd = [type(leaf).__name__ for leaf in leaves if not isinstance(leaf, torch.Tensor)]
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


class PythonValues:
    """Records, during an eager forward, where the user's code turns tensors into Python."""

    def __init__(self, checks: Checks):
        self.checks = checks
        self.calls: dict[str, tuple[str, int]] = {}
        self.mode: Any = None

    def __enter__(self) -> PythonValues:
        from torch.overrides import TorchFunctionMode

        outer = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                name = getattr(func, "__name__", "")
                file, line = outer.checks.user.caller()
                if file is not None and line is not None:
                    outer.calls.setdefault(name, (file, line))
                    if name in PYTHON_VALUE:
                        outer.checks.python_value(name, file, line)
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


FIXES = {
    "multi-device": "move the whole model to one device (model.to(device)) before capturing",
    "numpy": "replace the NumPy/OpenCV call with torch ops (torch.sin, torch.clamp, "
             "torch.nn.functional.interpolate, ...) so it stays in the graph",
    "control-flow": "compute both sides and pick with torch.where(cond, a, b), use torch.cond "
                    "for real branches, or capture with `uses: script`",
    "math": "use the torch function (torch.sqrt, torch.exp, ...) on the tensor",
    "item": "keep the value a tensor (drop .item()/float()/int() and use it in torch ops), "
            "or capture with `uses: script`",
    "data-dependent": "replace the Python branch or value with torch.where / torch.cond, or "
                      "capture with `uses: script`",
    "frozen-shape": "derive sizes in torch (x.shape used directly, reshape(x.shape[0], -1), "
                    "flatten) instead of int(...) or Python arithmetic, or use `uses: export`",
}

