"""Block-size choice and kernel launches; returns raw kernel buffers, no CSR logic."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from sagex.activation.kernels import encode_kernels as K
from sagex.activation.sae import EncoderParams

# Largest per-row top-k the tile kernel sorts in registers; beyond it the host
# falls back (wrapper.py) because a [BM, KP] int64 tile no longer fits.
MAX_TILE_TOPK = 1024


@dataclass(frozen=True)
class Blocks:
    bm: int
    bn: int
    bk: int
    warps: int = 4
    stages: int = 3


def interpreted(x: torch.Tensor) -> bool:
    # Only the interpreter runs Triton on CPU tensors.
    return x.device.type != "cuda"


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Output buffers the kernels fully overwrite where the host reads them. Tests
    replace this with a poisoning allocator to prove nothing unwritten is read."""
    return torch.empty(shape, dtype=dtype, device=device)


def _bm_for(n_rows: int, big: int) -> int:
    # tl.dot needs M >= 16; small batches are memory bound, so spare the wasted MMA rows.
    return max(16, min(big, triton.next_power_of_2(n_rows)))


def blocks_for(x: torch.Tensor, mode: str, kp: int = 0, n_feat: int = 0, d_sae: int = 0) -> Blocks:
    """Untuned defaults (see benchmarks/GPU_ENCODE.md). Under the interpreter large
    tiles matter most: its cost is per program and per op, not per FLOP."""
    n_rows = x.shape[0]
    fp32 = x.dtype == torch.float32
    if interpreted(x):
        return Blocks(bm=32, bn=max(128, kp), bk=128)
    bk = 32 if fp32 else 64
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    if mode == "subset":
        # Memory bound on x: small token blocks so that every SM streams some of it.
        bm = max(16, min(64, triton.next_power_of_2(triton.cdiv(n_rows, sms))))
        bn = max(16, min(64, triton.next_power_of_2(n_feat)))
        return _fit_smem(Blocks(bm=bm, bn=bn, bk=2 * bk, stages=4), x.element_size())
    if mode == "topk":
        bn = max(128, kp)
        bm = _bm_for(n_rows, max(16, 8192 // bn))
        return _fit_smem(Blocks(bm=bm, bn=bn, bk=bk, warps=8 if bm * bn >= 8192 else 4), x.element_size())
    if n_rows <= 64:
        bn = 64 if triton.cdiv(d_sae, 128) < sms else 128  # at least one wave of column tiles
        return _fit_smem(Blocks(bm=_bm_for(n_rows, 64), bn=bn, bk=bk, stages=4), x.element_size())
    return _fit_smem(Blocks(bm=128, bn=128, bk=bk, warps=8, stages=3), x.element_size())


def _fit_smem(b: Blocks, elt: int, budget: int = 96 * 1024) -> Blocks:
    """Fewer pipeline stages, then thinner K steps, until the operand ring fits in
    ``budget`` bytes of shared memory (safe on A100/H100 and most consumer parts)."""
    stages, bk = b.stages, b.bk
    while (b.bm + b.bn) * bk * elt * stages > budget and (stages > 1 or bk > 16):
        if stages > 2 or (stages == 2 and bk == 16):
            stages -= 1
        else:
            bk //= 2
    return Blocks(bm=b.bm, bn=b.bn, bk=bk, warps=b.warps, stages=stages)


def _common(x: torch.Tensor, p: EncoderParams) -> tuple[list[object], dict[str, object]]:
    """Pointer/stride arguments shared by all kernels, and the constexpr flags."""
    dummy = p.bias
    if p.architecture == "gated":
        aux_a, aux_b = p.mag_scale, p.mag_bias
    elif p.architecture == "jumprelu":
        aux_a, aux_b = p.threshold, dummy
    else:
        aux_a, aux_b = (p.scale if p.scale is not None else dummy), dummy
    if x.dtype == torch.float32:
        # Follow torch's own fp32 matmul policy so both backends round alike.
        prec = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    else:
        prec = "tf32"  # ignored for 16-bit operands
    args: list[object] = [x, p.w_enc, p.bias, aux_a, aux_b]
    flags: dict[str, object] = {
        "ARCH": K.ARCH_CODES[p.architecture],
        "HAS_SCALE": p.architecture == "topk" and p.scale is not None,
        "UPCAST": x.dtype == torch.bfloat16 and interpreted(x),
        "PREC": prec,
    }
    return args, flags


def _strides(x: torch.Tensor, p: EncoderParams) -> list[int]:
    return [x.stride(0), x.stride(1), p.w_enc.stride(0), p.w_enc.stride(1)]


def launch_active_set(
    x: torch.Tensor, p: EncoderParams, capacity: int, min_act: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(counts int32 [N], ids int32 [N, cap], vals fp32 [N, cap])``; slots
    at or past ``min(counts, cap)`` are unwritten."""
    n = x.shape[0]
    b = blocks_for(x, "active", d_sae=p.d_sae)
    counts = torch.zeros(n, dtype=torch.int32, device=x.device)
    ids = _empty((n, capacity), torch.int32, x.device)
    vals = _empty((n, capacity), torch.float32, x.device)
    args, flags = _common(x, p)
    grid = (triton.cdiv(n, b.bm) * triton.cdiv(p.d_sae, b.bn),)
    K.active_set_kernel[grid](
        *args, ids, vals, counts, n, p.d_in, p.d_sae, capacity, float(min_act), *_strides(x, p),
        **flags, BM=b.bm, BN=b.bn, BK=b.bk, num_warps=b.warps, num_stages=b.stages,
    )
    return counts, ids, vals


def launch_subset(x: torch.Tensor, p: EncoderParams, feat: torch.Tensor) -> torch.Tensor:
    """Dense fp32 ``[N, len(feat)]`` activations of the features ``feat`` (int32)."""
    n, m = x.shape[0], int(feat.numel())
    b = blocks_for(x, "subset", n_feat=m)
    out = _empty((n, m), torch.float32, x.device)
    args, flags = _common(x, p)
    num_m = triton.cdiv(n, b.bm)
    gather_w = num_m <= 1
    strides = _strides(x, p)
    if not gather_w:
        # [m, d_in], each feature's weights contiguous along d_in; reads only those columns.
        w_sub = p.w_enc.t()[feat.long()]
        args[1] = w_sub
        strides[2:] = [w_sub.stride(1), w_sub.stride(0)]
    K.subset_kernel[(num_m * triton.cdiv(m, b.bn),)](
        *args, feat, out, n, p.d_in, m, *strides,
        **flags, GATHER_W=gather_w, BM=b.bm, BN=b.bn, BK=b.bk, num_warps=b.warps, num_stages=b.stages,
    )
    return out


# Top-k merge inside the kernel: 0 bitonic (tl.topk/tl.sort), 1 max-extraction.
# None picks bitonic on GPU and extraction under the interpreter; tests override it.
TOPK_SELECT: int | None = None


def _chunks(x: torch.Tensor, n_tiles: int, num_m: int) -> int:
    """Column chunks per token block: enough programs to fill the GPU, few enough
    that the candidate buffer (N x chunks x KP) stays far below N x d_sae."""
    if interpreted(x):
        return min(2, n_tiles)  # still exercises both the in-kernel merge and the host merge
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    return max(1, min(n_tiles, triton.cdiv(4 * sms, num_m)))


def launch_topk_candidates(x: torch.Tensor, p: EncoderParams, k: int) -> torch.Tensor:
    """int64 keys ``[N, chunks * KP]`` whose top ``k`` per row are the row's top ``k``
    scores (see ``encode_kernels._pack_keys``); padding keys are ``EMPTY_KEY``."""
    n = x.shape[0]
    kp = triton.next_power_of_2(k)
    assert kp <= MAX_TILE_TOPK
    b = blocks_for(x, "topk", kp=kp)
    num_m = triton.cdiv(n, b.bm)
    n_tiles = triton.cdiv(p.d_sae, b.bn)
    n_chunks = _chunks(x, n_tiles, num_m)
    tiles_per_prog = triton.cdiv(n_tiles, n_chunks)
    n_chunks = triton.cdiv(n_tiles, tiles_per_prog)  # no empty chunks
    cand = _empty((n, n_chunks * kp), torch.int64, x.device)
    args, flags = _common(x, p)
    select = (1 if interpreted(x) else 0) if TOPK_SELECT is None else TOPK_SELECT
    K.topk_candidates_kernel[(num_m * n_chunks,)](
        *args, cand, n, p.d_in, p.d_sae, tiles_per_prog, n_chunks, *_strides(x, p),
        **flags, KP=kp, SELECT=select, BM=b.bm, BN=b.bn, BK=b.bk, num_warps=b.warps, num_stages=b.stages,
    )
    return cand
