"""Float64 reference for the fused encode, with explicit rounding slack.

The reference evaluates the ``EncoderParams`` epilogue in float64 on the same
quantised inputs the kernels see (``x`` cast to the encoder dtype), so the only
legitimate differences are fp32 accumulation and epilogue rounding. Each entry
gets an error bound from that; an entry whose decision (relu, JumpReLU threshold,
gate, selection threshold, k-th value) lies within its bound is "unsure" and may
go either way, every other entry must match exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from sagex.activation.encode import FeatureIds, Selection, SparseRows, Threshold, TopK
from sagex.activation.sae import EncoderParams

_EPS32 = 2.0**-23


def kernel_device() -> torch.device:
    """Where the kernels run: CPU tensors under the interpreter, else the GPU."""
    return torch.device("cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda")


@dataclass(frozen=True)
class Expected:
    value: torch.Tensor  # float64 [N, d_sae]: the activation an entry has when present
    keep: torch.Tensor  # bool: present in the exact result
    unsure: torch.Tensor  # bool: within rounding of a decision boundary
    tol: torch.Tensor  # float64: allowed |value error|


def make_params(
    arch: str, d_in: int, d_sae: int, dtype: torch.dtype, gen: torch.Generator, *,
    k: int = 7, scaled: bool = True,
) -> EncoderParams:
    """Random folded SAE; biases put roughly a third to half of the features on."""

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    w = (randn(d_in, d_sae) / d_in**0.5).to(dtype)
    bias = randn(d_sae) * 0.5 - 0.3
    if arch == "standard":
        return EncoderParams("standard", w, bias)
    if arch == "jumprelu":
        return EncoderParams("jumprelu", w, bias, threshold=rand(d_sae) * 0.6)
    if arch == "topk":
        return EncoderParams("topk", w, bias, scale=rand(d_sae) + 0.5 if scaled else None, k=k)
    if arch == "gated":
        mag_scale = (randn(d_sae) * 0.3).exp()
        return EncoderParams("gated", w, bias, mag_scale=mag_scale, mag_bias=randn(d_sae) * 0.5)
    raise ValueError(arch)


def _kth_largest(t: torch.Tensor, k: int) -> torch.Tensor:
    return t.topk(min(k, t.shape[1]), dim=1).values[:, -1:]


def expected(x: torch.Tensor, p: EncoderParams, selection: Selection) -> Expected:
    xq = x.cpu().to(p.w_enc.dtype).double()
    w = p.w_enc.cpu().double()
    gemm = xq @ w
    # fp32 accumulation over d_in terms: |error| <= d_in * eps * sum |x_i w_i| (loose, rigorous).
    err_gemm = p.d_in * _EPS32 * (xq.abs() @ w.abs())

    def vec(t: torch.Tensor | None, default: float) -> torch.Tensor:
        return torch.full((p.d_sae,), default, dtype=torch.float64) if t is None else t.cpu().double()

    def affine(scale: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = gemm * scale + bias
        return out, err_gemm * scale.abs() + 4 * _EPS32 * ((gemm * scale).abs() + bias.abs())

    bias = vec(p.bias, 0.0)
    if p.architecture == "gated":
        gate, err_gate = affine(vec(None, 1.0), bias)
        mag, tol = affine(vec(p.mag_scale, 1.0), vec(p.mag_bias, 0.0))
        value = mag.clamp_min(0)
        keep = (gate > 0) & (mag > 0)
        unsure = (gate.abs() <= err_gate) | (mag.abs() <= tol)
    else:
        pre, tol = affine(vec(p.scale, 1.0), bias)
        if p.architecture == "jumprelu":
            threshold = vec(p.threshold, 0.0)
            value, keep = pre, pre > threshold
            unsure = ((pre - threshold).abs() <= tol) | (pre.abs() <= tol)
        else:
            value, keep, unsure = pre.clamp_min(0), pre > 0, pre.abs() <= tol
        if p.architecture == "topk":
            # In the top k surely if above the (k+1)-th by the band, out if below the k-th.
            kth, next_ = _kth_largest(pre, p.k), _kth_largest(pre, p.k + 1)
            band = 2 * tol.amax(dim=1, keepdim=True)
            keep &= pre >= kth
            unsure |= (pre <= next_ + band) & (pre >= kth - band)

    if isinstance(selection, Threshold):
        t = selection.min_activation
        unsure |= (keep | unsure) & ((value - t).abs() <= tol)
        keep &= value > t
    elif isinstance(selection, FeatureIds):
        wanted = torch.zeros(p.d_sae, dtype=torch.bool)
        wanted[list(selection.ids)] = True
        keep &= wanted
        unsure &= wanted
    elif isinstance(selection, TopK):
        keep, unsure = _select_top(value, keep, unsure, tol, selection.k)
    return Expected(value, keep, unsure, tol)


def _select_top(
    value: torch.Tensor, keep: torch.Tensor, unsure: torch.Tensor, tol: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of the active values. An entry is surely in when it beats, by the
    rounding band, every entry that could be (k+1)-th, and surely out when k surely
    active entries beat it; unsure entries high in a row widen the band."""
    surely = torch.where(keep & ~unsure, value, 0.0)
    maybe = torch.where(keep | unsure, value, 0.0)
    kth = _kth_largest(torch.where(keep, value, 0.0), k)
    kth_lo, next_hi = _kth_largest(surely, k), _kth_largest(maybe, k + 1)
    band = 2 * tol.amax(dim=1, keepdim=True)
    surely_in = keep & ~unsure & (value > next_hi + band)
    surely_out = (~keep & ~unsure) | (value < kth_lo - band)
    return keep & (value >= kth) & (value > 0), ~(surely_in | surely_out)


def assert_matches(
    rows: SparseRows, exp: Expected, device: torch.device, max_per_row: int | None = None
) -> None:
    n, d_sae = exp.keep.shape
    assert rows.row_offsets.dtype == torch.int64 and rows.row_offsets.shape == (n + 1,)
    assert rows.feature_ids.dtype == torch.int32 and rows.values.dtype == torch.float32
    for t in (rows.row_offsets, rows.feature_ids, rows.values):
        assert t.device.type == device.type
    offsets, ids, vals = rows.row_offsets.cpu(), rows.feature_ids.cpu().long(), rows.values.cpu().double()
    counts = offsets.diff()
    assert int(offsets[0]) == 0 and bool((counts >= 0).all())
    assert int(offsets[-1]) == ids.numel() == vals.numel()
    row = torch.repeat_interleave(torch.arange(n), counts)
    assert bool(((ids >= 0) & (ids < d_sae)).all()), "feature id out of range"
    same_row = row[1:] == row[:-1]
    assert bool((ids[1:][same_row] > ids[:-1][same_row]).all()), "ids must strictly ascend within a row"
    assert bool(torch.isfinite(vals).all()) and bool((vals != 0).all()), "values must be finite and non-zero"
    if max_per_row is not None:
        assert n == 0 or int(counts.max()) <= max_per_row
    got = torch.zeros(n, d_sae, dtype=torch.bool)
    got[row, ids] = True
    wrong = (got ^ exp.keep) & ~exp.unsure
    if bool(wrong.any()):
        r, c = wrong.nonzero()[0].tolist()
        raise AssertionError(
            f"{int(wrong.sum())} entries differ beyond rounding, e.g. row {r} id {c}: "
            f"got {'present' if got[r, c] else 'absent'}, reference value {exp.value[r, c].item():.6g}"
        )
    err = (vals - exp.value[row, ids]).abs()
    bound = exp.tol[row, ids] + 1e-7
    assert bool((err <= bound).all()), f"value error {float((err - bound).max()):.3g} beyond the bound"


def assert_meaningful(exp: Expected) -> None:
    """The case really exercises the kernel: something is selected, and rounding
    slack excuses only a sliver of the decisions."""
    assert int(exp.keep.sum()) > 0
    assert int(exp.unsure.sum()) <= max(3, int(exp.keep.sum()) // 50)
