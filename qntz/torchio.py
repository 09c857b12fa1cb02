"""Moving data between NumPy feeds and torch calls. Imports torch: use inside `run` only."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qntz.inputs import InputSpec


def to_torch(feed: dict[str, np.ndarray], inputs: dict[str, InputSpec]) -> tuple[Any, ...]:
    """Positional arguments in the order the `inputs` section lists them."""
    args = []
    for name, spec in inputs.items():
        # a copy: a model that writes into its input must not change the caller's data
        tensor = torch.from_numpy(np.array(feed[name], copy=True))
        if spec.dtype == "bfloat16":
            tensor = tensor.to(torch.bfloat16)
        args.append(tensor)
    return tuple(args)


def flatten_outputs(value: Any) -> list[np.ndarray]:
    """Tensors of a nested output (tuples, lists, dicts) in the order exporters use."""
    leaves = torch.utils._pytree.tree_leaves(value)
    out = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            leaf = leaf.detach()
            if leaf.dtype == torch.bfloat16:
                leaf = leaf.float()
            out.append(leaf.cpu().numpy())
        else:
            out.append(np.asarray(leaf))
    return out


def dynamic_shapes(inputs: dict[str, InputSpec]) -> tuple[dict[int, Any] | None, ...]:
    """torch.export dynamic_shapes from the `inputs` section: one Dim per named dimension."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes: list[dict[int, Any] | None] = []
    for spec in inputs.values():
        axes = {}
        for axis, name in spec.dynamic_axes.items():
            low, _, high = spec.dims[name]
            if name not in dims:
                dims[name] = Dim(name, min=low, max=high)
            axes[axis] = dims[name]
        shapes.append(axes or None)
    return tuple(shapes)
