"""AgentConfig: TOML in, clear errors out."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagex.agent.config import AgentConfig


def test_toml_with_every_table(tmp_path: Path) -> None:
    path = tmp_path / "sage.toml"
    path.write_text("""
[agent]
activation = ["127.0.0.1:6001", "127.0.0.1:6002"]
database = "db/agent.sqlite3"
num_hypotheses = 5
[agent.llm]
base_url = "http://127.0.0.1:8000/v1"
model = "my-model"
cache_dir = "llm-cache"
[agent.budget]
max_rounds = 6
max_llm_tokens = 20000
[agent.triage]
enabled = false
[agent.server]
port = 7000
""")
    config = AgentConfig.from_toml(path)
    assert config.activation == ("127.0.0.1:6001", "127.0.0.1:6002")
    assert config.database == tmp_path / "db" / "agent.sqlite3"
    assert config.llm.cache_dir == tmp_path / "llm-cache" and config.llm.model == "my-model"
    assert (config.budget.max_rounds, config.budget.max_llm_tokens, config.num_hypotheses) == (6, 20000, 5)
    assert not config.triage.enabled and config.server.port == 7000


@pytest.mark.parametrize(("text", "message"), [
    ("[agent]\nmistake = 1", "unknown agent settings ['mistake']"),
    ("[agent.budget]\nmax_round = 3", "unknown [agent.budget] settings ['max_round']"),
    ("[agent]\nactivation = 'localhost'", "host:port"),
    ("[agent]\nnum_hypotheses = 2", "num_hypotheses: 2 is outside 3..8"),
    ("[agent.budget]\nmax_rounds = 0", "budget.max_rounds"),
    ("[agent]\ndefault_policy = 'openai'", "llm.model: the openai policy needs a model name"),
])
def test_mistakes_say_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sage.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        AgentConfig.from_toml(path)
