"""`sage export`: explanations, scores and top activations as Neuronpedia uploads and/or a delphi folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sagex.cli.explain import _fail
from sagex.export import Target, delphi, neuronpedia
from sagex.report import collect, latest_explanations
from sagex.sdk import Sage, SageError

FORMATS = ("neuronpedia", "delphi")


def export(sae: str, features: Sequence[int], formats: Sequence[str], out: Path, *, agent: str, activation: str,
           scoring: str | None, scorers: Sequence[str], seed: int, model_id: str, source: str) -> int:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise SystemExit(f"sage export: --format takes {', '.join(FORMATS)} (comma-separated); got {unknown}")
    service, address = "activation", activation
    with Sage(activation=activation, agent=agent, scoring=scoring if scorers else None) as sage:
        try:
            info = sage.activation.model_info()
            sae_info = next((s for s in info.saes if s.id == sae), None)
            if sae_info is None:
                raise SystemExit(f"sage export: the activation service has no SAE {sae!r}; it has "
                                 f"{', '.join(s.id for s in info.saes)}")
            service, address = "agent", agent
            explanations = latest_explanations(sage, sae, features)
            service, address = "scoring", scoring or ""
            report = collect(sage, explanations, scorers=scorers, seed=seed, with_exemplars=True,
                             title=f"SAGE export of {sae}")
        except ValueError as exc:
            raise SystemExit(f"sage export: {exc}") from None
        except SageError as exc:
            raise _fail("export", exc, service, address) from None
    target = Target.of(info.name, sae_info, model_id=model_id, source=source)
    for fmt in formats:
        folder = out / fmt
        try:
            files = (neuronpedia if fmt == "neuronpedia" else delphi).write(report, folder, target)
        except ValueError as exc:
            raise SystemExit(f"sage export: {exc}") from None
        print(f"{fmt}: {len(files)} files in {folder}")
    return 0
