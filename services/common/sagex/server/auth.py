"""Bearer-token authentication for every RPC but health.

Accepted tokens come from ``ServerOptions.auth_tokens_file`` (one per line, ``#``
comments; mount it as a secret) and from ``$SAGE_AUTH_TOKENS`` (comma or space
separated), both read once at start. Once any token is configured every method
needs one (deny by default: the services, ``google.longrunning.Operations``,
reflection, and methods the server does not have); only the gRPC health
methods are exempt so probes keep working. Callers send
``authorization: Bearer <token>`` metadata; the SDK does from
``ChannelConfig.token`` or ``$SAGE_TOKEN``.

Only SHA-256 digests of the tokens are kept. A presented token is hashed and
compared with every accepted digest by ``hmac.compare_digest``, without
stopping at a match, so neither timing nor the answer says which tokens exist.
Tokens are never logged.

With no token configured the server is open, which is only allowed where the
network is trusted by construction: a loopback host (``make demo``), mutual TLS
(a client certificate is the credential), or an explicit
``allow_unauthenticated = true``, which is logged as a warning at start.
Anything else refuses to start.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import structlog
from grpc import aio

from sagex.server.handlers import guarded, refusing

log = structlog.get_logger("sagex.auth")

TOKENS_ENV = "SAGE_AUTH_TOKENS"
MIN_TOKEN_CHARS = 16
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: valid in metadata as is

MISSING = ("this server requires a token: send metadata 'authorization: Bearer <token>' "
           "(SDK: ChannelConfig(token=...) or $SAGE_TOKEN; grpcurl: -H 'authorization: Bearer <token>')")
MALFORMED = "the authorization metadata must be 'Bearer <token>'"
REJECTED = "the token is not accepted by this server"


class TokenSet:
    """Accepted tokens, kept only as SHA-256 digests."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self._digests = tuple(sorted({_digest(t) for t in tokens}))

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, token: str) -> bool:
        presented = _digest(token)
        accepted = False
        for digest in self._digests:  # every digest, in constant time each: no early exit
            accepted |= hmac.compare_digest(presented, digest)
        return accepted


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _checked(token: str, where: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{where}: a token must be printable ASCII without spaces")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{where}: a token must be at least {MIN_TOKEN_CHARS} characters "
                         "(make one with `openssl rand -hex 32`)")
    return token


def load_tokens(tokens_file: Path | None, environ: Mapping[str, str] = os.environ) -> TokenSet:
    """The tokens of ``tokens_file`` and ``$SAGE_AUTH_TOKENS``; errors name the line, never the token."""
    tokens: list[str] = []
    if tokens_file is not None:
        try:
            lines = Path(tokens_file).read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"auth_tokens_file: cannot read {tokens_file}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                tokens.append(_checked(line, f"auth_tokens_file {tokens_file} line {number}"))
        if not tokens:
            raise ValueError(f"auth_tokens_file: {tokens_file} holds no token; put one per line")
    for number, token in enumerate(re.split(r"[,\s]+", environ.get(TOKENS_ENV, "").strip()), 1):
        if token:
            tokens.append(_checked(token, f"${TOKENS_ENV} token {number}"))
    return TokenSet(tokens)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, port: int, tokens: TokenSet, client_certs: bool, allow_unauthenticated: bool) -> str:
    """How callers are authenticated ("tokens", "mtls", "tokens+mtls", "none"); raises
    ValueError when an open server would be reachable from other machines."""
    mode = "+".join(m for m, on in (("tokens", len(tokens) > 0), ("mtls", client_certs)) if on) or "none"
    if mode == "none" and not is_loopback(host):
        if not allow_unauthenticated:
            raise ValueError(
                f"refusing to serve {host}:{port} without authentication: configure tokens (auth_tokens_file "
                f"in the [<service>.server] table, or ${TOKENS_ENV}), require client certificates "
                "(tls_client_ca_file), bind 127.0.0.1, or set allow_unauthenticated = true if a trusted proxy "
                "or network policy does the authentication")
        log.warning("auth_disabled", host=host, port=port,
                    message="allow_unauthenticated is set: anyone who can reach this port can call every method")
    return mode


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of ``authorization: Bearer <token>``; "" when the metadata is
    there but malformed, None when there is none."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = (value.decode(errors="replace") if isinstance(value, bytes) else value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class TokenAuthInterceptor(aio.ServerInterceptor):
    """Refuses every call without an accepted bearer token (UNAUTHENTICATED),
    except the ``exempt`` methods (health)."""

    def __init__(self, tokens: TokenSet, exempt: frozenset[str] = frozenset()) -> None:
        if not len(tokens):
            raise ValueError("TokenAuthInterceptor needs at least one token")
        self._tokens = tokens
        self._exempt = exempt

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in self._exempt:
            return await continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            reason, message = "missing", MISSING
        elif not token:
            reason, message = "malformed", MALFORMED
        elif self._tokens.accepts(token):
            return await continuation(handler_call_details)
        else:
            reason, message = "rejected", REJECTED

        @asynccontextmanager
        async def refuse(context: aio.ServicerContext) -> AsyncIterator[None]:
            log.warning("rpc_unauthenticated", method=method, reason=reason, peer=context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # unreachable: abort raises

        # The refusal has the method's own shape, so streaming calls end cleanly too.
        handler = await continuation(handler_call_details)
        return refusing(refuse) if handler is None else guarded(handler, refuse)


__all__ = ["TOKENS_ENV", "TokenAuthInterceptor", "TokenSet", "bearer_token", "check_exposure", "is_loopback",
           "load_tokens"]
