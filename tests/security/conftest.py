"""Security fixtures: no ambient tokens or TLS settings from the developer's
shell, a token file, and one set of test certificates per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.helpers import OTHER_TOKEN, TOKEN, Certs, make_certs

AMBIENT = ("SAGE_AUTH_TOKENS", "SAGE_TOKEN", "SAGE_TOKEN_FILE", "SAGE_TLS", "SAGE_TLS_CA_FILE", "SAGE_TLS_CERT_FILE",
           "SAGE_TLS_KEY_FILE", "SAGE_TLS_SERVER_NAME")


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# accepted callers\n{TOKEN}\n\n{OTHER_TOKEN}\n")
    return path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))
