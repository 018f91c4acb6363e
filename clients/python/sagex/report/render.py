"""The report page: an index of features, the eval table and plot, and one
section per feature (labels, evidence, scores, hypotheses with their verdict
timeline, exemplars and probes as heatmaps)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape
from pathlib import Path

from sagex.report.assets import CSS, JS
from sagex.report.heatmap import heatmap
from sagex.report.model import FeatureReport, Report
from sagex.report.plot import differences_plot
from sagex.sdk import Comparison, Metric, ScorerResult
from sagex.sdk.types import Explanation, Hypothesis, Label


def write(report: Report, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report), encoding="utf-8")
    return path


def render(report: Report) -> str:
    body = [_header(report), _index(report)]
    if report.comparison is not None:
        body.append(_comparison(report.comparison))
    body += [_feature(fr) for fr in report.features]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(report.title)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}<script>{JS}</script></body></html>\n")


def _metric(m: Metric | None) -> str:
    if m is None:
        return '<span class="muted">-</span>'
    if not math.isfinite(m.value):
        return f'<span class="muted" title="n={m.n}">undefined</span>'
    ci = f' <span class="ci">[{m.ci[0]:.2f}, {m.ci[1]:.2f}]</span>' if m.ci else ""
    return f'<span title="n={m.n}">{m.value:.3f}</span>{ci}'


def _sort_value(m: Metric | None) -> str:
    return repr(m.value) if m is not None and math.isfinite(m.value) else "-inf"


def _headlines(fr: FeatureReport) -> dict[str, Metric]:
    """Each scorer's first metric is its headline (success rate, Pearson r, balanced accuracy, AUROC)."""
    return {r.scorer: r.metrics[0] for r in fr.scores if r.metrics and not r.error}


def _outcome(ex: Explanation) -> str:
    if ex.failed:
        return f'<span class="badge REFUTED">{escape(ex.error_code)}</span>'
    if ex.triage_class:
        return f'<span class="badge">triage: {escape(ex.triage_class)}</span>'
    held = sum(h.status == "CONFIRMED" for h in ex.hypotheses)
    return f"{held}/{len(ex.hypotheses)} confirmed"


def _labels_text(ex: Explanation) -> str:
    return ", ".join(label.name for label in ex.labels) or ex.description[:80] or "(no label)"


def _confidence(value: float) -> str:
    """A label's confidence as shown; 0 is the SDK's "the policy gives none"."""
    return f"confidence {value:.2f}" if value > 0 else "no confidence given"


def _label_item(label: Label) -> str:
    return (f'<li data-confidence="{label.confidence!r}"><b>{escape(label.name)}</b> '
            f'<span class="badge conf">{_confidence(label.confidence)}</span>: {escape(label.description)}</li>')


def _header(report: Report) -> str:
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return (f"<header><h1>{escape(report.title)}</h1>"
            f'<p class="muted">SAE <b>{escape(report.sae)}</b> &middot; {len(report.features)} features &middot; '
            f"generated {escape(report.created)}</p>" + (f'<ul class="muted">{notes}</ul>' if notes else "")
            + "</header>")


def _index(report: Report) -> str:
    scorers = sorted({s for fr in report.features for s in _headlines(fr)})
    head = ('<th data-sort class="num">feature</th><th data-sort>label</th><th data-sort>outcome</th>'
            '<th data-sort class="num">confidence</th><th data-sort class="num">probes as expected</th>'
            + "".join(f'<th data-sort class="num">{escape(s)}<br><span class="ci">'
                      f"{escape(_first_metric_name(report, s))} [95% CI]</span></th>" for s in scorers))
    rows = []
    for fr in report.features:
        ex = fr.explanation
        ok = sum(p.as_expected for p in ex.probes)
        heads = _headlines(fr)
        top_conf = max((label.confidence for label in ex.labels), default=0.0)
        cells = [f'<td class="num" data-v="{ex.feature_id}"><a href="#f-{ex.feature_id}">{ex.feature_id}</a></td>',
                 f'<td data-v="{escape(_labels_text(ex))}">{escape(_labels_text(ex))}</td>',
                 f'<td data-v="{escape(ex.error_code or ex.triage_class or "loop")}">{_outcome(ex)}</td>',
                 f'<td class="num" data-v="{top_conf!r}">{f"{top_conf:.2f}" if top_conf > 0 else "-"}</td>',
                 f'<td class="num" data-v="{ok / len(ex.probes) if ex.probes else -1!r}">'
                 f"{ok}/{len(ex.probes)}</td>"]
        cells += [f'<td class="num" data-v="{_sort_value(heads.get(s))}">{_metric(heads.get(s))}</td>'
                  for s in scorers]
        rows.append(f'<tr data-feature="{ex.feature_id}">{"".join(cells)}</tr>')
    return ('<section id="index"><h2>Features</h2><div class="controls">'
            '<input id="filter" type="search" placeholder="filter by feature, label or outcome"> '
            '<label><input id="only-mismatch" type="checkbox"> show only probes that contradicted '
            "their prediction</label></div>"
            f'<table class="index"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _first_metric_name(report: Report, scorer: str) -> str:
    for fr in report.features:
        for r in fr.scores:
            if r.scorer == scorer and r.metrics:
                return r.metrics[0].name
    return ""


def _comparison(c: Comparison) -> str:
    explainers = list(c.summaries)
    metrics = sorted({name for per in c.summaries.values() for name in per})
    head = "<th>metric</th>" + "".join(f"<th class=\"num\">{escape(e)}</th>" for e in explainers)
    rows = "".join(f"<tr><td>{escape(name)}</td>"
                   + "".join(f'<td class="num">{_metric(c.summaries[e].get(name))}</td>' for e in explainers)
                   + "</tr>" for name in metrics)
    diffs = "".join(
        f"<tr><td>{escape(d.metric)}</td><td>{escape(d.a)} &minus; {escape(d.b)}</td>"
        f'<td class="num">{_metric(d.difference)}</td><td class="num">{d.p_value:.3f}</td>'
        f'<td class="num">{d.wins} / {d.ties} / {d.losses}</td></tr>' for d in c.differences)
    skipped = "".join(f"<li>{escape(e)}, feature {f}{', ' + escape(s) if s else ''}: {escape(why)}</li>"
                      for e, f, s, why in c.skipped)
    return ('<section id="eval"><h2>Explainer comparison</h2>'
            '<p class="muted">Means over features on the same held-out data, with 95% CIs.</p>'
            f'<table class="eval"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
            "<h3>Paired differences</h3>" + differences_plot(c.differences)
            + '<table class="diffs"><thead><tr><th>metric</th><th>a &minus; b</th><th class="num">mean [95% CI]</th>'
            f'<th class="num">p</th><th class="num">wins / ties / losses</th></tr></thead><tbody>{diffs}</tbody>'
            "</table>" + (f'<p class="muted">Left out of the means:</p><ul class="muted">{skipped}</ul>'
                          if skipped else "") + "</section>")


def _feature(fr: FeatureReport) -> str:
    ex = fr.explanation
    scale = fr.scale()
    usage = ex.usage
    llm = (f" &middot; LLM {usage.llm_calls} calls, {usage.prompt_tokens + usage.completion_tokens:,} tokens"
           + (f", ${usage.cost_usd:.4f}" if usage.cost_usd else "")) if usage.llm_calls else ""
    meta = (f'<p class="muted">policy {escape(ex.policy or "-")} &middot; stop: {escape(ex.stop_reason or "-")} '
            f"&middot; {ex.rounds} rounds &middot; {len(ex.probes)} probes &middot; max activation "
            f'{ex.max_activation:.3f}{llm} &middot; colour scale: <span class="legend"></span> 0 to {scale:.3g}</p>')
    parts = [f'<section class="feature" id="f-{ex.feature_id}" data-feature="{ex.feature_id}">'
             f"<h2>Feature {ex.feature_id}: {escape(_labels_text(ex))}</h2>{meta}"]
    if ex.failed:
        parts.append(f'<p class="bad">Not explained ({escape(ex.error_code)}): {escape(ex.error)}</p>')
    if ex.description:
        parts.append(f'<p class="description">{escape(ex.description)}</p>')
    if ex.labels:
        parts.append('<ul class="labels">' + "".join(_label_item(label) for label in ex.labels) + "</ul>")
    parts.append(_scores(fr))
    parts.append(_output_side(fr))
    parts.append(_evidence(ex))
    parts.append(_hypotheses(ex.hypotheses))
    if fr.exemplars is not None and fr.exemplars.top:
        parts.append('<h3>Top corpus exemplars</h3><div class="exemplars">' + "".join(
            f'<div class="exemplar" data-window="{escape(e.window_id)}"><span class="muted">max {e.max_activation:.3f}'
            f"</span>{heatmap(e.tokens, e.values, scale, e.max_token_index)}</div>" for e in fr.exemplars.top)
            + "</div>")
    parts.append(_probes(ex, scale))
    parts.append('<p><a href="#index">back to the index</a></p></section>')
    return "".join(parts)


def _scores(fr: FeatureReport) -> str:
    if fr.score_error:
        return f'<h3>Scores</h3><p class="muted">{escape(fr.score_error)}</p>'
    if not fr.scores:
        return ""
    rows = []
    for r in fr.scores:
        rows += _score_rows(r)
    return ('<h3>Scores</h3><table class="scores"><thead><tr><th>scorer</th><th>metric</th>'
            '<th class="num">value [95% CI]</th><th class="num">n</th><th>details</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _score_rows(r: ScorerResult) -> list[str]:
    if r.error:
        return [f'<tr><td>{escape(r.scorer)}</td><td colspan="4" class="muted">could not run: '
                f"{escape(r.error)}</td></tr>"]
    details = "; ".join(f"{k}={v}" for k, v in sorted(r.details.items()))
    out = []
    for i, m in enumerate(r.metrics):
        extra = f'<td rowspan="{len(r.metrics)}" class="muted">{escape(details)}</td>' if i == 0 else ""
        out.append(f'<tr data-scorer="{escape(r.scorer)}" data-metric="{escape(m.name)}" data-value="{m.value!r}">'
                   f"<td>{escape(r.scorer) if i == 0 else ''}</td><td>{escape(m.name)}</td>"
                   f'<td class="num">{_metric(m)}</td><td class="num">{m.n}</td>{extra}</tr>')
    return out


def _output_side(fr: FeatureReport) -> str:
    """What the feature does: logit-lens tokens, and steered beside unsteered text."""
    parts = []
    if fr.effects is not None:
        def chips(effects: Iterable, cls: str) -> str:  # type: ignore[type-arg]
            return "".join(f'<span class="lt {cls}" title="{e.value:+.3f}">{escape(e.text)}'
                           f'<span class="ci"> {e.value:+.2f}</span></span> ' for e in effects)

        parts.append('<div class="lens"><p><b>Promotes</b> (logit lens) ' + chips(fr.effects.promoted, "up")
                     + "</p><p><b>Suppresses</b> " + chips(fr.effects.suppressed, "down") + "</p></div>")
    if fr.steering is not None:
        st = fr.steering
        rows = "".join(
            f'<tr class="steer-row"><td>{escape(c.prompt)}</td><td>{escape(c.unsteered)}</td>'
            f'<td>{escape(c.steered)}</td><td class="num">{c.kl:.2f}</td></tr>' for c in st.completions)
        reached = "" if st.target_reached else " (target KL not reached)"
        parts.append(f'<p class="muted">Steered: α = {st.strength:.3g} times the decoder direction added at the '
                     f"last prompt token and every generated token; mean KL {st.mean_kl:.2f} nats{reached}.</p>"
                     '<table class="steering"><thead><tr><th>prompt</th><th>unsteered</th><th>steered</th>'
                     f'<th class="num">KL</th></tr></thead><tbody>{rows}</tbody></table>')
    return ("<h3>Output side</h3>" + "".join(parts)) if parts else ""


def _evidence(ex: Explanation) -> str:
    if not ex.evidence:
        return ""
    rows = "".join(
        f'<tr><td>{escape(e.source)}</td><td class="num">{e.activation:.3f}</td><td class="num">H{e.hypothesis_id}'
        f'</td><td>{"<span class=ok>supports</span>" if e.supports else "<span class=bad>contradicts</span>"}</td></tr>'
        for e in ex.evidence)
    return ('<h3>Evidence</h3><table class="evidence"><thead><tr><th>source</th><th class="num">activation</th>'
            f'<th class="num">hypothesis</th><th></th></tr></thead><tbody>{rows}</tbody></table>')


def _hypotheses(hypotheses: Iterable[Hypothesis]) -> str:
    blocks = []
    for h in hypotheses:
        control = ' <span class="badge control">control</span>' if h.is_control else ""
        steps = "".join(
            f'<div class="step" data-round="{u.round}"><span class="badge {escape(u.status)}">R{u.round} '
            f"{escape(u.status)}</span> {escape(u.reason)}"
            + (f'<br><span class="muted">now: {escape(u.text)}</span>' if u.text and u.text != h.text else "")
            + "</div>" for u in h.updates)
        history = ("".join(f'<li class="muted">{escape(old)}</li>' for old in h.history[:-1])
                   if len(h.history) > 1 else "")
        blocks.append(
            f'<div class="hyp" id="h-{h.id}" data-status="{escape(h.status)}"><b>H{h.id}</b> '
            f'<span class="badge {escape(h.status)}">{escape(h.status)}</span>{control} {escape(h.text)}'
            + (f'<div class="timeline">{steps}</div>' if steps else "")
            + (f'<ul class="history">{history}</ul>' if history else "") + "</div>")
    return ("<h3>Hypotheses and verdicts</h3>" + "".join(blocks)) if blocks else ""


def _probes(ex: Explanation, scale: float) -> str:
    if not ex.probes:
        return ""
    rows = []
    for p in sorted(ex.probes, key=lambda p: (p.round, p.hypothesis_id, p.id)):
        verdict = '<span class="ok">as expected</span>' if p.as_expected else '<span class="bad">contradicted</span>'
        rationale = f'<div class="muted">{escape(p.rationale)}</div>' if p.rationale else ""
        rows.append(
            f'<tr class="probe-row{"" if p.as_expected else " mismatch"}" data-probe="{p.id}">'
            f'<td class="num">R{p.round}</td><td class="num">H{p.hypothesis_id}</td>'
            f"<td>{escape(p.expected)}</td><td>{heatmap(p.tokens, p.values, scale)}{rationale}</td>"
            f'<td class="num">{p.max_activation:.3f}<br><span class="ci">fires at {p.fire_threshold:.3f}</span></td>'
            f"<td>{verdict}</td></tr>")
    return ('<h3>Probes</h3><table class="probes"><thead><tr><th class="num">round</th><th class="num">hyp.</th>'
            '<th>expected</th><th>text and activations</th><th class="num">max</th><th>outcome</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
