"""`sage eval`: explain features with several explainers, score them all on the
same held-out data and seeds (the scoring service's CompareExplainers), and print
the paper-style table; also written as Markdown and JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from sagex.cli.explain import _fail
from sagex.sdk import Sage, SageError
from sagex.sdk.scoring import Comparison, Metric


def parse_features(specs: Sequence[str]) -> list[int]:
    """ "3", "1,5,9" and "10-20" (inclusive), in any mix; duplicates dropped, order kept."""
    out: list[int] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise ValueError(f"{part!r} is not a feature id or a range like 10-20")
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first:
                raise ValueError(f"{part!r}: the range ends before it starts")
            out += [f for f in range(first, last + 1) if f not in out]
    if not out:
        raise ValueError("give at least one feature id")
    return out


def _fmt(m: Metric) -> str:
    if math.isnan(m.value):
        return f"undefined (n={m.n})"
    ci = f" [{m.ci[0]:.3f}, {m.ci[1]:.3f}]" if m.ci else " [no CI]"
    return f"{m.value:.3f}{ci} (n={m.n})"


def render(comparison: Comparison) -> str:
    explainers = list(comparison.summaries)
    metrics = sorted({name for by in comparison.summaries.values() for name in by})
    lines = ["| metric | " + " | ".join(explainers) + " |", "|---|" + "---|" * len(explainers)]
    for name in metrics:
        cells = [_fmt(comparison.summaries[e][name]) if name in comparison.summaries[e] else "-" for e in explainers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| metric | a - b | mean difference [95% CI] (n) | p | wins / ties / losses |",
              "|---|---|---|---:|---|"]
    for d in comparison.differences:
        lines.append(f"| {d.metric} | {d.a} - {d.b} | {_fmt(d.difference)} | {d.p_value:.3f} | "
                     f"{d.wins} / {d.ties} / {d.losses} |")
    if comparison.skipped:
        lines += ["", "Left out of the means:"]
        lines += [f"- {explainer}, feature {feature}" + (f", {scorer}" if scorer else "") + f": {reason}"
                  for explainer, feature, scorer, reason in comparison.skipped]
    return "\n".join(lines) + "\n"


def run_eval(address: str, sae: str, features: list[int], explainers: list[str], scorers: list[str], seed: int,
             out: Path, timeout_s: float = 3600.0) -> int:
    """Through the SDK, so the token and TLS settings of the environment apply as everywhere else."""
    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} features explained and scored", flush=True)

    try:
        with Sage(activation=None, agent=None, scoring=address) as sage:
            comparison = sage.scoring.compare(sae, features, explainers, scorers, seed, timeout=timeout_s,
                                              on_progress=progress)
    except TimeoutError as exc:
        raise SystemExit(f"sage eval: {exc} after {timeout_s:g}s") from None
    except SageError as exc:
        raise _fail("eval", exc, "scoring", address) from None
    table = render(comparison)
    print("\n" + table)
    out.mkdir(parents=True, exist_ok=True)
    header = ("# Explainer comparison\n\n"
              f"SAE {sae}, {len(features)} features, scorers {', '.join(scorers)}, seed {seed}\n\n")
    (out / "eval.md").write_text(header + table)
    (out / "eval.json").write_text(comparison.to_json())
    print(f"written: {out / 'eval.md'} and {out / 'eval.json'}")
    return 0
