"""Request checks every service makes against the activation service."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from sagex.remote.activation import ActivationClient, ActivationUnavailable, SaeDescription
from sagex.server.errors import InvalidArgument, NotFound, Unavailable


async def require_features(activation: ActivationClient, sae_id: str, ids: Sequence[int], field: str
                           ) -> SaeDescription:
    """The SAE, if the activation service serves it and has every feature id:
    otherwise NOT_FOUND (listing what it serves), INVALID_ARGUMENT (the ids out of
    range) or UNAVAILABLE (it could not be asked)."""
    try:
        sae = await activation.sae(sae_id)
        known = await activation.sae_ids() if sae is None else []
    except ActivationUnavailable as exc:
        raise Unavailable(f"cannot check the request against the activation service: {exc}") from None
    except grpc.aio.AioRpcError as exc:
        raise Unavailable(f"cannot check the request against the activation service: {exc.code().name}: "
                          f"{exc.details()}") from None
    if sae is None:
        raise NotFound("sae", sae_id, f"the activation service serves: {', '.join(known)}")
    bad = sorted({f for f in ids if f >= sae.d_sae})
    if bad:
        raise InvalidArgument.one(field, f"feature ids {bad[:5]} are out of range; {sae_id} has features "
                                         f"0..{sae.d_sae - 1}")
    return sae
