"""``encode_sparse_triton``: picks the kernel for a selection, then turns its raw
buffers into the ``SparseRows`` contract (ids ascending per row, zeros omitted).

Mode by selection and architecture:
  * Threshold, element-wise archs -> ``active_set_kernel`` (capacity slots, overflow
    detected from the exact per-row counts, then the overflowing rows are re-run
    with the capacity they need, or ``CapacityOverflow`` is raised);
  * FeatureIds, element-wise archs -> ``subset_kernel`` (reads only those columns);
  * TopK, and every selection of the topk architecture -> ``topk_candidates_kernel``
    then a host-side ``torch.topk`` over the few candidates per row.
"""

from __future__ import annotations

from typing import Literal

import structlog
import torch
import triton

from sagex.activation.encode import FeatureIds, Selection, SparseRows, Threshold, TopK
from sagex.activation.kernels import encode_kernels as K
from sagex.activation.kernels import launch as L
from sagex.activation.sae import EncoderParams

log = structlog.get_logger(__name__)

DEFAULT_CAPACITY = 256  # slots per token; well above the L0 of served SAEs
OnOverflow = Literal["retry", "raise"]
_ID_SENTINEL = torch.iinfo(torch.int32).max  # sorts after every real feature id


class BeyondKernelLimits(ValueError):
    """A shape the tile kernels do not cover; ``encode_sparse`` serves it with torch."""


class CapacityOverflow(RuntimeError):
    """More active features in some rows than the per-token capacity."""

    def __init__(self, rows: torch.Tensor, counts: torch.Tensor, capacity: int) -> None:
        self.rows, self.counts, self.capacity = rows, counts, capacity
        super().__init__(
            f"{rows.numel()} token(s) have more than {capacity} active features "
            f"(largest: {int(counts.max())}); raise the capacity or use on_overflow='retry'"
        )


def encode_sparse_triton(
    x: torch.Tensor,
    p: EncoderParams,
    selection: Selection,
    *,
    capacity: int | None = None,
    on_overflow: OnOverflow = "retry",
) -> SparseRows:
    """Fused encode of ``x [N, d_in]``; results stay on ``x``'s device.

    ``capacity`` and ``on_overflow`` only affect ``Threshold`` on element-wise
    architectures (the only unbounded output)."""
    _check(x, p)
    x = x.to(p.w_enc.dtype)
    if x.shape[0] == 0:
        return _no_rows(0, x.device)
    if isinstance(selection, FeatureIds):
        return _feature_ids(x, p, selection.ids)
    if isinstance(selection, TopK):
        return _top_k(x, p, selection.k)
    if isinstance(selection, Threshold):
        t = float(selection.min_activation)
        if p.architecture == "topk":
            ids, vals, keep = _topk_slots(x, p, min(p.k, p.d_sae))
            return _compact(ids, vals, keep & (vals > t))
        cap = min(p.d_sae, capacity if capacity is not None else DEFAULT_CAPACITY)
        return _active_set(x, p, t, max(1, cap), on_overflow)
    raise TypeError(f"unknown selection {selection!r}")


def _check(x: torch.Tensor, p: EncoderParams) -> None:
    if x.ndim != 2 or x.shape[1] != p.d_in:
        raise ValueError(f"x must be [N, {p.d_in}], got {list(x.shape)}")
    if x.device != p.w_enc.device:
        raise ValueError(f"x is on {x.device} but the SAE is on {p.w_enc.device}")
    if L.interpreted(x) and type(K.active_set_kernel).__name__ != "InterpretedFunction":
        raise RuntimeError(
            "the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set before importing triton)"
        )


def _no_rows(n: int, device: torch.device) -> SparseRows:
    return SparseRows(
        torch.zeros(n + 1, dtype=torch.int64, device=device),
        torch.zeros(0, dtype=torch.int32, device=device),
        torch.zeros(0, dtype=torch.float32, device=device),
    )


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    offsets[1:] = counts.cumsum(0)
    return offsets


def _compact(ids: torch.Tensor, vals: torch.Tensor, keep: torch.Tensor) -> SparseRows:
    """CSR from per-row slots ``[N, W]``: kept slots, ordered by id. ``keep`` is the
    only thing trusted, so unwritten (garbage) slots never leak."""
    key = torch.where(keep, ids, _ID_SENTINEL)
    key, order = key.sort(dim=1)
    vals = vals.gather(1, order)
    counts = keep.sum(dim=1)
    kept = torch.arange(ids.shape[1], device=ids.device)[None, :] < counts[:, None]
    return SparseRows(_offsets(counts), key[kept].to(torch.int32), vals[kept].float())


def _active_set(x: torch.Tensor, p: EncoderParams, t: float, cap: int, on_overflow: OnOverflow) -> SparseRows:
    counts, ids, vals = L.launch_active_set(x, p, cap, t)
    over = counts > cap
    slots = torch.arange(cap, device=x.device)[None, :]
    if not bool(over.any()):
        return _compact(ids, vals, slots < counts[:, None])
    rows = over.nonzero()[:, 0]
    if on_overflow == "raise":
        raise CapacityOverflow(rows.cpu(), counts[rows].cpu(), cap)
    # Counts are exact, so one re-run of just these rows normally suffices; the slack
    # absorbs a count that differs by rounding when the rows land in other tiles.
    need = min(p.d_sae, int(counts.max()) + 8)
    log.warning("active_set_capacity_overflow", capacity=cap, tokens=rows.numel(), rerun_capacity=need)
    fixed = _active_set(x[rows], p, t, need, on_overflow)
    base = _compact(ids, vals, slots < torch.where(over, 0, counts)[:, None])
    return _splice(base, rows, fixed)


def _splice(base: SparseRows, rows: torch.Tensor, fixed: SparseRows) -> SparseRows:
    """``base`` with its (empty) rows ``rows`` replaced by the rows of ``fixed``."""
    dev = base.row_offsets.device
    base_counts, fixed_counts = base.row_offsets.diff(), fixed.row_offsets.diff()
    counts = base_counts.clone()
    counts[rows] = fixed_counts
    offsets = _offsets(counts)
    total = int(offsets[-1])
    ids = torch.empty(total, dtype=torch.int32, device=dev)
    vals = torch.empty(total, dtype=torch.float32, device=dev)
    for part, part_rows, part_counts in ((base, None, base_counts), (fixed, rows, fixed_counts)):
        local = torch.repeat_interleave(torch.arange(part_counts.numel(), device=dev), part_counts)
        within = torch.arange(local.numel(), device=dev) - part.row_offsets[local]
        dest = offsets[local if part_rows is None else part_rows[local]] + within
        ids[dest] = part.feature_ids
        vals[dest] = part.values
    return SparseRows(offsets, ids, vals)


def _unpack(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``encode_kernels._pack_keys``: (ids int32, scores fp32)."""
    high = (keys >> 32).to(torch.int32)
    bits = torch.where(high >= 0, high, high ^ 0x7FFFFFFF)
    return (keys & 0xFFFFFFFF).to(torch.int32), bits.view(torch.float32)


def _topk_slots(x: torch.Tensor, p: EncoderParams, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row ``[N, k]`` (ids, activations, present) of the k best scores: pass 1 on
    the GPU leaves chunks x KP candidates per row, pass 2 merges them here."""
    if triton.next_power_of_2(k) > L.MAX_TILE_TOPK:
        raise BeyondKernelLimits(f"top-k with k={k} > {L.MAX_TILE_TOPK} is beyond the Triton kernels")
    cand = L.launch_topk_candidates(x, p, k)
    keys = cand.topk(k, dim=1, sorted=False).values
    ids, scores = _unpack(keys)
    # For the topk architecture the score is the pre-activation; relu comes after selection.
    vals = scores.clamp_min(0.0) if p.architecture == "topk" else scores
    return ids, vals, (keys != K.EMPTY_KEY) & (vals != 0)


def _top_k(x: torch.Tensor, p: EncoderParams, k: int) -> SparseRows:
    k = min(k, p.d_sae, p.k if p.architecture == "topk" else p.d_sae)
    if k <= 0:
        return _no_rows(x.shape[0], x.device)
    if triton.next_power_of_2(k) <= L.MAX_TILE_TOPK or p.architecture == "topk":
        ids, vals, keep = _topk_slots(x, p, k)
        return _compact(ids, vals, keep & (vals > 0))
    # Very large k: the active set is bounded by d_sae anyway, so select from it.
    full = _active_set(x, p, 0.0, min(p.d_sae, DEFAULT_CAPACITY), "retry")
    return _top_of_rows(full, k)


def _top_of_rows(rows: SparseRows, k: int) -> SparseRows:
    counts = rows.row_offsets.diff()
    width = int(counts.max()) if counts.numel() else 0
    if width <= k:
        return rows
    dev, n = counts.device, counts.numel()
    row = torch.repeat_interleave(torch.arange(n, device=dev), counts)
    col = torch.arange(row.numel(), device=dev) - rows.row_offsets[row]
    vals = torch.full((n, width), float("-inf"), device=dev)
    ids = torch.zeros((n, width), dtype=torch.int32, device=dev)
    vals[row, col] = rows.values
    ids[row, col] = rows.feature_ids
    top = vals.topk(k, dim=1, sorted=False)
    return _compact(ids.gather(1, top.indices), top.values, top.values > 0)


def _feature_ids(x: torch.Tensor, p: EncoderParams, requested: tuple[int, ...]) -> SparseRows:
    wanted = sorted(int(i) for i in requested)
    if wanted and not (wanted[0] >= 0 and wanted[-1] < p.d_sae):
        raise ValueError(f"feature ids must lie in [0, {p.d_sae})")
    if not wanted:
        return _no_rows(x.shape[0], x.device)
    sel = torch.tensor(wanted, dtype=torch.int64, device=x.device)
    uniq, inverse = torch.unique(sel, return_inverse=True)  # duplicates are kept, as torch does
    if p.architecture == "topk":
        dense = _subset_of_topk(x, p, uniq)
    else:
        dense = L.launch_subset(x, p, uniq.to(torch.int32))
    if uniq.numel() != sel.numel():
        dense = dense[:, inverse]
    rows, cols = (dense != 0).nonzero(as_tuple=True)
    return SparseRows(_offsets((dense != 0).sum(dim=1)), sel[cols].to(torch.int32), dense[rows, cols])


def _subset_of_topk(x: torch.Tensor, p: EncoderParams, uniq: torch.Tensor) -> torch.Tensor:
    """A topk SAE's activation depends on the whole row, so run the row top-k and keep
    the requested ids; returns dense fp32 ``[N, len(uniq)]``."""
    ids, vals, keep = _topk_slots(x, p, min(p.k, p.d_sae))
    pos = torch.searchsorted(uniq, ids.long()).clamp_max(uniq.numel() - 1)
    hit = keep & (uniq[pos] == ids.long())
    dense = torch.zeros(x.shape[0], uniq.numel(), dtype=torch.float32, device=x.device)
    row = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(ids)
    dense[row[hit], pos[hit]] = vals[hit]
    return dense
