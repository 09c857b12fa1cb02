"""Numbers that say how far a candidate's outputs are from the reference's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ATOL, RTOL = 1e-4, 1e-3  # the allclose bar of `metric: auto`
SCALE = 1e-3  # auto: max abs error as a fraction of the reference's RMS, per input
TINY = float(np.finfo(np.float32).tiny)  # below float32's normal range: zero for our purpose
QUANTILES = ("0.5", "0.9", "0.99", "0.999", "1")
KEPT_ERRORS = 1 << 18  # |error| values kept per input for quantiles (evenly strided beyond)
RANGE_ENDS = ("low", "high")  # the constant samples at the range's ends (evaluation_samples)
LOSSY = ("top1", "cosine")  # metrics averaged over inputs: range ends are judged apart
ROUNDING = 2.0 ** -24  # float32's unit roundoff: the perturbation a float candidate is owed
SENSITIVITY = 4.0  # a candidate may differ by this many times eager's own perturbed change

Jitter = Callable[[float], "list[np.ndarray] | None"]


def range_end(label: str) -> bool:
    """Whether a sample is one of the constant range-end inputs ("batch=1 low")."""
    return label.rpartition(" ")[2] in RANGE_ENDS


@dataclass
class OutputStats:
    """One output of one candidate, over every sample. Truthy only when it passes.

    `metric: auto` judges each input by the first rule that holds: allclose at atol/rtol,
    both sides (near) zero, or a max abs error within `scale` of the reference's RMS on
    that input; the rules that decided are recorded. A wrong conversion is off by a
    fraction of the signal itself, far beyond all three.

    When those fail, two rules ask how well eager itself determines its output on that
    input. A constant input (the range ends) gives a normalization layer zero variance; its
    output is then rounding noise divided by sqrt(eps), and a correct runtime that rounds
    differently lands elsewhere. `float64`: the candidate is as close to eager in float64
    as eager float32 is. `rounding` (`_within_sensitivity`): eager float32 is run again with
    every intermediate result multiplied by (1 + δ), |δ| ≤ 2⁻²⁴, a few seeded times; the
    candidate passes within `SENSITIVITY` times the largest change that caused. That is
    what any correct float32 runtime may do, measured where it matters. It keeps the
    range ends' purpose: a relative perturbation never changes a value's sign nor makes a
    zero non-zero, so a branch like `x.sum() > 0` on all zeros takes the same side and a
    traced-away branch or baked constant (an error of the output's own size) still fails.
    Perturbing the input instead (low + 1 ulp) would cross exactly those branches.

    Under top1/cosine (lossy candidates: INT8, FP16) the range ends do not enter the means
    nor the min/max figures: each is its own row in `range_ends`, passing by allclose,
    within `SENSITIVITY` times eager's change when every intermediate carries relative
    noise as large as the candidate's RMS relative error on the other inputs, or by the
    candidate's own metric on that input (`_holds_alone`). All other
    inputs decide the mean as before. Without a torch reference to perturb (an ONNX source
    or `reference:` another candidate) the range ends stay in the means, as before."""

    name: str
    atol: float | None
    rtol: float | None
    metric: str = "auto"  # what decides pass: auto | allclose | top1 | cosine
    threshold: float = 0.99  # for top1 and cosine
    scale: float = SCALE  # for auto
    match: str = "order"  # rows: match each candidate row to its nearest reference row
    max_abs: float = 0.0
    max_rel: float = 0.0
    max_scaled: float = 0.0  # max abs error over the reference's RMS, worst input
    cosine_min: float = 1.0
    cosine_sum: float = 0.0
    samples: int = 0
    failures: int = 0
    worst_sample: str | None = None
    problem: str | None = None
    rows: int = 0
    agree: int = 0
    rules: dict[str, int] = field(default_factory=dict)  # auto: inputs each rule passed
    range_ends: list[dict[str, Any]] = field(default_factory=list)  # one row per range end
    error_sq: float = 0.0  # sums of squares over every input, for the RMS relative error
    reference_sq: float = 0.0
    reference_n: int = 0  # elements behind reference_sq
    _errors: list[np.ndarray] = field(default_factory=list, repr=False)
    _worst_excess: float = field(default=-np.inf, repr=False)
    _deferred: list[tuple[str, np.ndarray, np.ndarray, Jitter | None]] = field(
        default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.atol = ATOL if self.atol is None else self.atol
        self.rtol = RTOL if self.rtol is None else self.rtol

    def __bool__(self) -> bool:
        if self.problem is not None:
            return False
        if self.metric in LOSSY and not all(r["pass"] for r in self.range_ends):
            return False
        if self.metric == "top1":
            return self.top1 is not None and self.top1 >= self.threshold
        if self.metric == "cosine":
            return self.cosine_mean is not None and self.cosine_mean >= self.threshold
        return self.failures == 0

    @property
    def decided_by(self) -> str:
        """The rule that decided, in words."""
        if self.metric in LOSSY:
            apart = "; range ends apart" if self.range_ends else ""
            return f"{self.metric} ≥ {self.threshold:g}{apart}"
        if self.metric == "allclose":
            return f"allclose (atol {self.atol:g}, rtol {self.rtol:g})"
        words = {"allclose": f"allclose (atol {self.atol:g}, rtol {self.rtol:g})",
                 "zero": "both (near) zero",
                 "scale": f"max abs ≤ {self.scale:g} × reference RMS",
                 "float64": "as close to eager in float64 as eager float32 (within 3×)",
                 "rounding": f"within {SENSITIVITY:g}× eager's change under rounding noise"}
        used = [f"{words[r]} on {n}" for r, n in self.rules.items()]
        return "auto: " + ("; ".join(used) if used else "no input passed")

    def verdict(self) -> str:
        """Why it failed, in numbers."""
        if self.problem:
            return self.problem
        numbers = (f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, cosine "
                   f"{self.cosine_min:.4f}")
        bad = next((r for r in self.range_ends if not r["pass"]), None)
        if self.metric in LOSSY and bad is not None:
            return (f"range end '{bad['sample']}': max abs {bad['max_abs']:.3g} beyond "
                    f"{SENSITIVITY:g}× eager's own change ({_g(bad['sensitivity'])}) under "
                    f"noise at the candidate's error level, and {self.metric} below "
                    f"{self.threshold:g} on it (cosine {bad['cosine']:.4f})")
        if self.metric == "top1":
            top1 = "n/a (no class axis)" if self.top1 is None else f"{self.top1:.2%}"
            return f"top-1 agreement {top1} < {self.threshold:.2%} ({numbers})"
        if self.metric == "cosine":
            return f"mean cosine {self.cosine_mean:.4f} < {self.threshold} ({numbers})"
        bar = f"atol {self.atol:g}, rtol {self.rtol:g}"
        if self.metric == "auto":
            bar += f", nor within {self.scale:g} × reference RMS (worst {self.max_scaled:.3g})"
        return (f"{numbers} ({bar}), worst on "
                f"'{self.worst_sample}', {self.failures}/{self.samples} inputs outside")

    def add(self, label: str, got: np.ndarray, want: np.ndarray,
            exact: Callable[[], np.ndarray | None] | None = None,
            jitter: Jitter | None = None) -> None:
        """One input's outputs; `exact` gives the reference computed in float64 and
        `jitter(p)` eager's outputs with relative noise p on every intermediate, both asked
        for only when the other rules fail."""
        if self.metric in LOSSY and range_end(label) and jitter is not None:
            self._deferred.append((label, got, want, jitter))
            return
        self.samples += 1
        if got.shape != want.shape:
            self.failures += 1
            self.problem = _shape_problem(got.shape, want.shape, label)
            self.worst_sample = label
            return
        if self.match == "rows":
            got = matched_rows(got, want)
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(got64 - want64)
        diff = np.where(np.isnan(got64) & np.isnan(want64), 0.0, diff)
        self._keep_errors(diff, want64)
        if got.size:
            self.max_abs = max(self.max_abs, float(np.nanmax(diff)) if diff.size else 0.0)
            if np.isnan(diff).any():
                self.max_abs = float("nan")
            rel = diff / (np.abs(want64) + self.atol + 1e-12)
            self.max_rel = max(self.max_rel, float(np.nanmax(rel)))
        cos = cosine(got64, want64)
        self.cosine_min = min(self.cosine_min, cos)
        self.cosine_sum += cos
        if got.ndim >= 1 and got.shape[-1] > 1:
            self.agree += int((got64.argmax(-1) == want64.argmax(-1)).sum())
            self.rows += int(np.prod(got.shape[:-1]))
        excess = float(np.nanmax(diff - (self.atol + self.rtol * np.abs(want64)))) \
            if got.size else -1.0
        rule = self._rule(diff, got64, want64, excess)
        if rule is None and self.metric == "auto" and exact is not None:
            rule = self._as_exact_as_reference(got64, want64, exact())
        spread = None
        if rule is None and self.metric == "auto" and jitter is not None:
            rule, spread = self._within_sensitivity(diff, want64, jitter(ROUNDING))
        if range_end(label) and self.metric not in LOSSY:
            self._range_row(label, got64, want64, diff, rule, spread)
        if rule is None:
            self.failures += 1
        else:
            self.rules[rule] = self.rules.get(rule, 0) + 1
        if np.isnan(excess) or excess > self._worst_excess:
            self._worst_excess = excess
            self.worst_sample = label

    def _rule(self, diff: np.ndarray, got: np.ndarray, want: np.ndarray,
              excess: float) -> str | None:
        """The rule under which this input passes, or None."""
        if np.isnan(diff).any():
            return None
        if excess <= 0:
            return "allclose"
        if self.metric != "auto":
            return None
        if np.abs(got).max() < TINY and np.abs(want).max() < TINY:
            return "zero"
        rms = float(np.sqrt(np.mean(np.square(want))))
        scaled = float(diff.max()) / rms if rms >= TINY else np.inf
        self.max_scaled = max(self.max_scaled, scaled)
        return "scale" if scaled <= self.scale else None

    def _as_exact_as_reference(self, got: np.ndarray, want: np.ndarray,
                               truth: np.ndarray | None) -> str | None:
        """On an ill-conditioned input (a normalization of a constant signal) float32 eager
        is itself off by more than any bar: the candidate passes when it is no further from
        the float64 result than eager float32 is. A wrong conversion is, by far."""
        if truth is None or truth.shape != want.shape or np.isnan(truth).any():
            return None
        truth = truth.astype(np.float64)
        own = float(np.abs(want - truth).max())
        return "float64" if own > 0 and float(np.abs(got - truth).max()) <= 3 * own else None

    @staticmethod
    def _within_sensitivity(diff: np.ndarray, want: np.ndarray,
                            runs: list[np.ndarray] | None) -> tuple[str | None, float | None]:
        """Rule "rounding": the error is within SENSITIVITY × the largest change relative
        noise on eager's intermediates made (see the class docstring); and that change."""
        runs = [r for r in runs or [] if r.shape == want.shape]
        if not runs or not diff.size:
            return None, None
        spread = max(float(np.nanmax(np.abs(r.astype(np.float64) - want))) for r in runs)
        passed = spread > 0 and float(diff.max()) <= SENSITIVITY * spread
        return ("rounding" if passed else None), spread

    def _range_row(self, label: str, got: np.ndarray, want: np.ndarray, diff: np.ndarray,
                   rule: str | None, spread: float | None) -> None:
        self.range_ends.append({
            "sample": label, "pass": rule is not None, "rule": rule,
            "max_abs": float(np.nanmax(diff)) if diff.size else 0.0,
            "cosine": cosine(got, want), "sensitivity": spread})

    def finish(self) -> None:
        """Judge the range ends held back under top1/cosine, now that the candidate's error
        level on the other inputs is known."""
        level = max(self.rms_rel or 0.0, ROUNDING)
        for label, got, want, jitter in self._deferred:
            got64, want64 = got.astype(np.float64), want.astype(np.float64)
            if got.shape != want.shape:
                self.range_ends.append({"sample": label, "pass": False, "rule": None,
                                        "max_abs": float("nan"), "cosine": 0.0,
                                        "sensitivity": None})
                continue
            diff = np.abs(got64 - want64)
            close = not np.isnan(diff).any() and bool(
                np.all(diff <= self.atol + self.rtol * np.abs(want64)))
            rule, spread = ("allclose", None) if close else self._within_sensitivity(
                diff, want64, jitter(level) if jitter else None)
            if rule is None and self._holds_alone(got64, want64):
                rule = self.metric
            if rule is None and self._within_draws_scale(diff, want64):
                rule = "draws scale"
            self._range_row(label, got64, want64, diff, rule, spread)
        self._deferred.clear()

    def _holds_alone(self, got: np.ndarray, want: np.ndarray) -> bool:
        """The candidate's own metric, on this one input, meets its threshold: cosine, or
        arg-max agreement over its rows. INT8's error on a constant input, far from its
        calibration data, is not the independent noise the rule above models (measured:
        5-7x its bar on timm's RegNet, 0.5x on random draws); a frozen branch misses both."""
        if self.metric == "cosine":
            return cosine(got, want) >= self.threshold
        if got.ndim < 1 or got.shape[-1] < 2:
            return False
        return float(np.mean(got.argmax(-1) == want.argmax(-1))) >= self.threshold

    def _within_draws_scale(self, diff: np.ndarray, want: np.ndarray) -> bool:
        """A range end whose reference is (near) zero beside the output's size on the random
        draws (an edge filter on a flat image, the logits of a constant input): its cosine
        says nothing, so its error is judged against that size, as the lossy steps are. It
        passes within twice the largest error on the draws, and at most 1% of their RMS
        there; a baked constant or frozen branch is off by the output's own size."""
        if not self.reference_n or not diff.size or np.isnan(diff).any():
            return False
        scale = float(np.sqrt(self.reference_sq / self.reference_n))
        here = float(np.sqrt(np.mean(np.square(want))))
        worst = float(diff.max())
        return here <= 0.1 * scale and worst <= max(2 * self.max_abs, 0.01 * scale)

    def _keep_errors(self, diff: np.ndarray, want: np.ndarray) -> None:
        self.error_sq += float(np.nansum(np.square(diff)))
        self.reference_sq += float(np.nansum(np.square(want)))
        self.reference_n += int(want.size)
        flat = diff.ravel()
        self._errors.append(flat[::max(1, -(-flat.size // KEPT_ERRORS))])

    @property
    def rms_rel(self) -> float | None:
        """RMS of the error over RMS of the reference, over every input (None: all zero)."""
        if self.reference_sq > 0:
            return float(np.sqrt(self.error_sq / self.reference_sq))
        return 0.0 if self.error_sq == 0 else None

    def error_quantiles(self) -> dict[str, float] | None:
        """Quantiles of |error| over every input (a strided sample of large outputs)."""
        kept = np.concatenate(self._errors) if self._errors else np.zeros(0)
        kept = kept[~np.isnan(kept)]
        if not kept.size:
            return None
        return {q: float(np.quantile(kept, float(q))) for q in QUANTILES}

    @property
    def cosine_mean(self) -> float | None:
        return self.cosine_sum / self.samples if self.samples else None

    @property
    def top1(self) -> float | None:
        return self.agree / self.rows if self.rows else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "pass": bool(self), "metric": self.metric,
            "threshold": self.threshold if self.metric in ("top1", "cosine") else None,
            "decided_by": self.decided_by,
            "atol": self.atol, "rtol": self.rtol,
            "scale": self.scale if self.metric == "auto" else None,
            "max_abs": self.max_abs, "max_rel": self.max_rel,
            "max_scaled": self.max_scaled if self.metric == "auto" else None,
            "cosine_min": self.cosine_min,
            "cosine_mean": self.cosine_mean, "top1": self.top1,
            "rms_rel": self.rms_rel, "abs_error_quantiles": self.error_quantiles(),
            "samples": self.samples, "failed_samples": self.failures,
            "worst_sample": self.worst_sample, "problem": self.problem,
            "range_ends": self.range_ends,
        }


def _shape_problem(got: tuple, want: tuple, label: str) -> str:
    if len(got) == len(want) and got[1:] == want[1:] and got:
        return (f"{got[0]} rows vs the reference's {want[0]} on {label} (a variable-length "
                "output, such as detections: the counts must agree)")
    return f"shape {tuple(got)} vs reference {tuple(want)} on {label}"


def matched_rows(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """`got`'s rows (first axis) reordered so that each lands on its nearest row of `want`,
    nearest pairs first: detections in another order are the same detections."""
    if got.ndim == 0 or len(got) < 2:
        return got
    a = got.reshape(len(got), -1).astype(np.float64)
    b = want.reshape(len(want), -1).astype(np.float64)
    distance = np.square(a[:, None, :] - b[None, :, :]).sum(-1)
    order = np.empty(len(got), dtype=int)
    free_got, free_want = set(range(len(got))), set(range(len(want)))
    for flat in np.argsort(distance, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(want))
        if i in free_got and j in free_want:
            order[j] = i
            free_got.discard(i)
            free_want.discard(j)
    return got[order]


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (first axis) of two same-shape arrays; 1 where both
    rows are zero-length or one of them is all zeros."""
    rows = max(len(a), 1) if a.ndim else 1
    a64, b64 = a.reshape(rows, -1).astype(np.float64), b.reshape(rows, -1).astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.where(norms > 0, (a64 * b64).sum(1) / np.maximum(norms, 1e-30), 1.0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Computed on values scaled to at most 1: products of tiny values underflow to zero."""
    a, b = a.ravel(), b.ravel()
    if not a.size:
        return 1.0
    peak = float(max(np.abs(a).max(), np.abs(b).max()))
    if peak < TINY:  # both (near) zero: equal, whatever rounding left behind
        return 1.0
    if np.isfinite(peak):
        a, b = a / peak, b / peak
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norm)


def latency_ms(call: Callable[[], Any], iterations: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)),
            "iterations": iterations}
