"""Small SVG charts drawn on the server: no charting library, no CDN, nothing to load in the browser.

Each function returns safe markup (labels are escaped) for the template to embed inline.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step:
            return float(step)
    return float(value)


def bar_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    width: int = 640,
    height: int = 220,
    label_every: int = 1,
) -> SafeString:
    """Grouped vertical bars, one group per label, one bar per series (at most 2 series look right)."""
    left, bottom, top = 36, 22, 10
    plot_w, plot_h = width - left - 6, height - bottom - top
    top_value = _nice_max(max((v for _, values in series for v in values), default=0))
    n = max(len(labels), 1)
    group_w = plot_w / n
    bar_w = max(group_w * 0.8 / max(len(series), 1), 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" data-chart="bar">',
        f"<title>{escape(title)}</title>",
    ]
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7ec"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{top_value * frac:g}</text>')
    for s_index, (name, values) in enumerate(series):
        for i, value in enumerate(values):
            h = plot_h * (value / top_value)
            x = left + i * group_w + group_w * 0.1 + s_index * bar_w
            cls = "bar" if s_index == 0 else "bar alt"
            parts.append(
                f'<rect class="{cls}" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(labels[i])}: {value:g} {escape(name)}</title></rect>"
            )
    for i, label in enumerate(labels):
        if i % label_every == 0:
            x = left + i * group_w + group_w / 2
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{escape(label)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and title above is escaped


def hbar_chart(
    rows: Sequence[tuple[str, float]], *, title: str, width: int = 640, unit: str = ""
) -> SafeString:
    """Horizontal bars with the label on the left: for reasons, flags, products."""
    row_h, label_w = 26, 220
    height = max(len(rows), 1) * row_h + 8
    top_value = max((v for _, v in rows), default=0) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" data-chart="hbar">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value) in enumerate(rows):
        y = 4 + i * row_h
        w = (width - label_w - 60) * (value / top_value)
        short = label if len(label) <= 30 else label[:29] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{escape(short)}</text>')
        parts.append(f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}"/>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{value:g}{escape(unit)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and title above is escaped
