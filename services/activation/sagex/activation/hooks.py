"""Hook points: TransformerLens names and Hugging Face module paths, mapped once.

An SAE names the activation it reads either the TransformerLens way
(``blocks.3.hook_resid_pre``, ``blocks.3.hook_mlp_out``, ``blocks.3.ln2.hook_normalized``)
or the Hugging Face way (a module path such as ``model.layers.3`` or
``model.layers.3.self_attn.o_proj.input``, optionally with an nnsight-style
``.output``/``.input`` suffix; paths relative to the base model, as sparsify
writes them, work too). Both resolve to a ``HookPoint``: one module of the live
model, which side of it (its input or output), and an optional post-step (the
gain-free norm output TransformerLens calls ``hook_normalized``).

The TransformerLens table is per architecture family because the same HF module
name means different things across families (Gemma-2's ``post_attention_layernorm``
normalises the attention *output*; Llama's normalises the MLP input). See
docs/formats.md section 1 for the equivalences these rows implement.

``HookCapture`` registers the hooks on a model, collects the tensors of one
forward pass, and stops the pass at the output of the deepest decoder layer any
hook needs, so no layer after it runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Side = Literal["input", "output"]
Post = Literal["none", "normalize"]
NormKind = Literal["rms", "ln"]

# What a TransformerLens hook reads; "custom" is an HF module path outside this table.
HookKind = Literal[
    "embed", "resid_pre", "attn_z", "attn_out", "resid_mid", "ln2_normalized", "mlp_in", "mlp_out", "resid_post",
    "custom",
]
# Hooks whose values TransformerLens's centre-writing-weights processing shifts (residual writers).
RESIDUAL_WRITERS: frozenset[str] = frozenset({"embed", "resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post"})


class HookError(ValueError):
    """A hook name the model does not have; the message lists the names it does have."""

    def __init__(self, message: str, hook: str = "") -> None:
        super().__init__(message)
        self.hook = hook


@dataclass(frozen=True)
class Family:
    """Where one architecture family keeps the modules TransformerLens hooks read.
    Paths are relative to the causal-LM object; per-layer paths relative to the layer."""

    layers: str
    embed: str
    o_proj: str  # the attention output projection: its input is hook_z
    attn_out: str  # its output is hook_attn_out (Gemma-2/3: the post-attention norm)
    ln2: str  # the norm in front of the MLP
    mlp_out: str  # its output is hook_mlp_out (Gemma-2/3: the post-feedforward norm)
    norm: NormKind
    parallel: bool = False  # GPT-NeoX: attention and MLP both read resid_pre; no resid_mid


_LLAMA = Family("model.layers", "model.embed_tokens", "self_attn.o_proj", "self_attn", "post_attention_layernorm",
                "mlp", "rms")
_GEMMA2 = Family("model.layers", "model.embed_tokens", "self_attn.o_proj", "post_attention_layernorm",
                 "pre_feedforward_layernorm", "post_feedforward_layernorm", "rms")
_GPT2 = Family("transformer.h", "transformer.wte", "attn.c_proj", "attn", "ln_2", "mlp", "ln")
_NEOX = Family("gpt_neox.layers", "gpt_neox.embed_in", "attention.dense", "attention", "post_attention_layernorm",
               "mlp", "ln", parallel=True)

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "gemma": _LLAMA,
    "gemma2": _GEMMA2, "gemma3_text": _GEMMA2,
    "gpt2": _GPT2,
    "gpt_neox": _NEOX,
}

# TransformerLens per-layer hook suffix -> kind. "mlp.hook_in"/"ln2.hook_out" are SAELens's and
# TransformerBridge's name for the actual MLP input (the norm output with its gain).
_TL_LAYER_HOOKS: dict[str, HookKind] = {
    "hook_resid_pre": "resid_pre",
    "attn.hook_z": "attn_z",
    "hook_attn_out": "attn_out",
    "hook_resid_mid": "resid_mid",
    "ln2.hook_normalized": "ln2_normalized",
    "mlp.hook_in": "mlp_in",
    "ln2.hook_out": "mlp_in",
    "hook_mlp_out": "mlp_out",
    "hook_resid_post": "resid_post",
}
_TL_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class HookPoint:
    """One activation of the live model: ``side`` of ``module`` (a path relative to
    the causal-LM object), then ``post``. ``key`` identifies the tensor: SAEs whose
    names resolve to the same key share one capture."""

    module: str
    side: Side
    post: Post
    layer: int  # decoder layer the module belongs to; -1 for the embeddings
    kind: HookKind
    tl_name: str  # the TransformerLens name ("" for a custom module path)

    @property
    def key(self) -> str:
        base = f"{self.module}.{self.side}"
        return base if self.post == "none" else f"{base}|{self.post}"

    @property
    def hf_name(self) -> str:
        return f"{self.module}.{self.side}"


class HookTable:
    """Resolves hook names against one loaded causal LM (before any truncation)."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        self.model_type = str(getattr(config, "model_type", ""))
        self.family = FAMILIES.get(self.model_type)
        self.num_layers = int(config.num_hidden_layers)
        self.n_heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0))
        self._modules: dict[str, nn.Module] = dict(model.named_modules())
        if self.family is not None:
            self.layers_path, self.embed_path = self.family.layers, self.family.embed
            if self.family is _NEOX and not getattr(config, "use_parallel_residual", True):
                self.family = Family(**{**self.family.__dict__, "parallel": False})
        else:  # unknown family: residual hooks and raw module paths only
            self.layers_path = _layer_list_path(model, self.num_layers)
            embed = model.get_input_embeddings()
            self.embed_path = next(n for n, m in self._modules.items() if m is embed)
        prefix = self.layers_path.rpartition(".")[0]
        self._base_prefix = f"{prefix}." if prefix else ""  # "model." / "transformer." / ""
        # Facts conventions need after the modules are released.
        scale = getattr(self._modules[self.embed_path], "embed_scale", None)
        self.embed_scale = float(scale) if scale is not None else 1.0
        first = f"{self.layer_path(0)}."
        self.value_bias = any(
            getattr(m, "bias", None) is not None
            for n, m in self._modules.items()
            if n.startswith(first) and n.rsplit(".", 1)[-1] in ("v_proj", "c_attn", "query_key_value", "qkv_proj")
        )

    # --- facts -------------------------------------------------------------------

    def module(self, path: str) -> nn.Module:
        return self._modules[path]

    def release(self) -> None:
        """Drop the references to the model's modules (names stay resolvable), so layers
        cut off after resolution can be freed."""
        self._modules = dict.fromkeys(self._modules)  # type: ignore[arg-type]

    def norm_kind(self) -> NormKind | None:
        return self.family.norm if self.family else None

    def layer_path(self, layer: int) -> str:
        return f"{self.layers_path}.{layer}"

    # --- resolution ----------------------------------------------------------------

    def resolve(self, name: str) -> HookPoint:
        """A TransformerLens name or an HF module path -> HookPoint; HookError lists what exists."""
        name = name.strip()
        point = self._resolve_tl(name) if (name == "hook_embed" or _TL_NAME.match(name)) else self._resolve_hf(name)
        if point is None:
            raise HookError(
                f"hook {name!r} does not exist on this {self.model_type or 'model'} model; {self.describe()}", name
            )
        return point

    def _resolve_tl(self, name: str) -> HookPoint | None:
        if name == "hook_embed":
            return HookPoint(self.embed_path, "output", "none", -1, "embed", name)
        m = _TL_NAME.match(name)
        assert m is not None
        layer, suffix = int(m.group(1)), m.group(2)
        kind = _TL_LAYER_HOOKS.get(suffix)
        if kind is None or not 0 <= layer < self.num_layers:
            return None
        lp = self.layer_path(layer)
        if kind == "resid_pre":
            return HookPoint(lp, "input", "none", layer, kind, name)
        if kind == "resid_post":
            return HookPoint(lp, "output", "none", layer, kind, name)
        f = self.family
        if f is None:
            return None  # sub-layer semantics are only known for the families above
        if kind == "resid_mid":
            if f.parallel:
                return None  # parallel blocks have no residual between attention and MLP
            return HookPoint(f"{lp}.{f.ln2}", "input", "none", layer, kind, name)
        table: dict[str, tuple[str, Side, Post]] = {
            "attn_z": (f.o_proj, "input", "none"),
            "attn_out": (f.attn_out, "output", "none"),
            "ln2_normalized": (f.ln2, "input", "normalize"),
            "mlp_in": (f.ln2, "output", "none"),
            "mlp_out": (f.mlp_out, "output", "none"),
        }
        sub, side, post = table[kind]
        return HookPoint(f"{lp}.{sub}", side, post, layer, kind, name)

    def _resolve_hf(self, name: str) -> HookPoint | None:
        side: Side = "output"
        for suffix in (".output", ".input"):  # nnsight style: which side of the module
            if name.endswith(suffix):
                side = "input" if suffix == ".input" else "output"
                name = name.removesuffix(suffix)
                break
        path = next((p for p in self._full_paths(name) if p in self._modules), None)
        if path is None:
            return None
        if path == self.embed_path:
            layer = -1
        else:
            m = re.match(re.escape(self.layers_path) + r"\.(\d+)(\.|$)", path)
            if m is None:
                return None  # outside the embeddings and the decoder layers: never reached by the cut model
            layer = int(m.group(1))
        # Name the point by its TransformerLens equivalent where one exists, so both spellings share a capture.
        for tl in self._tl_candidates(layer):
            point = self._resolve_tl(tl)
            if point is not None and point.module == path and point.side == side and point.post == "none":
                return point
        return HookPoint(path, side, "none", layer, "custom", "")

    def _full_paths(self, name: str) -> list[str]:
        # "model.layers.3" as written, or "layers.3" relative to the base model (sparsify, delphi).
        return [name, f"{self._base_prefix}{name}"] if self._base_prefix else [name]

    def _tl_candidates(self, layer: int) -> list[str]:
        if layer < 0:
            return ["hook_embed"]
        return [f"blocks.{layer}.{s}" for s in _TL_LAYER_HOOKS]

    def tl_names(self) -> list[str]:
        """Every TransformerLens name this model resolves (for listings and tests)."""
        names = ["hook_embed"]
        for layer in range(self.num_layers):
            names += [n for n in self._tl_candidates(layer) if self._resolve_tl(n) is not None]
        return names

    def describe(self) -> str:
        last = self.num_layers - 1
        suffixes = [s for s in _TL_LAYER_HOOKS if self._resolve_tl(f"blocks.0.{s}") is not None]
        first = f"{self.layer_path(0)}."
        sub = sorted({n.removeprefix(first) for n in self._modules if n.startswith(first)})
        return (
            f"it has the TransformerLens hooks hook_embed and blocks.{{0..{last}}}.{{{', '.join(suffixes)}}}; "
            f"or HF module paths (optionally ending in .input or .output): {self.embed_path}, "
            f"{self.layers_path}.{{0..{last}}} and, inside each layer, {', '.join(sub)}"
        )


def _layer_list_path(model: nn.Module, num_layers: int) -> str:
    candidates = [n for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    if not candidates:
        raise HookError(f"no ModuleList of {num_layers} decoder layers found in {type(model).__name__}")
    return min(candidates, key=lambda n: n.count("."))


class StopForward(Exception):
    """Raised once every needed activation is captured: the rest of the model is dead work."""


def _first_tensor(args: tuple[object, ...], kwargs: dict[str, object]) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"]  # type: ignore[return-value]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise RuntimeError("hooked module was called without a tensor input")


def _output_tensor(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


def gain_free_norm(x: torch.Tensor, norm: NormKind, module: nn.Module) -> torch.Tensor:
    """TransformerLens's ``hook_normalized``: the norm's input scaled (and for LayerNorm
    centred) but *before* its gain and bias, computed in float32 from the input so a zero
    gain cannot hide anything."""
    eps = float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-5)))
    x32 = x.float()
    if norm == "ln":
        x32 = x32 - x32.mean(-1, keepdim=True)
        return x32 / (x32.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x32 / (x32.pow(2).mean(-1, keepdim=True) + eps).sqrt()


class HookCapture:
    """Forward (pre-)hooks for a set of HookPoints on a model; one ``dict`` of tensors per pass.

    The pass is stopped at the output of ``stop_module`` (the deepest decoder layer any
    point needs, or the embeddings when only they are read)."""

    def __init__(self, table: HookTable, points: Iterable[HookPoint], stop_module: str) -> None:
        self.points = {p.key: p for p in points}
        self.captured: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        by_site: dict[tuple[str, Side], list[HookPoint]] = {}
        for p in self.points.values():
            by_site.setdefault((p.module, p.side), []).append(p)
        norm = table.norm_kind()
        for (path, side), pts in by_site.items():
            module = table.module(path)
            if side == "input":
                self._handles.append(module.register_forward_pre_hook(self._pre(pts, module, norm), with_kwargs=True))
            else:
                self._handles.append(module.register_forward_hook(self._post(pts, module, norm)))
        self._handles.append(table.module(stop_module).register_forward_hook(self._stop))

    def _store(self, pts: Sequence[HookPoint], x: torch.Tensor, module: nn.Module, norm: NormKind | None) -> None:
        for p in pts:
            if p.post == "normalize":
                assert norm is not None
                self.captured[p.key] = gain_free_norm(x, norm, module)
            else:
                self.captured[p.key] = x

    def _pre(self, pts: Sequence[HookPoint], module: nn.Module, norm: NormKind | None):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
            self._store(pts, _first_tensor(args, kwargs), module, norm)

        return hook

    def _post(self, pts: Sequence[HookPoint], module: nn.Module, norm: NormKind | None):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, _args: object, output: object) -> None:
            self._store(pts, _output_tensor(output), module, norm)

        return hook

    def _stop(self, _m: nn.Module, _args: object, _output: object) -> None:
        raise StopForward

    def take(self) -> dict[str, torch.Tensor]:
        out, self.captured = self.captured, {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def deepest_layer(points: Iterable[HookPoint]) -> int:
    return max((p.layer for p in points), default=-1)
