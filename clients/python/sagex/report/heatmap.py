"""Token-level activation heatmaps as HTML: one span per token carrying its value."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

# Whitespace tokens would vanish in the page; show them as visible marks.
_VISIBLE = str.maketrans({"\n": "\u23ce", "\t": "\u2192"})


def shade(value: float, scale: float) -> float:
    """Opacity of a token's colour: its share of the feature's scale, clipped to [0, 1]."""
    if not np.isfinite(value) or value <= 0 or scale <= 0:
        return 0.0
    return float(min(value / scale, 1.0))


def heatmap(tokens: Sequence[str], values: np.ndarray, scale: float, peak: int | None = None) -> str:
    """``<span class="tok" data-act=...>`` per token, shaded by ``values / scale``.

    ``data-act`` keeps the exact float32 value (shortest repr), so the page carries
    the measurements, not only their colours."""
    if len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} activation values")
    spans = []
    for i, (token, value) in enumerate(zip(tokens, np.asarray(values, np.float32), strict=True)):
        v = float(value)
        a = shade(v, scale)
        classes = "tok peak" if i == peak else "tok"
        style = f' style="--a:{a:.3f}"' if a > 0 else ""
        text = escape(token.translate(_VISIBLE)) or "&#8203;"
        spans.append(f'<span class="{classes}" data-act="{repr(np.float32(v).item())}"{style} '
                     f'title="{escape(repr(token))}: {v:.3f}">{text}</span>')
    return f'<div class="hm" data-scale="{scale:.6g}">{"".join(spans)}</div>'
