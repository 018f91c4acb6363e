"""TransformerLens conventions: which basis an SAE was trained in, reproduced on the HF model.

SAELens records how it loaded the model it trained on: ``model_class_name``
(``HookedTransformer`` or ``AutoModelForCausalLM``) and
``model_from_pretrained_kwargs`` (the TransformerLens weight processing). Since
sae-lens 3.19.2 training loads ``from_pretrained_no_processing(**kwargs)``, so a flag
absent from the kwargs is off. What each flag does to the value at a hook, on top of
the unprocessed model (docs/formats.md 2.1):

* ``center_writing_weights`` (LayerNorm models only; TransformerLens skips it for RMS
  norms): every residual-writing hook becomes its value minus its own mean over
  d_model. Reproduced exactly by centring the captured tensor.
* ``fold_ln``: only ``mlp.hook_in`` changes (it loses the gain and becomes
  ``ln2.hook_normalized``), so that SAE reads the gain-free norm output instead.
* ``fold_value_biases``: ``attn.hook_z`` loses the value bias. A no-op for models
  without one; refused otherwise.
* ``refactor_factored_attn_matrices``: q/k/v/z become arbitrary; refused for z hooks.
* ``center_unembed``: logits only; no hook we serve changes.

Anything else (another model class, an unknown processing flag) is refused at load
with the reason, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sagex.activation.hooks import RESIDUAL_WRITERS, HookPoint, HookTable
from sagex.activation.sae import SaeLoadError

TL_CLASSES = ("HookedTransformer", "HookedSAETransformer", "HookedRootModule")
HF_CLASSES = ("AutoModelForCausalLM", "AutoModel")
PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                    "refactor_factored_attn_matrices")
# kwargs that change where or how the model runs, never the values at a hook.
HARMLESS_KWARGS = ("device", "n_devices", "dtype", "torch_dtype", "trust_remote_code", "move_to_device",
                   "default_padding_side", "first_n_layers", "n_ctx", "hf_model", "tokenizer", "revision")


@dataclass(frozen=True)
class Plan:
    """What the server reads for one SAE: the hook name (after ``fold_ln`` remaps
    ``mlp.hook_in``) and the processing flags that are on."""

    hook_name: str
    model_class: str
    flags: tuple[str, ...]

    @property
    def label(self) -> str:
        if self.model_class in HF_CLASSES:
            return "hf"
        return "transformer_lens" + (f"({','.join(self.flags)})" if self.flags else "(unprocessed)")


@dataclass(frozen=True)
class Transform:
    """Applied to the captured tensor before encoding: one head's slice of a per-head
    tensor (``hook_head_index``), then ``(x - mean(x) if center) * scale``."""

    center: bool = False
    scale: float = 1.0
    head: int | None = None
    n_heads: int = 0

    @property
    def name(self) -> str:
        parts = [f"head({self.head}/{self.n_heads})"] if self.head is not None else []
        parts += (["center"] if self.center else []) + ([f"scale({self.scale:.6g})"] if self.scale != 1.0 else [])
        return "+".join(parts) or "none"

    def width(self, hook_width: int) -> int:
        """The width the SAE sees, given the hook's."""
        return hook_width // self.n_heads if self.head is not None else hook_width


def plan(hook_name: str, meta: Mapping[str, Any]) -> Plan:
    """Phase one, from the SAE's files alone: model class and kwargs checked, hook remapped."""
    model_class = str(meta.get("model_class_name") or "HookedTransformer")
    if model_class not in TL_CLASSES + HF_CLASSES:
        raise SaeLoadError(
            f"model_class_name {model_class!r} is not a transformer this server reproduces "
            f"(supported: {', '.join(TL_CLASSES + HF_CLASSES)})"
        )
    kwargs = dict(meta.get("model_from_pretrained_kwargs") or {})
    unknown = sorted(k for k in kwargs if k not in PROCESSING_FLAGS + HARMLESS_KWARGS)
    if unknown:
        raise SaeLoadError(
            f"model_from_pretrained_kwargs {unknown} change the model in ways this server does not reproduce; "
            f"known: {', '.join(PROCESSING_FLAGS + HARMLESS_KWARGS)}"
        )
    if model_class in HF_CLASSES:
        on = [k for k in PROCESSING_FLAGS if kwargs.get(k)]
        if on:
            raise SaeLoadError(f"{model_class} SAEs cannot carry TransformerLens processing {on}")
        return Plan(hook_name, model_class, ())
    flags = tuple(k for k in PROCESSING_FLAGS if kwargs.get(k))
    if "fold_ln" in flags:
        for suffix in (".mlp.hook_in", ".ln2.hook_out"):
            if hook_name.endswith(suffix) and hook_name.startswith("blocks."):
                hook_name = hook_name.removesuffix(suffix) + ".ln2.hook_normalized"
    return Plan(hook_name, model_class, flags)


def transform(p: Plan, point: HookPoint, table: HookTable, meta: Mapping[str, Any]) -> Transform:
    """Phase two, on the served model: the tensor transform, or a refusal saying why."""
    scale = 1.0
    if meta.get("trained_on_unscaled_embedding") and point.kind == "embed":
        scale = 1.0 / table.embed_scale  # HF 5.x Gemma embeddings are already scaled
    head = meta.get("hook_head_index")
    if head is not None:
        # SAELens's activation store selects [..., head, :] of the per-head hook tensor; the
        # HF o_proj input is that tensor flattened head-major.
        if point.kind != "attn_z":
            raise SaeLoadError(f"hook_head_index={head} is supported on attn.hook_z only, "
                               f"not {point.tl_name or point.hf_name}")
        if not isinstance(head, int) or not 0 <= head < table.n_heads:
            raise SaeLoadError(f"hook_head_index={head!r} is not a head of this model (0..{table.n_heads - 1})")
    sliced: dict[str, Any] = {"head": head, "n_heads": table.n_heads} if head is not None else {}
    if not p.flags:
        return Transform(scale=scale, **sliced)
    if point.kind == "custom":
        raise SaeLoadError(
            f"TransformerLens processing {list(p.flags)} is defined on TransformerLens hooks, but the SAE reads the "
            f"HF module point {point.hf_name!r}; name a TransformerLens hook or drop the processing flags"
        )
    center = False
    if "center_writing_weights" in p.flags and point.kind in RESIDUAL_WRITERS:
        norm = table.norm_kind()
        if norm is None:
            raise SaeLoadError(
                f"center_writing_weights changes {point.tl_name} on LayerNorm models only, and this "
                f"{table.model_type!r} model's norm type is not known to the server; refusing rather than guessing"
            )
        center = norm == "ln"  # TransformerLens skips the centring for RMS norms
    if "fold_value_biases" in p.flags and point.kind == "attn_z" and table.value_bias:
        raise SaeLoadError(
            f"fold_value_biases removes the value bias from {point.tl_name}, and this model has one; "
            "the server does not reproduce that basis"
        )
    if "refactor_factored_attn_matrices" in p.flags and point.kind == "attn_z":
        raise SaeLoadError(
            f"refactor_factored_attn_matrices re-factorises W_V per head, so {point.tl_name} has no HF "
            "equivalent; the server cannot reproduce it"
        )
    return Transform(center=center, scale=scale, **sliced)
