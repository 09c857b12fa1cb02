"""SVG building blocks for the report: escaping, fixed number formats, scales and axes.

Everything here returns strings and formats every number with a fixed format, so the same
input always gives the same bytes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f")
PASS, FAIL, NEUTRAL = "#2ca02c", "#d62728", "#7f7f7f"
LOG_SPAN = 100.0  # a positive series spanning more than this factor gets a log axis


def esc(value: Any) -> str:
    """Text for HTML or SVG content or a quoted attribute: user input never becomes markup."""
    return html.escape(str(value), quote=True)


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def num(value: Any, spec: str = ".4g") -> str:
    """A figure for people: fixed format, an em dash when absent or not finite."""
    return format(value, spec) if finite(value) else "—"


def pos(value: float) -> str:
    """A coordinate: one decimal, never '-0.0'."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


@dataclass(frozen=True)
class Scale:
    """Maps data values in [lo, hi] onto pixels [start, end], linearly or by log10."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def _t(self, value: float) -> float:
        if self.log:
            value = max(value, self.lo)
            return (math.log10(value) - math.log10(self.lo)) / \
                (math.log10(self.hi) - math.log10(self.lo))
        return (value - self.lo) / (self.hi - self.lo)

    def __call__(self, value: float) -> float:
        return self.start + self._t(value) * (self.end - self.start)

    def ticks(self) -> list[float]:
        if self.log:
            first, last = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
            decades = [10.0 ** k for k in range(first, last + 1) if self.lo <= 10.0 ** k <= self.hi]
            # a narrow range holds fewer than two decades: mark its ends and middle instead
            return decades if len(decades) >= 2 else [self.lo, math.sqrt(self.lo * self.hi),
                                                      self.hi]
        step = _nice_step((self.hi - self.lo) / 5)
        first = math.ceil(self.lo / step - 1e-9)
        return [k * step for k in range(first, math.floor(self.hi / step + 1e-9) + 1)]


def _nice_step(raw: float) -> float:
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def scale(values: Sequence[Any], start: float, end: float, *, log: bool | None = None,
          include: Sequence[float] = ()) -> Scale:
    """A scale over the finite `values` (plus `include`); log when asked, or when `log` is
    None and the positive values span more than LOG_SPAN."""
    data = [float(v) for v in [*values, *include] if finite(v)] or [0.0, 1.0]
    positive = [v for v in data if v > 0]
    if log is None:
        log = len(positive) == len(data) and max(data) / min(data) > LOG_SPAN
    if log:
        lo, hi = (math.log10(min(positive)), math.log10(max(positive))) if positive \
            else (-12.0, 0.0)
        pad = max((hi - lo) * 0.06, 0.1)
        return Scale(10.0 ** (lo - pad), 10.0 ** (hi + pad), start, end, log=True)
    lo, hi = min(data), max(data)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return Scale(lo - pad, hi + pad, start, end)


@dataclass(frozen=True)
class Frame:
    """A plot's size and the margins around its data area."""

    width: float = 560
    height: float = 300
    left: float = 64
    right: float = 16
    top: float = 40
    bottom: float = 44

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top


def text(x: float, y: float, content: Any, *, anchor: str = "start", cls: str = "",
         extra: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return (f'<text x="{pos(x)}" y="{pos(y)}" text-anchor="{anchor}"{klass}{extra}>'
            f"{esc(content)}</text>")


def line(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
    return (f'<line x1="{pos(x1)}" y1="{pos(y1)}" x2="{pos(x2)}" y2="{pos(y2)}" '
            f'class="{cls}"/>')


def tick_label(value: float, log: bool) -> str:
    exponent = math.log10(value) if log and value > 0 else 0.5
    if log and abs(exponent - round(exponent)) < 1e-9:
        return f"1e{round(exponent)}"
    return format(0.0 if abs(value) < 1e-12 else value, ".4g")


def x_axis(xs: Scale, frame: Frame, label: str) -> list[str]:
    parts = [line(frame.x0, frame.y0, frame.x1, frame.y0, "axis")]
    for tick in xs.ticks():
        x = xs(tick)
        parts += [line(x, frame.y0, x, frame.y1, "grid"),
                  text(x, frame.y0 + 14, tick_label(tick, xs.log), anchor="middle")]
    parts.append(text((frame.x0 + frame.x1) / 2, frame.height - 8, label, anchor="middle",
                      cls="label"))
    return parts


def y_axis(ys: Scale, frame: Frame, label: str) -> list[str]:
    parts = [line(frame.x0, frame.y0, frame.x0, frame.y1, "axis")]
    for tick in ys.ticks():
        y = ys(tick)
        parts += [line(frame.x0, y, frame.x1, y, "grid"),
                  text(frame.x0 - 6, y + 4, tick_label(tick, ys.log), anchor="end")]
    parts.append(text(14, (frame.y0 + frame.y1) / 2, label, anchor="middle", cls="label",
                      extra=f' transform="rotate(-90 14 {pos((frame.y0 + frame.y1) / 2)})"'))
    return parts


def category_axis(labels: Sequence[str], frame: Frame, label: str) -> tuple[list[float],
                                                                             list[str]]:
    """Evenly spaced x positions for `labels`, and the axis drawn under them."""
    step = (frame.x1 - frame.x0) / max(len(labels), 1)
    xs = [frame.x0 + step * (i + 0.5) for i in range(len(labels))]
    parts = [line(frame.x0, frame.y0, frame.x1, frame.y0, "axis")]
    parts += [text(x, frame.y0 + 14, lab, anchor="middle") for x, lab in zip(xs, labels)]
    parts.append(text((frame.x0 + frame.x1) / 2, frame.height - 8, label, anchor="middle",
                      cls="label"))
    return xs, parts


def legend(entries: Sequence[tuple[str, str]], frame: Frame) -> list[str]:
    """Colour swatches and names in a row above the data area."""
    parts, x = [], frame.x0
    for name, colour in entries:
        parts.append(f'<rect x="{pos(x)}" y="8" width="10" height="10" fill="{colour}"/>')
        parts.append(text(x + 14, 17, name))
        x += 24 + 7 * len(name)
    return parts


CHAR_EM = 0.68  # a generous average glyph width, in ems, of the sans fonts browsers pick
Box = tuple[float, float, float, float]  # left, top, right, bottom


def text_box(x: float, y: float, label: str, size: float = 11.0, anchor: str = "start"
             ) -> Box:
    """The box a one-line label with its baseline at `y` covers (estimated, generously)."""
    width = CHAR_EM * size * len(label) + 2
    left = {"start": x, "end": x - width, "middle": x - width / 2}[anchor]
    return left, y - 0.85 * size - 1, left + width, y + 0.3 * size + 1


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class Labels:
    """Places point labels so that none covers another label, a reserved text or a dot, and
    each stays inside the data area: a label tries the spots beside its point, right then
    left, above then below, moving a line further out each round."""

    GAP = 7.0  # from the point's centre to the label's near edge

    def __init__(self, frame: Frame) -> None:
        self.area: Box = (frame.x0 + 1, frame.y1 + 1, frame.x1 - 1, frame.y0 - 1)
        self.boxes: list[Box] = []

    def reserve(self, box: Box) -> None:
        """Something drawn there already (a dot, a line's label) that labels must avoid."""
        self.boxes.append(box)

    def dot(self, x: float, y: float, r: float) -> None:
        self.reserve((x - r, y - r, x + r, y + r))

    def place(self, x: float, y: float, label: str, size: float = 11.0
              ) -> tuple[float, float, str]:
        """Where to write `label` for the point at (x, y): its x, baseline y and anchor."""
        spots = list(self._spots(x, y, size))
        for spot in spots:
            box = text_box(*spot[:2], label, size, spot[2])
            if self._inside(box) and not any(_overlap(box, b) for b in self.boxes):
                self.boxes.append(box)
                return spot
        self.boxes.append(text_box(*spots[0][:2], label, size, spots[0][2]))
        return spots[0]  # a crowd no spot clears: the nearest, as before

    def _spots(self, x: float, y: float, size: float):  # -> Iterator[(x, y, anchor)]
        line = 1.2 * size + 2
        above, below = y - self.GAP + 1, y + self.GAP + 0.85 * size
        for ring in range(16):
            for base in (above - ring * line, below + ring * line):
                yield x + self.GAP, base, "start"
                yield x - self.GAP, base, "end"

    def _inside(self, box: Box) -> bool:
        return (box[0] >= self.area[0] and box[1] >= self.area[1]
                and box[2] <= self.area[2] and box[3] <= self.area[3])


def svg(plot: str, frame: Frame, title: str, body: Sequence[str]) -> str:
    """One plot element; `data-plot` names its kind, for tests and for readers' tools."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" data-plot="{esc(plot)}" role="img" '
            f'width="{pos(frame.width)}" height="{pos(frame.height)}" '
            f'viewBox="0 0 {pos(frame.width)} {pos(frame.height)}">'
            f"<title>{esc(title)}</title>" + "".join(body) + "</svg>")
