"""SAELens release ids (``release/sae_id``) resolved through the local Hugging Face cache.

The release directory is sae-lens's own ``pretrained_saes.yaml`` (shipped in its
wheel; reading it makes no network call). Files are looked up with
``huggingface_hub.try_to_load_from_cache``, which never downloads, so a server
without network either finds the SAE in the cache or says exactly what to fetch.
We do not call ``SAE.from_pretrained``: it downloads when it can, and for some
loaders (Gemma Scope 2) makes live HTTP requests even when the files are cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sagex.activation.formats import SaeFile
from sagex.activation.sae import SaeLoadError

# conversion_func in the yaml -> files under the SAE's folder, and how to read them.
_SAELENS_FILES = ("cfg.json", "sae_weights.safetensors")
_GEMMA_FILES = ("params.npz",)
SUPPORTED_LOADERS = {None: _SAELENS_FILES, "sae_lens": _SAELENS_FILES, "gemma_2": _GEMMA_FILES,
                     "gemma_2_transcoder": _GEMMA_FILES}


def default_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _directory() -> dict[str, Any]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def load_release(ref: str, hf_cache: Path | None = None) -> SaeFile:
    from huggingface_hub import try_to_load_from_cache

    release, _, sae_id = ref.partition("/")
    directory = _directory()
    lookup = directory.get(release)
    if lookup is None:
        near = sorted(r for r in directory if release.split("-")[0] in r)[:8]
        raise SaeLoadError(f"{ref} is not a folder, and {release!r} is not a SAELens release"
                           + (f"; similar releases: {', '.join(near)}" if near else ""))
    if sae_id not in lookup.saes_map:
        raise SaeLoadError(f"release {release!r} has no SAE {sae_id!r}; "
                           f"some it has: {', '.join(list(lookup.saes_map)[:5])}")
    loader = lookup.conversion_func
    if loader not in SUPPORTED_LOADERS:
        raise SaeLoadError(
            f"release {release!r} uses sae-lens's {loader!r} loader, which this server does not read; convert it once "
            f"(SAE.from_pretrained({release!r}, {sae_id!r}).save_model(folder)) and serve the folder"
        )
    folder = lookup.saes_map[sae_id]
    cache = Path(hf_cache) if hf_cache else default_cache()
    found: dict[str, Path] = {}
    for name in SUPPORTED_LOADERS[loader]:
        hit = try_to_load_from_cache(lookup.repo_id, f"{folder}/{name}", cache_dir=str(cache))
        if isinstance(hit, str):
            found[name] = Path(hit)
    missing = [f"{folder}/{n}" for n in SUPPORTED_LOADERS[loader] if n not in found]
    if missing:
        raise SaeLoadError(
            f"release {release!r} SAE {sae_id!r} is not in the Hugging Face cache {cache} (this server never "
            f"downloads): fetch {', '.join(missing)} from the model repo {lookup.repo_id}, e.g. "
            f"`hf download {lookup.repo_id} --include '{folder}/*'` where the hub is reachable, then copy the cache "
            "(or point hf_cache_dir at it)"
        )
    snapshot_folder = next(iter(found.values())).parent
    source = f"{release}/{sae_id}"
    overrides: dict[str, Any] = dict(lookup.config_overrides or {})
    if lookup.neuronpedia_id and lookup.neuronpedia_id.get(sae_id):
        overrides["neuronpedia_id"] = lookup.neuronpedia_id[sae_id]
    overrides.setdefault("model_name", lookup.model)
    if loader in ("gemma_2", "gemma_2_transcoder"):
        from sagex.activation.formats import gemmascope

        loaded = gemmascope.load(snapshot_folder, where=f"{lookup.repo_id}/{folder}", source=source)
        return SaeFile(**{**loaded.__dict__, "format": "saelens-release:gemma_2", "meta": {**loaded.meta, **overrides}})
    from sagex.activation.formats import saelens

    return saelens.load(snapshot_folder, overrides=overrides, source=source, fmt="saelens-release")
