"""Where an export goes: the names each format files a latent under."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sagex.sdk.types import SaeInfo


@dataclass(frozen=True)
class Target:
    """``model_id``/``source``: Neuronpedia's model id and source id (``{layer}-{set name}``,
    ``e`` for the embeddings); ``module``: delphi's hookpoint (an HF module path relative
    to the base model, ``layers.3``); ``sae_source``: where the SAE came from."""

    model_id: str
    source: str
    module: str
    hook_name: str = ""
    sae_source: str = ""

    @staticmethod
    def of(model_name: str, sae: SaeInfo, model_id: str = "", source: str = "") -> Target:
        tl = sae.tl_hook_name or sae.hook_name
        m = re.match(r"blocks\.(\d+)\.", tl)
        layer = m.group(1) if m else ("e" if tl == "hook_embed" else "0")
        # delphi names the module the SAE reads relative to the base model, without the side.
        hf = (sae.hf_hook_name or sae.hook_name).removesuffix(".output")
        module = re.sub(r"^(model|transformer|gpt_neox)\.", "", hf)
        return Target(
            model_id=model_id or re.sub(r"[^a-z0-9.-]+", "-", model_name.lower()).strip("-"),
            source=source or f"{layer}-{re.sub(r'[^A-Za-z0-9.-]+|__', '-', sae.id).strip('-') or 'sae'}",
            module=module,
            hook_name=sae.hook_name,
            sae_source=sae.source,
        )
