"""Scorers, one module each, registered by name (see ``base``)."""

from sagex.scoring.scorers.base import (
    Meter,
    Scorer,
    ScorerOutput,
    ScoringInput,
    Toolkit,
    build_scorer,
    register,
    run_scorer,
    scorer_names,
)

__all__ = [
    "Meter",
    "ScorerOutput",
    "Scorer",
    "ScoringInput",
    "Toolkit",
    "build_scorer",
    "register",
    "run_scorer",
    "scorer_names",
]
