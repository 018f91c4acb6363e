"""The SAGE Python SDK: typed sync and async clients for the SAGE services.

It imports only the generated protobuf package and gRPC, never the services."""

from sagex.sdk._channel import ChannelConfig
from sagex.sdk.agent import AsyncOperation, JobFailed, Operation, Options
from sagex.sdk.client import AsyncSage, Sage
from sagex.sdk.errors import (
    AbortedError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SageError,
    UnauthenticatedError,
    UnavailableError,
)
from sagex.sdk.scoring import Comparison, Metric, ScorerResult, load_comparison
from sagex.sdk.types import (
    AgentEvent,
    Explanation,
    FeatureEffects,
    FeatureProgress,
    FeatureStatistics,
    Hypothesis,
    JobProgress,
    Label,
    MiningProgress,
    Probe,
    SteeredText,
    SteerResult,
    TokenActivations,
    TokenEffect,
)

__all__ = [
    "AbortedError", "AgentEvent", "Comparison", "Metric", "ScorerResult", "AsyncOperation", "AsyncSage",
    "CancelledError", "ChannelConfig",
    "DeadlineExceededError", "Explanation", "FailedPreconditionError", "FeatureEffects", "FeatureProgress",
    "FeatureStatistics", "Hypothesis", "InternalError", "SteerResult", "SteeredText", "TokenEffect",
    "InvalidArgumentError", "JobFailed", "JobProgress", "Label", "MiningProgress", "NotFoundError", "Operation",
    "Options",
    "PermissionDeniedError", "Probe", "ResourceExhaustedError", "Sage", "SageError", "TokenActivations",
    "UnauthenticatedError", "UnavailableError", "load_comparison",
]
