"""`sage report`: explanations, their probes and their scores as one HTML file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sagex.cli.explain import _fail
from sagex.report import FeatureReport, collect, latest_explanations, write
from sagex.sdk import Sage, SageError, load_comparison


def report(sae: str, features: Sequence[int], job: str | None, *, agent: str, activation: str | None,
           scoring: str | None, scorers: Sequence[str], eval_json: str | None, out: Path, seed: int,
           title: str, steer_target_kl: float | None = None) -> int:
    if not features and not job:
        raise SystemExit("sage report: give feature ids (e.g. 3,5,10-20) or --job NAME from `sage explain`")
    try:
        comparison = load_comparison(eval_json) if eval_json else None
    except ValueError as exc:
        raise SystemExit(f"sage report: {exc}") from None
    service = "agent"
    address = agent
    with Sage(activation=activation, agent=agent, scoring=scoring if scorers else None) as sage:
        try:
            if job:
                explanations = sage.agent.operation(job).result(timeout=0)
                explanations = [ex for ex in explanations if ex.sae_id == sae and (not features
                                                                                   or ex.feature_id in features)]
            else:
                explanations = latest_explanations(sage, sae, features)
            notes = [f"scorers: {', '.join(scorers)} (seed {seed})" if scorers else "not scored (--scorers '')"]
            if comparison is not None:
                notes.append(f"comparison from {eval_json}")

            def progress(fr: FeatureReport) -> None:
                print(f"  feature {fr.feature_id}: {fr.score_error or 'collected'}", flush=True)

            service, address = "scoring", scoring or ""
            result = collect(sage, explanations, scorers=scorers, seed=seed, with_exemplars=activation is not None,
                             comparison=comparison, title=title, notes=notes, on_feature=progress,
                             steer_target_kl=steer_target_kl)
        except ValueError as exc:
            raise SystemExit(f"sage report: {exc}") from None
        except TimeoutError:
            raise SystemExit(f"sage report: {job} is still running; wait with `sage explain ... --watch`") from None
        except SageError as exc:
            raise _fail("report", exc, service, address) from None
    path = write(result, out)
    print(f"written: {path} ({path.stat().st_size / 1024:.0f} KiB; open it in a browser, no server needed)")
    return 0
