"""`sage explain` and `sage score`: the agent and the scorers from a terminal, through the SDK."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sagex.cli.mine import mining_line, warm
from sagex.sdk import FeatureProgress, JobProgress, Options, Sage, SageError, UnavailableError


def _fail(command: str, exc: SageError, service: str, address: str) -> SystemExit:
    if isinstance(exc, UnavailableError):
        return SystemExit(f"sage {command}: cannot reach the {service} service at {address}; start it with "
                          f"`sage serve {service}` (or `sage serve all`)")
    hints = "; ".join(f"{field}: {why}" for field, why in exc.field_violations)
    return SystemExit(f"sage {command}: {exc.message}" + (f" ({hints})" if hints and hints not in exc.message else ""))


def _bar(p: JobProgress, width: int = 30) -> str:
    filled = int(width * (p.done + p.failed) / max(p.total, 1))
    cost = f", ${p.usage.cost_usd:.4f}" if p.usage.cost_usd else ""
    return (f"[{'#' * filled}{'.' * (width - filled)}] {p.done} done, {p.failed} failed, {p.remaining} remaining; "
            f"{p.usage.prompt_tokens + p.usage.completion_tokens:,} LLM tokens{cost}")


def _feature_line(f: FeatureProgress) -> str:
    testing = f", round {f.round}" if f.round else ""
    return (f"  feature {f.feature_id:>6}  {f.state.lower().replace('_', ' '):<18} {f.hypotheses} hypotheses, "
            f"{f.probes} probes{testing}")


class _Progress:
    """The job's bar and one line per running feature: redrawn in place on a
    terminal, printed when they change otherwise (logs, pipes)."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.last: list[str] = []

    def __call__(self, p: JobProgress) -> None:
        mining = [f"  {mining_line(p.mining)}"] if p.mining is not None else []
        lines = [_bar(p), *mining, *(_feature_line(f) for f in p.running)]
        if lines == self.last:
            return
        if self.tty:
            up = f"\x1b[{len(self.last)}F" if self.last else ""  # back to the first line drawn last time
            print(up + "".join(f"\x1b[2K{line}\n" for line in lines) + "\x1b[J", end="", flush=True)
        else:
            print("\n".join(lines), flush=True)
        self.last = lines


def explain(agent: str, sae: str, features: Sequence[int], options: Options, concurrency: int, watch: bool) -> int:
    with Sage(activation=None, agent=agent, scoring=None) as sage:
        try:
            job = sage.agent.explain_many(sae, features, options, concurrency=concurrency)
            print(f"{job.name}: {len(features)} features")
            if not watch:
                print("follow it with `sage explain ... --watch`, or the SDK's sage.agent.operation(name)")
                return 0
            # Polled twice a second: the server answers a wait early only when a feature finishes.
            job.wait(on_progress=_Progress(sys.stdout.isatty()), poll_s=0.5)
            results = job.result()
        except SageError as exc:
            raise _fail("explain", exc, "agent", agent) from None
    for ex in results:
        labels = ", ".join(label.name for label in ex.labels) or "(no label)"
        held = sum(h.status == "CONFIRMED" for h in ex.hypotheses)
        state = ex.triage_class or (f"{held}/{len(ex.hypotheses)} held" if ex.hypotheses else "-")
        print(f"{ex.feature_id:>7}  {state:<12} {ex.stop_reason:<14} {labels}")
        print(f"{'':>7}  {ex.error or ex.description}")
    return 0


def score(scoring: str, sae: str, feature: int, text: str, scorers: Sequence[str], seed: int,
          activation: str | None = None) -> int:
    with Sage(activation=activation, agent=None, scoring=scoring) as sage:
        try:
            if activation:  # the held-out scan the scorers are about to wait for, shown as it runs
                warm(sage, sae, "heldout")
            results = sage.scoring.score(sae, feature, text, scorers, seed)
        except SageError as exc:
            raise _fail("score", exc, "scoring", scoring) from None
    for r in results:
        if r.error:
            print(f"{r.scorer:<11} could not run: {r.error}")
            continue
        for m in r.metrics:
            print(f"{r.scorer:<11} {m}")
    return 0
