"""The one SAE-encode entry point, with a sparse-output contract.

``encode_sparse(x, params, selection)`` returns only what the caller selected,
as compressed sparse rows, never a dense ``N x d_sae`` result. On CUDA the fused
Triton kernels serve it (``sagex.activation.kernels``); on CPU the torch path
below does, in token blocks so its dense intermediate stays bounded.

Selections:
  * ``FeatureIds(ids)``: the activations of those features (zeros omitted);
  * ``TopK(k)``: the k largest positive activations per token;
  * ``Threshold(t)``: every activation > t (t = 0: the SAE's whole active set).
Within a row, feature ids ascend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from sagex.activation.sae import EncoderParams


@dataclass(frozen=True)
class FeatureIds:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class TopK:
    k: int


@dataclass(frozen=True)
class Threshold:
    min_activation: float = 0.0


Selection = FeatureIds | TopK | Threshold
Backend = Literal["auto", "torch", "triton"]


@dataclass(frozen=True)
class SparseRows:
    """Compressed sparse rows: row t holds entries ``row_offsets[t]:row_offsets[t+1]``."""

    row_offsets: torch.Tensor  # int64 [N + 1]
    feature_ids: torch.Tensor  # int32 [nnz]
    values: torch.Tensor  # float32 [nnz]

    @property
    def num_rows(self) -> int:
        return int(self.row_offsets.numel() - 1)

    def to_dense(self, d_sae: int) -> torch.Tensor:
        out = torch.zeros(self.num_rows, d_sae, dtype=torch.float32)
        rows = torch.repeat_interleave(torch.arange(self.num_rows), self.row_offsets.diff())
        out[rows, self.feature_ids.long()] = self.values
        return out

    def slice_rows(self, start: int, stop: int) -> SparseRows:
        lo, hi = int(self.row_offsets[start]), int(self.row_offsets[stop])
        return SparseRows(self.row_offsets[start : stop + 1] - lo, self.feature_ids[lo:hi], self.values[lo:hi])

    @staticmethod
    def concat(parts: list[SparseRows]) -> SparseRows:
        if not parts:
            return SparseRows(torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int32), torch.zeros(0))
        offsets = [parts[0].row_offsets]
        base = int(parts[0].row_offsets[-1])
        for p in parts[1:]:
            offsets.append(p.row_offsets[1:] + base)
            base += int(p.row_offsets[-1])
        return SparseRows(
            torch.cat(offsets), torch.cat([p.feature_ids for p in parts]), torch.cat([p.values for p in parts])
        )


def activate(pre_gemm: torch.Tensor, p: EncoderParams) -> torch.Tensor:
    """Apply the folded epilogue to ``P = x @ W_enc`` (float32, any column subset
    already applied to ``p``). Returns dense activations."""
    if p.architecture == "gated":
        assert p.mag_scale is not None and p.mag_bias is not None
        gate = (pre_gemm + p.bias) > 0
        return torch.where(gate, torch.relu(pre_gemm * p.mag_scale + p.mag_bias), 0.0)
    pre = _pre(pre_gemm, p)
    if p.architecture == "standard":
        return torch.relu(pre)
    if p.architecture == "jumprelu":
        assert p.threshold is not None
        return torch.where(pre > p.threshold, pre, 0.0)
    # topk: the k largest pre-activations survive, then ReLU (sae-lens order).
    values, idx = pre.topk(p.k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(values))


def _pre(pre_gemm: torch.Tensor, p: EncoderParams) -> torch.Tensor:
    return pre_gemm * p.scale + p.bias if p.scale is not None else pre_gemm + p.bias


def _topk_rows(x: torch.Tensor, p: EncoderParams, min_activation: float) -> SparseRows:
    """A TopK SAE's activations above ``min_activation`` straight from its top k: the same
    rows as densifying then scanning ``[N, d_sae]`` (what mining asks for), without the
    dense passes, which cost more than the encoder's matmul on a CPU."""
    values, idx = _pre((x.to(p.w_enc.dtype) @ p.w_enc).float(), p).topk(p.k, dim=-1, sorted=False)
    idx, order = idx.sort(dim=-1)  # ascending feature ids, as from a dense row
    values = torch.relu(values).gather(-1, order)
    keep = (values > min_activation) & (values != 0)
    offsets = torch.zeros(x.shape[0] + 1, dtype=torch.int64)
    offsets[1:] = keep.sum(-1).cpu().cumsum(0)
    return SparseRows(offsets, idx[keep].to(torch.int32).cpu(), values[keep].cpu())


def _subset(p: EncoderParams, cols: torch.Tensor) -> EncoderParams:
    def pick(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[cols]

    return EncoderParams(
        p.architecture, p.w_enc[:, cols], p.bias[cols], pick(p.scale), pick(p.threshold),
        pick(p.mag_scale), pick(p.mag_bias), p.k,
    )


def _rows_from_dense(dense: torch.Tensor, ids: torch.Tensor | None = None) -> SparseRows:
    rows, cols = (dense != 0).nonzero(as_tuple=True)
    offsets = torch.zeros(dense.shape[0] + 1, dtype=torch.int64)
    offsets[1:] = torch.bincount(rows, minlength=dense.shape[0]).cumsum(0)
    feature_ids = cols if ids is None else ids[cols]
    return SparseRows(offsets, feature_ids.to(torch.int32), dense[rows, cols].float())


def encode_dense_torch(x: torch.Tensor, p: EncoderParams) -> torch.Tensor:
    """Dense activations ``[N, d_sae]`` in float32 (reference and mining path)."""
    pre = (x.to(p.w_enc.dtype) @ p.w_enc).float()
    return activate(pre, p)


def encode_sparse_torch(
    x: torch.Tensor, p: EncoderParams, selection: Selection, block_tokens: int = 512
) -> SparseRows:
    parts = []
    ids_t = None
    sub = p
    if isinstance(selection, FeatureIds):
        ids_t = torch.tensor(sorted(selection.ids), dtype=torch.int64, device=p.w_enc.device)
        # TopK activations depend on the whole row (which k survive), so only
        # the element-wise architectures may read just the requested columns.
        if p.architecture != "topk":
            sub = _subset(p, ids_t)
    for start in range(0, x.shape[0], block_tokens):
        if p.architecture == "topk" and isinstance(selection, Threshold):
            parts.append(_topk_rows(x[start : start + block_tokens], p, selection.min_activation))
            continue
        acts = encode_dense_torch(x[start : start + block_tokens], sub)
        if isinstance(selection, FeatureIds):
            if sub is p:
                acts = acts[:, ids_t]
            parts.append(_rows_from_dense(acts.cpu(), ids_t.cpu() if ids_t is not None else None))
        elif isinstance(selection, TopK):
            k = min(selection.k, acts.shape[1])
            vals, idx = acts.topk(k, dim=-1, sorted=False)
            vals = torch.where(vals > 0, vals, 0.0)
            dense = torch.zeros_like(acts).scatter_(-1, idx, vals)
            parts.append(_rows_from_dense(dense.cpu()))
        else:
            acts = torch.where(acts > selection.min_activation, acts, 0.0)
            parts.append(_rows_from_dense(acts.cpu()))
    return SparseRows.concat(parts)


def encode_sparse(x: torch.Tensor, p: EncoderParams, selection: Selection, backend: Backend = "auto") -> SparseRows:
    """Encode hidden states ``x [N, d_in]`` and return the selected activations.

    ``backend="auto"`` uses the fused Triton kernels on CUDA and torch elsewhere;
    both honour the same contract (tests/activation/test_encode_conformance.py).
    """
    use_triton = backend == "triton" or (backend == "auto" and x.is_cuda)
    if use_triton:
        from sagex.activation.kernels import BeyondKernelLimits, encode_sparse_triton

        try:
            return encode_sparse_triton(x, p, selection)
        except BeyondKernelLimits:
            pass  # a shape beyond the tile kernels (top-k with k > 1024): same contract in torch
    return encode_sparse_torch(x, p, selection)
