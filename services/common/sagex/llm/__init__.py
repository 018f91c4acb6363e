"""The LLM backend: OpenAI-compatible chat completions for the agent and the scorers."""

from sagex.llm.backend import LLMBackend, LLMConfig
from sagex.llm.errors import LLMError, LLMMisconfigured, LLMUnavailable, MalformedAnswer
from sagex.llm.types import Completion, TokenLogprob, Usage

__all__ = [
    "Completion",
    "LLMBackend",
    "LLMConfig",
    "LLMError",
    "LLMMisconfigured",
    "LLMUnavailable",
    "MalformedAnswer",
    "TokenLogprob",
    "Usage",
]
