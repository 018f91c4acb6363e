"""SDK tests reuse the agent fixtures: a real agent over the session's activation server."""

from tests.agent.conftest import agent_config  # noqa: F401 - fixture
