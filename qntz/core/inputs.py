"""The model's inputs: shapes with named dynamic dims, dtypes, and generated sample data."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError
from qntz.core.wording import did_you_mean

if TYPE_CHECKING:
    import numpy as np

DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")
INTEGER_LIMITS = {"int64": (-2**63, 2**63 - 1), "int32": (-2**31, 2**31 - 1),
                  "int8": (-128, 127), "uint8": (0, 255), "bool": (0, 1)}
CAPTURE_SEED = 0
MAX_ELEMENTS = 2**26  # elements of one generated input at its largest sizes (256 MiB of fp32)


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str
    dims: dict[str, tuple[int, int, int]]  # every named dim of this input: (min, opt, max)
    range: tuple[float, float]  # integers: both ends included
    role: str | None = None  # mask: padded rows (trailing zeros); tokens: pad ids there
    multiple_of: dict[str, int] = field(default_factory=dict)  # sizes a dim accepts

    def record(self) -> dict[str, Any]:
        """As cache keys hold it (no rule: no entry, so older keys stay valid)."""
        record = asdict(self)
        if not self.multiple_of:
            del record["multiple_of"]
        return record

    def concrete(self, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """The axes whose size varies: a named dim given one size (`[N, N, N]`) is static,
        as exporters need it (torch.export refuses a Dim with min = max)."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)
                and self.dims[d][0] != self.dims[d][2]}


def parse_inputs(section: dict[str, Any], where: Callable[..., str]) -> dict[str, InputSpec]:
    """Validate the `inputs` section beyond its schema: every named dim needs a range."""
    ranges: dict[str, tuple[int, int, int]] = {}
    for name, spec in section.items():
        for dim, bounds in (spec.get("dynamic") or {}).items():
            low, opt, high = bounds
            if not 1 <= low <= opt <= high:
                raise PipelineError(
                    f"input '{name}': dynamic dim '{dim}' range {bounds} is not min <= opt <= max",
                    where=where("inputs", name, "dynamic", dim),
                    hint="write [min, opt, max] with 1 <= min <= opt <= max")
            if dim in ranges and ranges[dim] != (low, opt, high):
                raise PipelineError(
                    f"input '{name}': dim '{dim}' has two different ranges",
                    where=where("inputs", name, "dynamic", dim), hint="give it one range")
            ranges[dim] = (low, opt, high)
    _check_named(section, where)
    multiples = _multiples(section, ranges, where)
    return {name: _parse_one(name, spec, ranges, where, multiples)
            for name, spec in section.items()}


def _check_named(section: dict[str, Any], where: Callable[..., str]) -> None:
    """Every dim `dynamic` gives a range is named in some input's shape: a range that no
    shape uses (a typo, `btch`) would otherwise be ignored and the dim stay fixed."""
    named = sorted({d for spec in section.values() for d in spec["shape"] if isinstance(d, str)})
    for name, spec in section.items():
        for dim in spec.get("dynamic") or {}:
            if dim not in named:
                raise PipelineError(
                    f"input '{name}': dynamic dim '{dim}' is not named in any input's shape"
                    f"{did_you_mean(dim, named)}",
                    where=where("inputs", name, "dynamic", dim, "<key>"),
                    hint=f"write '{dim}' in a `shape` where that size varies, or remove it "
                    "from `dynamic`")


def _multiples(section: dict[str, Any], ranges: dict[str, tuple[int, int, int]],
               where: Callable[..., str]) -> dict[str, int]:
    """`multiple_of: {dim: N}`: the sizes the model accepts; min, opt and max must be ones."""
    found: dict[str, int] = {}
    for name, spec in section.items():
        for dim, step in (spec.get("multiple_of") or {}).items():
            at = where("inputs", name, "multiple_of", dim)
            if dim not in ranges:
                raise PipelineError(f"input '{name}': multiple_of names '{dim}', which is not "
                                    "a dynamic dim", where=at,
                                    hint="name a dim that `dynamic` gives a range")
            if found.get(dim, step) != step:
                raise PipelineError(f"input '{name}': dim '{dim}' has two multiple_of rules",
                                    where=at, hint="give it one")
            wrong = [v for v in ranges[dim] if v % step]
            if wrong:
                raise PipelineError(
                    f"input '{name}': dim '{dim}' must be a multiple of {step}, but its range "
                    f"{list(ranges[dim])} has {wrong[0]}", where=at,
                    hint=f"make min, opt and max multiples of {step}")
            found[dim] = step
    return found


def _parse_one(name: str, spec: dict[str, Any], ranges: dict[str, tuple[int, int, int]],
               where: Callable[..., str], multiples: dict[str, int]) -> InputSpec:
    dims: dict[str, tuple[int, int, int]] = {}
    for axis, dim in enumerate(spec["shape"]):
        if isinstance(dim, str):
            if dim not in ranges:
                raise PipelineError(
                    f"input '{name}': named dimension '{dim}' has no range",
                    where=where("inputs", name, "shape", axis),
                    hint=f"add `dynamic: {{{dim}: [min, opt, max]}}` to input '{name}'")
            dims[dim] = ranges[dim]
    _check_elements(name, spec["shape"], dims, where)
    dtype = spec.get("dtype", "float32")
    default_range = (0.0, 1.0) if dtype.startswith(("float", "bfloat")) else (0, 9)
    low, high = spec.get("range", default_range)
    _check_range(name, dtype, low, high, where, bool(spec.get("constant")))
    role = spec.get("role") or _inferred_role(name, dtype, (low, high))
    rules = {d: multiples[d] for d in dims if d in multiples}
    return InputSpec(name, tuple(spec["shape"]), dtype, dims, (low, high), role, rules)


def _inferred_role(name: str, dtype: str, bounds: tuple[float, float]) -> str | None:
    """A 0/1 integer (or bool) input named like a mask is a padding mask."""
    masky = name == "mask" or name.endswith("_mask")
    binary = dtype == "bool" or (not dtype.startswith(("float", "bfloat"))
                                 and tuple(bounds) == (0, 1))
    return "mask" if masky and binary else None


def _check_elements(name: str, shape: list[int | str], dims: dict[str, tuple[int, int, int]],
                    where: Callable[..., str]) -> None:
    elements = 1
    for dim in shape:
        elements *= dims[dim][2] if isinstance(dim, str) else dim
    if elements > MAX_ELEMENTS:
        raise PipelineError(
            f"input '{name}' has more than {MAX_ELEMENTS} elements at its largest sizes",
            where=where("inputs", name, "shape"),
            hint="shrink the shape or the dynamic maximum (generated data must fit in memory)")


def _check_range(name: str, dtype: str, low: float, high: float,
                 where: Callable[..., str], constant: bool = False) -> None:
    """Generated data draws from [low, high) for floats and from low to high, both included,
    for integers: a span that holds more than one value and that numpy can sample."""
    at = where("inputs", name, "range")
    if dtype == "bool":
        return
    floating = dtype.startswith(("float", "bfloat"))
    if floating and not low < high:
        raise PipelineError(f"input '{name}': range [{low}, {high}] is empty", where=at,
                            hint="write [low, high]")
    if not floating and not (low < high or (constant and low == high)):
        what = "is empty" if low > high else f"generates only the value {low}"
        raise PipelineError(f"input '{name}': range [{low}, {high}] {what}", where=at,
                            hint="integer ranges include both ends: write [low, high] with "
                            "low < high, e.g. [0, 1] for a mask (or add `constant: true`)")
    if floating:
        try:
            span = float(high) - float(low)
        except OverflowError:  # an int beyond float range
            span = math.inf
        if not math.isfinite(span):
            raise PipelineError(f"input '{name}': range [{low}, {high}] is too wide", where=at,
                                hint="keep high - low within float64")
        return
    least, most = INTEGER_LIMITS[dtype]
    if not least <= int(low) <= int(high) <= most:
        raise PipelineError(
            f"input '{name}': range [{low}, {high}] goes beyond {dtype} "
            f"[{least}, {most}]", where=at,
            hint=f"write integer bounds with low < high within {dtype} (both ends included)")


def all_dims(inputs: dict[str, InputSpec]) -> dict[str, tuple[int, int, int]]:
    return {d: r for spec in inputs.values() for d, r in spec.dims.items()}


def opt_sizes(inputs: dict[str, InputSpec]) -> dict[str, int]:
    return {d: r[1] for d, r in all_dims(inputs).items()}


def generate(spec: InputSpec, sizes: dict[str, int], rng: np.random.Generator,
             fill: str = "random") -> np.ndarray:
    """Sample data for one input. `fill` is random, low or high (the range's ends).

    A mask is padded instead: random fill gives rows of varied lengths (the first full,
    the others with trailing zeros), low the shortest rows (one position), high full ones."""
    import numpy as np
    shape = spec.concrete(sizes)
    if spec.role == "mask":
        return _mask(spec, shape, rng, fill)
    low, high = spec.range
    np_dtype = np.float32 if spec.dtype == "bfloat16" else np.dtype(spec.dtype)
    if spec.dtype == "bool":
        values = rng.random(shape) < 0.5 if fill == "random" else np.full(shape, fill == "high")
        return values
    if fill != "random":
        value = low if fill == "low" else high
        if not np.issubdtype(np_dtype, np.floating):
            value = int(value)
        return np.full(shape, value, dtype=np_dtype)
    if np.issubdtype(np_dtype, np.floating):
        return rng.uniform(low, high, size=shape).astype(np_dtype)
    return rng.integers(int(low), int(high), size=shape, endpoint=True).astype(np_dtype)


def _mask(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator,
          fill: str) -> np.ndarray:
    """Ones then zeros along the last axis, a length per row (every axis before the last)."""
    import numpy as np
    np_dtype = np.dtype("float32" if spec.dtype == "bfloat16" else spec.dtype)
    if not shape:
        return np.ones(shape, np_dtype)
    rows, length = shape[:-1], shape[-1]
    if fill == "random":
        lengths = rng.integers(1, length, size=rows, endpoint=True)
        lengths.reshape(-1)[:1] = length  # one full row: the unpadded path is covered too
    else:
        lengths = np.full(rows, 1 if fill == "low" else length)
    positions = np.arange(length)
    return (positions < lengths[..., None]).astype(np_dtype)


def generate_feed(inputs: dict[str, InputSpec], sizes: dict[str, int],
                  rng: np.random.Generator, fill: str = "random") -> dict[str, np.ndarray]:
    """One sample of every input; token ids where a mask of their shape pads hold `low`."""
    import numpy as np
    feed = {n: generate(s, sizes, rng, fill) for n, s in inputs.items()}
    masks = [feed[n] for n, s in inputs.items() if s.role == "mask"]
    for name, spec in inputs.items():
        if spec.role == "tokens":
            mask = next((m for m in masks if m.shape == feed[name].shape), None)
            if mask is not None:
                feed[name] = np.where(mask != 0, feed[name], int(spec.range[0])
                                      ).astype(feed[name].dtype)
    return feed


def capture_sizes(inputs: dict[str, InputSpec]) -> dict[str, int]:
    """The sizes a model is captured at: opt, except that a dynamic dim whose range reaches
    2 is never captured at 1 (torch.export specializes a size-1 example dim to 1, so the
    capture would fail or be static)."""
    return {d: r[1] if r[1] >= 2 else min(2, r[2]) for d, r in all_dims(inputs).items()}


def capture_example(inputs: dict[str, InputSpec]) -> dict[str, np.ndarray]:
    """The example a model is captured with: `capture_sizes`, seeded values."""
    import numpy as np
    rng = np.random.default_rng(CAPTURE_SEED)
    return generate_feed(inputs, capture_sizes(inputs), rng)


def size_variants(inputs: dict[str, InputSpec]) -> list[dict[str, int]]:
    """Sizes across the dynamic range: min, max and a point between, never only opt."""
    dims = all_dims(inputs)
    if not dims:
        return [{}]
    variants = [{d: r[0] for d, r in dims.items()}, {d: r[2] for d, r in dims.items()}]
    steps = {d: n for spec in inputs.values() for d, n in spec.multiple_of.items()}
    middle = {d: _between(r, steps.get(d, 1)) for d, r in dims.items()}
    variants.append(middle)
    unique: list[dict[str, int]] = []
    for v in variants:
        if v not in unique:
            unique.append(v)
    return unique


def _between(bounds: tuple[int, int, int], step: int = 1) -> int:
    low, opt, high = bounds
    candidates = [v for v in range(low, high + 1, step) if v not in (low, opt, high)]
    return candidates[len(candidates) // 2] if candidates else opt


def evaluation_samples(inputs: dict[str, InputSpec], samples: int,
                       seed: int = 1000) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Labelled inputs for comparisons: other values and other sizes than the capture example.

    Every size variant gets `samples` random draws; the extreme values (the range's low and
    high ends) are added at the first size, since data-dependent branches hide there.
    """
    import numpy as np
    rng = np.random.default_rng(seed)
    out: list[tuple[str, dict[str, np.ndarray]]] = []
    for index, sizes in enumerate(size_variants(inputs)):
        label = ",".join(f"{d}={v}" for d, v in sizes.items()) or "static"
        for draw in range(samples):
            out.append((f"{label} random#{draw}", generate_feed(inputs, sizes, rng)))
        if index == 0:
            for fill in ("low", "high"):
                out.append((f"{label} {fill}", generate_feed(inputs, sizes, rng, fill)))
    return out
