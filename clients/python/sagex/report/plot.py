"""Inline SVG plots: paired differences between explainers, each with its 95% CI."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from sagex.sdk.scoring import PairedDifference

ROW = 28
LABEL_W = 300
PLOT_W = 360
PAD = 12


def _fmt(x: float) -> str:
    return f"{x:+.3f}" if math.isfinite(x) else "n/a"


def differences_plot(differences: Sequence[PairedDifference]) -> str:
    """One row per metric: the mean difference (a - b) as a dot, its CI as a bar,
    zero as a dashed line. Each row has its own symmetric axis, because metrics
    differ in scale (AUROC vs mean activation); the axis limits are printed."""
    rows = [d for d in differences if math.isfinite(d.difference.value)]
    if not rows:
        return '<p class="muted">No paired difference could be computed.</p>'
    height = PAD * 2 + ROW * len(rows)
    width = LABEL_W + PLOT_W + 2 * PAD + 60
    parts = [f'<svg class="forest" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>Paired differences with 95% CIs</title>']
    x0 = LABEL_W + PAD
    for i, d in enumerate(rows):
        m = d.difference
        lo, hi = m.ci if m.ci else (m.value, m.value)
        reach = max(abs(lo), abs(hi), abs(m.value), 1e-9) * 1.15
        bounded = reach <= 1.15  # differences of rates and AUROCs live in [-1, 1]
        if bounded:
            reach = 1.0 if max(abs(lo), abs(hi)) > 0.5 else 0.5

        def x(v: float, reach: float = reach) -> float:
            return x0 + (v + reach) / (2 * reach) * PLOT_W

        y = PAD + ROW * i + ROW / 2
        colour = "#1a7f37" if lo > 0 else "#cf222e" if hi < 0 else "#57606a"
        label = f"{d.metric} ({d.a} \u2212 {d.b})"
        parts.append(
            f'<g class="row" data-metric="{escape(d.metric)}" data-mean="{m.value!r}" '
            f'data-lo="{lo!r}" data-hi="{hi!r}">'
            f'<text x="{LABEL_W}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>'
            f'<line x1="{x0}" x2="{x0 + PLOT_W}" y1="{y:.1f}" y2="{y:.1f}" class="axis"/>'
            f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" '
            f'y1="{y - ROW / 2 + 3:.1f}" y2="{y + ROW / 2 - 3:.1f}" class="zero"/>'
            f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="3"/>'
            f'<circle cx="{x(m.value):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>'
            f'<text x="{x0 + PLOT_W + 6}" y="{y + 4:.1f}" class="lim">\u00b1{reach:.3g}</text>'
            f'<title>{escape(label)}: {_fmt(m.value)} [{_fmt(lo)}, {_fmt(hi)}], p={d.p_value:.3f}, '
            f'{d.wins}/{d.ties}/{d.losses} wins/ties/losses</title></g>')
    parts.append("</svg>")
    return "".join(parts)
