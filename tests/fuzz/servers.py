"""Configurations of the fuzzed agent and scoring servers, shared by the pytest
quick pass and ``scripts/fuzz.py``: real activation server, cheap budgets, and an
LLM endpoint that refuses connections (the LLM paths must then answer a clean
status, never INTERNAL)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from sagex.agent.budget import Budget
from sagex.agent.config import AgentConfig
from sagex.llm.backend import LLMConfig
from sagex.scoring.config import ScoringConfig
from sagex.scoring.heldout import HeldoutSpec
from sagex.scoring.scorers.generative import GenerativeSettings
from sagex.server.lifecycle import ServerOptions

SERVER = ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0)


@contextmanager
def refusing_llm_url() -> Iterator[str]:
    """An OpenAI-style base URL on a loopback port that is bound but never listens:
    every connection is refused at once, and no other process can take the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


def llm(url: str) -> LLMConfig:
    return LLMConfig(base_url=url, model="fuzz-model", max_retries=0, timeout_s=2.0)


def agent_config(activation_port: int, database: Path, llm_url: str) -> AgentConfig:
    return AgentConfig(
        activation=(f"127.0.0.1:{activation_port}",),
        database=database,
        llm=llm(llm_url),
        budget=Budget(max_rounds=1, max_probes_per_hypothesis=2, max_seconds=10),
        default_concurrency=1,
        max_concurrent_features=4,
        activation_timeout_s=15.0,
        mining_timeout_s=120.0,
        server=SERVER,
    )


def scoring_config(activation_port: int, agent_port: int, llm_url: str, database: Path) -> ScoringConfig:
    # Operations are kept in SQLite where the service has a ``database`` setting.
    where = {"database": database} if "database" in {f.name for f in fields(ScoringConfig)} else {}
    return ScoringConfig(
        **where,
        activation=(f"127.0.0.1:{activation_port}",),
        agent=f"127.0.0.1:{agent_port}",
        llm=llm(llm_url),
        heldout=HeldoutSpec(bands=2, per_band=4, non_activating=8, min_activating=2, min_non_activating=2),
        generative=GenerativeSettings(n_texts=4, attempts=1),
        batch_concurrency=2,
        llm_concurrency=2,
        max_batch=50,
        activation_timeout_s=15.0,
        mining_timeout_s=120.0,
        agent_timeout_s=15.0,
        server=SERVER,
    )


__all__ = ["agent_config", "refusing_llm_url", "scoring_config"]
