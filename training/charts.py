"""Server-side SVG line charts of a round's metrics: numbers in, drawing coordinates out.

Drawn by the server (no chart library, no script): a page polled by htmx swaps in fresh SVG, and
nothing but numbers reaches the drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 320, 140, 28

# (metric, title, a reference line worth drawing: chance for accuracy, 0 for margins)
SERIES = [
    ("loss", "Loss", None),
    ("rewards/accuracies", "Rewards accuracy", 0.5),
    ("rewards/margins", "Rewards margin", 0.0),
]


@dataclass(frozen=True)
class Chart:
    title: str
    points: str  # "x,y x,y ..." for an SVG polyline
    last: float | None
    low: float
    high: float
    steps: int
    reference_y: float | None  # the y of the reference line, if in range
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD

    @property
    def empty(self) -> bool:
        return not self.points


def line_chart(title: str, values: Sequence[tuple[int, float]], reference: float | None = None) -> Chart:
    """Scale (step, value) pairs into the chart's box; y grows downwards in SVG."""
    if not values:
        return Chart(title, "", None, 0.0, 0.0, 0, None)
    steps = [s for s, _ in values]
    ys = [v for _, v in values]
    low, high = min(ys), max(ys)
    if reference is not None:
        low, high = min(low, reference), max(high, reference)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    first, last_step = steps[0], steps[-1]
    span = max(last_step - first, 1)

    def x(step: int) -> float:
        return PAD + (step - first) / span * (WIDTH - 2 * PAD)

    def y(value: float) -> float:
        return HEIGHT - PAD - (value - low) / (high - low) * (HEIGHT - 2 * PAD)

    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in values)
    return Chart(
        title,
        points,
        ys[-1],
        low,
        high,
        last_step,
        y(reference) if reference is not None else None,
    )


def round_charts(metrics: Sequence[tuple[int, dict[str, float]]]) -> list[Chart]:
    """One chart per series in SERIES from a round's (step, values) rows."""
    return [
        line_chart(title, [(step, values[key]) for step, values in metrics if key in values], reference)
        for key, title, reference in SERIES
    ]
