"""Why a scorer could not run. Scorers raise ScorerFailed; ``run_scorer`` turns it
(and the dependencies' own failures) into an error status on the result, so one
scorer that cannot run never takes the others down."""

from __future__ import annotations

import grpc


class ScorerFailed(Exception):
    """This scorer cannot produce a score for this input; the message says why and,
    where possible, what would fix it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


__all__ = ["ScorerFailed"]
