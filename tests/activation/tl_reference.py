"""A TransformerLens model of the embedded SmolLM2-135M, built offline from the local
HF weights with a hand-written config (TransformerLens's name-based loader needs the
hub), for conformance tests that compare served activations with TransformerLens."""

from __future__ import annotations

from pathlib import Path

import torch


def hooked_smollm2(model_dir: Path, n_layers: int, processed: bool):  # type: ignore[no-untyped-def]
    """A HookedSAETransformer (TransformerLens plus SAELens's ``mlp.hook_in``) of the first
    ``n_layers`` blocks. ``processed``: ``from_pretrained``'s default weight processing
    (fold_ln, center_writing_weights, center_unembed, fold_value_biases); otherwise none,
    as ``from_pretrained_no_processing``."""
    from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=c.head_dim, n_heads=c.num_attention_heads, d_mlp=c.intermediate_size,
        n_layers=n_layers, n_ctx=2048, eps=c.rms_norm_eps, d_vocab=c.vocab_size, act_fn="silu",
        normalization_type="RMSPre" if processed else "RMS", positional_embedding_type="rotary",
        rotary_dim=c.head_dim, rotary_base=int(c.rope_parameters["rope_theta"]), rotary_adjacent_pairs=False,
        final_rms=True, gated_mlp=True, n_key_value_heads=c.num_key_value_heads,
        original_architecture="LlamaForCausalLM", dtype=torch.float32, device="cpu", default_prepend_bos=False,
    )
    state = convert_llama_weights(hf, cfg)
    model = HookedSAETransformer(cfg)
    model.load_and_process_state_dict(
        state, fold_ln=processed, center_writing_weights=processed, center_unembed=processed,
        fold_value_biases=processed, refactor_factored_attn_matrices=False,
    )
    return model.eval()
