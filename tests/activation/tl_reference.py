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


def tiny_gpt2(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (LayerNorm, learned positions, value biases) with random weights, its
    norm gains and biases noised so gain/bias/centring mistakes show; saved with the
    embedded model's tokenizer so the server can load it like any HF folder."""
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=49152, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=1, eos_token_id=2)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
        # Real GPT-2 residuals carry a large mean over d_model; give the writers one, so
        # centring (TransformerLens's center_writing_weights) changes the values visibly.
        for emb in (model.transformer.wte, model.transformer.wpe):
            emb.weight.add_(torch.randn(emb.weight.shape[0], 1) * 0.5)
        for block in model.transformer.h:
            block.attn.c_proj.bias.add_(0.5)
            block.mlp.c_proj.bias.add_(-0.5)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, folder / name)
    return folder


def hooked_gpt2(folder: Path, **flags: bool):  # type: ignore[no-untyped-def]
    """HookedSAETransformer of ``tiny_gpt2`` with exactly the given processing flags
    (``from_pretrained_no_processing(**flags)``, as SAELens trains)."""
    from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
    c = hf.config
    fold_ln = flags.get("fold_ln", False)
    cfg = HookedTransformerConfig(
        d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=4 * c.n_embd, n_layers=c.n_layer,
        n_ctx=c.n_positions, eps=c.layer_norm_epsilon, d_vocab=c.vocab_size, act_fn="gelu_new",
        normalization_type="LNPre" if fold_ln else "LN", positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", dtype=torch.float32, device="cpu", default_prepend_bos=False,
    )
    model = HookedSAETransformer(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=fold_ln,
        center_writing_weights=flags.get("center_writing_weights", False),
        center_unembed=flags.get("center_unembed", False), fold_value_biases=flags.get("fold_value_biases", False),
    )
    return model.eval()


def tiny_gemma2(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A 2-layer Gemma-2 (post-attention and post-feedforward norms, scaled embeddings,
    GQA) with random weights and noised norm offsets, saved with the embedded tokenizer."""
    import shutil

    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    config = Gemma2Config(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                          max_position_embeddings=256, sliding_window=4096, bos_token_id=1, eos_token_id=2,
                          pad_token_id=2)
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, folder / name)
    return folder


def hooked_gemma2(folder: Path):  # type: ignore[no-untyped-def]
    """HookedSAETransformer of ``tiny_gemma2``, unprocessed (TransformerLens's Gemma-2 settings)."""
    from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gemma_weights
    from transformers import Gemma2ForCausalLM

    hf = Gemma2ForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=c.head_dim, n_heads=c.num_attention_heads, d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps, d_vocab=c.vocab_size,
        act_fn="gelu_pytorch_tanh", normalization_type="RMS", rotary_base=c.rope_parameters["rope_theta"]
        if getattr(c, "rope_parameters", None) else c.rope_theta, positional_embedding_type="rotary",
        rotary_dim=c.head_dim, use_attn_scale=True, n_key_value_heads=c.num_key_value_heads,
        window_size=c.sliding_window, use_local_attn=True, attn_types=["local", "global"] * (c.num_hidden_layers // 2),
        attn_scores_soft_cap=c.attn_logit_softcapping, output_logits_soft_cap=c.final_logit_softcapping,
        gated_mlp=True, final_rms=True, use_normalization_before_and_after=True,
        original_architecture="Gemma2ForCausalLM", dtype=torch.float32, device="cpu", default_prepend_bos=False,
    )
    model = HookedSAETransformer(cfg)
    model.load_and_process_state_dict(convert_gemma_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    return model.eval()


def tiny_neox(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-NeoX (Pythia-style parallel residual, partial rotary) with random weights."""
    import shutil

    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=49152, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=256, rotary_pct=0.25,
                           use_parallel_residual=True, bos_token_id=1, eos_token_id=2)
    model = GPTNeoXForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, folder / name)
    return folder


def hooked_neox(folder: Path):  # type: ignore[no-untyped-def]
    """HookedSAETransformer of ``tiny_neox``, unprocessed, config as TransformerLens builds it for NeoX."""
    from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_neox_weights
    from transformers import GPTNeoXForCausalLM

    hf = GPTNeoXForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    c = hf.config
    d_head = c.hidden_size // c.num_attention_heads
    rope = getattr(c, "rope_parameters", None) or {}
    rotary_pct = rope.get("partial_rotary_factor", getattr(c, "rotary_pct", 0.25))
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=d_head, n_heads=c.num_attention_heads, d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings, eps=c.layer_norm_eps, d_vocab=c.vocab_size,
        act_fn=c.hidden_act, use_attn_scale=True, use_local_attn=False, scale_attn_by_inverse_layer_idx=False,
        parallel_attn_mlp=c.use_parallel_residual, positional_embedding_type="rotary", rotary_adjacent_pairs=False,
        normalization_type="LN", default_prepend_bos=False, rotary_dim=round(rotary_pct * d_head),
        original_architecture="GPTNeoXForCausalLM", dtype=torch.float32, device="cpu",
    )
    model = HookedSAETransformer(cfg)
    model.load_and_process_state_dict(convert_neox_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    return model.eval()
