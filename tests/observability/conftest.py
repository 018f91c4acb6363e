"""Observability tests reuse the security fixtures (no ambient credentials, a token file)."""

from tests.security.conftest import no_ambient_credentials, tokens_file  # noqa: F401 - fixtures
