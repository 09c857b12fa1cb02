"""Rounding as a different but correct float runtime might do it, applied to eager.

Every floating result is multiplied by (1 + δ), |δ| ≤ level. A normalization also moves by
the rounding of its statistics: its mean of n values is a sum whose error grows with n
(up to about n·u of the values' size for a plain running sum, Higham's bound), and the
output moves by that error times rstd and the weight. Where the variance is at the
rounding level (a constant input: rstd ≈ 1/sqrt(eps)) that is what separates two correct
runtimes (MONAI's 3-D UNet on an all-zero 32³ volume: ONNX Runtime's InstanceNormalization
mean is about 600 u off, torch's under 1 u); on ordinary inputs it is rounding-sized.
"""

from __future__ import annotations

from typing import Any

from qntz.runtime.metrics import ROUNDING

# kernels returning (output, mean, rstd), and how their statistics meet the input's channels
NORMALIZATIONS = {"native_batch_norm": "channel", "_native_batch_norm_legit": "channel",
                  "_batch_norm_with_update": "channel", "native_group_norm": "group",
                  "native_layer_norm": "trailing"}
# composites that reach those kernels; only they are decomposed (noise inside another
# composite, an upsampling's index arithmetic say, would compute nonsense, not rounding)
NORMALIZATION_COMPOSITES = ("instance_norm", "batch_norm", "_batch_norm_impl_index",
                            "group_norm", "layer_norm")


def relative_noise(level: float, seed: int, protected: frozenset[int] = frozenset()) -> Any:
    """A torch dispatch mode adding that noise, seeded, to the results of the kernels that
    compute: a normalization composite (`instance_norm`) runs as its kernel. A view
    computes nothing and is left alone; zeros stay zero and signs stay, so comparisons on
    exact values (`x.sum() > 0` on zeros) take the same branch. A result whose storage is
    in `protected` (data pointers: the weights a copy shares with the live model, which an
    in-place kernel returns as its result) is left alone too."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    gen = torch.Generator().manual_seed(seed)

    def noisy(t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 0 and \
            (not protected or t.untyped_storage().data_ptr() not in protected)

    class RelativeNoise(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                               kwargs: dict | None = None) -> Any:
            name = func.overloadpacket.__name__
            if name in NORMALIZATION_COMPOSITES:
                with self:  # inference mode keeps them whole: run them as their kernels
                    out = func.decompose(*args, **(kwargs or {}))
                if out is not NotImplemented:
                    return out
            out = func(*args, **(kwargs or {}))
            if func.is_view:
                return out
            layout = NORMALIZATIONS.get(name)
            if layout is not None:
                _shift_by_statistics(layout, args, out, level, gen)
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if noisy(t):
                    noise = torch.rand(t.shape, generator=gen, dtype=torch.float64)
                    moved = t + (t * ((2 * noise - 1) * level)).to(t.dtype)
                    # no value leaves the finite range, nor turns -inf + inf into NaN (an
                    # attention mask at the dtype's minimum)
                    t.copy_(torch.where(torch.isfinite(moved), moved, t))
            return out

    return RelativeNoise()


def _shift_by_statistics(layout: str, args: tuple, out: tuple, level: float, gen: Any) -> None:
    """Move the normalized output as a mean off by δ·max(level, n·u) of itself would."""
    import torch

    x, weight = args[0], args[2 if layout == "trailing" else 1]
    normalized, mean, rstd = out[0], out[1], out[2]
    if mean.numel() == 0 or not x.numel():  # eval-mode batch norm: running statistics
        return
    n = x.numel() // mean.numel()
    delta = 2 * torch.rand(mean.shape, generator=gen, dtype=torch.float64) - 1
    shift = mean.double() * delta * max(level, n * ROUNDING) * rstd.double()
    shift = _to_input(layout, shift, x)
    if weight is not None:
        shift = shift * (weight.double() if layout == "trailing" else
                         weight.double().reshape(1, -1, *[1] * (x.dim() - 2)))
    normalized.sub_(shift.to(normalized.dtype))


def _to_input(layout: str, shift: Any, x: Any) -> Any:
    """Per-statistic shifts laid out to broadcast against the input `x`."""
    rest = [1] * (x.dim() - 2)
    if layout == "channel":
        return shift.reshape(1, -1, *rest)
    if layout == "group":  # (N, groups) -> (N, C), each group's channels together
        batch, groups = shift.shape
        per_group = x.shape[1] // groups
        return shift.repeat_interleave(per_group, dim=1).reshape(batch, -1, *rest)
    return shift  # layer norm's statistics keep the reduced dims as 1
