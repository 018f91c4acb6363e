"""Triton kernels for the fused SAE encode: one GEMM tile plus the folded epilogue
(``sagex.activation.sae`` module docstring), followed by a sparse write.

Every kernel walks a 1-D grid whose fast axis is the token block, so neighbouring
programs share a W_enc column tile: W (the large operand) streams from DRAM about
once while the token block, which is small, is re-read from L2.

Architecture codes (``ARCH``): 0 standard, 1 jumprelu, 2 topk, 3 gated.
"""

from __future__ import annotations

import triton
import triton.language as tl

ARCH_CODES: dict[str, int] = {"standard": 0, "jumprelu": 1, "topk": 2, "gated": 3}
# Keys of padded columns and token rows; below every key a real (non-NaN) score packs to.
EMPTY_KEY: int = -(2**63)


@triton.jit
def _gemm_tile(
    x_ptr, w_ptr, rows, wcol, rmask, cmask, d_in,
    sxm, sxk, swk, swn,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):
    """fp32 tile of ``x[rows] @ W[:, wcol]``; ``wcol`` is either a contiguous column
    range or a gathered id list, which is how subset mode reads only its columns."""
    offs_k = tl.arange(0, BK)
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * sxm
    w_cols = w_ptr + wcol.to(tl.int64)[None, :] * swn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, d_in, BK):
        k = k0 + offs_k
        kmask = k < d_in
        a = tl.load(x_rows + k[None, :] * sxk, mask=rmask[:, None] & kmask[None, :], other=0.0)
        b = tl.load(w_cols + k.to(tl.int64)[:, None] * swk, mask=kmask[:, None] & cmask[None, :], other=0.0)
        if UPCAST:
            # The CPU interpreter's dot is numpy matmul, which has no bfloat16 and returns
            # garbage for it. bf16 x bf16 products are exact in fp32, so upcasting gives
            # what the GPU's bf16 MMA with fp32 accumulation gives, up to summation order.
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PREC)
    return acc


@triton.jit
def _epilogue(acc, wcol, cmask, bias_ptr, aux_a_ptr, aux_b_ptr, ARCH: tl.constexpr, HAS_SCALE: tl.constexpr):
    """Returns ``(score, act)``: ``act`` is the activation for element-wise
    architectures; for topk it is relu(pre), valid only once the row's top-k is
    known, and ``score`` (the value top-k ranks by) is the scaled pre-activation."""
    bias = tl.load(bias_ptr + wcol, mask=cmask, other=0.0)[None, :]
    if ARCH == 3:
        mag_scale = tl.load(aux_a_ptr + wcol, mask=cmask, other=0.0)[None, :]
        mag_bias = tl.load(aux_b_ptr + wcol, mask=cmask, other=0.0)[None, :]
        act = tl.where(acc + bias > 0, tl.maximum(acc * mag_scale + mag_bias, 0.0), 0.0)
        score = act
    else:
        if HAS_SCALE:
            scale = tl.load(aux_a_ptr + wcol, mask=cmask, other=0.0)[None, :]
            pre = acc * scale + bias
        else:
            pre = acc + bias
        if ARCH == 1:
            threshold = tl.load(aux_a_ptr + wcol, mask=cmask, other=0.0)[None, :]
            act = tl.where(pre > threshold, pre, 0.0)
            score = act
        elif ARCH == 2:
            act = tl.maximum(pre, 0.0)
            score = pre
        else:
            act = tl.maximum(pre, 0.0)
            score = act
    return score, act


@triton.jit
def active_set_kernel(
    x_ptr, w_ptr, bias_ptr, aux_a_ptr, aux_b_ptr,
    ids_ptr, vals_ptr, counts_ptr,
    n_rows, d_in, d_sae, capacity, min_act,
    sxm, sxk, swk, swn,
    ARCH: tl.constexpr, HAS_SCALE: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):
    """Threshold mode: every act > min_act (and != 0) into ``capacity`` slots per row.

    Slots are claimed with one atomic add per (row, tile); the counter keeps counting
    past the capacity, so the host learns each row's true size and can re-run exactly
    the rows that overflowed. Slot order follows tile arrival, so the host sorts ids."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(n_rows, BM)
    rows = (pid % num_m) * BM + tl.arange(0, BM)
    cols = (pid // num_m) * BN + tl.arange(0, BN)
    rmask = rows < n_rows
    cmask = cols < d_sae
    acc = _gemm_tile(
        x_ptr, w_ptr, rows, cols, rmask, cmask, d_in, sxm, sxk, swk, swn, BM, BN, BK, UPCAST, PREC
    )
    _, act = _epilogue(acc, cols, cmask, bias_ptr, aux_a_ptr, aux_b_ptr, ARCH, HAS_SCALE)
    keep = (act > min_act) & (act != 0.0) & rmask[:, None] & cmask[None, :]
    hits = keep.to(tl.int32)
    n_hits = tl.sum(hits, axis=1)
    base = tl.atomic_add(counts_ptr + rows, n_hits, mask=rmask & (n_hits > 0), sem="relaxed")
    slot = base[:, None] + tl.cumsum(hits, axis=1) - hits
    ok = keep & (slot < capacity)
    row_base = rows.to(tl.int64)[:, None] * capacity
    tl.store(ids_ptr + row_base + slot, tl.broadcast_to(cols[None, :], (BM, BN)), mask=ok)
    tl.store(vals_ptr + row_base + slot, act, mask=ok)


@triton.jit
def subset_kernel(
    x_ptr, w_ptr, bias_ptr, aux_a_ptr, aux_b_ptr, feat_ptr, out_ptr,
    n_rows, d_in, n_feat,
    sxm, sxk, swk, swn,
    ARCH: tl.constexpr, HAS_SCALE: tl.constexpr, GATHER_W: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):
    """Subset mode (element-wise architectures): act of the listed features only,
    into a dense ``[n_rows, n_feat]`` block. With ``GATHER_W`` the W_enc columns are
    gathered by id inside the loads (one launch; best for few token blocks); without
    it ``w_ptr`` is the host's pre-gathered ``[n_feat, d_in]`` copy, which many
    token blocks then read coalesced instead of each re-gathering sparse sectors."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(n_rows, BM)
    rows = (pid % num_m) * BM + tl.arange(0, BM)
    j = (pid // num_m) * BN + tl.arange(0, BN)
    rmask = rows < n_rows
    jmask = j < n_feat
    wcol = tl.load(feat_ptr + j, mask=jmask, other=0)
    w_index = wcol if GATHER_W else j
    acc = _gemm_tile(
        x_ptr, w_ptr, rows, w_index, rmask, jmask, d_in, sxm, sxk, swk, swn, BM, BN, BK, UPCAST, PREC
    )
    _, act = _epilogue(acc, wcol, jmask, bias_ptr, aux_a_ptr, aux_b_ptr, ARCH, HAS_SCALE)
    dest = rows.to(tl.int64)[:, None] * n_feat + j[None, :]
    tl.store(out_ptr + dest, act, mask=rmask[:, None] & jmask[None, :])


@triton.jit
def _pack_keys(score, cols, valid):
    """int64 keys ordered like (score, column): the fp32 bits made monotone as a signed
    int (negative floats get their magnitude bits flipped) in the high word and the
    column in the low word, so one sort carries the id with the value and ties break
    deterministically towards the higher id."""
    bits = score.to(tl.int32, bitcast=True)
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    key = (ordered.to(tl.int64) << 32) | cols.to(tl.int64)[None, :]
    return tl.where(valid, key, -9223372036854775807 - 1)


@triton.jit
def _extract_merge(best, keys, KP: tl.constexpr):
    """The KP largest of ``best`` (per row) and ``keys``, descending; keys are unique
    (they carry the column), so each step removes exactly one entry."""
    slot = tl.arange(0, KP)[None, :]
    merged = tl.full(best.shape, -9223372036854775807 - 1, dtype=tl.int64)
    for i in range(KP):
        top = tl.maximum(tl.max(keys, axis=1), tl.max(best, axis=1))[:, None]
        merged = tl.where(slot == i, top, merged)
        keys = tl.where(keys == top, -9223372036854775807 - 1, keys)
        best = tl.where(best == top, -9223372036854775807 - 1, best)
    return merged


@triton.jit
def topk_candidates_kernel(
    x_ptr, w_ptr, bias_ptr, aux_a_ptr, aux_b_ptr, cand_ptr,
    n_rows, d_in, d_sae, tiles_per_prog, n_chunks,
    sxm, sxk, swk, swn,
    ARCH: tl.constexpr, HAS_SCALE: tl.constexpr, KP: tl.constexpr, SELECT: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):
    """Top-k mode, pass 1: the KP best keys of each row within a chunk of column tiles.

    A running, descending top-KP is merged with each tile's own top-KP by the bitonic
    step max(best, reversed(tile_top)), which holds the KP largest of the union, then
    re-sorted (``SELECT == 0``, the GPU path). ``SELECT == 1`` merges by repeated
    max-extraction instead: the interpreter runs tl.sort/tl.topk's xor reductions one
    element at a time in Python (~20 s a tile), max reductions in numpy. A tile whose
    row maxima cannot beat any row's current KP-th key is skipped. The host merges the
    per-chunk candidates (``torch.topk``) in pass 2."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(n_rows, BM)
    chunk = pid // num_m
    rows = (pid % num_m) * BM + tl.arange(0, BM)
    rmask = rows < n_rows
    best = tl.full((BM, KP), -9223372036854775807 - 1, dtype=tl.int64)
    first = chunk * tiles_per_prog
    last = tl.minimum(first + tiles_per_prog, tl.cdiv(d_sae, BN))
    for t in range(first, last):
        cols = t * BN + tl.arange(0, BN)
        cmask = cols < d_sae
        acc = _gemm_tile(
            x_ptr, w_ptr, rows, cols, rmask, cmask, d_in, sxm, sxk, swk, swn, BM, BN, BK, UPCAST, PREC
        )
        score, _ = _epilogue(acc, cols, cmask, bias_ptr, aux_a_ptr, aux_b_ptr, ARCH, HAS_SCALE)
        keys = _pack_keys(score, cols, rmask[:, None] & cmask[None, :])
        worth = tl.max(keys, axis=1) > tl.min(best, axis=1)
        if tl.max(worth.to(tl.int32), axis=0) > 0:
            if SELECT == 0:
                tile_top = tl.topk(keys, KP)
                best = tl.sort(tl.maximum(best, tl.flip(tile_top, 1)), descending=True)
            else:
                best = _extract_merge(best, keys, KP)
    dest = rows.to(tl.int64)[:, None] * (n_chunks * KP) + chunk * KP + tl.arange(0, KP)[None, :]
    tl.store(cand_ptr + dest, best, mask=rmask[:, None])
