"""Tiny server-rendered SVG charts (no JavaScript): a line/area chart with min/max labels."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape


def line_chart(
    points: Sequence[float], *, labels: tuple[str, str] = ("", ""), unit: str = "", title: str = "", w=320, h=90
) -> Markup:
    """An inline SVG polyline of `points` scaled into w×h (with a filled area under it)."""
    if not points:
        return Markup(
            f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}: no data">'
            f'<text x="8" y="{h // 2}" class="chart-empty">no data yet</text></svg>'
        )
    lo, hi = min(points), max(points)
    span = (hi - lo) or 1.0
    pad_top, pad_bottom = 14, 16
    inner = h - pad_top - pad_bottom
    n = len(points)
    step = w / (n - 1) if n > 1 else 0
    coords = [(i * step if n > 1 else w / 2, pad_top + inner - (v - lo) / span * inner) for i, v in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    area = f"0,{pad_top + inner} {line} {coords[-1][0]:.1f},{pad_top + inner}"
    fmt = (lambda v: f"{v:,.0f}") if max(abs(lo), abs(hi)) >= 10 else (lambda v: f"{v:,.1f}")
    return Markup(
        f'<svg class="chart" viewBox="0 0 {w} {h}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(title)}">'
        f'<polygon class="chart-area" points="{area}"/>'
        f'<polyline class="chart-line" points="{line}" fill="none"/>'
        f'<text x="2" y="10" class="chart-label">max {fmt(hi)}{escape(unit)}</text>'
        f'<text x="{w - 2}" y="10" class="chart-label" text-anchor="end">min {fmt(lo)}{escape(unit)}</text>'
        f'<text x="2" y="{h - 3}" class="chart-label">{escape(labels[0])}</text>'
        f'<text x="{w - 2}" y="{h - 3}" class="chart-label" text-anchor="end">{escape(labels[1])}</text>'
        "</svg>"
    )
