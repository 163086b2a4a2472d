"""The report's two small SVG charts, drawn by hand so the page needs no script or library:
a histogram of nearest-neighbour similarity and a curve of images kept against threshold.
Both have labelled axes with counts, and threshold labels that never overlap."""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT = 640, 150                 # the plot area
LEFT, RIGHT, BOTTOM = 56, 16, 40         # margins: y-axis labels, right edge, x ticks and axis title
LABEL_ROW, LABEL_GAP = 14, 44            # threshold label rows: height, least horizontal room per label


def nice_ticks(top: float, most: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``: steps of 1, 2 or 5 times a power of ten."""
    if top <= 0:
        return [0, 1]
    raw = top / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1)                  # counts are whole numbers
    return [k * step for k in range(int(math.ceil(top / step)) + 1)]


def label_rows(values: list[float], x_of) -> list[int]:
    """A row for each threshold label, so that labels closer than LABEL_GAP stack instead of overlapping."""
    rows = [0] * len(values)
    last_x: list[float] = []              # per row, where its last label sits
    for k in sorted(range(len(values)), key=lambda k: values[k]):
        x = x_of(values[k])
        row = next((r for r, previous in enumerate(last_x) if x - previous >= LABEL_GAP), len(last_x))
        if row == len(last_x):
            last_x.append(x)
        last_x[row] = x
        rows[k] = row
    return rows


class Plot:
    """An SVG with a linear (or, with ``log``, logarithmic) x range, a count y axis and the
    threshold markers."""

    def __init__(self, css_class: str, label: str, x_range: tuple[float, float], y_top: float,
                 thresholds: list[float], x_title: str, y_title: str, log: bool = False):
        self.log = log
        self.x0, self.x1 = (math.log10(v) for v in x_range) if log else x_range
        self.ticks = nice_ticks(y_top)
        self.y_top = self.ticks[-1]
        self.rows = label_rows(thresholds, self.x)
        self.top = LABEL_ROW * (max(self.rows, default=-1) + 1) + 8
        self.parts = [f'<svg class="{css_class}" width="{LEFT + WIDTH + RIGHT}" '
                      f'height="{self.top + HEIGHT + BOTTOM}" role="img" aria-label="{escape(label)}">']
        self._axes(x_title, y_title)
        for value, row in zip(thresholds, self.rows):
            x = self.x(value)
            self.parts.append(f'<line class="thr" x1="{x:.1f}" x2="{x:.1f}" y1="{self.top - 4}" '
                              f'y2="{self.top + HEIGHT}"/><text class="thr-label" x="{x:.1f}" '
                              f'y="{LABEL_ROW * (row + 1)}" text-anchor="middle">{value:g}</text>')

    def x(self, value: float) -> float:
        if self.log:
            value = math.log10(max(value, 1e-12))
        value = min(max(value, self.x0), self.x1)
        return LEFT + (value - self.x0) / (self.x1 - self.x0) * WIDTH

    def y(self, count: float) -> float:
        return self.top + HEIGHT - count / self.y_top * HEIGHT

    def _axes(self, x_title: str, y_title: str) -> None:
        bottom = self.top + HEIGHT
        for tick in self.ticks:
            y = self.y(tick)
            self.parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>'
                              f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:,}</text>')
        steps = 10
        for k in range(steps + 1):
            position = self.x0 + (self.x1 - self.x0) * k / steps
            value = 10 ** position if self.log else position
            shown = f"{value:.3g}" if self.log else f"{value:.2f}"
            self.parts.append(f'<text x="{LEFT + WIDTH * k / steps:.1f}" y="{bottom + 15}" '
                              f'text-anchor="middle">{shown}</text>')
        self.parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT + WIDTH}" y1="{bottom}" y2="{bottom}"/>'
                          f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{self.top}" y2="{bottom}"/>'
                          f'<text x="{LEFT + WIDTH / 2}" y="{bottom + 33}" text-anchor="middle">'
                          f'{escape(x_title)}</text><text x="12" y="{self.top + HEIGHT / 2}" '
                          f'text-anchor="middle" transform="rotate(-90 12 {self.top + HEIGHT / 2})">'
                          f'{escape(y_title)}</text>')

    def svg(self) -> str:
        return "".join(self.parts + ["</svg>"])


def histogram_svg(bins: list[float], counts: list[int], thresholds: list[float], *,
                  label: str = "nearest-neighbour similarity histogram",
                  x_title: str = "similarity to the nearest neighbour", log: bool = False) -> str:
    """Bars of ``counts`` over ``bins`` (edges), with dashed threshold lines."""
    plot = Plot("hist", label, (bins[0], bins[-1]), max(counts, default=0), thresholds, x_title, "images", log)
    shown = ".3g" if log else ".2f"
    for k, count in enumerate(counts):
        x, x_next = plot.x(bins[k]), plot.x(bins[k + 1])
        y = plot.y(count)
        plot.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(x_next - x - 1, 1):.1f}" '
                          f'height="{plot.top + HEIGHT - y:.1f}"><title>{bins[k]:{shown}}–{bins[k + 1]:{shown}}: '
                          f'{count:,} images</title></rect>')
    return plot.svg()


def kept_curve_svg(grid: list[float], kept: list[int], total: int, points: list[tuple[float, int]]) -> str:
    """Images kept against the embedding threshold: the curve (embedding alone) over ``grid``,
    and ``points`` (threshold, kept) that this run measured with every signal."""
    thresholds = [t for t, _ in points]
    plot = Plot("curve", "images kept against threshold", (grid[0], grid[-1]), total, thresholds,
                "embedding threshold", "images kept")
    line = " ".join(f"{plot.x(t):.1f},{plot.y(k):.1f}" for t, k in zip(grid, kept))
    plot.parts.append(f'<polyline class="kept" points="{line}"/>')
    for t, k in points:
        plot.parts.append(f'<circle class="run" cx="{plot.x(t):.1f}" cy="{plot.y(k):.1f}" r="4">'
                          f'<title>threshold {t:g}: {k:,} kept (every signal)</title></circle>')
    return plot.svg()
