"""Where a failing TorchScript or ExportedProgram candidate departs from the eager model.

The eager model runs once with a forward hook on every submodule, recording what each
received and returned. Every submodule the candidate still has under the same name (a
traced or scripted module keeps the hierarchy; an ExportedProgram does once unflattened)
is then fed exactly what its eager twin received, and its output compared with the eager
output. An error there is the submodule's own: its inputs were right. Of the submodules
that disagree, the innermost ones (no disagreeing submodule inside) are where the
divergence starts; they rank by their error. When only the whole model disagrees, the
cause is in the model's own forward (a traced branch, a baked constant).
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLD = 1e-4  # relative error of a float module fed its exact inputs: rounding is ~1e-7
LAYERS_KEPT = 10


def replay(eager: Any, candidate: Any, feed: dict[str, np.ndarray], inputs: dict[str, Any]
           ) -> list[dict[str, Any]]:
    """The disagreeing submodules, innermost first and by error, as report rows."""
    import torch

    from qntz.runtime.torchio import to_torch

    calls = _record(eager, *to_torch(feed, inputs, eager))
    theirs = dict(candidate.named_modules())
    errors: dict[str, tuple[float, float]] = {}
    for name, (args, kwargs, output) in calls.items():
        module = theirs.get(name)
        if module is None:
            continue
        try:
            with torch.inference_mode():
                errors[name] = _error(module(*args, **kwargs), output)
        except Exception:  # a submodule the candidate cannot run alone: not comparable
            continue
    flagged = [n for n, (e, _) in errors.items() if e > THRESHOLD]
    innermost = [n for n in flagged if not any(o != n and _inside(o, n) for o in flagged)]
    ranked = sorted(innermost, key=lambda n: -errors[n][0])
    kinds = dict(eager.named_modules())
    return [{"module": name or "(the model's own forward)", "node": name or None,
             "op": type(kinds[name]).__name__, "precision": "float32",
             "error_added": _round(errors[name][0]), "error": _round(errors[name][0]),
             "cosine": _round(errors[name][1]), "weight_error": None}
            for name in ranked[:LAYERS_KEPT]]


def summary(layers: list[dict[str, Any]]) -> str:
    if not layers:
        return f"no submodule fed its eager inputs is off by more than {THRESHOLD:g}"
    top = layers[0]
    if not top["node"]:
        return ("every submodule fed its eager inputs agrees: the difference is made in the "
                "model's own forward (a branch or a constant the capture froze?)")
    return (f"first disagreeing module `{top['module']}` ({top['op']}), fed its eager "
            f"inputs: relative error {top['error']:.3g}")


def _record(model: Any, args: tuple, kwargs: dict) -> dict[str, tuple]:
    """Each module's first call in eager: (args, kwargs, output), cloned (a later in-place
    op would change them)."""
    import torch

    calls: dict[str, tuple] = {}

    def hook(name: str) -> Any:
        def record(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if name not in calls:
                calls[name] = _cloned((args, kwargs, output))
        return record

    handles = [m.register_forward_hook(hook(n), with_kwargs=True)
               for n, m in model.named_modules()]
    try:
        with torch.inference_mode():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _cloned(value: Any) -> Any:
    import torch

    return torch.utils._pytree.tree_map(
        lambda v: v.clone() if isinstance(v, torch.Tensor) else v, value)


def _error(got: Any, want: Any) -> tuple[float, float]:
    """The worst relative error (bounded by 2) and cosine over the outputs' tensors."""
    from qntz.runtime.torchio import flatten_outputs

    worst, cosine = 0.0, 1.0
    mine, theirs = flatten_outputs(got), flatten_outputs(want)
    if len(mine) != len(theirs):
        return 2.0, 0.0
    for g, w in zip(mine, theirs):
        g64, w64 = np.asarray(g, np.float64).ravel(), np.asarray(w, np.float64).ravel()
        if g64.shape != w64.shape:
            return 2.0, 0.0
        scale = max(np.linalg.norm(w64), np.linalg.norm(g64))
        if scale == 0:
            continue
        worst = max(worst, float(np.linalg.norm(g64 - w64) / scale))
        norms = np.linalg.norm(w64) * np.linalg.norm(g64)
        cosine = min(cosine, float(g64 @ w64 / norms) if norms else 0.0)
    return worst, cosine


def _inside(inner: str, outer: str) -> bool:
    return outer == "" or inner.startswith(outer + ".")


def _round(value: float) -> float:
    return float(f"{value:.6g}")
